"""FineWeb's own quality rules.

Source: Penedo et al. 2024, "The FineWeb Datasets: Decanting the Web for the Finest Text
Data at Scale" (arXiv:2406.17557), section 3.5 ("custom filters"); definitions and defaults
as in datatrove's `FineWebQualityFilter`
(huggingface/datatrove, src/datatrove/pipeline/filters/fineweb_quality_filter.py).

Lines are `text.split("\\n")`, not stripped (a line with trailing spaces does not end in
punctuation, exactly as in datatrove):
    line_punct_ratio  lines ending in . ' " ! ? / lines; drop when <= 0.12
    short_line_ratio  lines of <= 30 characters / lines; drop when >= 0.67
    char_dup_ratio    characters of repeated non-blank lines (each occurrence after the first)
                      / characters of the text without newlines; drop when >= 0.01
    newline_ratio     newlines / word tokens; drop when > 0.3 ("list_ratio": list-like pages)

Lines and the word count come from the document's shared `DocumentWords` view: after C4, the
cleaned text's, whose token count C4 derived from the page's.

Note the comparison directions differ per rule; they are datatrove's, so a document exactly
at the threshold is dropped by the first three rules and kept by the last.
"""
from __future__ import annotations

import math

from pydantic import Field

from dataproc.documents.contract import DocStage, StageResult, floats
from dataproc.options import StageOptions
from dataproc.documents.filters.text_utils import document_words, find_duplicates

NAN = math.nan
STOP_CHARS = (".", "'", '"', "!", "?")


class FineWebOptions(StageOptions):
    line_punct_thr: float | None = Field(0.12, ge=0.0, le=1.0)
    # Keep documents with no punctuated line at all (datatrove's option for non-Latin scripts).
    line_punct_exclude_zero: bool = False
    short_line_thr: float | None = Field(0.67, ge=0.0, le=1.0)
    short_line_length: int = Field(30, ge=0)
    char_duplicates_ratio: float | None = Field(0.01, ge=0.0, le=1.0)
    new_line_ratio: float | None = Field(0.3, ge=0.0)


class FineWebFilter(DocStage):
    """FineWeb's line-level rules. Stops at the first failed rule; later scores are NaN."""

    columns = floats(
        "fineweb_line_punct_ratio",
        "fineweb_short_line_ratio",
        "fineweb_char_dup_ratio",
        "fineweb_newline_ratio",
    )

    def __init__(self, options: FineWebOptions | None = None):
        self.opts = options or FineWebOptions()

    def process(self, text: str) -> StageResult:
        s = {c.name: NAN for c in self.columns}
        o = self.opts
        view = document_words(text)
        lines = view.newline_split
        n_lines = len(lines)

        ratio = sum(1 for line in lines if line.endswith(STOP_CHARS)) / n_lines
        s["fineweb_line_punct_ratio"] = ratio
        if (
            o.line_punct_thr is not None
            and ratio <= o.line_punct_thr
            and not (ratio == 0 and o.line_punct_exclude_zero)
        ):
            return StageResult("line_punct_ratio", s)

        ratio = sum(1 for line in lines if len(line) <= o.short_line_length) / n_lines
        s["fineweb_short_line_ratio"] = ratio
        if o.short_line_thr is not None and ratio >= o.short_line_thr:
            return StageResult("short_line_ratio", s)

        n_chars = len(text) - (n_lines - 1)  # newlines excluded
        non_blank = [line for line in lines if line.strip()]
        ratio = find_duplicates(non_blank)[1] / n_chars if n_chars else 0.0
        s["fineweb_char_dup_ratio"] = ratio
        if o.char_duplicates_ratio is not None and ratio >= o.char_duplicates_ratio:
            return StageResult("char_dup_ratio", s)

        n_words = view.n_tokens
        ratio = (n_lines - 1) / n_words if n_words else (math.inf if n_lines > 1 else 0.0)
        s["fineweb_newline_ratio"] = ratio
        if o.new_line_ratio is not None and ratio > o.new_line_ratio:
            return StageResult("list_ratio", s)
        return StageResult(None, s)
