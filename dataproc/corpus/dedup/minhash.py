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
   (H[end] - H[start]) * B**-start, then fmix64 (B odd, so B**-1 exists mod 2**64). The
   powers of B and B**-1 are cached per process.
3. Shingle hash: acc*K + h(next word) folded over the window, computed at every word position
   at once from shifted contiguous slices, then masked to each document's window starts; fmix64.
4. Permutation j maps a shingle hash x to (x ^ s_j) * a_j mod 2**64 (a_j odd: a bijection); the
   shingle hashes are already fmix64 outputs, so this cheap family is enough for min-wise
   ordering (the tests check estimated against exact Jaccard). Documents are grouped into
   chunks of ~`_CHUNK` shingles; per chunk, one permutation at a time is applied to an
   L2-resident buffer and reduced per document with `np.minimum.reduceat`.
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
# Shingles per chunk of the permutation step: a 512 KiB uint64 buffer, which stays in L2.
_CHUNK = 1 << 16
_SLICE_CHARS = 1 << 20


class MinHashOptions(StageOptions):
    """Near-duplicate detection (FineWeb defaults).

    `jaccard_threshold`: None keeps every band match as a duplicate (FineWeb); a number drops
    candidate pairs whose signature-estimated Jaccard is below it. Needs the signatures in the
    candidate rows (more shuffle bytes), so it is off by default.
    `partitions`: hash partitions for the shuffles (LSH buckets, connected components, marking);
    None = 2 x the cluster's CPUs. The band shuffle (`bands` rows per document, through files)
    takes more when that would put more than `spilled_shuffle.ROWS_PER_PARTITION` rows in one;
    the others hold candidate edges only, which scale with the near-duplicates.
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


_POWERS: dict[int, np.ndarray] = {}


def _powers(base: int, n: int) -> np.ndarray:
    """base**0 .. base**(n-1) mod 2**64, from a per-process cache grown by doubling (the
    cumprod is as costly as the rest of the word hashing). Slices are ~`_SLICE_CHARS` long,
    so the cache holds ~2 x 8 MiB; longer single texts get a fresh array, not a cached one."""
    table = _POWERS.get(base)
    if table is None or len(table) < n:
        if n > 4 * _SLICE_CHARS:
            return geometric(base, n)
        grown = min(2 * len(table), 4 * _SLICE_CHARS) if table is not None else _SLICE_CHARS + 1
        table = _POWERS[base] = geometric(base, max(n, grown))
    return table[:n]


def word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash of every word of the batch, in order; number of words per document).
    Words are `re.findall(r"\\w+", text.lower())`; equal words get equal hashes in any batch."""
    lowered = [t.lower() if t else "" for t in texts]
    # One separator after each document: a non-word char, so no word spans two documents.
    joined = " ".join(lowered) + " "
    cp = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    is_word = np.take(_word_table(), cp)
    edge = np.diff(is_word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    # Prefix sums of c_j * B**j; a word's hash is its slice of the sum shifted back to j = 0.
    prefix = np.empty(len(cp) + 1, dtype=U64)
    prefix[0] = 0
    np.multiply(cp, _powers(_CHAR_BASE, len(cp)), out=prefix[1:], dtype=U64)
    np.cumsum(prefix[1:], out=prefix[1:])
    raw = (prefix[ends] - prefix[starts]) * _powers(_CHAR_BASE_INV, len(cp)).take(starts)
    hashes = fmix64(raw ^ ((ends - starts).astype(U64) * _LEN_MIX))
    # Words before each document's separator; no word spans a separator.
    doc_ends = np.cumsum(np.fromiter(map(len, lowered), dtype=np.int64, count=len(lowered)) + 1) - 1
    return hashes, np.diff(np.searchsorted(starts, doc_ends), prepend=0).astype(np.int64)


def shingle_hashes(word_hashes: np.ndarray, doc_words: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash per shingle, document index per shingle), shingles of a document contiguous.

    `word_hashes` are the hashes of all documents' words concatenated; `doc_words[i]` is how
    many of them belong to document i.

    The window fold acc*K + h(next word) is computed at every word position of the batch at
    once with shifted contiguous slices (Horner), then the positions that are not a window
    start of their own document are masked out; documents with fewer than `ngram` words fold
    only their own words, and empty documents get the fixed empty shingle."""
    doc_words = np.asarray(doc_words, dtype=np.int64)
    n_docs = len(doc_words)
    n_words = len(word_hashes)
    n_sh = np.maximum(doc_words - ngram + 1, 1)
    sh_doc = np.repeat(np.arange(n_docs), n_sh)
    padded = np.concatenate([word_hashes, np.zeros(ngram, dtype=U64)])
    acc = padded[:n_words].copy()
    for k in range(1, ngram):
        acc *= _FOLD
        acc += padded[k:n_words + k]
    # Window starts: drop each document's last min(words, ngram) - 1 positions.
    width = np.minimum(doc_words, ngram)
    word_end = np.cumsum(doc_words)
    back = np.arange(1, ngram)
    tail = word_end[:, None] - back[None, :]
    keep = np.ones(n_words, dtype=bool)
    keep[tail[back[None, :] < width[:, None]]] = False
    acc = fmix64(acc[keep] ^ U64(ngram))
    short = np.flatnonzero((doc_words > 0) & (doc_words < ngram))
    if len(short):  # their one shingle folds only their own words, and mixes in their width
        first_word = word_end - doc_words
        w = width[short]
        s_acc = padded[first_word[short]]
        for k in range(1, ngram):
            s_acc = np.where(w > k, s_acc * _FOLD + padded[first_word[short] + k], s_acc)
        nonempty_first = np.cumsum(n_sh[doc_words > 0]) - n_sh[doc_words > 0]
        rank = np.cumsum(doc_words > 0) - 1  # index among non-empty documents
        acc[nonempty_first[rank[short]]] = fmix64(s_acc ^ w.astype(U64))
    empty = np.flatnonzero(doc_words == 0)
    if len(empty):  # each takes one slot before the shingles of the documents after it
        before = (np.cumsum(n_sh) - n_sh)[empty] - np.arange(len(empty))
        acc = np.insert(acc, before, _EMPTY_SHINGLE)
    return acc, sh_doc


def permutations(options: MinHashOptions) -> tuple[np.ndarray, np.ndarray]:
    """(xor constants, odd multipliers), one per hash function; a pure function of the seed."""
    return random_u64(options.seed, options.num_hashes), random_u64(options.seed + 1_000_003, options.num_hashes, odd=True)


def min_over_permutations(sh: np.ndarray, sh_doc: np.ndarray, n_docs: int, xors: np.ndarray, mults: np.ndarray) -> np.ndarray:
    """Per-document minimum of every permutation of its shingle hashes: (n_docs, n_hashes).
    `sh_doc` must be non-decreasing (shingles of a document contiguous); a document without
    shingles gets all-max hashes.

    Documents are grouped into chunks of about `_CHUNK` shingles (a document is never cut, so
    no partial minima need merging); for each chunk, one permutation at a time: xor, multiply
    and `np.minimum.reduceat` over a buffer that stays in L2, written straight into that
    permutation's contiguous row of the hash-major result (measured ~3x faster than one
    (n_hashes, chunk) block per chunk, whose 3.7 MB spill out of L2)."""
    doc_start = np.flatnonzero(np.diff(sh_doc, prepend=-1))
    present = sh_doc[doc_start]
    if len(present) != n_docs:  # some documents have no shingles (never from shingle_hashes)
        out = np.full((n_docs, len(xors)), _MAX, dtype=U64)
        out[present] = min_over_permutations(sh, np.repeat(np.arange(len(present)), np.diff(np.append(doc_start, len(sh)))),
                                             len(present), xors, mults)
        return out
    sig = np.empty((len(xors), n_docs), dtype=U64)
    if n_docs == 0:
        return sig.T.copy()
    doc_end = np.append(doc_start[1:], len(sh))
    buf = np.empty(min(_CHUNK, len(sh)), dtype=U64)
    xors, mults = xors.tolist(), mults.tolist()
    lo_doc = 0
    while lo_doc < n_docs:
        lo = int(doc_start[lo_doc])
        hi_doc = max(int(np.searchsorted(doc_end, lo + _CHUNK, side="right")), lo_doc + 1)
        hi = int(doc_end[hi_doc - 1])
        x, starts = sh[lo:hi], doc_start[lo_doc:hi_doc] - lo
        b = buf[: hi - lo] if hi - lo <= len(buf) else np.empty(hi - lo, dtype=U64)
        for k, (s, m) in enumerate(zip(xors, mults)):
            np.bitwise_xor(x, U64(s), out=b)
            np.multiply(b, U64(m), out=b)
            np.minimum.reduceat(b, starts, out=sig[k, lo_doc:hi_doc])
        lo_doc = hi_doc
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
