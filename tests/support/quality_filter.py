"""The quality model as a per-document stage: an independent path to the same scores, to check
the corpus stage's `QualityScorer` against."""
from __future__ import annotations

from typing import Sequence

from dataproc.corpus.quality.stage import SCORE_COLUMN, QualityModelOptions, QualityScorer
from dataproc.documents.contract import DocStage, StageResult, floats


class QualityFilter(DocStage):
    """The model under the `DocStage` contract; `process_batch` scores a whole batch at once,
    as the model is vectorised over documents.

    Drops `low_score` below `threshold`; with `keep_top_fraction` (or no threshold) it only
    scores, and the dataset-wide cut is applied afterwards with `quantile_threshold`.
    """

    columns = floats(SCORE_COLUMN)

    def __init__(self, options: QualityModelOptions):
        self.options = options
        self.scorer = QualityScorer(options)

    def process(self, text: str) -> StageResult:
        return self.process_batch([text])[0]

    def process_batch(self, texts: Sequence[str]) -> list[StageResult]:
        threshold = self.options.threshold
        out = []
        for s in self.scorer.scores(list(texts)).tolist():
            reason = "low_score" if threshold is not None and s < threshold else None
            out.append(StageResult(reason, {SCORE_COLUMN: s}))
        return out
