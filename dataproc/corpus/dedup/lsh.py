"""Near-duplicate clustering on Ray Data, scaling past one node (every step is a hash shuffle;
one change count per step and the band shuffle's index of files come to the driver).

    docs --map--> (band, band key, doc hash) rows, `bands` per document
         --shuffle by (band, key), through files (`spilled_shuffle`)--> star edges: each
           bucket member -> one member of the bucket
         --name the edges' documents (a broadcast of their hashes to a map over the docs)-->
           edges between rank keys
         [--optional: drop edges whose signature-estimated Jaccard < threshold]
         --connected components (large-star / small-star)--> (doc, component_root)
         --join with docs (broadcast of the components, or a shuffle when they are
           large)--> `duplicate_of` = id of the component root

The band shuffle is the only step whose size is `bands` rows per document, so its rows name a
document by a 16-byte hash of its rank key (xxh3-128) instead of the rank key itself (30-70
bytes), and they go through Parquet files in partitions sized by the number of rows, not
through the object store: a task holds one partition's rows at any corpus size. Only
documents that share a bucket come back to their rank keys, before the components. Graph
nodes are `rank_key`s (date + id, see `keys`), so "the smallest node of a component" is the
document to keep: earliest date, then smallest id. As in FineWeb, any shared band makes a
duplicate pair and duplicates are transitive (the whole component keeps one document).
"""
from __future__ import annotations

import logging
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from dataproc.corpus.dedup._shuffle import DOC_BATCH, co_partition_apply, default_partitions, partition_apply, segment_starts
from dataproc.corpus.dedup.keys import DUPLICATE_OF, RANK_KEY, alive_mask, with_rank_key
from dataproc.corpus.dedup.marking import DOC, ROOT, mark_duplicates
from dataproc.corpus.dedup.marking import as_large_string as _arr
from dataproc.corpus.dedup.minhash import MinHashOptions, band_keys, estimated_jaccard, minhash_signatures
from dataproc.corpus.dedup.spilled_shuffle import partitions_for, spilled_partition_apply

log = logging.getLogger(__name__)

DOC_A, DOC_B = "doc_a", "doc_b"  # an edge; after normalisation doc_a > doc_b
_CHANGED = "changed"
_EDGE_SCHEMA = pa.schema([(DOC_A, pa.large_string()), (DOC_B, pa.large_string())])


# ---------------------------------------------------------------------------------------------
# Candidate edges.


def _live_rows(batch: pa.Table, drop_column: str | None) -> pa.Table:
    """Rows that take part: not dropped earlier and not already an (exact) duplicate."""
    batch = with_rank_key(batch)
    alive = alive_mask(batch, drop_column)
    if DUPLICATE_OF in batch.column_names:
        alive = pc.and_(alive, pc.is_null(batch.column(DUPLICATE_OF)))
    return batch.filter(alive)


DOC_HASH = pa.binary(16)
_HASH = "doc_hash"
BAND_ROW_SCHEMA = pa.schema([("band", pa.int32()), ("key", pa.uint64()), (DOC, DOC_HASH)])


def doc_hashes(rank_keys) -> pa.Array:
    """xxh3-128 of each rank key (16 bytes): a document's name in the band shuffle. Two
    documents collide with probability ~2**-128 per pair; one rank key always hashes alike."""
    keys = _arr(rank_keys).to_pylist()
    return pa.array([xxhash.xxh3_128_digest(k.encode("utf-8", "surrogatepass")) for k in keys], type=DOC_HASH)


def band_rows(batch: pa.Table, options: MinHashOptions, text_column: str = "text",
              drop_column: str | None = "drop_reason") -> pa.Table:
    """Batch UDF: one row per (live document, band): `band` int32, `key` uint64, `doc` the
    document's hash (`doc_hashes`)."""
    live = _live_rows(batch, drop_column)
    keys = band_keys(minhash_signatures(live.column(text_column), options), options.bands, options.rows)
    n, b = keys.shape
    return pa.table({
        "band": pa.array(np.tile(np.arange(b, dtype=np.int32), n)),
        "key": pa.array(keys.ravel()),
        DOC: doc_hashes(live.column(RANK_KEY)).take(pa.array(np.repeat(np.arange(n), b))),
    })


