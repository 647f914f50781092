"""MinHash signatures must not change when the code gets faster: stored fingerprints and dedup
decisions depend on the exact hash values. The golden digests below were computed with the
signature code as of dd6da24 (before the single-thread speed work) on `_golden_texts()`."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dataproc.corpus.dedup import minhash as M
from dataproc.corpus.dedup._hashing import U64, fmix64

GOLDEN = [  # options, sha256(signatures)[:32], sha256(band keys)[:32]
    ({}, "2e3a931cc0b5b63c6fcf50ad9790ae03", "ec86243f41f8a88e55a757834e2949bd"),
    ({"ngram": 3, "bands": 5, "rows": 4, "seed": 7}, "173b02c21902fe027a1094e4f9093fb1", "b0e45d47f9b9da26060667f0bb1bc32b"),
    ({"ngram": 1, "bands": 2, "rows": 3}, "0e576698c469db92ce01aaa91e623e54", "2c4f52ee27c795d3f20344261ee95048"),
    ({"ngram": 9, "bands": 20, "rows": 5, "seed": 3}, "70b345d01dd913ab3c2626f26afa4c39", "7ce4bbaeb8e6e245d8e75fb12cab1f32"),
]


def _golden_texts() -> list:
    """Deterministic texts covering the shingling edge cases: empty/None/short documents,
    Unicode case mapping (dotted I, final sigma, eszett), non-BMP and combining characters,
    digits and underscores, a lone surrogate, long documents and repeated shingles."""
    rng = np.random.default_rng(12345)
    alphabet = list("abcdefghijklmnopqrstuvwxyz") + ["é", "ß", "İ", "Σ", "ς", "ǅ", "日", "本", "٣", "_", "1", "𝔘", "\u0301"]
    seps = [" ", "  ", ", ", ". ", "\n", "\t", " - ", "!? ", "\u00a0", "\u3000"]
    vocab = ["".join(rng.choice(alphabet, size=rng.integers(1, 9))) for _ in range(400)]
    texts = ["", None, "a", "a b", "a b c d", "one two three four five", "one two three four five six",
             "Hello, World!", "ΣΊΣΥΦΟΣ ΟΔΟΣ σας", "İstanbul İİ", "straße STRASSE", "foo\ud800bar baz",
             " " * 7, "___ 1_2 ٣٤", "ﬁﬂ ﬃ", "x" * 300, "the the the the the the the the"]
    for i in range(160):
        n = int(rng.choice([0, 1, 3, 4, 5, 6, 20, 200, 3000]))
        words = rng.choice(vocab, size=n)
        sep = rng.choice(seps, size=n)
        text = "".join(w + s for w, s in zip(words, sep))
        texts.append(text.upper() if i % 7 == 0 else text)
    return texts


@pytest.mark.parametrize("kw,sig_digest,key_digest", GOLDEN)
def test_signatures_match_golden(kw, sig_digest, key_digest):
    options = M.MinHashOptions(**kw)
    texts = _golden_texts()
    sig = M.minhash_signatures(texts, options)
    assert hashlib.sha256(sig.tobytes()).hexdigest()[:32] == sig_digest
    keys = M.band_keys(sig, options.bands, options.rows)
    assert hashlib.sha256(keys.tobytes()).hexdigest()[:32] == key_digest
    # Independent of batch composition.
    assert (np.concatenate([M.minhash_signatures([t], options) for t in texts]) == sig).all()


def test_golden_survives_small_slices_and_chunks(monkeypatch):
    """Cutting batches into many slices and the permutation step into many chunks (documents
    larger than a chunk included) gives the same signatures."""
    monkeypatch.setattr(M, "_SLICE_CHARS", 5000)
    monkeypatch.setattr(M, "_CHUNK", 64)
    monkeypatch.setattr(M, "_POWERS", {})
    sig = M.minhash_signatures(_golden_texts(), M.MinHashOptions())
    assert hashlib.sha256(sig.tobytes()).hexdigest()[:32] == GOLDEN[0][1]


def _reference_shingle_hashes(word_hashes, doc_words, ngram):
    """The gather-based shingle hashing of dd6da24, kept verbatim as the specification."""
    n_docs = len(doc_words)
    n_sh = np.maximum(doc_words - ngram + 1, 1)
    total = int(n_sh.sum())
    sh_doc = np.repeat(np.arange(n_docs), n_sh)
    first_word = np.cumsum(doc_words) - doc_words
    first_sh = np.cumsum(n_sh) - n_sh
    pos = np.repeat(first_word, n_sh) + (np.arange(total) - np.repeat(first_sh, n_sh))
    width = np.repeat(np.minimum(doc_words, ngram), n_sh)
    padded = np.concatenate([word_hashes, np.zeros(ngram, dtype=U64)])
    acc = padded[pos]
    short = bool((width < ngram).any())
    for k in range(1, ngram):
        nxt = acc * M._FOLD + padded[pos + k]
        acc = np.where(width > k, nxt, acc) if short else nxt
    acc = fmix64(acc ^ width.astype(U64))
    acc[width == 0] = M._EMPTY_SHINGLE
    return acc, sh_doc


@pytest.mark.parametrize("ngram", [1, 2, 3, 5, 8])
def test_shingle_hashes_match_reference(ngram):
    rng = np.random.default_rng(ngram)
    for _ in range(20):
        doc_words = rng.choice([0, 0, 1, 2, ngram - 1, ngram, ngram + 1, 7, 40], size=int(rng.integers(1, 30)))
        doc_words = np.maximum(doc_words, 0).astype(np.int64)
        words = rng.integers(0, 2**64, size=int(doc_words.sum()), dtype=U64)
        got, got_doc = M.shingle_hashes(words, doc_words, ngram)
        want, want_doc = _reference_shingle_hashes(words, doc_words, ngram)
        assert (got_doc == want_doc).all()
        assert (got == want).all()


def test_min_over_permutations_matches_definition(monkeypatch):
    monkeypatch.setattr(M, "_CHUNK", 50)
    rng = np.random.default_rng(0)
    n_sh = rng.integers(1, 120, size=40)
    sh = rng.integers(0, 2**64, size=int(n_sh.sum()), dtype=U64)
    sh_doc = np.repeat(np.arange(len(n_sh)), n_sh)
    xors, mults = M.permutations(M.MinHashOptions(bands=3, rows=4))
    got = M.min_over_permutations(sh, sh_doc, len(n_sh), xors, mults)
    perm = (sh[None, :] ^ xors[:, None]) * mults[:, None]
    want = np.stack([perm[:, sh_doc == d].min(axis=1) for d in range(len(n_sh))])
    assert (got == want).all()


def test_min_over_permutations_documents_without_shingles():
    xors, mults = M.permutations(M.MinHashOptions(bands=2, rows=2))
    sh = np.array([5, 9, 7], dtype=U64)
    got = M.min_over_permutations(sh, np.array([1, 1, 3]), 5, xors, mults)
    assert (got[[0, 2, 4]] == np.iinfo(np.uint64).max).all()
    assert (got[1] == ((sh[:2, None] ^ xors) * mults).min(axis=0)).all()
    assert (got[3] == (sh[2] ^ xors) * mults).all()
