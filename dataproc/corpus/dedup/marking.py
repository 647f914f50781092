"""Setting `duplicate_of` on the documents from a small table of decisions.

Both dedup stages decide on compact keys only (exact: text hash + rank key; MinHash: band
keys, then graph nodes) and end with the same table, one row per document to remove:
`doc` = its rank key, `component_root` = the rank key of the copy to keep. This module joins
that table back to the documents, whose texts never go through a shuffle.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataproc.corpus.dedup._hashing import hash_column
from dataproc.corpus.dedup._shuffle import DOC_BATCH, co_partition_apply, default_partitions
from dataproc.corpus.dedup.keys import DUPLICATE_OF, RANK_KEY, ids_of

DOC, ROOT = "doc", "component_root"
DECISION_SCHEMA = pa.schema([(DOC, pa.large_string()), (ROOT, pa.large_string())])


def as_large_string(col) -> pa.Array:
    """One contiguous large_string array (blocks may hold string or large_string chunks)."""
    return (col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col).cast(pa.large_string())


def _mark(docs: pa.Table, decisions: pa.Table) -> pa.Table:
    """Join UDF: `duplicate_of` = id of the kept copy for docs listed in `decisions`; an
    existing `duplicate_of` (e.g. from exact dedup) wins."""
    if decisions.num_rows:
        idx = pc.index_in(docs.column(RANK_KEY), value_set=as_large_string(decisions.column(DOC)))
        dup = ids_of(as_large_string(decisions.column(ROOT)).take(idx)).cast(pa.string())
    else:
        dup = pa.nulls(docs.num_rows, pa.string())
    if DUPLICATE_OF in docs.column_names:
        i = docs.column_names.index(DUPLICATE_OF)
        return docs.set_column(i, DUPLICATE_OF, pc.coalesce(docs.column(DUPLICATE_OF).cast(pa.string()), dup))
    return docs.append_column(DUPLICATE_OF, dup)


# Decisions up to this many bytes are joined to the documents by broadcast (one sorted lookup
# table in the object store, read zero-copy by every map task), so the documents, texts and
# all, stream through a map instead of a hash shuffle that holds them in the object store at
# once (two or three copies of the corpus at its barrier). Only removed documents are in it:
# ~60 bytes each, so 256 MiB covers ~4M of them.
BROADCAST_BYTES = 256 << 20
_HASH = "__doc_hash"


def _decision_lookup(*blocks: pa.Table) -> pa.Table:
    """Remote task: decision blocks -> one table sorted by a stable uint64 hash of `doc`."""
    t = pa.table({DOC: pa.array([], pa.large_string()), ROOT: pa.array([], pa.large_string())})
    if blocks:
        t = pa.concat_tables([pa.table({DOC: as_large_string(b.column(DOC)), ROOT: as_large_string(b.column(ROOT))})
                              for b in blocks])
    h = hash_column(t.column(DOC))
    order = np.argsort(h, kind="stable")
    return pa.table({_HASH: pa.array(h[order]), DOC: t.column(DOC).take(order), ROOT: t.column(ROOT).take(order)})


def _mark_broadcast(docs: pa.Table, lookup) -> pa.Table:
    """Batch UDF: `_mark` against the lookup rows whose hash equals one of the batch's rank
    keys (every row of an equal hash, so a 64-bit collision cannot hide a member; `_mark`
    then matches the strings exactly)."""
    import ray

    if isinstance(lookup, ray.ObjectRef):
        lookup = ray.get(lookup)
    sorted_h = lookup.column(_HASH).to_numpy()
    h = hash_column(docs.column(RANK_KEY))
    left = np.searchsorted(sorted_h, h, side="left")
    count = np.searchsorted(sorted_h, h, side="right") - left
    total = int(count.sum())
    idx = np.repeat(left, count) + (np.arange(total) - np.repeat(np.cumsum(count) - count, count))
    return _mark(docs, lookup.select([DOC, ROOT]).take(pa.array(idx, type=pa.int64())))


def mark_duplicates(ds, decisions, *, partitions: int | None = None, broadcast_bytes: int | None = None):
    """Docs (with `rank_key`) + decisions (`doc`, `component_root`: rank keys) -> docs with
    `duplicate_of`: the kept copy's id for docs listed as `doc`, null otherwise.

    Decisions of at most `broadcast_bytes` (default `BROADCAST_BYTES`; materialised here) are
    broadcast to a map over the docs, which keeps their order; larger ones are joined by a
    hash shuffle of both sides. Rank keys name documents: two rows with one id and date are
    one document to the join."""
    import ray

    parts = partitions or default_partitions()
    table = decisions.materialize()
    limit = BROADCAST_BYTES if broadcast_bytes is None else broadcast_bytes
    if (table.size_bytes() or 0) <= limit:
        lookup = ray.remote(_decision_lookup).remote(*table.to_arrow_refs())
        return ds.map_batches(_mark_broadcast, batch_format="pyarrow", batch_size=DOC_BATCH, fn_kwargs={"lookup": lookup})
    return co_partition_apply(ds, table, [RANK_KEY], [DOC], _mark, parts, right_schema=DECISION_SCHEMA)