def bucket_edges(part: pa.Table) -> pa.Table:
    """Partition UDF over band rows: for every bucket (equal band and key) with more than one
    document, an edge from each member to the bucket's first member in `doc` order (a star:
    n-1 edges per bucket of n, not n(n-1)/2; which member is the centre does not change the
    components)."""
    t = part.sort_by([("band", "ascending"), ("key", "ascending"), (DOC, "ascending")])
    first = segment_starts(t, ["band", "key"])
    head = np.flatnonzero(first)[np.cumsum(first) - 1]
    member = np.flatnonzero(~first)
    docs = t.column(DOC)
    return pa.table({DOC_A: docs.take(pa.array(member)), DOC_B: docs.take(pa.array(head[member]))})


def candidate_edges(ds, options: MinHashOptions | None = None, *, text_column: str = "text",
                    drop_column: str | None = "drop_reason", docs: int | None = None,
                    work_dir: str | None = None):
    """Ray Dataset of documents (`id`, `date` or `rank_key`, `text_column`) -> Ray Dataset of
    candidate duplicate edges (`doc_a`, `doc_b`: rank keys). The same pair may appear once per
    shared band. The documents are read twice (band rows, then naming the edges' documents),
    once more to count them when `docs` (their number, or an upper bound) is not given; with
    `options.jaccard_threshold`, pairs whose estimated Jaccard is below it are dropped (and
    the documents are read once more, for signatures). The band shuffle's files go under
    `work_dir` (see `spilled_partition_apply`)."""
    options = options or MinHashOptions()
    parts = options.partitions or default_partitions()
    rows = ds.map_batches(band_rows, batch_format="pyarrow", batch_size=DOC_BATCH,
                          fn_kwargs={"options": options, "text_column": text_column, "drop_column": drop_column})
    n_rows = (ds.count() if docs is None else docs) * options.bands
    buckets = spilled_partition_apply(rows, ["band", "key"], bucket_edges, partitions_for(n_rows, parts),
                                      BAND_ROW_SCHEMA, work_dir)
    edges = name_edge_documents(buckets, ds, drop_column)
    if options.jaccard_threshold is not None:
        edges = verify_edges(edges, ds, options, text_column=text_column, drop_column=drop_column)
    return edges


# ---------------------------------------------------------------------------------------------
# Hashes back to rank keys, for the documents that share a bucket (a fraction of the corpus).


def _hash_bytes(col) -> np.ndarray:
    """A `doc_hashes` column as numpy 'S16' (zero-copy), which sorts and searches in C."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if len(arr) == 0:  # an empty array may have no data buffer
        return np.zeros(0, dtype="S16")
    return np.frombuffer(arr.buffers()[1], dtype="S16", count=arr.offset + len(arr))[arr.offset:]


def _positions(sorted_hashes: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each of `hashes` in `sorted_hashes` and whether it is there (a binary search per
    row: a lookup of millions of documents costs each batch O(batch log n), not O(n))."""
    pos = np.searchsorted(sorted_hashes, hashes)
    if len(sorted_hashes) == 0:
        return pos, np.zeros(len(hashes), dtype=bool)
    clipped = np.minimum(pos, len(sorted_hashes) - 1)
    return clipped, (pos < len(sorted_hashes)) & (sorted_hashes[clipped] == hashes)


def _distinct_hashes(*blocks: pa.Table) -> np.ndarray:
    """Remote task: every hash at either end of an edge, once, sorted."""
    ends = [_hash_bytes(b.column(c)) for b in blocks if b.num_rows for c in (DOC_A, DOC_B)]
    return np.unique(np.concatenate(ends)) if ends else np.zeros(0, dtype="S16")


def _named_rows(batch: pa.Table, hashes, drop_column: str | None) -> pa.Table:
    """Batch UDF: (`doc_hash`, `doc` rank key) of the live documents whose hash is in `hashes`."""
    import ray

    if isinstance(hashes, ray.ObjectRef):
        hashes = ray.get(hashes)
    keys = _arr(_live_rows(batch, drop_column).column(RANK_KEY))
    h = doc_hashes(keys)
    _, found = _positions(hashes, _hash_bytes(h))
    keep = pa.array(found)
    return pa.table({_HASH: h.filter(keep), DOC: keys.filter(keep)})


def _names_table(*blocks: pa.Table) -> tuple[np.ndarray, pa.Array]:
    """Remote task: the named rows as a lookup for `_rename`: sorted hashes, their rank keys."""
    tables = [pa.table({_HASH: b.column(_HASH), DOC: _arr(b.column(DOC))}) for b in blocks if b.num_rows]
    if not tables:
        return np.zeros(0, dtype="S16"), pa.array([], pa.large_string())
    t = pa.concat_tables(tables).combine_chunks()
    h = _hash_bytes(t.column(_HASH))
    order = np.argsort(h, kind="stable")
    return h[order], _arr(t.column(DOC)).take(pa.array(order))


