r"""MinHash signatures and LSH band keys, vectorised over a whole batch of documents.

Defaults reproduce FineWeb's near-dedup recipe: word 5-grams, 14 bands x 8 rows = 112 hashes
of 64 bits. Two documents share a band with probability 1 - (1 - J**8)**14, which is 0.5 at
J ~ 0.72 and 0.95 at J ~ 0.83.

Shingles are exactly those of `dataproc.synthetic.ground_truth.shingles` (the ground truth the sample writer
records): Python `str.lower()`, then `re.findall(r"\w+")` words, then every window of `ngram`
consecutive words. A document with fewer than `ngram` words has one shingle, all its words (as
`ground_truth.shingles` does); an empty document has one fixed "empty" shingle, so all empty
documents share one signature (`ground_truth.jaccard` of two empty texts is 1 too).

How a batch is computed, with no Python loop over words or shingles:
1. Join the lowered texts and view them as one uint32 array of code points; a 0x110000-entry
   table says which code points Python's `\w` matches, so word starts/ends are two numpy diffs.
2. Word hash: polynomial hash of the word's code points from one prefix sum over the batch,
   (H[end] - H[start]) * B**-start, then fmix64 (B odd, so B**-1 exists mod 2**64).
3. Shingle hash: acc*K + h(next word) folded over the window for all windows at once, fmix64.
4. Permutation j maps a shingle hash x to (x ^ s_j) * a_j mod 2**64 (a_j odd: a bijection); the
   shingle hashes are already fmix64 outputs, so this cheap family is enough for min-wise
   ordering (the tests check estimated against exact Jaccard). A chunk of shingles becomes one
   (n_hashes, chunk) array; per-document minima come from `np.minimum.reduceat`.
Batches are cut into slices of about `_SLICE_CHARS` characters, which bounds peak memory
(about 40 bytes per character of a slice) whatever the batch size.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field, PositiveInt, model_validator

from dataproc.corpus.dedup._hashing import U64, fmix64, geometric, random_u64
from dataproc.options import StageOptions

_FOLD = U64(0x9E3779B97F4A7C15)  # odd multiplier for order-sensitive folding
_CHAR_BASE = 0x9FB21C651E98DF25  # odd: invertible mod 2**64
_CHAR_BASE_INV = pow(_CHAR_BASE, -1, 1 << 64)
_LEN_MIX = U64(0xC2B2AE3D27D4EB4F)
_EMPTY_SHINGLE = U64(0x5EED0E3D7E1A1B2C)
_MAX = np.iinfo(np.uint64).max
# Shingles per (n_hashes, chunk) block: 112 x 4096 x 8 B = 3.7 MB, about a cache slice; it also
# bounds the permutation step's memory whatever the document sizes.
_CHUNK = 4096
_SLICE_CHARS = 1 << 20


class MinHashOptions(StageOptions):
    """Near-duplicate detection (FineWeb defaults).

    `jaccard_threshold`: None keeps every band match as a duplicate (FineWeb); a number drops
    candidate pairs whose signature-estimated Jaccard is below it. Needs the signatures in the
    candidate rows (more shuffle bytes), so it is off by default.
    `partitions`: hash partitions for the shuffles (LSH buckets, connected components, marking);
    None = 2 x the cluster's CPUs. Each partition is processed in one task, so keep
    rows/partitions below a few million.
    """

    ngram: PositiveInt = 5
    bands: PositiveInt = 14
    rows: PositiveInt = 8
    seed: PositiveInt = 1
    jaccard_threshold: float | None = Field(None, gt=0.0, le=1.0)
    partitions: PositiveInt | None = None
    max_cc_rounds: PositiveInt = 64

    @property
    def num_hashes(self) -> int:
        return self.bands * self.rows

    @model_validator(mode="after")
    def _sane_size(self) -> "MinHashOptions":
        if self.num_hashes > 4096:
            raise ValueError(f"bands*rows = {self.num_hashes} hashes is unreasonably many")
        return self


@lru_cache(maxsize=1)
def _word_table() -> np.ndarray:
    """is_word[c] for every code point: exactly what Python's `\\w` matches in str patterns."""
    every = "".join(map(chr, range(0x110000)))
    table = np.zeros(0x110000, dtype=bool)
    for m in re.finditer(r"\w+", every):
        table[m.start():m.end()] = True
    return table


