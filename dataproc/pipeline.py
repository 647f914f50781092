"""`llmforge data run`: build and execute the plan of a `DataJobConfig`, in three phases.

    1. per input file, one fused Ray task: read WARC -> per-document stages -> Parquet sink
       into documents/<key>/ (or, with execution.stage_actors, the stages on an actor pool
       fed by every read)
    2. corpus stages over all of documents/: exact and MinHash dedup, quality model, domains
       -> curated/ (dataproc.corpus.runner)
    3. tokenize curated/ -> shards/ (dataproc.tokenization.job)

Everything that decides *what* happens to a document lives in the stages; this module only
wires Ray Data, resumes finished work (the output ledger, the corpus steps and the shard
writer each skip what is already done) and writes the final `stats.json` and funnel.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from dataproc.config import DataJobConfig
from dataproc.corpus.runner import run_corpus_stages
from dataproc.outputs.funnel_plot import plot_funnel
from dataproc.outputs.ledger import OutputLedger
from dataproc.reading.inputs import resolve_inputs, source_key
from dataproc.tokenization.job import run_tokenize
from dataproc.documents.runner import DocumentStages
from dataproc.outputs.funnel import build_funnel, format_funnel
from llmforge.common import fs
from llmforge.common.ray_session import cluster_cpus, import_in_background, init_ray, start_ray_data_actors, warm_workers
from llmforge.common.resume import digest, fingerprint


@dataclass
class RunResult:
    stats: dict[str, Any]
    processed: list[str]
    skipped: list[str]


# Config keys that are gone, with the one value they always had: hashed as before, so that
# outputs written while they existed still resume (`_job.json` records the fingerprint).
RETIRED_KEYS: dict[tuple[str, ...], Any] = {
    ("stages", "tokenize", "mixture", "enabled"): True,  # a switch that switched nothing
    ("stages", "extract", "enabled"): True,  # extraction always runs; the switch could only be true
}


# Per-document options added since, with the value that behaves as the code before them did
# on every real page: hashed only when set to another value, so that outputs written before
# them still resume. (The nesting cap changes only pages nested 5,000 deep; the 415 real pages
# of the test data nest under 40.)
ADDED_KEYS: dict[tuple[str, ...], Any] = {
    ("stages", "extract", "max_depth"): 5_000,
    ("stages", "extract", "depth_check_tags"): 20_000,
}


# Corpus sections added since: only their own steps' fingerprints hold their options, so a
# finished documents/ is reused when one of them is switched on or changed.
UNHASHED_SECTIONS = ("decontaminate",)


def output_fingerprint(cfg: DataJobConfig) -> str:
    """What decides `documents/`: reader and per-document stage options (not paths, not
    execution knobs). The corpus and tokenize sections are in it too, only switched off
    (`per_document`): changing one of their options also refuses an old output directory,
    though their own outputs carry their own fingerprints (`UNHASHED_SECTIONS` excepted).
    Outputs on disk record this value,
    so it stays as it is."""
    decisive = {"warc": cfg.input.warc.model_dump(mode="json"),
                "stages": cfg.stages.per_document().model_dump(mode="json", exclude=set(UNHASHED_SECTIONS))}
    for (*parents, key), value in RETIRED_KEYS.items():
        _section(decisive, parents).setdefault(key, value)
    for (*parents, key), value in ADDED_KEYS.items():
        section = _section(decisive, parents)
        if section.get(key) == value:
            del section[key]
    return fingerprint(decisive)


def _section(config: dict[str, Any], path: list[str]) -> dict[str, Any]:
    for name in path:
        config = config[name]
    return config


def documents_fingerprint(cfg: DataJobConfig, keys) -> str:
    """What decides `documents/` as a whole: the options above and which inputs are in it.
    The corpus steps' fingerprints chain from it."""
    return digest(output_fingerprint(cfg) + "|".join(sorted(keys)), 16)


class IncompleteOutputError(RuntimeError):
    """Ray Data finished but some input file's rows were not all written."""


