"""Dedup: MinHash signatures (numpy), exact dedup, LSH + connected components on real Ray."""
from __future__ import annotations

import itertools
import random
import re

import numpy as np
import pyarrow as pa
import pytest

from dataproc.corpus.dedup.minhash import MinHashOptions, band_keys, estimated_jaccard, minhash_signatures, word_hashes
from dataproc.corpus.dedup.text_norm import normalize_texts, text_hashes
from dataproc.synthetic.ground_truth import jaccard, shingles
from tests.support.datasets import sliced_dataset

# ---------------------------------------------------------------------------------------------
# Generated corpus with planted near-duplicates at known Jaccard similarities.

LEVELS = (0.95, 0.9, 0.85, 0.8, 0.7, 0.5, 0.3)
_VOCAB = [f"{a}{b}{c}" for a, b, c in itertools.product(
    ["ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "vu", "ze", "ba", "do", "fi", "gu"],
    ["", "n", "r", "s", "l", "m"], ["a", "e", "o", "i", "u", "an", "el", "is", "or"])]  # 756 words


def random_doc(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(_VOCAB) for _ in range(n_words))


def variant(rng: random.Random, text: str, target: float, n: int = 5) -> str:
    """Substitute words at random positions until about the share of changed n-gram windows
    that gives Jaccard `target` (J = (N - S) / (N + S) for S changed of N shingles)."""
    words = text.split(" ")
    n_sh = len(words) - n + 1
    need = n_sh * (1 - target) / (1 + target)
    hit: set[int] = set()
    for k in rng.sample(range(len(words)), len(words)):
        if len(hit) >= need:
            break
        words[k] = rng.choice(_VOCAB).upper()  # upper: never equal to the original token
        hit.update(range(max(k - n + 1, 0), min(k, n_sh - 1) + 1))
    return " ".join(words)


def _date(rng: random.Random) -> str:
    return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"


def planted_corpus(n_base: int = 300, seed: int = 7) -> list[dict]:
    """Base documents, one variant each at a level cycling over LEVELS, and a second 0.9
    variant for every third base (3-document clusters, variant-variant pairs)."""
    rng = random.Random(seed)
    docs = []
    for i in range(n_base):
        base = random_doc(rng, rng.randint(120, 260))
        docs.append({"id": f"b{i:04d}", "date": _date(rng), "text": base})
        docs.append({"id": f"v{i:04d}", "date": _date(rng), "text": variant(rng, base, LEVELS[i % len(LEVELS)])})
        if i % 3 == 0:
            docs.append({"id": f"w{i:04d}", "date": _date(rng), "text": variant(rng, base, 0.9)})
    return docs


@pytest.fixture(scope="module")
def corpus() -> tuple[list[dict], dict[tuple[int, int], float]]:
    """The documents and the exact Jaccard of every pair with J > 0 (brute force)."""
    docs = planted_corpus()
    sets = [shingles(d["text"]) for d in docs]
    index: dict = {}
    for i, s in enumerate(sets):
        for sh in s:
            index.setdefault(sh, []).append(i)
    pairs = {tuple(sorted(p)) for ids in index.values() for p in itertools.combinations(ids, 2)}
    exact = {(a, b): len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for a, b in pairs}
    return docs, exact


# ---------------------------------------------------------------------------------------------
# Signatures (pure numpy; no Ray).


def test_signatures_shape_dtype_and_determinism():
    rng = random.Random(1)
    texts = [random_doc(rng, rng.randint(0, 80)) for _ in range(50)] + ["", "one two", "Ünïcödé wörds ok"]
    opts = MinHashOptions()
    sig = minhash_signatures(texts, opts)
    assert sig.dtype == np.uint64 and sig.shape == (len(texts), 112)
    assert np.array_equal(sig, minhash_signatures(texts, opts))
    # Independent of how documents are batched.
    assert np.array_equal(sig, np.concatenate([minhash_signatures(texts[:17], opts), minhash_signatures(texts[17:], opts)]))
    assert np.array_equal(sig[5], minhash_signatures([texts[5]], opts)[0])
    assert not np.array_equal(sig, minhash_signatures(texts, MinHashOptions(seed=2)))
    assert minhash_signatures([], opts).shape == (0, 112)


def test_identical_word_sequences_give_identical_signatures():
    a = "The quick brown fox jumps over the lazy dog near the river bank"
    sig = minhash_signatures([a, a, a.upper().replace(" ", ",  "), a + "!", a + " extra"])
    assert all(np.array_equal(sig[0], sig[i]) for i in (1, 2, 3))
    assert not np.array_equal(sig[0], sig[4])
    short = minhash_signatures(["two words", "Two, WORDS.", "two", "", ""])
    assert np.array_equal(short[0], short[1]) and not np.array_equal(short[0], short[2])
    assert np.array_equal(short[3], short[4])  # empty documents share the "empty" shingle


def test_words_are_samples_shingles_words():
    """Tokenisation is `re.findall(r"\\w+", text.lower())`, the definition behind the recorded
    Jaccard in dataproc.synthetic.sample_warc, including Unicode letters, digits, marks and final sigma."""
    texts = ["ΟΔΥΣΣΕΥΣ ήταν ιστορικος.", "naïve café_bar 3.14 x²", "क्षत्रिय हिन्दी", "日本語のテキスト", "a\x00b", "", "  --  "]
    hashes, counts = word_hashes(texts)
    expected = [re.findall(r"\w+", t.lower()) for t in texts]
    assert counts.tolist() == [len(w) for w in expected]
    flat = [w for ws in expected for w in ws]
    by_word: dict[str, int] = {}
    for w, h in zip(flat, hashes.tolist()):
        assert by_word.setdefault(w, h) == h
    assert len(set(by_word.values())) == len(by_word)


def test_estimated_jaccard_tracks_exact_jaccard():
    rng = random.Random(3)
    est, true = [], []
    for k in range(120):
        base = random_doc(rng, rng.randint(100, 300))
        other = variant(rng, base, rng.uniform(0.2, 0.98))
        est.append(float(estimated_jaccard(*minhash_signatures([base, other]))))
        true.append(jaccard(base, other))
    err = np.array(est) - np.array(true)
    # 112 hashes: std of the estimate is sqrt(J(1-J)/112) <= 0.047.
    assert np.mean(np.abs(err) <= 0.1) >= 0.95
    assert np.abs(err).max() <= 0.2
    assert abs(err.mean()) < 0.02  # unbiased


def test_band_keys():
    sig = minhash_signatures(["alpha beta gamma delta epsilon zeta", "alpha beta gamma delta epsilon eta", "x y z"])
    keys = band_keys(sig, 14, 8)
    assert keys.shape == (3, 14) and keys.dtype == np.uint64
    same_band = (sig[0].reshape(14, 8) == sig[1].reshape(14, 8)).all(axis=1)
    assert np.array_equal(keys[0] == keys[1], same_band)
    with pytest.raises(ValueError):
        band_keys(sig, 15, 8)


def test_options_validated():
    with pytest.raises(ValueError):
        MinHashOptions(bands=0)
    with pytest.raises(ValueError):
        MinHashOptions(ngram=-1)
    with pytest.raises(ValueError):
        MinHashOptions(unknown=1)
    assert MinHashOptions().num_hashes == 112


def test_exact_normalisation():
    texts = ["Hello,  World!\n", "hello world", "ＨＥＬＬＯ — “world”…", "Hello World 2", None]
    assert normalize_texts(texts).to_pylist() == ["hello world"] * 3 + ["hello world 2", ""]
    h = text_hashes(texts)
    assert h.shape == (5, 2) and h.dtype == np.uint64
    assert (h[0] == h[1]).all() and (h[0] == h[2]).all() and not (h[0] == h[3]).all()


# ---------------------------------------------------------------------------------------------
# Ray plans (the session's Ray shuffles as the data job does: tests/conftest.py).


def _dataset(ray, rows: list[dict], blocks: int = 2):
    return sliced_dataset(ray, pa.Table.from_pylist(rows), blocks)


def test_exact_duplicates_keep_earliest_then_smallest_id(ray_local):
    from dataproc.corpus.dedup.exact import exact_duplicates

    rows = [
        {"id": "c", "date": "2024-03-01T00:00:00Z", "text": "Same text, here.", "drop_reason": None},
        {"id": "b", "date": "2024-01-01T00:00:00Z", "text": "same TEXT here", "drop_reason": None},
        {"id": "a", "date": "2024-01-01T00:00:00Z", "text": "Same text here!!", "drop_reason": None},  # kept: earliest, smallest id
        {"id": "0", "date": "", "text": "same text here", "drop_reason": None},  # undated: loses
        {"id": "u1", "date": "2024-05-01T00:00:00Z", "text": "unique one", "drop_reason": None},
        {"id": "x1", "date": "2023-01-01T00:00:00Z", "text": "other words", "drop_reason": None},
        {"id": "x0", "date": "2023-06-01T00:00:00Z", "text": "Other\nwords", "drop_reason": None},
        {"id": "d1", "date": "2020-01-01T00:00:00Z", "text": "", "drop_reason": "gopher:too_short"},
        {"id": "d2", "date": "2020-01-01T00:00:00Z", "text": "", "drop_reason": "gopher:too_short"},
    ]
    out = {r["id"]: r["duplicate_of"] for r in exact_duplicates(_dataset(ray_local, rows), partitions=3).take_all()}
    assert out == {"a": None, "b": "a", "c": "a", "0": "a", "u1": None, "x1": None, "x0": "x1", "d1": None, "d2": None}


def test_exact_duplicates_equal_a_plain_reference(ray_local):
    """On a generated corpus with planted copies (case and punctuation changed, undated ones,
    dropped rows, groups spread over blocks), every row's `duplicate_of` equals a plain
    Python grouping by normalised-text hash: keeper = smallest (date or '~'*20, id)."""
    from dataproc.corpus.dedup.exact import exact_duplicates

    rng = random.Random(11)
    rows = []
    for i in range(400):
        text = random_doc(rng, rng.randint(0, 40))
        rows.append({"id": f"u{i:04d}", "date": _date(rng), "text": text, "drop_reason": None})
        for k in range(rng.choice([0, 0, 1, 3])):
            copy = text.upper() + rng.choice(["", "!", " ...", "\n"])
            date = _date(rng) if rng.random() < 0.8 else rng.choice(["", None, "2024-13"])
            drop = "gopher:too_short" if rng.random() < 0.1 else None
            rows.append({"id": f"c{i:04d}_{k}", "date": date, "text": "" if drop else copy, "drop_reason": drop})
    rng.shuffle(rows)

    def rank(r):
        ok = r["date"] is not None and re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", r["date"])
        return (r["date"] if ok else "~" * 20) + r["id"]

    groups: dict[tuple, list[dict]] = {}
    for r, h in zip(rows, text_hashes([r["text"] for r in rows]).tolist()):
        if r["drop_reason"] is None:
            groups.setdefault(tuple(h), []).append(r)
    expected = {r["id"]: None for r in rows}
    for members in groups.values():
        keeper = min(members, key=rank)
        expected.update({r["id"]: keeper["id"] for r in members if r is not keeper})
    assert sum(v is not None for v in expected.values()) > 300
    out = exact_duplicates(_dataset(ray_local, rows, blocks=5), partitions=3).take_all()
    assert len(out) == len(rows)
    assert {r["id"]: r["duplicate_of"] for r in out} == expected


def _components(rows) -> set[frozenset]:
    groups: dict[str, set] = {}
    for r in rows:
        groups.setdefault(r["component_root"], set()).add(r["doc"])
    return {frozenset(g) for g in groups.values()}


def test_connected_components_hand_made_graph(ray_local):
    from dataproc.corpus.dedup.lsh import connected_components

    chain = [(f"c{i:02d}", f"c{i + 1:02d}") for i in range(20)]  # path c00 - c20
    rev_chain = [(f"r{i:02d}", f"r{i - 1:02d}") for i in range(16, 0, -1)]
    star = [("s5", f"s{i}") for i in range(5)] + [("s5", "s6")]  # centre is not the minimum
    misc = [("p", "q"), ("q", "p"), ("z", "z"), ("m2", "m1"), ("m3", "m1"), ("m3", "m2")]  # dup, loop, cycle
    bridge = [("c20", "r00")]  # joins the two chains
    edges = chain + rev_chain + star + misc + bridge
    ds = _dataset(ray_local, [{"doc_a": a, "doc_b": b} for a, b in edges], blocks=3)
    stats: dict = {}
    rows = connected_components(ds, partitions=3, stats=stats).take_all()
    expected = {
        frozenset([f"c{i:02d}" for i in range(21)] + [f"r{i:02d}" for i in range(17)]),
        frozenset(f"s{i}" for i in range(7)),
        frozenset({"p", "q"}),
        frozenset({"m1", "m2", "m3"}),
    }
    assert _components(rows) == expected
    roots = {r["doc"]: r["component_root"] for r in rows}
    assert roots["c10"] == "c00" and roots["s5"] == "s0" and roots["q"] == "p" and roots["m1"] == "m1"
    assert len(rows) == sum(len(c) for c in expected)  # one row per node, "z" (self loop only) absent
    assert stats["cc_rounds"] <= 8 and stats["cc_changes"][-1] == 0


def _clusters(rows: list[dict]) -> list[list[int]]:
    index = {r["id"]: i for i, r in enumerate(rows)}
    groups: dict[str, list[int]] = {}
    for r in rows:
        groups.setdefault(r["duplicate_of"] or r["id"], []).append(index[r["id"]])
    return list(groups.values())


def test_lsh_recall_and_precision_against_exact_jaccard(ray_local, corpus):
    """Recall: of all pairs with exact J >= 0.8, the share the clusters put together.
    Precision: of all pairs inside a cluster (transitively, as removal works), the share with
    exact J >= 0.5. FineWeb's 14x8 bands put a pair together with probability
    1-(1-J^8)^14: 0.92 at J=0.8, 0.55 at 0.7, 0.05 at 0.5, 0.001 at 0.3, so pairs between 0.5
    and 0.8 are intended near-duplicates (the 0.72 threshold region), not errors; below 0.5
    a match is a false positive."""
    from dataproc.corpus.dedup.lsh import minhash_duplicates

    docs, exact = corpus
    stats: dict = {}
    ds = _dataset(ray_local, docs).materialize()
    out = minhash_duplicates(ds, MinHashOptions(partitions=3), stats=stats).take_all()
    by_id = {r["id"]: r for r in out}
    rows = [by_id[d["id"]] for d in docs]
    together = {tuple(sorted(p)) for c in _clusters(rows) for p in itertools.combinations(c, 2)}
    should = {p for p, j in exact.items() if j >= 0.8}
    recall = len(should & together) / len(should)
    precision = sum(exact.get(p, 0.0) >= 0.5 for p in together) / len(together)
    assert len(should) > 200 and recall >= 0.95, (recall, len(should))
    assert precision >= 0.9, precision
    # The kept document of each cluster is its earliest (date, id).
    for cluster in _clusters(rows):
        keeper = min(cluster, key=lambda i: (docs[i]["date"], docs[i]["id"]))
        assert rows[keeper]["duplicate_of"] is None
        assert all(rows[i]["duplicate_of"] == docs[keeper]["id"] for i in cluster if i != keeper)
    assert stats["cc_rounds"] <= 4


def test_jaccard_threshold_verification_drops_weak_pairs(ray_local, corpus):
    from dataproc.corpus.dedup.lsh import candidate_edges

    docs, exact = corpus
    ds = _dataset(ray_local, docs).materialize()
    edges = candidate_edges(ds, MinHashOptions(partitions=3, jaccard_threshold=0.85)).take_all()
    index = {d["id"]: i for i, d in enumerate(docs)}
    pairs = {tuple(sorted((index[e["doc_a"][20:]], index[e["doc_b"][20:]]))) for e in edges}
    assert len(pairs) == len(edges)  # verified edges are distinct
    assert all(e["jaccard_est"] >= 0.85 for e in edges)
    assert all(exact[p] >= 0.7 for p in pairs)
    strong = {p for p, j in exact.items() if j >= 0.93}
    assert len(strong & pairs) >= 0.9 * len(strong)


def test_mark_duplicates_broadcast_equals_shuffle_join(ray_local, corpus, monkeypatch):
    """The broadcast join (small components) and the shuffle join (large ones) mark the same
    documents with the same representatives; an existing `duplicate_of` wins in both."""
    from dataproc.corpus.dedup import lsh
    from dataproc.corpus.dedup.keys import with_rank_key
    from dataproc.corpus.dedup.marking import BROADCAST_BYTES, mark_duplicates

    docs, _ = corpus
    ds = _dataset(ray_local, docs).map_batches(with_rank_key, batch_format="pyarrow")
    ds = ds.map_batches(lambda t: t.append_column("duplicate_of", pa.array(
        ["x" if i.endswith("7") else None for i in t.column("id").to_pylist()], pa.string())), batch_format="pyarrow")
    ds = ds.materialize()
    comps = lsh.connected_components(lsh.candidate_edges(ds, MinHashOptions(partitions=3)), partitions=3,
                                     include_roots=False).materialize()
    results = []
    for limit in (BROADCAST_BYTES, 0):
        rows = mark_duplicates(ds, comps, partitions=3, broadcast_bytes=limit).take_all()
        results.append(sorted((r["id"], r["duplicate_of"]) for r in rows))
    assert results[0] == results[1]
    assert len(results[0]) == len(docs)
    assert sum(d is not None and d != "x" for _, d in results[0]) > 50


def test_candidate_edges_join_the_same_documents_as_the_band_buckets(ray_local, corpus):
    """The band shuffle names documents by a 16-byte hash and the edges come back as rank keys:
    the edges' components equal those of grouping the band keys in memory (by rank key), also
    with one document present twice (same id and date: one node) and one dropped row."""
    from dataproc.corpus.dedup import lsh
    from dataproc.corpus.dedup.keys import rank_keys

    docs, _ = corpus
    rows = [dict(d, drop_reason=None) for d in docs] + [dict(docs[1], drop_reason=None)]
    rows[0] = dict(rows[0], drop_reason="language:low_score")
    opts = MinHashOptions(partitions=3)
    ds = _dataset(ray_local, rows, blocks=3).materialize()
    band_table = lsh.band_rows(pa.Table.from_pylist(rows[:50]), opts)
    assert band_table.schema.field(lsh.DOC).type == pa.binary(16)
    assert band_table.num_rows == 49 * opts.bands  # the dropped row has none

    live = [r for r in rows if r["drop_reason"] is None]
    keys = rank_keys(pa.array([r["id"] for r in live]), pa.array([r["date"] for r in live])).to_pylist()
    bands = band_keys(minhash_signatures([r["text"] for r in live], opts), opts.bands, opts.rows)
    first_in_bucket: dict[tuple[int, int], str] = {}
    pairs = [(k, first_in_bucket.setdefault((b, int(key)), k)) for k, row in zip(keys, bands) for b, key in enumerate(row)]
    expected = _union_components(pairs)

    edges = lsh.candidate_edges(ds, opts).take_all()
    got = _union_components([(e["doc_a"], e["doc_b"]) for e in edges])
    assert got == expected and len(expected) > 100


def _union_components(pairs) -> set[frozenset]:
    """Components with more than one node of the graph with these edges (union-find)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: dict[str, set] = {}
    for x in list(parent):
        groups.setdefault(find(x), set()).add(x)
    return {frozenset(g) for g in groups.values() if len(g) > 1}