def _rename(batch: pa.Table, names) -> pa.Table:
    """Batch UDF: edges between hashes -> the same edges between rank keys."""
    import ray

    if isinstance(names, ray.ObjectRef):
        names = ray.get(names)
    hashes, keys = names
    out = {}
    for end in (DOC_A, DOC_B):
        pos, found = _positions(hashes, _hash_bytes(batch.column(end)))
        if not found.all():  # every end is a live document that the map has seen
            raise RuntimeError(f"{int((~found).sum())} edge ends have no document: was the input changed mid-run?")
        out[end] = keys.take(pa.array(pos))
    return pa.table(out)


def name_edge_documents(edges, ds, drop_column: str | None = "drop_reason"):
    """Edges between document hashes -> edges between rank keys. The edges are materialised
    (they scale with the near-duplicate documents, not the corpus); their distinct hashes go
    to every map task over `ds` by broadcast, which returns the (hash, rank key) of those
    documents only, and that table renames both ends of every edge."""
    import ray

    edges = edges.materialize()
    hashes = ray.remote(_distinct_hashes).remote(*edges.to_arrow_refs())
    named = ds.map_batches(_named_rows, batch_format="pyarrow", batch_size=DOC_BATCH,
                           fn_kwargs={"hashes": hashes, "drop_column": drop_column}).materialize()
    names = ray.remote(_names_table).remote(*named.to_arrow_refs())
    return edges.map_batches(_rename, batch_format="pyarrow", fn_kwargs={"names": names})


# ---------------------------------------------------------------------------------------------
# Optional verification: estimated Jaccard of each candidate pair from the full signatures.
# Star edges pair a member with its bucket's first member in hash order, so a member similar
# to another member but below the threshold against that one loses the edge (it may still join
# through another band). Off by default, as in FineWeb.


def signature_rows(batch: pa.Table, options: MinHashOptions, text_column: str = "text",
                   drop_column: str | None = "drop_reason") -> pa.Table:
    """Batch UDF: (`doc` rank key, `sig` fixed_size_list<uint64>[bands*rows]) per live doc."""
    live = _live_rows(batch, drop_column)
    sig = minhash_signatures(live.column(text_column), options)
    flat = pa.array(sig.ravel())
    return pa.table({DOC: live.column(RANK_KEY), "sig": pa.FixedSizeListArray.from_arrays(flat, sig.shape[1])})


def _signature_matrix(col, width: int) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return arr.flatten().to_numpy().reshape(len(arr), width)


def _lookup_sig(left: pa.Table, sigs: pa.Table, key: str) -> tuple[pa.Table, pa.Array]:
    """Rows of `left` whose `key` has a signature in `sigs`, and those signatures."""
    if sigs.num_rows == 0:
        return left.slice(0, 0), None
    idx = pc.index_in(left.column(key), value_set=_arr(sigs.column(DOC)))
    found = pc.is_valid(idx)
    return left.filter(found), sigs.column("sig").take(idx.filter(found))


def _edges_with_sig_a(left: pa.Table, sigs: pa.Table, width: int) -> pa.Table:
    """Join UDF keyed by doc_a: distinct edges, each with doc_a's signature."""
    sig_type = _sig_type(width)
    if left.num_rows == 0:
        return pa.table({DOC_A: pa.array([], pa.large_string()), DOC_B: pa.array([], pa.large_string()),
                         "sig_a": pa.array([], sig_type)})
    t = _sorted_distinct(pa.table({DOC_A: _arr(left.column(DOC_A)), DOC_B: _arr(left.column(DOC_B))}), [DOC_A, DOC_B])
    t, sig = _lookup_sig(t, sigs, DOC_A)
    return t.append_column("sig_a", sig if sig is not None else pa.array([], sig_type))


def _keep_similar(left: pa.Table, sigs: pa.Table, threshold: float, width: int) -> pa.Table:
    """Join UDF keyed by doc_b: estimated Jaccard of each edge, edges below threshold dropped."""
    empty = pa.table({DOC_A: pa.array([], pa.large_string()), DOC_B: pa.array([], pa.large_string()),
                      "jaccard_est": pa.array([], pa.float64())})
    if left.num_rows == 0:
        return empty
    left, sig_b = _lookup_sig(left, sigs, DOC_B)
    if sig_b is None or left.num_rows == 0:
        return empty
    est = estimated_jaccard(_signature_matrix(left.column("sig_a"), width), _signature_matrix(sig_b, width))
    out = pa.table({DOC_A: _arr(left.column(DOC_A)), DOC_B: _arr(left.column(DOC_B)), "jaccard_est": pa.array(est)})
    return out.filter(pa.array(est >= threshold))


