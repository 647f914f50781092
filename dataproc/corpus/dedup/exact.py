"""Exact dedup on Ray Data: one hash shuffle of the documents by normalised-text hash.

Within a group of equal hashes the document with the smallest `rank_key` (earliest date, then
smallest id; see `keys`) is kept; every other one gets `duplicate_of` = the kept id. Rows
already dropped by an earlier stage (`drop_reason` set) pass through untouched.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pyarrow as pa

from dataproc.corpus.dedup._shuffle import default_partitions, partition_apply, segment_starts
from dataproc.corpus.dedup.keys import DUPLICATE_OF, RANK_KEY, alive_mask, ids_of, with_rank_key
from dataproc.corpus.dedup.text_norm import text_hashes

_HI, _LO = "__exact_hi", "__exact_lo"


def add_text_hash(batch: pa.Table, text_column: str = "text") -> pa.Table:
    """Batch UDF: the 128-bit normalised-text hash as two uint64 columns, plus `rank_key`."""
    h = text_hashes(batch.column(text_column))
    batch = with_rank_key(batch)
    return batch.append_column(_HI, pa.array(h[:, 0])).append_column(_LO, pa.array(h[:, 1]))


def mark_exact_duplicates(part: pa.Table, drop_column: str | None = "drop_reason") -> pa.Table:
    """Partition UDF: set `duplicate_of` for every alive row that is not the smallest
    `rank_key` of its hash group. Input: rows with `_HI`, `_LO`, `rank_key`; output: the same
    rows without the hash columns, with `duplicate_of` (null = kept)."""
    alive = alive_mask(part, drop_column).to_numpy(zero_copy_only=False)
    dup_of = np.full(part.num_rows, None, dtype=object)
    idx = np.flatnonzero(alive)
    if len(idx):
        live = part.take(idx).append_column("__row", pa.array(idx))
        live = live.sort_by([(_HI, "ascending"), (_LO, "ascending"), (RANK_KEY, "ascending")])
        first = segment_starts(live, [_HI, _LO])
        group_first = np.flatnonzero(first)[np.cumsum(first) - 1]  # row of each group's keeper
        keeper_ids = ids_of(live.column(RANK_KEY).take(group_first)).to_numpy(zero_copy_only=False)
        rows = live.column("__row").to_numpy()
        dup_of[rows[~first]] = keeper_ids[~first]
    out = part.drop_columns([_HI, _LO])
    return out.append_column(DUPLICATE_OF, pa.array(dup_of, type=pa.string()))


def exact_duplicates(ds, *, text_column: str = "text", partitions: int | None = None,
                     drop_column: str | None = "drop_reason"):
    """Ray Dataset -> the same rows plus `rank_key` and `duplicate_of` (null = kept, else the
    kept document's id). Needs `id` and `date` columns (or a `rank_key`) and `text_column`."""
    partitions = partitions or default_partitions()
    hashed = ds.map_batches(add_text_hash, batch_format="pyarrow", fn_kwargs={"text_column": text_column})
    return partition_apply(hashed, [_HI, _LO], partial(mark_exact_duplicates, drop_column=drop_column), partitions)

