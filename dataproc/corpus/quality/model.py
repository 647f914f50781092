"""A fastText-style linear quality classifier: hashed word n-grams + logistic regression.

The recipe follows the model-based quality filters of DCLM (Li et al. 2024, arXiv:2406.11794,
a fastText bigram classifier of "reference" vs random web text) and FineWeb-Edu: a linear model
over hashed n-grams (`features`) is cheap enough to score every document of a crawl on CPU, and
ranks documents well when trained on a few thousand examples per class. numpy only.

- Training: logistic regression by mini-batch SGD with per-coordinate Adagrad step sizes and
  L2 on the touched coordinates, classes weighted to equal total weight, seeded shuffles,
  so a fixed seed gives bit-identical weights.
- A model file is ONE `.npz`: weights, bias, the feature config as JSON and a format version,
  loaded with `allow_pickle=False`. A model only means something with the features it was
  trained on, so a stage that expects a feature config refuses a file trained with another.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from dataproc.corpus.quality.features import QualityFeatureConfig, SparseBatch, featurize, featurize_batches
from llmforge.common.errors import UserError

FORMAT_VERSION = 1

def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1/(1+e^-z), without overflow warnings


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC from ranks (Mann-Whitney U); tied scores get their average rank."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    avg_rank = (starts + ends + 1) / 2.0  # 1-based ranks starts+1..ends, averaged
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(avg_rank, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class QualityModel:
    """Logistic regression over hashed n-gram features; P(high quality | text)."""

    def __init__(self, feature_config: QualityFeatureConfig | None = None, weights=None, bias: float = 0.0,
                 meta: dict | None = None):
        self.feature_config = feature_config or QualityFeatureConfig()
        n = self.feature_config.num_buckets
        self.weights = np.zeros(n, np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
        if self.weights.shape != (n,):
            raise ValueError(f"weights have shape {self.weights.shape}, the feature config needs ({n},)")
        self.bias = np.float32(bias)
        self.meta = dict(meta or {})

    # -- training ------------------------------------------------------------------------

    def fit(
        self,
        pos_texts: Sequence[str],
        neg_texts: Sequence[str],
        *,
        epochs: int = 5,
        lr: float = 0.2,
        l2: float = 1e-6,
        batch_size: int = 32,
        seed: int = 0,
        balance_classes: bool = True,
    ) -> "QualityModel":
        """Train from scratch on positive (high-quality) and negative texts; returns self."""
        texts = list(pos_texts) + list(neg_texts)
        y = np.r_[np.ones(len(pos_texts)), np.zeros(len(neg_texts))]
        return self.fit_sparse(featurize_batches(texts, self.feature_config), y, epochs=epochs, lr=lr, l2=l2,
                               batch_size=batch_size, seed=seed, balance_classes=balance_classes)

    def fit_sparse(self, X: SparseBatch, y: np.ndarray, *, epochs: int = 5, lr: float = 0.2, l2: float = 1e-6,
                   batch_size: int = 32, seed: int = 0, balance_classes: bool = True) -> "QualityModel":
        """Train from scratch on featurised documents with labels `y` (1 = high quality)."""
        y = np.asarray(y, dtype=np.float64)
        n = X.n_docs
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == n:
            raise ValueError(f"need texts of both classes, got {n_pos} positive, {n - n_pos} negative")
        if balance_classes:
            # Each class gets half the total weight: the 0.5 threshold then means "more like the
            # positives than the negatives" whatever the class sizes were.
            sample_w = np.where(y > 0, n / (2 * n_pos), n / (2 * (n - n_pos)))
        else:
            sample_w = np.ones(n)
        w = np.zeros(self.feature_config.num_buckets)
        g2 = np.zeros_like(w)  # Adagrad: running sum of squared gradients per coordinate
        b, b_g2, eps = 0.0, 0.0, 1e-8
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            order = rng.permutation(n)
            Xe, ye, we = X.take(order), y[order], sample_w[order]
            rows_all = Xe.rows()
            for r0 in range(0, n, batch_size):
                r1 = min(r0 + batch_size, n)
                e0, e1 = Xe.offsets[r0], Xe.offsets[r1]
                idx, val, rows = Xe.indices[e0:e1], Xe.values[e0:e1].astype(np.float64), rows_all[e0:e1] - r0
                m = r1 - r0
                z = np.bincount(rows, weights=w[idx] * val, minlength=m) + b
                err = (_sigmoid(z) - ye[r0:r1]) * we[r0:r1] / m  # d(mean weighted log loss)/dz
                touched, inv = np.unique(idx, return_inverse=True)
                grad = np.bincount(inv, weights=err[rows] * val, minlength=len(touched)) + l2 * w[touched]
                g2[touched] += grad * grad
                w[touched] -= lr * grad / (np.sqrt(g2[touched]) + eps)
                gb = err.sum()
                b_g2 += gb * gb
                b -= lr * gb / (np.sqrt(b_g2) + eps)
        self.weights = w.astype(np.float32)
        self.bias = np.float32(b)
        self.meta.update(epochs=epochs, lr=lr, l2=l2, batch_size=batch_size, seed=seed, n_train=int(n),
                         n_train_pos=int(y.sum()))
        return self

    # -- scoring -------------------------------------------------------------------------

    def decision_sparse(self, X: SparseBatch) -> np.ndarray:
        """Logits of featurised documents (float64)."""
        contrib = self.weights[X.indices].astype(np.float64) * X.values
        return np.bincount(X.rows(), weights=contrib, minlength=X.n_docs) + float(self.bias)

    def predict_proba(self, texts: Sequence[str | None], batch_size: int = 1024) -> np.ndarray:
        """P(high quality) per text, float64 in [0, 1]; None/"" get the no-feature score."""
        out = [_sigmoid(self.decision_sparse(featurize(texts[i : i + batch_size], self.feature_config)))
               for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros(0)

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write one `.npz` (atomically: a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
            np.savez_compressed(
                f,
                format_version=np.array(FORMAT_VERSION, dtype=np.int64),
                weights=self.weights,
                bias=np.array(self.bias, dtype=np.float32),
                feature_config=np.array(self.feature_config.model_dump_json()),
                meta=np.array(json.dumps(self.meta, sort_keys=True)),
            )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, expect: QualityFeatureConfig | None = None) -> "QualityModel":
        """Read a model file; with `expect`, refuse one trained with a different feature config."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise FileNotFoundError(f"quality model file not found: {path}") from None
        except (ValueError, OSError, EOFError) as err:
            raise UserError(f"{path} is not a quality model file (.npz): {err}") from None
        missing = {"format_version", "weights", "bias", "feature_config"} - arrays.keys()
        if missing:
            raise UserError(f"{path} is not a quality model file: missing {sorted(missing)}")
        version = int(arrays["format_version"])
        if version != FORMAT_VERSION:
            raise UserError(f"{path} has model format version {version}; this code reads version {FORMAT_VERSION}")
        cfg = QualityFeatureConfig.model_validate_json(str(arrays["feature_config"]))
        if expect is not None and cfg != expect:
            raise UserError(
                f"quality model {path} was trained with feature config {cfg.model_dump()}, but this stage "
                f"expects {expect.model_dump()}: retrain the model or change the stage's feature_config"
            )
        meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
        return cls(cfg, arrays["weights"], float(arrays["bias"]), meta)