def verify_edges(edges, ds, options: MinHashOptions, *, text_column: str = "text",
                 drop_column: str | None = "drop_reason"):
    """Edges -> distinct edges with signature-estimated Jaccard >= options.jaccard_threshold,
    plus a `jaccard_est` column. Two shuffle joins against (doc, signature) rows."""
    parts = options.partitions or default_partitions()
    sigs = ds.map_batches(signature_rows, batch_format="pyarrow", batch_size=DOC_BATCH,
                          fn_kwargs={"options": options, "text_column": text_column, "drop_column": drop_column})
    sig_schema = pa.schema([(DOC, pa.large_string()), ("sig", _sig_type(options.num_hashes))])
    with_a = co_partition_apply(edges, sigs, [DOC_A], [DOC], partial(_edges_with_sig_a, width=options.num_hashes), parts,
                                left_schema=_EDGE_SCHEMA, right_schema=sig_schema)
    keep = partial(_keep_similar, threshold=options.jaccard_threshold, width=options.num_hashes)
    a_schema = _EDGE_SCHEMA.append(pa.field("sig_a", _sig_type(options.num_hashes)))
    return co_partition_apply(with_a, sigs, [DOC_B], [DOC], keep, parts, left_schema=a_schema, right_schema=sig_schema)


def _sig_type(width: int) -> pa.DataType:
    return pa.list_(pa.uint64(), width)


# ---------------------------------------------------------------------------------------------
# Connected components: alternating large-star / small-star (Kiveris et al., "Connected
# Components in MapReduce and Beyond", SoCC 2014). Nodes are strings ordered by value.
# Large-star at u: link every strictly larger neighbour of u to m(u) = min(N(u) + u).
# Small-star at u: link u and all its smaller neighbours to the smallest of them.
# Both keep connectivity; the fixed point is a forest of stars centred on each component's
# minimum. Proven O(log^2 n) rounds, O(log n) observed (a path of n nodes: ~log2 n rounds).


def _normalise_edges(batch: pa.Table) -> pa.Table:
    """Batch UDF: orient every edge larger -> smaller and drop self loops."""
    a, b = batch.column(DOC_A), batch.column(DOC_B)
    swap = pc.less(a, b)
    hi, lo = pc.if_else(swap, b, a), pc.if_else(swap, a, b)
    t = pa.table({DOC_A: hi, DOC_B: lo})
    return t.filter(pc.not_equal(hi, lo))


def _both_directions(batch: pa.Table) -> pa.Table:
    """Batch UDF: (u, v) rows for both endpoints of every edge, for the large-star step."""
    a, b = batch.column(DOC_A), batch.column(DOC_B)
    return pa.table({"u": pa.concat_arrays([_arr(a), _arr(b)]), "v": pa.concat_arrays([_arr(b), _arr(a)])})


def _sorted_distinct(t: pa.Table, keys: list[str]) -> pa.Table:
    t = t.sort_by([(k, "ascending") for k in keys])
    return t.filter(pa.array(segment_starts(t, keys)))


def _edges(a, b, changed) -> pa.Table:
    return pa.table({DOC_A: _arr(a), DOC_B: _arr(b), _CHANGED: pa.array(changed, type=pa.int64())})


def large_star(part: pa.Table) -> pa.Table:
    """Partition UDF over (u, v) rows keyed by u -> edges (v, m(u)) for every v > u.
    `changed` = 1 where m(u) != u, i.e. the edge (v, u) was re-pointed."""
    t = _sorted_distinct(part, ["u", "v"])
    first = segment_starts(t, ["u"])
    head = np.flatnonzero(first)[np.cumsum(first) - 1]
    u, v = t.column("u"), t.column("v")
    min_v = v.take(pa.array(head))
    m = pc.if_else(pc.less(u, min_v), u, min_v)
    larger = pc.greater(v, u)
    changed = pc.not_equal(m, u).to_numpy(zero_copy_only=False)
    return _edges(v.filter(larger), m.filter(larger), changed[larger.to_numpy(zero_copy_only=False)])


