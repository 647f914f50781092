"""The quality model under the `DocFilter` contract: an independent path to the same scores,
to check the corpus stage's `QualityScorer` against."""
from __future__ import annotations

from typing import ClassVar, Sequence

from dataproc.corpus.quality.stage import SCORE_COLUMN, QualityModelOptions, QualityScorer
from dataproc.documents.contract import DocFilter, Scores


class QualityFilter(DocFilter):
    """The model under the `DocFilter` contract (`check_batch` scores a whole batch at once).

    Drops `low_score` below `threshold`; with `keep_top_fraction` (or no threshold) it only
    scores, and the dataset-wide cut is applied afterwards with `quantile_threshold`.
    """

    name: ClassVar[str] = "quality_model"
    score_columns: ClassVar[tuple[str, ...]] = (SCORE_COLUMN,)

    def __init__(self, options: QualityModelOptions):
        self.options = options
        self.scorer = QualityScorer(options)

    def check(self, text: str) -> tuple[str | None, Scores]:
        return self.check_batch([text])[0]

    def check_batch(self, texts: Sequence[str]) -> list[tuple[str | None, Scores]]:
        threshold = self.options.threshold
        out = []
        for s in self.scorer.scores(list(texts)).tolist():
            reason = "low_score" if threshold is not None and s < threshold else None
            out.append((reason, {SCORE_COLUMN: s}))
        return out
