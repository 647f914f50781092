"""The per-document stages, in run order: the one list the config, the order and the runner
are derived from, so adding a stage is one module plus one line here.

The order is the pipeline's: cheap URL checks before paying for extraction, then filters from
cheapest to dearest, redaction last so that it only runs on text that is kept.

A registry is an immutable value, not a place to register into: a variant (a test's extra
stage, say) is a new registry, and `dataproc.config.stages_config_model` turns it into its own
config model that the runner reads it back from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from pydantic import BaseModel

from dataproc.documents.contract import DocStage
from dataproc.documents.extract import ExtractOptions, ExtractStage
from dataproc.documents.filters.c4 import C4Filter, C4Options
from dataproc.documents.filters.fineweb import FineWebFilter, FineWebOptions
from dataproc.documents.filters.gopher import (
    GopherQualityFilter,
    GopherQualityOptions,
    GopherRepetitionFilter,
    GopherRepetitionOptions,
)
from dataproc.documents.filters.language import LanguageFilter, LanguageOptions
from dataproc.documents.filters.pii import PiiOptions, PiiRedactor
from dataproc.documents.filters.url import UrlFilter, UrlFilterOptions


@dataclass(frozen=True)
class StageSpec:
    """`name`: the config key and the prefix of drop reasons ("c4:too_few_sentences").
    `options`: the model of its config section. `build`: the stage from validated options."""

    name: str
    options: type[BaseModel]
    build: Callable[[Any], DocStage]


def is_enabled(options: BaseModel) -> bool:
    """Options without an `enabled` switch belong to a stage that always runs (extraction)."""
    return getattr(options, "enabled", True)


class StageRegistry:
    """Stage specs in run order, looked up by name."""

    def __init__(self, specs: Iterable[StageSpec]):
        self._specs = tuple(specs)
        self._by_name = {spec.name: spec for spec in self._specs}
        if len(self._by_name) != len(self._specs):
            raise ValueError(f"duplicate stage names in {self.names()}")

    def __iter__(self) -> Iterator[StageSpec]:
        return iter(self._specs)

    def __getitem__(self, name: str) -> StageSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown stage {name!r}; known: {list(self._by_name)}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self._specs)

    def with_stage(self, spec: StageSpec, after: str) -> "StageRegistry":
        """A copy with `spec` run right after stage `after`."""
        at = self.names().index(self[after].name) + 1
        return StageRegistry((*self._specs[:at], spec, *self._specs[at:]))


DOCUMENT_STAGES = StageRegistry(
    [
        StageSpec("url_filter", UrlFilterOptions, UrlFilter),
        StageSpec("extract", ExtractOptions, ExtractStage),
        StageSpec("language", LanguageOptions, LanguageFilter),
        StageSpec("gopher_repetition", GopherRepetitionOptions, GopherRepetitionFilter),
        StageSpec("gopher_quality", GopherQualityOptions, GopherQualityFilter),
        StageSpec("c4", C4Options, C4Filter),
        StageSpec("fineweb", FineWebOptions, FineWebFilter),
        StageSpec("pii", PiiOptions, PiiRedactor),
    ]
)
