"""Apply the per-document stages to one batch of WARC records.

Filters annotate rather than delete: a dropped row keeps its `id`, `url`, `source`, `seq`
and gets `drop_reason = "<stage>:<reason>"`; later stages skip it and its text is emptied.
The sink then writes kept rows and counts the rest, so every drop is counted once, exactly,
and every input row is accounted for (which is what makes per-file completion checkable).

`t_<stage>` columns carry each stage's batch time divided over the batch's rows, so summing a
column over any set of rows gives that stage's time for them.

The stages of one batch share each document's word/line split (`text_utils.shared_views`):
the text filters tokenise a document once between them, not once each.

Every stage runs the same way (see `contract.DocStage`); which stages, in which order, with
which options, comes from the config and the registry it was made from.
"""
from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import pyarrow as pa

from dataproc.config import StagesConfig
from dataproc.documents.contract import TEXT, DocStage
from dataproc.documents.filters.text_utils import shared_views

Columns = dict[str, list[Any]]


def alive_rows(reasons: list[str | None]) -> list[int]:
    return [i for i, r in enumerate(reasons) if r is None]


def apply_stage(name: str, stage: DocStage, cols: Columns, reasons: list[str | None], types: dict) -> None:
    """Run `stage` on the rows still alive; write its text, columns (types noted in `types`)
    and drop reasons."""
    n = len(reasons)
    idx = alive_rows(reasons)
    values = cols[stage.reads]
    results = stage.process_batch([values[i] for i in idx])
    if stage.rewrites:
        text = cols.setdefault(TEXT, [""] * n)
        for i, result in zip(idx, results):
            if result.text is not None:
                text[i] = result.text
    elif any(result.text is not None for result in results):
        raise TypeError(f"stage {name!r} returned a new text but does not declare `rewrites`")
    for column in stage.columns:
        out = [column.missing] * n
        for i, result in zip(idx, results):
            out[i] = column.coerce(result.scores.get(column.name))
        cols[column.name] = out
        types[column.name] = column.type
    for i, result in zip(idx, results):
        if result.drop is not None:
            reasons[i] = f"{name}:{result.drop}"


class DocumentStages:
    """Ray Data `map_batches` callable (actor pool): builds the enabled stages once per actor."""

    def __init__(self, stages: StagesConfig):
        registry = type(stages).registry
        self.stages = [(name, registry[name].build(getattr(stages, name))) for name in stages.enabled()]
        # String columns handed over as UTF-8 bytes: only read by stages that take bytes.
        self.utf8_columns = frozenset(s.reads for _, s in self.stages if s.reads_utf8) - frozenset(
            s.reads for _, s in self.stages if not s.reads_utf8)

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        cols: Columns = {name: _pylist(batch.column(name), name in self.utf8_columns) for name in batch.column_names}
        types: dict[str, pa.DataType] = {}
        reasons: list[str | None] = [None] * n
        with shared_views():
            for name, stage in self.stages:
                start = time.perf_counter()
                apply_stage(name, stage, cols, reasons, types)
                cols[f"t_{name}"] = [(time.perf_counter() - start) / max(n, 1)] * n
                if stage.consumes:
                    cols.pop(stage.reads, None)
        text = cols.get(TEXT)
        if text is not None:
            for i, r in enumerate(reasons):
                if r is not None:
                    text[i] = ""
        cols["drop_reason"] = reasons
        table = pa.table({name: pa.array(values, type=types.get(name)) for name, values in cols.items()})
        # An all-None column infers as `null`; blocks must share one schema to be written together.
        for i, field in enumerate(table.schema):
            if pa.types.is_null(field.type):
                table = table.set_column(i, field.name, table.column(i).cast(pa.string()))
        return table


def _pylist(column: pa.ChunkedArray, utf8: bool) -> list[Any]:
    """The column's values; a string column as UTF-8 bytes with `utf8` (a view, then one copy
    per value: no decoding)."""
    if utf8 and pa.types.is_string(column.type):
        column = column.cast(pa.binary())
    elif utf8 and pa.types.is_large_string(column.type):
        column = column.cast(pa.large_binary())
    return column.to_pylist()


@lru_cache(maxsize=4)
def _stages_for(config_json: str) -> DocumentStages:
    return DocumentStages(StagesConfig.model_validate_json(config_json))


def warm_stages(config_json: str) -> None:
    """A worker imports Ray Data and builds the stages of `config_json` before the job's tasks
    reach it; `run_stages` there finds them built. Errors are left to those tasks. What the
    imports and the stages make lives as long as the worker: frozen, as in the driver."""
    from llmforge.common.gc_policy import collect_nothing_then_freeze

    with collect_nothing_then_freeze():
        try:
            import ray.data  # noqa: F401 - what the job's read and write run in this process

            _stages_for(config_json)
        except Exception:  # noqa: BLE001
            pass


def run_stages(batch: pa.Table, config_json: str) -> pa.Table:
    """Task form of `DocumentStages` (fuses with the read): stages built once per worker process."""
    return _stages_for(config_json)(batch)
