"""The `quality_model` corpus stage: options and the Ray Data scorer that adds `quality_score`."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from dataproc.corpus.quality.features import QualityFeatureConfig
from dataproc.corpus.quality.model import QualityModel
from dataproc.options import StageOptions

SCORE_COLUMN = "quality_score"

class QualityModelOptions(StageOptions):
    """The `quality_model` stage. Off by default: it needs a trained model file."""

    enabled: bool = False
    model_path: str | None = Field(default=None, validate_default=True, description=".npz from train_quality_model")
    threshold: float | None = Field(default=0.5, ge=0.0, le=1.0, description="drop documents scoring below")
    keep_top_fraction: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="keep this fraction of best-scoring documents (a dataset-wide quantile; excludes threshold)",
    )
    feature_config: QualityFeatureConfig | None = Field(
        default=None, description="if set, the model file must have been trained with exactly these features"
    )

    @model_validator(mode="before")
    @classmethod
    def _top_fraction_replaces_default_threshold(cls, data):
        # `threshold` has a default, so a config naming only keep_top_fraction means "instead of
        # the threshold"; naming both is the contradiction reported below.
        if isinstance(data, dict) and data.get("keep_top_fraction") is not None and "threshold" not in data:
            data = {**data, "threshold": None}
        return data

    @field_validator("model_path")
    @classmethod
    def _model_path_when_enabled(cls, value, info):
        if info.data.get("enabled") and not value:
            raise ValueError("model_path is required when the quality_model stage is enabled")
        return value

    @field_validator("keep_top_fraction")
    @classmethod
    def _one_cut(cls, value, info):
        if value is not None and info.data.get("threshold") is not None:
            raise ValueError(
                "set either threshold or keep_top_fraction, not both (threshold: null to use the fraction)"
            )
        return value


class QualityScorer:
    """Ray Data `map_batches` callable: adds float64 `quality_score` to every row.

    The model is loaded once here, so use it with an actor pool (`compute=ActorPoolStrategy`)
    rather than as a task. Null text scores NaN; empty text scores the model's prior.
    """

    def __init__(self, options: QualityModelOptions, text_column: str = "text", score_column: str = SCORE_COLUMN):
        if not options.model_path:
            raise ValueError("QualityScorer needs options.model_path")
        self.model = QualityModel.load(options.model_path, expect=options.feature_config)
        self.text_column, self.score_column = text_column, score_column

    def scores(self, texts: Sequence[str | None]) -> np.ndarray:
        out = self.model.predict_proba(texts)
        out[np.fromiter((t is None for t in texts), dtype=bool, count=len(texts))] = np.nan
        return out

    def __call__(self, batch: pa.Table | pa.RecordBatch) -> pa.Table:
        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        if self.text_column not in batch.column_names:
            raise KeyError(f"quality scoring needs a {self.text_column!r} column, batch has {batch.column_names}")
        scores = pa.array(self.scores(batch.column(self.text_column).to_pylist()), type=pa.float64())
        if self.score_column in batch.column_names:
            return batch.set_column(batch.column_names.index(self.score_column), self.score_column, scores)
        return batch.append_column(self.score_column, scores)
