"""A fastText-style linear quality classifier: hashed word n-grams + logistic regression.

The recipe follows the model-based quality filters of DCLM (Li et al. 2024, arXiv:2406.11794,
a fastText bigram classifier of "reference" vs random web text) and FineWeb-Edu: a linear model
over hashed n-grams is cheap enough to score every document of a crawl on CPU, and ranks
documents well when trained on a few thousand examples per class. Here it is numpy only:

- Features: lowercased `\\w+` tokens (Python's Unicode `\\w`), their n-grams up to
  `ngrams`, hashed into `2**num_buckets_log2` buckets with a signed hash (colliding features
  cancel in expectation rather than add up: Weinberger et al. 2009). Counts are log1p-scaled and each
  document's vector is L2-normalised, so long and short documents score on the same scale.
  The tokens are `\\w+` rather than `text_utils.words` on purpose: that spaCy-like tokenizer
  is 4x slower here, and the features are defined as word n-grams.
- A batch is featurised in one go: tokens of all documents are dictionary-encoded with
  pyarrow, only the distinct tokens are hashed with xxhash (the one Python loop per token
  type, not per token), n-gram hashes are combined with integer arithmetic on numpy arrays,
  and (document, bucket) pairs are aggregated with one sort. The result is a CSR-like
  `SparseBatch` (indices, values, offsets); there is no scipy dependency.
- Training: logistic regression by mini-batch SGD with per-coordinate Adagrad step sizes and
  L2 on the touched coordinates, classes weighted to equal total weight, seeded shuffles,
  so a fixed seed gives bit-identical weights.
- A model file is ONE `.npz`: weights, bias, the feature config as JSON and a format version,
  loaded with `allow_pickle=False`. A model only means something with the features it was
  trained on, so a stage that expects a feature config refuses a file trained with another.

`QualityScorer` is the Ray Data `map_batches` callable (loads the model once per actor and adds
`quality_score`); `QualityFilter` is the same model under the `DocFilter` contract.
`train_quality_model` trains from text/JSONL/Parquet files and reports held-out accuracy and
ROC AUC; `python -m dataproc.quality --pos A --neg B --out model.npz` runs it.
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field, field_validator, model_validator

from dataproc.filters.base import DocFilter, Scores, StageOptions
from llmforge.common.config import StrictModel

FORMAT_VERSION = 1
SCORE_COLUMN = "quality_score"
_TOKEN_RE = re.compile(r"\w+")
_U64 = np.uint64
# Odd 64-bit constants (splitmix64 / golden ratio): multiplying by them and xor-shifting mixes
# every input bit into every output bit, so bucket (low bits) and sign (top bit) are independent.
_MIX1, _MIX2, _GOLDEN = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB), _U64(0x9E3779B97F4A7C15)


class QualityFeatureConfig(StrictModel):
    """How text becomes a feature vector. Part of the model: stored in the model file."""

    ngrams: int = Field(default=2, ge=1, le=5, description="word n-grams 1..ngrams are features")
    # 2**26 float32 weights are 256 MiB; more buckets than that buys nothing at this scale.
    num_buckets_log2: int = Field(default=20, ge=8, le=26, description="2**this hash buckets")
    hash_seed: int = Field(default=0, ge=0, lt=2**64)
    max_chars: int = Field(default=20000, gt=0, description="only the first max_chars of a document count")

    @property
    def num_buckets(self) -> int:
        return 1 << self.num_buckets_log2


# ------------------------------------------------------------------------------ features


@dataclass
class SparseBatch:
    """Feature vectors of `n_docs` documents in CSR layout: document i's entries are
    `indices[offsets[i]:offsets[i+1]]` (bucket, ascending) with `values` (float32)."""

    indices: np.ndarray  # int64 bucket ids
    values: np.ndarray  # float32
    offsets: np.ndarray  # int64, n_docs + 1

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    def rows(self) -> np.ndarray:
        """Document index of every entry."""
        return np.repeat(np.arange(self.n_docs, dtype=np.int64), np.diff(self.offsets))

    def take(self, docs: np.ndarray) -> "SparseBatch":
        """The rows `docs`, in that order (a gather of whole rows, no Python loop)."""
        docs = np.asarray(docs, dtype=np.int64)
        starts = self.offsets[docs]
        lens = self.offsets[docs + 1] - starts
        new_offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(lens, out=new_offsets[1:])
        src = np.arange(new_offsets[-1], dtype=np.int64) + np.repeat(starts - new_offsets[:-1], lens)
        return SparseBatch(self.indices[src], self.values[src], new_offsets)

    @staticmethod
    def concat(parts: Sequence["SparseBatch"]) -> "SparseBatch":
        if not parts:
            return SparseBatch(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(1, np.int64))
        offsets = [parts[0].offsets]
        for p in parts[1:]:
            offsets.append(p.offsets[1:] + offsets[-1][-1])
        return SparseBatch(
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.values for p in parts]),
            np.concatenate(offsets),
        )


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic is intended)."""
    h = h ^ (h >> _U64(30))
    h = h * _MIX1
    h = h ^ (h >> _U64(27))
    h = h * _MIX2
    return h ^ (h >> _U64(31))