def build_dataset(cfg: DataJobConfig, files: list[str], ledger: OutputLedger):
    """The lazy Ray Data plan over `files`, the sink it writes to and the sink's remote args.

    By default read, stages and write fuse into one task per input file: blocks never leave
    the process that read them (Common Crawl has ~90k files, plenty of parallelism). With
    `execution.stage_actors` the stages run on an actor pool instead, fed by every read.
    """
    import ray

    from dataproc.outputs.sink import DocumentSink
    from dataproc.documents.runner import run_stages
    from dataproc.reading.datasource import WarcDatasource

    ex = cfg.execution
    # Fused: one CPU per task. Pool: reads and writes are light next to the stage actors.
    io_cpus = 1.0 if ex.stage_actors is None else 0.25
    ds = ray.data.read_datasource(
        WarcDatasource(files, cfg.input.warc, ledger, ex.docs_per_block),
        override_num_blocks=len(files),
        num_cpus=io_cpus,
    )
    ds.context.target_max_block_size = int(ex.block_mb * 2**20)  # this dataset's own context copy
    if ex.stage_actors is None:
        ds = ds.map_batches(
            run_stages,
            fn_kwargs={"config_json": cfg.stages.model_dump_json()},
            batch_format="pyarrow",
            batch_size=None,
        )
    else:
        ds = ds.map_batches(
            DocumentStages,
            fn_constructor_kwargs={"stages": cfg.stages},
            batch_format="pyarrow",
            batch_size=None,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=ex.stage_actors),
            num_cpus=ex.stage_cpus,
        )
    sink = DocumentSink(ledger, cfg.stages.enabled(), cfg.output.write_dropped)
    return ds, sink, {"num_cpus": io_cpus}


def run_data_job(cfg: DataJobConfig, log=print) -> RunResult:
    start = time.perf_counter()
    phases = _PhaseClock()
    files = resolve_inputs(cfg.input.paths, cfg.input.crawl, cfg.input.crawl_base, cfg.input.max_files)
    keys = {source_key(f): f for f in files}
    # Build every stage once here: a missing blocklist file or an unknown language code
    # fails now, naming its key, instead of inside a Ray actor after start-up.
    DocumentStages(cfg.stages)
    if cfg.stages.decontaminate.enabled:  # a missing eval file or a row without text, now
        from dataproc.corpus.decontaminate import build_index

        build_index(cfg.stages.decontaminate)
    ledger = OutputLedger(cfg.output.path)
    ledger.claim(output_fingerprint(cfg))
    todo_keys, done_keys = ledger.prepare(list(keys))
    log(f"llmforge data run: {len(files)} input files, {len(done_keys)} already done, {len(todo_keys)} to process")
    phases.lap("prepare")

    if todo_keys:
        init_ray(
            address=cfg.execution.address,
            num_cpus=cfg.execution.num_cpus,
            include_dashboard=cfg.execution.dashboard,
            preload=_DRIVER_MODULES + (("matplotlib.figure",) if _plots(cfg) else ()),
        )
        if cfg.execution.stage_actors is None:
            from dataproc.documents.runner import warm_stages

            warm_workers(warm_stages, min(len(todo_keys), cluster_cpus()), cfg.stages.model_dump_json())
        start_ray_data_actors()
        phases.lap("ray_start")
        if _plots(cfg):  # joined to a cluster, the driver waits out the pass: plotting then costs less
            import_in_background(("matplotlib.figure",))  # (embedded, it came in with Ray's start)
        ds, sink, write_args = build_dataset(cfg, [keys[k] for k in todo_keys], ledger)
        ds.write_datasink(sink, ray_remote_args=write_args)
        phases.lap("documents")
        incomplete = [keys[k] for k in todo_keys if not ledger.try_finalize(k)]
        if incomplete:
            raise IncompleteOutputError(
                f"{len(incomplete)} input files were not fully written (rerun to redo them): {incomplete[:5]}"
            )

    funnel = build_funnel((ledger.done_stats(k) for k in keys), cfg.stages.enabled())
    later = [*cfg.stages.corpus_enabled(), *(["tokenize"] if cfg.stages.tokenize.enabled else [])]
    if later and funnel["documents_out"] == 0:
        # Nothing to deduplicate or tokenize (e.g. inputs without HTML responses): the funnel
        # still tells what the reader and every stage saw.
        _note(funnel, f"no documents came out of the per-document stages: skipped {', '.join(later)}", log)
    elif later:
        _run_corpus_and_tokenize(cfg, list(keys), funnel, log)
        phases.lap("corpus_and_tokenize")
    funnel["wall_seconds_this_run"] = round(time.perf_counter() - start, 3)
    funnel["phase_seconds"] = phases.seconds
    funnel["inputs_skipped_as_done"] = len(done_keys)
    funnel["config"] = cfg.model_dump(mode="json")
    fs.write_json_atomic(ledger.filesystem, ledger.stats_path(), funnel)
    log(format_funnel(funnel))
    log(f"documents: {fs.join(cfg.output.path, 'documents')}  stats: {ledger.stats_path()}")
    if _plots(cfg):
        plot_funnel(funnel, fs.join(ledger.root, "funnel.png"))
        log(f"funnel plot: {fs.join(ledger.root, 'funnel.png')}")
    sys.stdout.flush()
    return RunResult(stats=funnel, processed=todo_keys, skipped=done_keys)


