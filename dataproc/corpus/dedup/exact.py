"""Exact dedup on Ray Data: a hash shuffle of compact keys, then a join of the decisions.

Within a group of equal normalised-text hashes the document with the smallest `rank_key`
(earliest date, then smallest id; see `keys`) is kept; every other one gets `duplicate_of` =
the kept id. Rows already dropped by an earlier stage (`drop_reason` set) pass through
untouched.

    docs --map--> (hash hi, hash lo, rank_key) of every live document
         --shuffle by hash, through files (`spilled_shuffle`)--> (doc, component_root) for
           every copy that is not its group's first
         --broadcast to a map over the docs (`marking`)--> docs + `duplicate_of`

Only ~60 bytes per document go through the shuffle, not the documents: shuffled texts sat in
the object store two or three times over at the shuffle's barrier, so memory grew with the
corpus. The keys go through files, in partitions sized by the number of documents, so not
even they are held in memory at once. The docs are read twice (keys, then marking): pass a
dataset read from storage or materialised, or its plan runs twice.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataproc.corpus.dedup._shuffle import DOC_BATCH, default_partitions, segment_starts
from dataproc.corpus.dedup.keys import RANK_KEY, alive_mask, with_rank_key
from dataproc.corpus.dedup.marking import DOC, ROOT, as_large_string, mark_duplicates
from dataproc.corpus.dedup.spilled_shuffle import partitions_for, spilled_partition_apply
from dataproc.corpus.dedup.text_norm import text_hashes

_HI, _LO = "__exact_hi", "__exact_lo"
KEY_SCHEMA = pa.schema([(_HI, pa.uint64()), (_LO, pa.uint64()), (RANK_KEY, pa.large_string())])


def exact_keys(batch: pa.Table, text_column: str = "text", drop_column: str | None = "drop_reason") -> pa.Table:
    """Batch UDF: the 128-bit normalised-text hash (two uint64 columns) and `rank_key` of
    every live row; all that the shuffle carries."""
    batch = with_rank_key(batch)
    live = batch.filter(alive_mask(batch, drop_column))
    h = text_hashes(live.column(text_column))
    return pa.table({_HI: pa.array(h[:, 0]), _LO: pa.array(h[:, 1]), RANK_KEY: as_large_string(live.column(RANK_KEY))})


def exact_decisions(part: pa.Table) -> pa.Table:
    """Partition UDF over key rows: (`doc`, `component_root`) = (rank key, the rank key of its
    hash group's smallest) for every row that is not that smallest. A row whose rank key
    equals the keeper's (the same id and date twice) is the keeper itself to the join, so it
    is not listed: listing it would mark the keeper too."""
    t = part.sort_by([(_HI, "ascending"), (_LO, "ascending"), (RANK_KEY, "ascending")])
    first = segment_starts(t, [_HI, _LO])
    head = np.flatnonzero(first)[np.cumsum(first) - 1]  # row of each group's keeper
    member = np.flatnonzero(~first)
    keys = as_large_string(t.column(RANK_KEY))
    docs, roots = keys.take(pa.array(member)), keys.take(pa.array(head[member]))
    return pa.table({DOC: docs, ROOT: roots}).filter(pc.not_equal(docs, roots))


def exact_duplicates(ds, *, text_column: str = "text", partitions: int | None = None,
                     drop_column: str | None = "drop_reason", docs: int | None = None,
                     work_dir: str | None = None):
    """Ray Dataset -> the same rows (same order) plus `rank_key` and `duplicate_of` (null =
    kept, else the kept document's id). Needs `id` and `date` columns (or a `rank_key`) and
    `text_column`. `ds` is consumed twice (see the module doc), three times when `docs` (its
    number of rows, or an upper bound) is not given and has to be counted. The shuffle's
    files go under `work_dir` (see `spilled_partition_apply`); `partitions` is the least
    number of partitions (default 2 x the cluster's CPUs)."""
    partitions = partitions or default_partitions()
    ds = ds.map_batches(with_rank_key, batch_format="pyarrow", batch_size=DOC_BATCH)
    keys = ds.map_batches(exact_keys, batch_format="pyarrow", batch_size=DOC_BATCH,
                          fn_kwargs={"text_column": text_column, "drop_column": drop_column})
    rows = ds.count() if docs is None else docs
    decisions = spilled_partition_apply(keys, [_HI, _LO], exact_decisions, partitions_for(rows, partitions),
                                        KEY_SCHEMA, work_dir)
    return mark_duplicates(ds, decisions, partitions=partitions)
