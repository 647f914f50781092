"""The filter contract (after datatrove's `BaseFilter`): a filter looks at one document and
returns why it should be dropped (or None to keep it) plus named scores. Batching, skipping
already-dropped rows, score columns and per-reason counting live in `dataproc.batch`, so a
filter stays a few lines of document logic.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

from llmforge.common.config import StrictModel

Scores = dict[str, float]


class StageOptions(StrictModel):
    """Options every stage has."""

    enabled: bool = True


class DocFilter(ABC):
    """Keep/drop one document.

    `name` is the stage name in the config and the prefix of drop reasons in stats.
    `score_columns` lists the keys `check` returns, in order: each becomes a float column.
    """

    name: ClassVar[str]
    score_columns: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def check(self, text: str) -> tuple[str | None, Scores]:
        """Return (drop reason or None to keep, scores keyed by `score_columns`)."""

    def check_batch(self, texts: Sequence[str]) -> list[tuple[str | None, Scores]]:
        """Override when a whole batch is cheaper than one call per document (e.g. a model)."""
        return [self.check(t) for t in texts]


class DocTransform(ABC):
    """Rewrite one document's text (e.g. PII redaction); never drops."""

    name: ClassVar[str]
    score_columns: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def transform(self, text: str) -> tuple[str, Scores]:
        """Return (new text, scores keyed by `score_columns`)."""