def _run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Index of the first element of each run of equal values in a sorted, non-empty array."""
    change = np.empty(len(sorted_keys), dtype=bool)
    change[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=change[1:])
    return np.flatnonzero(change)


def _token_hashes(texts: Sequence[str | None], cfg: QualityFeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash per token of all documents in order, int64 token count per document)."""
    token_lists = [_TOKEN_RE.findall(t[: cfg.max_chars].lower()) if t else [] for t in texts]
    lens = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
    if lens.sum() == 0:
        return np.zeros(0, _U64), lens
    flat = pa.array(itertools.chain.from_iterable(token_lists), type=pa.large_string())
    encoded = pc.dictionary_encode(flat)
    # A web batch has ~5x fewer distinct tokens than tokens: hash each distinct one once.
    vocab = encoded.dictionary.cast(pa.large_binary()).to_pylist()
    seed = cfg.hash_seed
    vocab_hash = np.fromiter((xxhash.xxh64_intdigest(tok, seed) for tok in vocab), dtype=_U64, count=len(vocab))
    return vocab_hash[encoded.indices.to_numpy(zero_copy_only=False)], lens


def featurize(texts: Sequence[str | None], cfg: QualityFeatureConfig) -> SparseBatch:
    """Signed-hashed, log1p-scaled, L2-normalised n-gram vectors of `texts` (None counts as "")."""
    n_docs = len(texts)
    tok_hash, lens = _token_hashes(texts, cfg)
    doc_of_tok = np.repeat(np.arange(n_docs, dtype=np.int64), lens)
    feat_hashes, feat_docs = [_mix64(tok_hash)], [doc_of_tok]
    gram = tok_hash
    for n in range(2, cfg.ngrams + 1):
        # gram[i] covers tokens i..i+n-1; it is valid where token i+n-1 is in the same document.
        gram = _mix64(gram[:-1] * _GOLDEN + tok_hash[n - 1 :])
        same_doc = doc_of_tok[: len(gram)] == doc_of_tok[n - 1 :]
        feat_hashes.append(_mix64(gram[same_doc] ^ _U64(n)))  # the ^n keeps orders apart
        feat_docs.append(doc_of_tok[: len(gram)][same_doc])
    hashes = np.concatenate(feat_hashes)
    docs = np.concatenate(feat_docs)

    nb_log2 = cfg.num_buckets_log2
    if len(hashes) == 0:
        return SparseBatch(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(n_docs + 1, np.int64))
    # Views, not copies: both values are < 2**63.
    bucket = (hashes & _U64(cfg.num_buckets - 1)).view(np.int64)
    positive = (hashes >> _U64(63)).view(np.int64)
    # One sort aggregates everything: key = (doc, bucket, sign); equal keys are adjacent.
    keys = (docs << (nb_log2 + 1)) | (bucket << 1) | positive
    keys.sort()
    starts = _run_starts(keys)
    counts = np.diff(starts, append=len(keys))
    ukeys = keys[starts]
    signed = np.where(ukeys & 1, counts, -counts)
    # Merge the +/- entries of one (doc, bucket): colliding features of opposite sign cancel.
    pair = ukeys >> 1
    pstarts = _run_starts(pair)
    total = np.add.reduceat(signed, pstarts)
    pair = pair[pstarts]
    keep = total != 0
    pair, total = pair[keep], total[keep]
    values = np.sign(total) * np.log1p(np.abs(total))
    rows = pair >> nb_log2
    norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=n_docs))
    values = values / norms[rows]
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_docs), out=offsets[1:])
    return SparseBatch(pair & (cfg.num_buckets - 1), values.astype(np.float32), offsets)


def featurize_batches(texts: Sequence[str | None], cfg: QualityFeatureConfig, batch_size: int = 1024) -> SparseBatch:
    """`featurize` in slices: ~1k documents keep the temporaries of one sort near 100 MB
    (4k: ~400 MB more peak memory and no faster)."""
    return SparseBatch.concat([featurize(texts[i : i + batch_size], cfg) for i in range(0, len(texts), batch_size)])


