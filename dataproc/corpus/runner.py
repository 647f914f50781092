"""The corpus stages: exact dedup -> MinHash near-dedup -> decontaminate -> quality model -> domains.

They need every document at once (hash shuffles), so they run after all inputs are through
the per-document stages, reading `documents/` and writing, each step to its own directory:

    <output>/corpus/exact/      documents + `duplicate_of` (exact copies)
    <output>/corpus/near/       + `duplicate_of` for near-duplicates too
    <output>/duplicates/        id, url, duplicate_of, stage of every removed document (audit;
                                an exact copy may point at a keeper that MinHash removed later:
                                follow duplicate_of to the survivor)
    <output>/corpus/decontaminated/  with decontaminate on: the unique documents + `contaminated_by`
                                (null = kept, else the eval item `file:row` it shares an n-gram with)
    <output>/contaminated/      id, url, contaminated_by, contaminated_ngram of every removed one
    <output>/corpus/scored/     with quality.keep_top_fraction only: every survivor scored and
                                tagged, to take the corpus-wide quantile over (dataproc.corpus.quantile)
    <output>/curated/           kept documents + quality_score, domain, domain_score
    <output>/corpus/_shuffle/   the dedup shuffles' files while a step runs (`spilled_shuffle`)

Each directory is a `llmforge.common.resume.Step`: it counts only once its `_SUCCESS` file
(stats + fingerprint of its options and input, chained from the step before) is written,
last. A rerun skips steps whose fingerprint matches and redoes the rest: a killed job loses
at most the step it was in, never a document. Nothing but counts comes back to the driver.
"""
from __future__ import annotations

import time
from functools import lru_cache
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from dataproc.config import DataJobConfig
from dataproc.corpus.dedup._shuffle import DOC_BATCH
from dataproc.outputs.parquet import parquet_files, read_documents
from llmforge.common import fs
from llmforge.common.ray_session import cluster_cpus
from llmforge.common.resume import Step, fingerprint

SUCCESS = "_SUCCESS"
SHUFFLE_DIR = "_shuffle"
DUP_COLUMNS = ("id", "url", "duplicate_of", "dedup_stage")


def _step(root: str, name: str, fp: str) -> Step:
    return Step(fs.join(root, name), SUCCESS, fingerprint=fp)


def _chain(*parts: Any) -> str:
    """A step's fingerprint: the previous step's, its name and its options."""
    return fingerprint(parts)


def _count(uri: str, predicate: Callable[[pa.Table], pa.Array], columns: list[str]) -> int:
    """Rows of the Parquet dataset at `uri` matching `predicate` (only `columns` are read)."""
    if not parquet_files(uri):
        return 0  # e.g. a quality cut that kept nothing
    ds = read_documents(uri, columns=columns)
    counted = ds.map_batches(
        lambda t: pa.table({"n": [int(pc.sum(predicate(t).cast(pa.int64())).as_py() or 0)]}),
        batch_format="pyarrow",
    )
    return int(counted.sum("n") or 0)


def _is_dup(t: pa.Table) -> pa.Array:
    return pc.is_valid(t.column("duplicate_of"))


def _run_step(step: Step, build: Callable[[], Any], stats: Callable[[], dict[str, Any]], log) -> dict[str, Any]:
    found = step.done()
    if found is not None:
        log(f"corpus: {step.uri} already done, skipped")
        return found
    step.reset()
    start = time.perf_counter()
    build().write_parquet(step.uri)
    return step.finish({**stats(), "seconds": round(time.perf_counter() - start, 3)})


def _removed_rows(t: pa.Table, stage: str) -> pa.Table:
    """The audit rows of one dedup step: who was removed, as a copy of whom, by which step."""
    dup = t.filter(pc.is_valid(t.column("duplicate_of")))
    stage_col = pa.array([stage] * dup.num_rows, pa.string())
    return dup.select(["id", "url", "duplicate_of"]).append_column("dedup_stage", stage_col)


def _dedup_entry(stage: str, reason: str, n_in: int, info: dict[str, Any]) -> dict[str, Any]:
    removed = info["duplicates"]
    return {"stage": stage, "in": n_in, "out": n_in - removed,
            "dropped": {reason: removed} if removed else {}, "seconds": info.get("seconds", 0.0)}


def _unique(ds):
    return ds.map_batches(_keep_unique, batch_format="pyarrow", batch_size=DOC_BATCH)