def small_star(part: pa.Table) -> pa.Table:
    """Partition UDF over oriented edges (doc_a > doc_b) keyed by doc_a -> edges (doc_a, m)
    and (w, m) for every other smaller neighbour w, m = doc_a's smallest neighbour.
    `changed` = 1 for the (w, m) edges, which did not exist before."""
    t = _sorted_distinct(part.select([DOC_A, DOC_B]), [DOC_A, DOC_B])
    first = segment_starts(t, [DOC_A])
    head = np.flatnonzero(first)[np.cumsum(first) - 1]
    a, b = t.column(DOC_A), t.column(DOC_B)
    m = b.take(pa.array(head))
    keep, moved = pa.array(first), pa.array(~first)
    return pa.concat_tables([
        _edges(a.filter(keep), m.filter(keep), np.zeros(int(first.sum()), dtype=np.int64)),
        _edges(b.filter(moved), m.filter(moved), np.ones(int((~first).sum()), dtype=np.int64)),
    ])


def _roots(part: pa.Table) -> pa.Table:
    r = pc.unique(_arr(part.column(ROOT)))
    return pa.table({DOC: r, ROOT: r})


def connected_components(edges, *, partitions: int | None = None, max_rounds: int = 64,
                         include_roots: bool = True, stats: dict | None = None):
    """Ray Dataset of edges (`doc_a`, `doc_b`, any orientation, duplicates allowed) -> Ray
    Dataset (`doc`, `component_root`): every node of the graph with the smallest node of its
    component (roots map to themselves unless `include_roots=False`).

    Each round is a large-star then a small-star step, each one hash shuffle by node; the
    step's output is materialised in the object store and its `changed` column summed (that
    scalar is all the driver sees). A round with zero changes is a fixed point: every node has
    at most one smaller neighbour and no node with a smaller neighbour has larger ones, i.e.
    stars around each component's minimum. `stats`, if given, receives `cc_rounds` (including
    that final confirming round) and `cc_changes` per round."""
    parts = partitions or default_partitions()
    current = edges.map_batches(_normalise_edges, batch_format="pyarrow")
    changes: list[int] = []
    for _ in range(max_rounds):
        ls = partition_apply(current.map_batches(_both_directions, batch_format="pyarrow"), ["u"], large_star, parts).materialize()
        ss = partition_apply(ls, [DOC_A], small_star, parts).materialize()
        changes.append(int(ls.sum(_CHANGED) or 0) + int(ss.sum(_CHANGED) or 0))
        log.info("connected components round %d: %d changed edges", len(changes), changes[-1])
        current = ss
        if changes[-1] == 0:
            break
    else:
        raise RuntimeError(f"connected components did not converge in {max_rounds} rounds (changes {changes})")
    if stats is not None:
        stats.update(cc_rounds=len(changes), cc_changes=changes)
    members = current.select_columns([DOC_A, DOC_B]).rename_columns({DOC_A: DOC, DOC_B: ROOT})
    if not include_roots:
        return members
    return members.union(partition_apply(members, [ROOT], _roots, parts))


def minhash_duplicates(ds, options: MinHashOptions | None = None, *, text_column: str = "text",
                       drop_column: str | None = "drop_reason", stats: dict | None = None,
                       docs: int | None = None, work_dir: str | None = None):
    """The whole near-dedup plan: docs -> the same rows plus `rank_key` and `duplicate_of`.

    `ds` is consumed three times (band rows, naming the candidate documents, then the marking
    join; four when `docs`, its number of rows or an upper bound, is not given and has to be
    counted): materialise it or read it from storage, or it is recomputed. The band
    shuffle's files go under `work_dir` (see `spilled_partition_apply`). Connected components
    execute eagerly (one Ray Data execution per step, to count changes); the returned dataset
    is lazy over `ds`.

    Rows with `duplicate_of` already set (exact dedup ran first) or `drop_reason` set take no
    part and keep their value. An exact duplicate points at its exact group's keeper, which
    this stage may remove in turn: follow `duplicate_of` to the end for the surviving copy."""
    options = options or MinHashOptions()
    parts = options.partitions or default_partitions()
    ds = ds.map_batches(with_rank_key, batch_format="pyarrow", batch_size=DOC_BATCH)
    edges = candidate_edges(ds, options, text_column=text_column, drop_column=drop_column, docs=docs,
                            work_dir=work_dir)
    comps = connected_components(edges, partitions=parts, max_rounds=options.max_cc_rounds,
                                 include_roots=False, stats=stats)
    return mark_duplicates(ds, comps, partitions=parts)