# ------------------------------------------------------------------------------ model


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


def quantile_threshold(scores: np.ndarray | Sequence[float], fraction: float) -> float:
    """The score t such that keeping `score >= t` keeps the top `fraction` of `scores`.

    Keeps ceil(fraction * n) documents, plus any tied with the last one kept. NaN scores (rows
    that were not scored) are ignored. Computed over a whole dataset, this turns
    `keep_top_fraction` into a threshold the per-batch stage can apply.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    s = np.asarray(scores, dtype=np.float64)
    s = s[~np.isnan(s)]
    if len(s) == 0:
        raise ValueError("no scores to take a quantile of")
    k = max(1, int(np.ceil(fraction * len(s) - 1e-9)))
    return float(np.partition(s, len(s) - k)[len(s) - k])


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
            raise ValueError(f"{path} is not a quality model file (.npz): {err}") from None
        missing = {"format_version", "weights", "bias", "feature_config"} - arrays.keys()
        if missing:
            raise ValueError(f"{path} is not a quality model file: missing {sorted(missing)}")
        version = int(arrays["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"{path} has model format version {version}; this code reads version {FORMAT_VERSION}")
        cfg = QualityFeatureConfig.model_validate_json(str(arrays["feature_config"]))
        if expect is not None and cfg != expect:
            raise ValueError(
                f"quality model {path} was trained with feature config {cfg.model_dump()}, but this stage "
                f"expects {expect.model_dump()}: retrain the model or change the stage's feature_config"
            )
        meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
        return cls(cfg, arrays["weights"], float(arrays["bias"]), meta)


# ------------------------------------------------------------------------------ stage


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


# ------------------------------------------------------------------------------ training from files


def iter_texts(path: str | Path, txt_mode: str = "lines", text_field: str = "text") -> Iterator[str]:
    """Documents of one file, blanks skipped.

    .txt[.gz]: one document per line (`txt_mode="lines"`) or per blank-line-separated block
    (`"paragraphs"`); .jsonl/.json[l].gz: the `text_field` of each line; .parquet: that column.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for value in pq.read_table(path, columns=[text_field]).column(text_field).to_pylist():
            if value and value.strip():
                yield value
        return
    stem = name.removesuffix(".gz")
    is_json = stem.endswith((".jsonl", ".json", ".ndjson"))
    if not is_json and not stem.endswith((".txt", ".raw")):  # .raw: WikiText's raw files
        raise ValueError(f"{path}: unsupported file type (use .txt, .raw, .jsonl, .json.gz, .jsonl.gz or .parquet)")
    if txt_mode not in ("lines", "paragraphs"):
        raise ValueError(f"txt_mode must be 'lines' or 'paragraphs', got {txt_mode!r}")
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        if is_json:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line).get(text_field)
                except (json.JSONDecodeError, AttributeError) as err:
                    raise ValueError(f"{path}:{lineno}: not a JSON object per line ({err})") from None
                if isinstance(value, str) and value.strip():
                    yield value
        elif txt_mode == "lines":
            yield from (line.rstrip("\r\n") for line in f if line.strip())
        else:
            yield from (block.strip() for block in re.split(r"\n\s*\n", f.read()) if block.strip())


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
        raise ValueError(f"need at least 2 documents per class, read {len(pos)} positive and {len(neg)} negative")
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
        # Balanced accuracy would hide nothing here either, but plain accuracy is what is asked.
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataproc.quality", description="train a quality classifier")
    parser.add_argument("--pos", nargs="+", required=True, help="high-quality files (.txt/.jsonl[.gz]/.parquet)")
    parser.add_argument("--neg", nargs="+", required=True, help="low-quality / random web files")
    parser.add_argument("--out", required=True, help="model file to write (.npz)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ngrams", type=int, default=2)
    parser.add_argument("--buckets-log2", type=int, default=20)
    parser.add_argument("--txt-mode", choices=("lines", "paragraphs"), default="lines")
    parser.add_argument("--max-docs-per-class", type=int, default=None)
    args = parser.parse_args(argv)
    cfg = QualityFeatureConfig(ngrams=args.ngrams, num_buckets_log2=args.buckets_log2)
    metrics = train_quality_model(args.pos, args.neg, args.out, feature_config=cfg, epochs=args.epochs,
                                  seed=args.seed, txt_mode=args.txt_mode,
                                  max_docs_per_class=args.max_docs_per_class)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
