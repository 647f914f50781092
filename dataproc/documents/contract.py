"""The one contract every per-document stage follows, filters and rewriters alike.

After datatrove's `BaseFilter`: a stage looks at one document and says what happens to it; the
runner does batching, skipping rows already dropped, column writing and drop counting, so a
stage stays a few lines of document logic and needs no adapter of its own. A single result type
covers all of them because the stages differ only in what they return: a drop reason (URL,
Gopher, FineWeb), typed annotations (language's `lang` string next to its score), a rewritten
text (PII), or both (C4 drops pages *and* lines; extraction turns HTML into text and a title).

After NeMo Curator's column contracts, a stage declares the column it reads and the columns it
writes with their Arrow types, so every block of a run has one schema even when a block holds
no row the stage looked at.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import pyarrow as pa

__all__ = ["TEXT", "Column", "DocStage", "StageResult", "floats"]

TEXT = "text"


@dataclass(frozen=True)
class Column:
    """A column a stage writes. `missing` fills rows the stage did not look at (dropped before
    it): NaN for floats, so "not scored" never reads as a score of 0; None otherwise."""

    name: str
    type: pa.DataType = field(default_factory=pa.float64)
    missing: Any = None

    def __post_init__(self) -> None:
        if self.missing is None and pa.types.is_floating(self.type):
            object.__setattr__(self, "missing", math.nan)

    def coerce(self, value: Any) -> Any:
        """A float column takes ints and None (as NaN) too: counts are natural as ints."""
        if pa.types.is_floating(self.type):
            return self.missing if value is None else float(value)
        return value


def floats(*names: str) -> tuple[Column, ...]:
    return tuple(Column(name) for name in names)


@dataclass(frozen=True, slots=True)
class StageResult:
    """What a stage decided for one document.

    `drop`: why to drop it, or None to keep it. `scores`: values of the stage's columns by name
    (a missing one is filled as if the row was not looked at). `text`: the document's new text,
    or None to leave it as it is; only stages declaring `rewrites` may set it.
    """

    drop: str | None = None
    scores: Mapping[str, Any] = field(default_factory=dict)
    text: str | None = None


class DocStage(ABC):
    """One per-document stage: built once per worker from its options, then `process`.

    `reads`: the column `process` gets (`url` for the URL filter, `html` for extraction).
    `rewrites`: its results carry the new `text` (the column is created if the batch has none).
    `consumes`: no later stage or output needs the `reads` column, so it goes after this stage.
    `reads_utf8`: `process` takes the `reads` string column as its UTF-8 bytes as well (or only,
    when every stage reading it says so): for a stage whose library parses UTF-8, a page need
    never become a Python str.
    `columns`: what it writes, in order; an instance may set its own when options decide them.
    """

    reads: ClassVar[str] = TEXT
    rewrites: ClassVar[bool] = False
    consumes: ClassVar[bool] = False
    reads_utf8: ClassVar[bool] = False
    columns: tuple[Column, ...] = ()

    @abstractmethod
    def process(self, value: Any) -> StageResult:
        """The decision for one document, given its `reads` value."""

    def process_batch(self, values: Sequence[Any]) -> list[StageResult]:
        """Override when a batch costs less than one call per document (a model, say)."""
        return [self.process(v) for v in values]
