"""Hashed word n-gram features for the quality classifier.

Lowercased `\\w+` tokens (Python's Unicode `\\w`) and their n-grams up to `ngrams`, hashed
into `2**num_buckets_log2` buckets with a signed hash (colliding features cancel in expectation
rather than add up: Weinberger et al. 2009). Counts are log1p-scaled and each document's vector
is L2-normalised, so long and short documents score on the same scale. The tokens are `\\w+`
rather than `text_utils.words` on purpose: that spaCy-like tokenizer is 4x slower here, and the
features are defined as word n-grams.

A batch is featurised in one go: tokens of all documents are dictionary-encoded with pyarrow,
only the distinct tokens are hashed with xxhash (the one Python loop per token type, not per
token), n-gram hashes are combined with integer arithmetic on numpy arrays, and (document,
bucket) pairs are aggregated with one sort. The result is a CSR-like `SparseBatch` (indices,
values, offsets); there is no scipy dependency.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field

from llmforge.common.config import StrictModel

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
