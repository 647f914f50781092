"""A hash-partitioned apply whose shuffle goes through files: memory that does not grow with
the input.

Ray Data's shuffles keep every map output in the object store until the reduce side has read
it, so a shuffle of rows proportional to the documents (exact-dedup keys: one per document;
MinHash band rows: `bands` per document) holds the whole shuffle in memory at once, and more
documents mean more memory on every node. This shuffle writes the rows to Parquet under a
work directory instead, as datatrove writes its bucket files:

    rows --map: one Parquet file per block, its rows ordered by partition, one row group per
           partition--> work directory (only a file's path and its partitions come back)
         --one task per partition: that partition's row group of every file, `fn`-->
           `fn`'s output, materialised; the work directory is deleted

There are enough partitions that none holds more than `ROWS_PER_PARTITION` rows, so a task's
memory is the same at any input size. What stays in the object store is `fn`'s output
(duplicate decisions, candidate edges), which scales with the duplicates found, not the corpus.
On a cluster of more than one node the work directory must be storage every node reads (the
data job puts it under its output directory).
"""
from __future__ import annotations

import json
import tempfile
import uuid
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataproc.corpus.dedup._shuffle import TableFn, default_partitions, partition_ids
from llmforge.common import fs

# Rows per partition at most: band rows are 28 bytes, so ~28 MiB read by one task, which holds
# a few copies of it while sorting (~150 MiB).
ROWS_PER_PARTITION = 1 << 20
_INDEX = pa.schema([("path", pa.string()), ("parts", pa.list_(pa.int32()))])


def partitions_for(rows: int, minimum: int | None = None) -> int:
    """Partitions for `rows` rows: `minimum` (default 2 x the cluster's CPUs), or more when
    that would put more than `ROWS_PER_PARTITION` rows in one."""
    return max(minimum or default_partitions(), -(-int(rows) // ROWS_PER_PARTITION))


def _write_partitioned(batch: pa.Table, keys: Sequence[str], partitions: int, directory: str) -> pa.Table:
    """Batch UDF: the batch as one Parquet file, rows grouped by partition, a row group each;
    returns its index row (path, partition of each row group in order)."""
    if batch.num_rows == 0:
        return _INDEX.empty_table()
    part = partition_ids(batch, keys, partitions)
    order = np.argsort(part, kind="stable")
    rows, part = batch.take(pa.array(order)), part[order]
    starts = np.flatnonzero(np.diff(part, prepend=-1))
    bounds = np.append(starts, len(part)).tolist()
    filesystem, root = fs.resolve(directory)
    path = fs.join(root, f"{uuid.uuid4().hex}.parquet")
    # Uncompressed: hashes do not compress, and the files live only until the partitions are read.
    with pq.ParquetWriter(path, rows.schema, filesystem=filesystem, compression="none") as writer:
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            writer.write_table(rows.slice(lo, hi - lo), row_group_size=hi - lo)
    return pa.Table.from_pylist([{"path": path, "parts": part[starts].tolist()}], schema=_INDEX)


def _apply_partitions(batch: pa.Table, fn: TableFn, directory: str, schema: pa.Schema) -> pa.Table:
    """Batch UDF over partition specs (JSON lists of [path, row group]): `fn` of each
    partition's rows."""
    filesystem, _ = fs.resolve(directory)
    out = []
    for spec in batch.column("groups").to_pylist():
        pieces = []
        for path, group in json.loads(spec):
            with filesystem.open_input_file(path) as f:
                pieces.append(pq.ParquetFile(f).read_row_group(group))
        out.append(fn(pa.concat_tables(pieces).cast(schema)))  # a spec lists only non-empty partitions
    return pa.concat_tables(out)


def _groups_by_partition(index_blocks: list[pa.Table]) -> dict[int, list[tuple[str, int]]]:
    groups: dict[int, list[tuple[str, int]]] = {}
    for block in index_blocks:
        if block.num_rows == 0:  # Ray Data may pass an empty block through without the UDF
            continue
        for path, parts in zip(block.column("path").to_pylist(), block.column("parts").to_pylist()):
            for group, k in enumerate(parts):
                groups.setdefault(k, []).append((path, group))
    return groups


def spilled_partition_apply(rows, keys: Sequence[str], fn: TableFn, partitions: int, schema: pa.Schema,
                            work_dir: str | None = None):
    """`fn(table) -> table` over hash partitions of the Ray Dataset `rows` by `keys` (all rows
    with equal key values reach the same call), shuffled through Parquet files in a fresh
    directory under `work_dir` (a local temporary directory when None: one node only).
    `schema` is the rows' schema (`fn` gets an empty table of it when there are no rows).
    Returns `fn`'s output as a materialised Ray Dataset; the files are gone by then."""
    import ray

    if work_dir is None:
        if len([n for n in ray.nodes() if n.get("Alive")]) > 1:
            raise ValueError("a spilled shuffle on a cluster of several nodes needs a work_dir that every node "
                             "can read (e.g. under the job's output directory)")
        work_dir = tempfile.gettempdir()
    filesystem, parent = fs.resolve(work_dir)
    directory = fs.join(parent, f"shuffle-{uuid.uuid4().hex[:12]}")
    filesystem.create_dir(directory, recursive=True)
    uri = directory if "://" not in work_dir else work_dir.split("://", 1)[0] + "://" + directory
    try:
        # One file per block that the map before hands over (per batch of its UDF). A batch
        # size here would make Ray Data bundle that many *input* rows into each fused task.
        index = rows.map_batches(_write_partitioned, batch_format="pyarrow",
                                 fn_kwargs={"keys": list(keys), "partitions": partitions, "directory": uri})
        groups = _groups_by_partition(ray.get(index.materialize().to_arrow_refs()))
        if not groups:
            return ray.data.from_arrow(fn(schema.empty_table())).materialize()
        specs = [{"groups": json.dumps(groups[k])} for k in sorted(groups)]
        tasks = ray.data.from_items(specs, override_num_blocks=len(specs))
        return tasks.map_batches(_apply_partitions, batch_format="pyarrow", batch_size=1,
                                 fn_kwargs={"fn": fn, "directory": uri, "schema": schema}).materialize()
    finally:
        fs.delete_dir(filesystem, directory)
