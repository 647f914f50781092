"""Apply the per-document stages to one batch of WARC records.

Filters annotate rather than delete: a dropped row keeps its `id`, `url`, `source`, `seq`
and gets `drop_reason = "<stage>:<reason>"`; later stages skip it and its text is emptied.
The sink then writes kept rows and counts the rest, so every drop is counted once, exactly,
and every input row is accounted for (which is what makes per-file completion checkable).

`t_<stage>` columns carry each stage's batch time divided over the batch's rows, so summing a
column over any set of rows gives that stage's time for them.
"""
from __future__ import annotations

import importlib
import math
from functools import lru_cache
import time
from typing import Any, Callable

import pyarrow as pa

from dataproc.config import StagesConfig
from dataproc.documents.extract import extract_text
from dataproc.documents.contract import DocFilter, DocTransform

Columns = dict[str, list[Any]]
NAN = math.nan

# Columns the reader produces that are not needed after extraction.
_DROP_AFTER = ("html",)


def alive_rows(reasons: list[str | None]) -> list[int]:
    return [i for i, r in enumerate(reasons) if r is None]


class _FilterStage:
    """Run a `DocFilter` over the text (or url) of rows still alive; write its score columns."""

    def __init__(self, name: str, filt: DocFilter, field: str = "text"):
        self.name, self.filt, self.field = name, filt, field

    def __call__(self, cols: Columns, reasons: list[str | None]) -> None:
        idx = alive_rows(reasons)
        values = cols[self.field]
        results = self.filt.check_batch([values[i] for i in idx])
        _write_scores(cols, self.filt.score_columns, idx, [s for _, s in results], len(reasons))
        for i, (reason, _) in zip(idx, results):
            if reason is not None:
                reasons[i] = f"{self.name}:{reason}"


class _TransformStage:
    def __init__(self, name: str, transform: DocTransform):
        self.name, self.transform = name, transform

    def __call__(self, cols: Columns, reasons: list[str | None]) -> None:
        idx = alive_rows(reasons)
        text = cols["text"]
        scores = []
        for i in idx:
            text[i], s = self.transform.transform(text[i])
            scores.append(s)
        _write_scores(cols, self.transform.score_columns, idx, scores, len(reasons))


class _ExtractStage:
    name = "extract"

    def __init__(self, options):
        self.options = options

    def __call__(self, cols: Columns, reasons: list[str | None]) -> None:
        n = len(reasons)
        texts, titles = [""] * n, [""] * n
        html = cols["html"]
        for i in alive_rows(reasons):
            texts[i], titles[i] = extract_text(html[i], self.options)
            if len(texts[i]) < self.options.min_text_chars:
                reasons[i] = "extract:empty"
        cols["text"], cols["title"] = texts, titles


class _LanguageStage:
    name = "language"

    def __init__(self, filt):
        self.filt = filt

    def __call__(self, cols: Columns, reasons: list[str | None]) -> None:
        n = len(reasons)
        idx = alive_rows(reasons)
        langs: list[str | None] = [None] * n
        scores = [NAN] * n
        for i, (lang, score) in zip(idx, self.filt.detect_batch([cols["text"][i] for i in idx])):
            langs[i], scores[i] = lang, score
            reason = self.filt.verdict(lang, score)
            if reason is not None:
                reasons[i] = f"language:{reason}"
        cols["lang"], cols["lang_score"] = langs, scores


class _C4Stage:
    """C4 both filters and rewrites (drops lines), so it uses the filter's `apply`."""

    name = "c4"

    def __init__(self, filt):
        self.filt = filt

    def __call__(self, cols: Columns, reasons: list[str | None]) -> None:
        idx = alive_rows(reasons)
        text = cols["text"]
        scores = []
        for i in idx:
            new_text, reason, s = self.filt.apply(text[i])
            scores.append(s)
            if reason is not None:
                reasons[i] = f"c4:{reason}"
            else:
                text[i] = new_text
        _write_scores(cols, self.filt.score_columns, idx, scores, len(reasons))


def _write_scores(cols: Columns, names, idx: list[int], scores: list[dict], n: int) -> None:
    for name in names:
        column = [NAN] * n
        for i, s in zip(idx, scores):
            value = s.get(name, NAN)
            column[i] = NAN if value is None else float(value)
        cols[name] = column


# stage name -> (module, class, how the stage runs it); imported lazily so that a disabled
# stage costs nothing.
_STAGE_CLASSES = {
    "url_filter": ("dataproc.documents.filters.url", "UrlFilter", lambda f: _FilterStage("url_filter", f, field="url")),
    "language": ("dataproc.documents.filters.language", "LanguageFilter", _LanguageStage),
    "gopher_quality": ("dataproc.documents.filters.gopher", "GopherQualityFilter", lambda f: _FilterStage("gopher_quality", f)),
    "gopher_repetition": (
        "dataproc.documents.filters.gopher", "GopherRepetitionFilter", lambda f: _FilterStage("gopher_repetition", f)
    ),
    "c4": ("dataproc.documents.filters.c4", "C4Filter", _C4Stage),
    "fineweb": ("dataproc.documents.filters.fineweb", "FineWebFilter", lambda f: _FilterStage("fineweb", f)),
    "pii": ("dataproc.documents.filters.pii", "PiiRedactor", lambda f: _TransformStage("pii", f)),
}


def build_stage(name: str, options) -> Callable[[Columns, list[str | None]], None]:
    """The runner for stage `name` built from its options."""
    if name == "extract":
        return _ExtractStage(options)
    if name not in _STAGE_CLASSES:
        raise KeyError(f"unknown stage {name!r}")
    module, cls, runner = _STAGE_CLASSES[name]
    return runner(getattr(importlib.import_module(module), cls)(options))


class DocumentStages:
    """Ray Data `map_batches` callable (actor pool): builds the enabled stages once per actor."""

    def __init__(self, stages: StagesConfig):
        self.stage_names = stages.enabled()
        self.stages = [build_stage(n, getattr(stages, n)) for n in self.stage_names]

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        cols: Columns = {name: batch.column(name).to_pylist() for name in batch.column_names}
        reasons: list[str | None] = [None] * n
        for name, stage in zip(self.stage_names, self.stages):
            start = time.perf_counter()
            stage(cols, reasons)
            cols[f"t_{name}"] = [(time.perf_counter() - start) / max(n, 1)] * n
            if name == "extract":
                for col in _DROP_AFTER:
                    cols.pop(col, None)
        for i, r in enumerate(reasons):
            if r is not None:
                cols["text"][i] = ""
        cols["drop_reason"] = reasons
        table = pa.table(cols)
        # An all-None column infers as `null`; blocks must share one schema to be written together.
        for i, field in enumerate(table.schema):
            if pa.types.is_null(field.type):
                table = table.set_column(i, field.name, table.column(i).cast(pa.string()))
        return table


@lru_cache(maxsize=4)
def _stages_for(config_json: str) -> DocumentStages:
    return DocumentStages(StagesConfig.model_validate_json(config_json))


def run_stages(batch: pa.Table, config_json: str) -> pa.Table:
    """Task form of `DocumentStages` (fuses with the read): stages built once per worker process."""
    return _stages_for(config_json)(batch)
