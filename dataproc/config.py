"""The `llmforge data run` config: `input`, `output`, `stages`, `execution`.

Defaults reproduce the FineWeb recipe (URL filter, fastText English >= 0.65, Gopher
repetition + quality, C4 lines, FineWeb rules, PII redaction). Stages always run in the
order of `STAGE_ORDER`, whatever order the YAML lists them in; that order, and the
per-document sections of `stages`, come from `dataproc.documents.registry`.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt, create_model, model_validator

from dataproc.corpus.decontaminate import DecontaminateOptions
from dataproc.corpus.dedup.minhash import MinHashOptions
from dataproc.corpus.domains import DomainOptions
from dataproc.documents.registry import DOCUMENT_STAGES, StageRegistry, is_enabled
from dataproc.options import StageOptions
from dataproc.corpus.quality.stage import QualityModelOptions
from dataproc.tokenization.options import TokenizeStageOptions
from dataproc.reading.records import WarcReadOptions
from llmforge.common.config import StrictModel

# Per-document stages: each input file is processed on its own (see `pipeline`).
STAGE_ORDER = DOCUMENT_STAGES.names()
# Corpus stages: they see all documents at once (shuffles), after every input is done.
CORPUS_STAGE_ORDER = ("exact_dedup", "minhash_dedup", "decontaminate", "quality_model", "domains")


class InputConfig(StrictModel):
    """Where WARC files come from: explicit paths/globs/dirs, or a Common Crawl crawl id."""

    paths: list[str] = Field(default_factory=list, description="files, dirs, globs; local, s3://, gs://")
    crawl: str | None = Field(default=None, pattern=r"^CC-MAIN-\d{4}-\d{2}$")
    crawl_base: str = Field(
        default="s3://commoncrawl",
        description="root holding crawl-data/<crawl>/warc.paths.gz (the public bucket or a local mirror)",
    )
    max_files: int | None = Field(default=None, gt=0)
    warc: WarcReadOptions = Field(default_factory=WarcReadOptions)

    @model_validator(mode="after")
    def _one_source(self) -> "InputConfig":
        if bool(self.paths) == bool(self.crawl):
            raise ValueError("set exactly one of input.paths or input.crawl")
        return self


class OutputConfig(StrictModel):
    path: str = Field(min_length=1, description="directory (local, s3://, gs://) for documents/ and stats.json")
    write_dropped: bool = Field(
        default=False, description="also write id/url/drop_reason of every dropped document to dropped/"
    )


class ExecutionConfig(StrictModel):
    """How the Ray Data plan is sized; the defaults suit a laptop and scale on a cluster."""

    address: str | None = Field(default=None, description="Ray address; default RAY_ADDRESS or embedded")
    num_cpus: int | None = Field(default=None, gt=0, description="CPUs of an embedded Ray")
    dashboard: bool = Field(default=True, description="start the dashboard with an embedded Ray (:8265)")
    docs_per_block: int = Field(default=200, gt=0, description="documents a read task hands over at a time")
    # Ray Data merges what a read task yields into blocks of up to this size; one block is
    # one unit of work for a stage actor, so small blocks spread a big WARC over many cores.
    block_mb: float = Field(default=8.0, gt=0, description="target size of a block (MiB)")
    stage_actors: int | None = Field(
        default=None,
        gt=0,
        description="null: each input file is one task (read -> stages -> write fused, no data "
        "moves between processes); N: stages run on a pool of up to N actors fed by all reads, "
        "which spreads a few large files over many cores",
    )
    shuffle_strategy: Literal["sort_shuffle_pull_based", "sort_shuffle_push_based", "hash_shuffle", "shuffle_v2"] = Field(
        default="sort_shuffle_pull_based",
        description="Ray Data shuffle for the corpus stages and tokenize; the sort-based one reuses workers "
        "(shuffle_v2 starts new processes per shuffle: seconds each on a small machine)",
    )
    # Pool actors ask 0.75 CPU so that light read/write tasks still fit beside one actor per core.
    stage_cpus: float = Field(default=0.75, gt=0, description="CPUs reserved per stage actor")


class ExactDedupOptions(StageOptions):
    """Exact dedup on normalised text (case, punctuation, whitespace); keeps the earliest copy."""

    partitions: PositiveInt | None = Field(default=None, description="shuffle partitions, at least (default 2x CPUs; "
                                                 "more when the documents need them, 1M rows each at most)")


class _Stages(StrictModel):
    """The `stages` section: one field per stage, per-document ones first, in run order."""

    registry: ClassVar[StageRegistry]

    def enabled(self) -> list[str]:
        """Enabled per-document stages, in run order."""
        return [name for name in self.registry.names() if is_enabled(getattr(self, name))]

    def corpus_enabled(self) -> list[str]:
        """Enabled corpus stages, in run order."""
        return [name for name in CORPUS_STAGE_ORDER if getattr(self, name).enabled]

    def per_document(self) -> "_Stages":
        """Only the per-document stages' options matter to `documents/` (corpus stages off)."""
        return self.model_copy(update={n: getattr(self, n).model_copy(update={"enabled": False})
                                       for n in (*CORPUS_STAGE_ORDER, "tokenize")})


def _default(model: type[StrictModel]) -> Any:
    return (model, Field(default_factory=model))


def stages_config_model(registry: StageRegistry, name: str = "StagesConfig") -> type[_Stages]:
    """The `stages` model for `registry`: its stages' sections, then the corpus stages and
    `tokenize`. The runner finds the stages to build through the model's `registry`."""
    fields = {spec.name: _default(spec.options) for spec in registry}
    later = dict(
        exact_dedup=_default(ExactDedupOptions),
        minhash_dedup=_default(MinHashOptions),
        decontaminate=_default(DecontaminateOptions),
        quality_model=_default(QualityModelOptions),
        domains=_default(DomainOptions),
        tokenize=_default(TokenizeStageOptions),
    )
    if clash := fields.keys() & later.keys():
        raise ValueError(f"per-document stage names {sorted(clash)} are taken by corpus stages")
    fields.update(later)
    model = create_model(name, __base__=_Stages, __module__=__name__, **fields)
    model.registry = registry
    return model


# Named and placed so that pickle (Ray ships configs to actors) finds it as dataproc.config.StagesConfig.
StagesConfig = stages_config_model(DOCUMENT_STAGES)


class DataJobConfig(StrictModel):
    input: InputConfig
    output: OutputConfig
    stages: StagesConfig = Field(default_factory=StagesConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
