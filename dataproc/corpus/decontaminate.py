"""The `decontaminate` corpus stage: drop every document that shares an n-gram (13 words, as
GPT-3 and lm-evaluation-harness) with an item of the configured eval files.

The n-grams, normalisation and eval-file formats are `llmforge.ngram_overlap`'s, the same that
`llmforge eval contamination` reports with, so a corpus decontaminated against a benchmark
shows no overlap with it there. Off by default. The runner (`runner.py`) runs it after dedup
(fewer documents to scan) into `corpus/decontaminated/`, where each surviving document carries
`contaminated_by` (null = clean, else `file:row` of the first eval item it overlaps) and
`contaminated_ngram`; the removed ones are listed in `contaminated/` and counted in the funnel
as `decontaminate: eval_overlap`. Pure Python over Arrow batches (no torch).
"""
from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import Field, PositiveInt, model_validator

from dataproc.options import StageOptions
from llmforge.common import fs
from llmforge.common.resume import digest
from llmforge.ngram_overlap import DEFAULT_MIN_WORDS, DEFAULT_N, NgramIndex

CONTAMINATED_BY = "contaminated_by"
CONTAMINATED_NGRAM = "contaminated_ngram"
DROP_REASON = "eval_overlap"


class DecontaminateOptions(StageOptions):
    """Drop documents overlapping eval sets (GPT-3 / lm-evaluation-harness 13-gram overlap)."""

    enabled: bool = False
    eval_files: list[str] = Field(
        default_factory=list,
        description="eval sets (JSONL of the task formats or with 'text'; .txt: one item per line); local, s3://, gs://")
    ngram: PositiveInt = Field(default=DEFAULT_N, description="words per n-gram")
    normalization: Literal["words", "harness"] = Field(
        default="words", description="words: lower-case letter/digit runs; harness: lm-evaluation-harness's janitor")
    min_words: PositiveInt = Field(
        default=DEFAULT_MIN_WORDS, description="an eval text shorter than ngram words but this long counts whole")

    @model_validator(mode="after")
    def _usable(self) -> "DecontaminateOptions":
        if self.enabled and not self.eval_files:
            raise ValueError("decontaminate is enabled but eval_files is empty")
        if self.min_words > self.ngram:
            raise ValueError(f"min_words {self.min_words} > ngram {self.ngram}")
        return self


def build_index(options: DecontaminateOptions) -> NgramIndex:
    """The eval items' n-grams; UserError naming the file and row of an unusable item."""
    return NgramIndex.from_files(options.eval_files, options.ngram, options.normalization, options.min_words)


def eval_files_digest(options: DecontaminateOptions) -> str:
    """sha256 of the eval files' bytes, in order: part of the step's fingerprint, so an edited
    eval file redoes the step."""
    def chunks():
        for path in options.eval_files:
            filesystem, fpath = fs.resolve(path)
            with filesystem.open_input_stream(fpath, compression=None) as f:
                while chunk := f.read(1 << 24):
                    yield chunk
            yield b"\0"

    return digest(chunks(), 16)


def mark_contaminated(batch: pa.Table, index: NgramIndex, text_column: str = "text") -> pa.Table:
    """Batch UDF: `contaminated_by` (the first overlapping eval item as `file:row`, null when
    clean) and `contaminated_ngram` (the shared n-gram). The driver builds `index` (reading the
    eval files, so workers need no access to them). Rows whose text is null or empty (dropped
    earlier) stay clean."""
    by, grams = [], []
    for text in batch.column(text_column).to_pylist():
        hit = index.first_match(text) if text else None
        by.append(index.items[hit[0]].ref if hit else None)
        grams.append(hit[1] if hit else None)
    return (batch.append_column(CONTAMINATED_BY, pa.array(by, pa.string()))
            .append_column(CONTAMINATED_NGRAM, pa.array(grams, pa.string())))


def contaminated_rows(t: pa.Table) -> pa.Table:
    """The audit rows of the step: id, url, contaminated_by, contaminated_ngram of every
    removed document."""
    import pyarrow.compute as pc

    hit = t.filter(pc.is_valid(t.column(CONTAMINATED_BY)))
    cols = [c for c in ("id", "url") if c in hit.column_names] + [CONTAMINATED_BY, CONTAMINATED_NGRAM]
    return hit.select(cols)
