"""Run a vectorised function over whole hash partitions of a Ray Dataset.

`GroupedData.map_groups` calls its function once per distinct key: with millions of LSH
buckets or graph nodes, almost all of size one, that is millions of Python calls. Instead we
hash the key columns into `partitions` buckets, group by that small integer (one call per
partition, every row with a given key inside it) and let the function process its partition
with numpy/pyarrow sorts. The shuffle itself is Ray Data's (hash shuffle across the cluster),
so nothing is collected on the driver; a partition must fit in one worker's memory.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from dataproc.corpus.dedup._hashing import combine, hash_column
from llmforge.common.ray_session import cluster_cpus

PART = "__dedup_part"
# Documents per call of a map over whole documents (hashing, band keys, marking). A Parquet
# read hands over blocks of up to Ray Data's target block size (128 MiB: a whole corpus step
# of ~100k documents), and a UDF's working copies of a block are several times its size; a
# fixed batch keeps a worker's memory the same however large the corpus.
DOC_BATCH = 4096
TableFn = Callable[[pa.Table], pa.Table]


def default_partitions() -> int:
    """2 x the cluster's CPUs: enough tasks to use every core, few enough to stay cheap."""
    return 2 * cluster_cpus()


def partition_ids(table: pa.Table, keys: Sequence[str], partitions: int) -> np.ndarray:
    """Partition of every row: a stable hash of the key columns mod `partitions`."""
    h = combine([hash_column(table.column(k)) for k in keys])
    return (h % np.uint64(partitions)).astype(np.int32)


def _with_partition(batch: pa.Table, keys: Sequence[str], partitions: int) -> pa.Table:
    return batch.append_column(PART, pa.array(partition_ids(batch, keys, partitions), type=pa.int32()))


def _apply(group: pa.Table, fn: TableFn) -> pa.Table:
    return fn(group.drop_columns([PART]))


def partition_apply(ds, keys: Sequence[str], fn: TableFn, partitions: int):
    """`fn(table) -> table` over hash partitions of `ds` by `keys` (a Ray Dataset in and out).
    All rows with equal key values reach the same call; a call may hold many keys."""
    keyed = ds.map_batches(_with_partition, batch_format="pyarrow", fn_kwargs={"keys": list(keys), "partitions": partitions})
    return keyed.groupby(PART, num_partitions=partitions).map_groups(_apply, batch_format="pyarrow", fn_kwargs={"fn": fn})


RIGHT = "__right."  # prefix of the right side's columns inside a co-partitioned group
_SIDE = "__side"
PairFn = Callable[[pa.Table, pa.Table], pa.Table]


def _conform(batch: pa.Table, schema: pa.Schema, present: bool) -> list[pa.Array]:
    """The batch's columns cast to `schema`, or all-null columns of that schema."""
    n = batch.num_rows
    if not present:
        return [pa.nulls(n, f.type) for f in schema]
    return [batch.column(f.name).cast(f.type) if f.name in batch.column_names else pa.nulls(n, f.type)
            for f in schema]


def _tag_side(batch: pa.Table, keys: Sequence[str], partitions: int, right: bool,
              left_schema: pa.Schema, right_schema: pa.Schema) -> pa.Table:
    """Batch UDF: one common schema for both sides (left columns, prefixed right columns,
    side, partition), because the shuffle concatenates blocks without unifying schemas."""
    cols = _conform(batch, left_schema, not right) + _conform(batch, right_schema, right)
    names = list(left_schema.names) + [RIGHT + c for c in right_schema.names]
    side = pa.array(np.full(batch.num_rows, int(right), dtype=np.int8))
    part = pa.array(partition_ids(batch, keys, partitions), type=pa.int32())
    return pa.Table.from_arrays(cols + [side, part], names=names + [_SIDE, PART])


def _split_apply(group: pa.Table, fn: PairFn) -> pa.Table:
    is_right = group.column(_SIDE).to_numpy(zero_copy_only=False) == 1
    right_cols = [c for c in group.column_names if c.startswith(RIGHT)]
    left_cols = [c for c in group.column_names if c not in (_SIDE, PART) and not c.startswith(RIGHT)]
    left = group.filter(pa.array(~is_right)).select(left_cols)
    right = group.filter(pa.array(is_right)).select(right_cols)
    return fn(left, right.rename_columns([c[len(RIGHT):] for c in right_cols]))


def arrow_schema(ds) -> pa.Schema:
    """A Ray Dataset's Arrow schema (runs the plan up to its first block if not known)."""
    return ds.schema().base_schema


def co_partition_apply(left, right, left_keys: Sequence[str], right_keys: Sequence[str], fn: PairFn,
                       partitions: int, *, left_schema: pa.Schema | None = None,
                       right_schema: pa.Schema | None = None):
    """A hash join without a join operator: `fn(left_rows, right_rows) -> table` over matching
    hash partitions of two Ray Datasets (rows with equal key values meet in one call; either
    side may be empty there).

    Ray Data's `Dataset.join` needs polars, which data workers do not install; a union of the
    two sides through one hash shuffle does the same. Both sides are padded to one schema
    (each side's columns null on the other's rows, the right side's under a prefix so names
    never clash). Schemas not given are fetched with `Dataset.schema()`, which executes the
    plan up to its first block: pass them for expensive lazy inputs."""
    kw = {
        "partitions": partitions,
        "left_schema": left_schema or arrow_schema(left),
        "right_schema": right_schema or arrow_schema(right),
    }
    tagged_l = left.map_batches(_tag_side, batch_format="pyarrow", fn_kwargs={"keys": list(left_keys), "right": False, **kw})
    tagged_r = right.map_batches(_tag_side, batch_format="pyarrow", fn_kwargs={"keys": list(right_keys), "right": True, **kw})
    grouped = tagged_l.union(tagged_r).groupby(PART, num_partitions=partitions)
    return grouped.map_groups(_split_apply, batch_format="pyarrow", fn_kwargs={"fn": fn})


def segment_starts(table: pa.Table, keys: Sequence[str]) -> np.ndarray:
    """Boolean mask of rows whose key differs from the previous row (table sorted by keys)."""
    n = table.num_rows
    new = np.zeros(n, dtype=bool)
    if n == 0:
        return new
    new[0] = True
    for k in keys:
        col = table.column(k)
        new[1:] |= ~_equal(col.slice(1), col.slice(0, n - 1))
    return new


def _equal(a, b) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.equal(a, b).to_numpy(zero_copy_only=False)