def run_corpus_stages(cfg: DataJobConfig, documents_uri: str, input_fingerprint: str, log=print) -> dict[str, Any]:
    """Run the enabled corpus stages over `documents_uri`; returns their funnel entries."""

    from dataproc.corpus.dedup.exact import exact_duplicates
    from dataproc.corpus.dedup.lsh import minhash_duplicates

    st = cfg.stages
    root = cfg.output.path
    funnel: list[dict[str, Any]] = []
    current, fp = documents_uri, input_fingerprint
    n_in = _count(current, lambda t: pc.is_valid(t.column("id")), ["id"])

    # The dedup shuffles' scratch files (deleted by each shuffle; a killed job's leftovers here).
    work_dir = fs.join(root, "corpus", SHUFFLE_DIR)
    filesystem, work_path = fs.resolve(work_dir)
    fs.delete_dir(filesystem, work_path)
    # (funnel stage, audit name, drop reason, directory, options, plan over (previous output,
    # its number of documents))
    plans = []
    if st.exact_dedup.enabled:
        plans.append(("exact_dedup", "exact", "duplicate", "corpus/exact", st.exact_dedup,
                      lambda src, n: exact_duplicates(read_documents(src), partitions=st.exact_dedup.partitions,
                                                      docs=n, work_dir=work_dir)))
    if st.minhash_dedup.enabled:
        # Exact copies are gone before MinHash: fewer documents to hash and shuffle.
        plans.append(("minhash_dedup", "minhash", "near_duplicate", "corpus/near", st.minhash_dedup,
                      lambda src, n: minhash_duplicates(_unique(read_documents(src)), st.minhash_dedup,
                                                        docs=n, work_dir=work_dir)))
    dedup_steps: list[tuple[Step, str]] = []
    for stage, name, reason, subdir, options, plan in plans:
        fp = _chain(fp, name, options.model_dump())
        step, source, n_source = _step(root, subdir, fp), current, n_in
        info = _run_step(step, lambda: plan(source, n_source),
                         lambda: {"duplicates": _count(step.uri, _is_dup, ["duplicate_of"])}, log)
        funnel.append(_dedup_entry(stage, reason, n_in, info))
        n_in -= info["duplicates"]
        current = step.uri
        dedup_steps.append((step, name))

    if dedup_steps:
        def removed():
            parts = [read_documents(s.uri).map_batches(_removed_rows, fn_kwargs={"stage": name},
                                                             batch_format="pyarrow")
                     for s, name in dedup_steps]
            return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]

        _run_step(_step(root, "duplicates", fp), removed, lambda: {}, log)

    decontaminated = st.decontaminate.enabled
    if decontaminated:
        fp, current, n_in = _decontaminate(cfg, current, fp, n_in, unique=bool(dedup_steps), funnel=funnel, log=log)

    fp = _chain(fp, "curate", st.quality_model.model_dump(), st.domains.model_dump())
    top_fraction = st.quality_model.keep_top_fraction if st.quality_model.enabled else None
    threshold = st.quality_model.threshold if st.quality_model.enabled else None
    source, unique = current, bool(dedup_steps) or decontaminated
    if top_fraction is not None:
        # The cut is a corpus-wide quantile: score everything once into its own step, take the
        # quantile over that, then cut it like a fixed threshold.
        scored = _step(root, "corpus/scored", fp)
        info = _run_step(scored, lambda: _score_and_tag(read_documents(current), st, unique), lambda: {}, log)
        if info.get("quality_threshold") is None:
            from dataproc.corpus.quality.stage import SCORE_COLUMN
            from dataproc.corpus.quantile import top_fraction_threshold

            info = scored.finish({**info, "quality_threshold": top_fraction_threshold(
                read_documents(scored.uri), SCORE_COLUMN, top_fraction)})
        threshold, source, unique = info["quality_threshold"], scored.uri, False
    curated = _step(root, "curated", fp)
    found = curated.done()
    if found is not None:
        log(f"corpus: {curated.uri} already done, skipped")
    else:
        curated.reset()
        start = time.perf_counter()
        ds = read_documents(source)
        if top_fraction is None:
            ds = _score_and_tag(ds, st, unique)
        if threshold is not None:
            ds = ds.map_batches(_above, fn_kwargs={"threshold": threshold}, batch_format="pyarrow")
        ds.write_parquet(curated.uri)
        kept = _count(curated.uri, lambda t: pc.is_valid(t.column("id")), ["id"])
        domains = _domain_counts(curated.uri) if st.domains.enabled else {}
        found = curated.finish({"kept": kept, "quality_threshold": threshold, "domains": domains,
                                "keep_top_fraction": top_fraction,
                                "seconds": round(time.perf_counter() - start, 3)})
    if st.quality_model.enabled:
        funnel.append({"stage": "quality_model", "in": n_in, "out": found["kept"],
                       "dropped": {"low_score": n_in - found["kept"]} if n_in > found["kept"] else {},
                       "seconds": found.get("seconds", 0.0)})
    return {"stages": funnel, "documents_out": found["kept"], "domains": found.get("domains", {}),
            "quality_threshold": found.get("quality_threshold"), "curated": curated.uri,
            "fingerprint": fp}


