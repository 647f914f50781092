"""Train the quality classifier from text / JSONL / Parquet files and report held-out accuracy
and ROC AUC (`llmforge data train-quality`)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from dataproc.corpus.quality.features import QualityFeatureConfig
from dataproc.corpus.quality.model import QualityModel, roc_auc
from dataproc.reading.text_files import iter_texts
from llmforge.common.errors import UserError


def _read_all(paths: Iterable[str | Path], txt_mode: str, text_field: str) -> list[str]:
    return [t for p in paths for t in iter_texts(p, txt_mode, text_field)]


def _subsample(docs: list[str], k: int, rng: np.random.Generator) -> list[str]:
    """A seeded random `k` of `docs`, in their original order."""
    return docs if len(docs) <= k else [docs[i] for i in sorted(rng.permutation(len(docs))[:k])]


def _holdout_split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    k = int(round(n * fraction)) if fraction > 0 else 0
    if fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)  # at least one held out, at least one to train on
    return order[k:], order[:k]


def train_quality_model(
    positive_paths: Sequence[str | Path],
    negative_paths: Sequence[str | Path],
    out_path: str | Path,
    *,
    feature_config: QualityFeatureConfig | None = None,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    epochs: int = 5,
    lr: float = 0.2,
    l2: float = 1e-6,
    batch_size: int = 32,
    txt_mode: str = "lines",
    text_field: str = "text",
    max_docs_per_class: int | None = None,
) -> dict:
    """Train on the files, hold out `holdout_fraction` of each class (seeded), save to `out_path`.

    The saved model is the one trained on the remaining 90%, so the reported held-out numbers
    describe exactly the file written. Returns the metrics (also stored in the file's meta).
    """
    cfg = feature_config or QualityFeatureConfig()
    rng = np.random.default_rng(seed)
    pos = _read_all(positive_paths, txt_mode, text_field)
    neg = _read_all(negative_paths, txt_mode, text_field)
    if max_docs_per_class is not None:
        pos, neg = (_subsample(docs, max_docs_per_class, rng) for docs in (pos, neg))
    if len(pos) < 2 or len(neg) < 2:
        raise UserError(f"need at least 2 documents per class, read {len(pos)} positive and {len(neg)} negative")
    # Stratified: both classes are in the held-out set whatever the class ratio.
    pos_tr, pos_ho = _holdout_split(len(pos), holdout_fraction, rng)
    neg_tr, neg_ho = _holdout_split(len(neg), holdout_fraction, rng)

    start = time.perf_counter()
    model = QualityModel(cfg).fit(
        [pos[i] for i in pos_tr], [neg[i] for i in neg_tr],
        epochs=epochs, lr=lr, l2=l2, batch_size=batch_size, seed=seed,
    )
    train_s = time.perf_counter() - start
    metrics: dict = {
        "n_pos": len(pos), "n_neg": len(neg), "n_train": len(pos_tr) + len(neg_tr),
        "n_heldout": len(pos_ho) + len(neg_ho), "train_seconds": round(train_s, 3),
        # End to end: featurising once plus all epochs, per training document.
        "train_docs_per_s": round((len(pos_tr) + len(neg_tr)) / train_s, 1) if train_s > 0 else None,
    }
    if len(pos_ho) + len(neg_ho):
        start = time.perf_counter()
        scores = model.predict_proba([pos[i] for i in pos_ho] + [neg[i] for i in neg_ho])
        score_s = time.perf_counter() - start
        labels = np.r_[np.ones(len(pos_ho), bool), np.zeros(len(neg_ho), bool)]
        # Accuracy at the 0.5 cut depends on the class ratio; the AUC next to it does not.
        metrics.update(
            heldout_accuracy=float(((scores >= 0.5) == labels).mean()),
            heldout_auc=roc_auc(labels, scores),
            score_docs_per_s=round(len(scores) / score_s, 1) if score_s > 0 else None,
        )
    model.meta.update(metrics=metrics, positive_paths=[str(p) for p in positive_paths],
                      negative_paths=[str(p) for p in negative_paths])
    model.save(out_path)
    metrics["model_path"] = str(out_path)
    return metrics