# What the driver imports after Ray starts, imported while it starts (`init_ray(preload=...)`):
# Ray Data, the read and the sink, and the modules Ray Data imports only when a dataset is built
# and run (its context's issue detectors, planner, optimizer, executor, the raylet's memory
# query): 0.5-0.8 s of a 16-page job's critical path otherwise. A module an upgrade moves is
# skipped (a debug line); Ray Data then imports it where it did.
_DRIVER_MODULES = (
    "ray.data", "dataproc.reading.datasource", "dataproc.outputs.sink",
    "ray.data._internal.issue_detection.issue_detector_configuration", "ray.data._internal.planner.planner",
    "ray.data._internal.logical.optimizers", "ray.data._internal.execution.streaming_executor",
    "ray.core.generated.node_manager_pb2",
)  # fmt: skip


def _plots(cfg: DataJobConfig) -> bool:
    """A picture of the funnel for people; local outputs only."""
    return "://" not in cfg.output.path


class _PhaseClock:
    """Wall seconds of the job's phases, for stats.json: where a run's time went."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._last, 3)
        self._last = now


def _note(funnel: dict[str, Any], note: str, log) -> None:
    """A warning for the log and for stats.json (`notes`)."""
    funnel.setdefault("notes", []).append(note)
    log(f"warning: {note}")


def _run_corpus_and_tokenize(cfg: DataJobConfig, keys: list[str], funnel: dict[str, Any], log) -> None:
    """Phases 2 and 3 over the finished documents/; their entries go into `funnel`."""
    import ray

    init_ray(address=cfg.execution.address, num_cpus=cfg.execution.num_cpus,
             include_dashboard=cfg.execution.dashboard)
    ctx = ray.data.DataContext.get_current()
    # The tokenize stage's groupby shuffles too: under Ray Data 2.60's default (shuffle_v2, a hash
    # shuffle of 200 partitions on fresh processes) it took 15.8 s for 68 documents in a
    # `ray job submit` run.
    saved, ctx.shuffle_strategy = ctx.shuffle_strategy, cfg.execution.shuffle_strategy
    try:
        corpus = run_corpus_stages(cfg, fs.join(cfg.output.path, "documents"),
                                   documents_fingerprint(cfg, keys), log)
        funnel["stages"] += corpus["stages"]
        funnel["seconds"].update({s["stage"]: s["seconds"] for s in corpus["stages"]})
        funnel["documents_out"] = corpus["documents_out"]
        funnel["domains"] = corpus["domains"]
        funnel["curated"] = corpus["curated"]
        if not cfg.stages.tokenize.enabled:
            return
        if corpus["documents_out"] == 0:
            _note(funnel, "no documents came out of the corpus stages: skipped tokenize", log)
            return
        manifest = run_tokenize(cfg, corpus["curated"], log)
    finally:
        ctx.shuffle_strategy = saved
    funnel["tokens"] = {
        "total": manifest["total_tokens"], "documents": manifest["total_documents"],
        "shards": len(manifest["shards"]), "per_domain": manifest["domains"],
        "mixture": manifest["mixture"], "dir": fs.join(cfg.output.path, "shards"),
    }