def _decontaminate(cfg: DataJobConfig, source: str, fp: str, n_in: int, *, unique: bool,
                   funnel: list[dict[str, Any]], log) -> tuple[str, str, int]:
    """The `decontaminate` step (only when enabled: a run without it keeps its fingerprints):
    `corpus/decontaminated/` holds the surviving documents of `source` with `contaminated_by`
    set on the overlapping ones, `contaminated/` lists those. Returns (fingerprint, step uri,
    documents left)."""
    from dataproc.corpus.decontaminate import (CONTAMINATED_BY, DROP_REASON, build_index, contaminated_rows,
                                               eval_files_digest, mark_contaminated)

    options = cfg.stages.decontaminate
    root = cfg.output.path
    fp = _chain(fp, "decontaminate", options.model_dump(), eval_files_digest(options))
    step = _step(root, "corpus/decontaminated", fp)

    def plan():
        ds = read_documents(source)
        if unique:  # duplicates are gone for good: fewer documents to scan
            ds = _unique(ds)
        return ds.map_batches(mark_contaminated, fn_kwargs={"index": build_index(options)}, batch_format="pyarrow")

    info = _run_step(step, plan, lambda: {"contaminated": _count(
        step.uri, lambda t: pc.is_valid(t.column(CONTAMINATED_BY)), [CONTAMINATED_BY])}, log)
    removed = info["contaminated"]
    _run_step(_step(root, "contaminated", fp),
              lambda: read_documents(step.uri).map_batches(contaminated_rows, batch_format="pyarrow"),
              lambda: {}, log)
    funnel.append({"stage": "decontaminate", "in": n_in, "out": n_in - removed,
                   "dropped": {DROP_REASON: removed} if removed else {}, "seconds": info.get("seconds", 0.0)})
    return fp, step.uri, n_in - removed


def _score_and_tag(ds, st, unique: bool):
    """Quality scores and domain tags onto the surviving documents (no cut yet)."""
    import ray

    if unique:
        ds = _unique(ds)
    if st.quality_model.enabled:
        from dataproc.corpus.quality.stage import QualityScorer

        ds = ds.map_batches(
            QualityScorer, fn_constructor_args=(st.quality_model,), batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cluster_cpus()),
        )
    if st.domains.enabled:
        # Tasks, not a second actor pool: two pools holding a CPU each could starve the reads.
        ds = ds.map_batches(tag_domains, fn_kwargs={"options_json": st.domains.model_dump_json()},
                            batch_format="pyarrow")
    return ds


@lru_cache(maxsize=4)
def _tagger(options_json: str):
    from dataproc.corpus.domains import DomainOptions, DomainTagger

    return DomainTagger(DomainOptions.model_validate_json(options_json))


def tag_domains(batch: pa.Table, options_json: str) -> pa.Table:
    """Task form of `DomainTagger` (built once per worker process)."""
    return _tagger(options_json)(batch)


# Columns that mark a row removed by an earlier corpus step (null = kept), and their companions.
_REMOVED_BY = ("duplicate_of", "contaminated_by")
_STEP_COLUMNS = ("duplicate_of", "rank_key", "contaminated_by", "contaminated_ngram")


def _keep_unique(t: pa.Table) -> pa.Table:
    """The rows no dedup or decontaminate step removed, without those steps' columns."""
    marks = [c for c in _REMOVED_BY if c in t.column_names]
    if not marks:  # not deduplicated yet: every row is unique so far
        return t
    keep = pc.is_null(t.column(marks[0]))
    for c in marks[1:]:
        keep = pc.and_(keep, pc.is_null(t.column(c)))
    kept = t.filter(keep)
    return kept.drop_columns([c for c in _STEP_COLUMNS if c in kept.column_names])


def _above(t: pa.Table, threshold: float) -> pa.Table:
    return t.filter(pc.greater_equal(t.column("quality_score"), threshold))


def _domain_counts(uri: str) -> dict[str, int]:
    if not parquet_files(uri):
        return {}
    rows = read_documents(uri, columns=["domain"]).groupby("domain").count().take_all()
    return {r["domain"]: int(r["count()"]) for r in rows}