def word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash of every word of the batch, in order; number of words per document).
    Words are `re.findall(r"\\w+", text.lower())`; equal words get equal hashes in any batch."""
    lowered = [t.lower() if t else "" for t in texts]
    # One separator after each document: a non-word char, so no word spans two documents.
    joined = " ".join(lowered) + " "
    cp = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    is_word = _word_table()[cp]
    edge = np.diff(is_word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    # Prefix sums of c_j * B**j; a word's hash is its slice of the sum shifted back to j = 0.
    prefix = np.zeros(len(cp) + 1, dtype=U64)
    np.cumsum(cp.astype(U64) * geometric(_CHAR_BASE, len(cp)), out=prefix[1:])
    raw = (prefix[ends] - prefix[starts]) * geometric(_CHAR_BASE_INV, len(cp))[starts]
    hashes = fmix64(raw ^ ((ends - starts).astype(U64) * _LEN_MIX))
    doc_ends = np.cumsum(np.fromiter(map(len, lowered), dtype=np.int64, count=len(lowered)) + 1)
    doc_of_word = np.searchsorted(doc_ends, starts, side="right")
    return hashes, np.bincount(doc_of_word, minlength=len(texts)).astype(np.int64)


def shingle_hashes(word_hashes: np.ndarray, doc_words: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash per shingle, document index per shingle), shingles of a document contiguous.

    `word_hashes` are the hashes of all documents' words concatenated; `doc_words[i]` is how
    many of them belong to document i."""
    n_docs = len(doc_words)
    n_sh = np.maximum(doc_words - ngram + 1, 1)
    total = int(n_sh.sum())
    sh_doc = np.repeat(np.arange(n_docs), n_sh)
    first_word = np.cumsum(doc_words) - doc_words
    first_sh = np.cumsum(n_sh) - n_sh
    pos = np.repeat(first_word, n_sh) + (np.arange(total) - np.repeat(first_sh, n_sh))
    width = np.repeat(np.minimum(doc_words, ngram), n_sh)  # < ngram only for short documents
    padded = np.concatenate([word_hashes, np.zeros(ngram, dtype=U64)])  # pos + k stays in range
    acc = padded[pos]
    short = bool((width < ngram).any())
    for k in range(1, ngram):
        nxt = acc * _FOLD + padded[pos + k]
        acc = np.where(width > k, nxt, acc) if short else nxt
    acc = fmix64(acc ^ width.astype(U64))
    acc[width == 0] = _EMPTY_SHINGLE
    return acc, sh_doc


def permutations(options: MinHashOptions) -> tuple[np.ndarray, np.ndarray]:
    """(xor constants, odd multipliers), one per hash function; a pure function of the seed."""
    return random_u64(options.seed, options.num_hashes), random_u64(options.seed + 1_000_003, options.num_hashes, odd=True)


def min_over_permutations(sh: np.ndarray, sh_doc: np.ndarray, n_docs: int, xors: np.ndarray, mults: np.ndarray) -> np.ndarray:
    """Per-document minimum of every permutation of its shingle hashes: (n_docs, n_hashes).
    `sh_doc` must be non-decreasing (shingles of a document contiguous)."""
    # Hash-major layout: each permutation's values are contiguous, so the elementwise ops and
    # the reduceat run long SIMD loops instead of 112-wide ones (measured ~2x faster).
    sig = np.full((len(xors), n_docs), _MAX, dtype=U64)
    block = np.empty((len(xors), _CHUNK), dtype=U64)
    xors, mults = xors[:, None], mults[:, None]
    for lo in range(0, len(sh), _CHUNK):
        x, d = sh[lo:lo + _CHUNK], sh_doc[lo:lo + _CHUNK]
        b = block[:, :len(x)]
        np.bitwise_xor(xors, x, out=b)
        b *= mults
        starts = np.flatnonzero(np.diff(d, prepend=-1))
        docs = d[starts]
        # A document cut by the chunk edge keeps the min of both parts.
        sig[:, docs] = np.minimum(sig[:, docs], np.minimum.reduceat(b, starts, axis=1))
    return np.ascontiguousarray(sig.T)


def minhash_signatures(texts: Sequence[str] | pa.Array, options: MinHashOptions | None = None) -> np.ndarray:
    """MinHash signatures, uint64 array of shape (len(texts), bands*rows). A pure function of
    each text and the options: independent of batch composition, process and machine."""
    options = options or MinHashOptions()
    if isinstance(texts, (pa.Array, pa.ChunkedArray)):
        texts = texts.to_pylist()
    perms = permutations(options)
    out = [_signatures_slice(texts[lo:hi], options.ngram, perms) for lo, hi in _slices(texts)]
    return np.concatenate(out) if out else np.zeros((0, options.num_hashes), dtype=U64)


def _signatures_slice(texts: Sequence[str], ngram: int, perms: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    words, doc_words = word_hashes(texts)
    sh, sh_doc = shingle_hashes(words, doc_words, ngram)
    return min_over_permutations(sh, sh_doc, len(texts), *perms)


def _slices(texts: Sequence[str]) -> list[tuple[int, int]]:
    """Consecutive [lo, hi) ranges of about `_SLICE_CHARS` characters (a long text alone)."""
    ends = np.cumsum([len(t) if t else 0 for t in texts])
    cuts = np.searchsorted(ends, np.arange(_SLICE_CHARS, ends[-1] if len(ends) else 0, _SLICE_CHARS), side="left") + 1
    bounds = np.unique(np.concatenate([[0], np.minimum(cuts, len(texts)), [len(texts)]]))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One uint64 per band: the band's `rows` hashes folded order-sensitively, then fmix64.
    Shape (n, bands). Equal bands give equal keys; unequal bands collide with prob. ~2**-64."""
    if signatures.shape[1] < bands * rows:
        raise ValueError(f"signatures have {signatures.shape[1]} hashes, need bands*rows = {bands * rows}")
    sig = signatures[:, : bands * rows].reshape(len(signatures), bands, rows)
    acc = sig[:, :, 0].copy()
    for r in range(1, rows):
        acc = acc * _FOLD + sig[:, :, r]
    return fmix64(acc)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal hashes, row by row (the MinHash estimate of the Jaccard similarity)."""
    return (sig_a == sig_b).mean(axis=-1)
