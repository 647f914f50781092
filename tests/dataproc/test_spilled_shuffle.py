"""The shuffle through files that the dedup steps use for their per-document rows."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dataproc.corpus.dedup import spilled_shuffle
from dataproc.corpus.dedup.spilled_shuffle import partitions_for, spilled_partition_apply
from tests.support.datasets import sliced_dataset

SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.string()), ("v", pa.float64())])


def _rows(n: int, keys: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, keys, n)
    return pa.table({"a": pa.array(a, pa.int64()), "b": pa.array([f"k{x % 7}" for x in a]),
                     "v": pa.array(rng.random(n))})


def _per_key(part: pa.Table) -> pa.Table:
    """One row per (a, b) key of the partition, with its row count and sum, how many rows the
    call saw and a random id of the call (each call is one partition)."""
    g = part.group_by(["a", "b"]).aggregate([("v", "count"), ("v", "sum")])
    call = int(np.random.default_rng().integers(1 << 62))
    return pa.table({"a": g.column("a"), "b": g.column("b"), "n": g.column("v_count"), "s": g.column("v_sum"),
                     "seen": pa.array(np.full(g.num_rows, part.num_rows), pa.int64()),
                     "call": pa.array(np.full(g.num_rows, call), pa.int64())})


def _table(ds) -> pa.Table:
    import ray

    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def test_every_key_reaches_one_call_with_all_its_rows(ray_local, tmp_path):
    table = _rows(20_000, keys=3_000)
    out = spilled_partition_apply(sliced_dataset(ray_local, table, 7), ["a", "b"], _per_key, 5, SCHEMA,
                                  str(tmp_path))
    out = _table(out)
    keys = list(zip(out.column("a").to_pylist(), out.column("b").to_pylist()))
    assert len(keys) == len(set(keys))  # a key split over two calls would appear twice
    expected = Counter(zip(table.column("a").to_pylist(), table.column("b").to_pylist()))
    assert dict(zip(keys, out.column("n").to_pylist())) == expected
    assert pc.sum(out.column("s")).as_py() == pytest.approx(pc.sum(table.column("v")).as_py())
    assert len(set(out.column("call").to_pylist())) == 5
    assert list(tmp_path.iterdir()) == []  # the shuffle's files are gone


def test_partitions_follow_the_rows_so_a_call_holds_a_bounded_share(ray_local, tmp_path, monkeypatch):
    monkeypatch.setattr(spilled_shuffle, "ROWS_PER_PARTITION", 1_000)
    assert partitions_for(999, 4) == 4
    assert partitions_for(40_000, 4) == 40
    table = _rows(40_000, keys=30_000, seed=1)
    parts = partitions_for(table.num_rows, 4)
    out = spilled_partition_apply(sliced_dataset(ray_local, table, 9), ["a", "b"], _per_key, parts, SCHEMA,
                                  str(tmp_path))
    out = _table(out)
    assert sum(out.column("n").to_pylist()) == table.num_rows
    # 40 calls of ~1,000 rows each (hash partitions, so not exactly), none near the whole input
    assert len(set(out.column("call").to_pylist())) == 40
    assert max(out.column("seen").to_pylist()) < 1_500


def test_no_rows_gives_fn_an_empty_table_of_the_schema(ray_local, tmp_path):
    seen = []

    def fn(part: pa.Table) -> pa.Table:
        seen.append(part.schema)
        return pa.table({"rows": pa.array([part.num_rows], pa.int64())})

    empty = ray_local.data.from_arrow(SCHEMA.empty_table())
    out = spilled_partition_apply(empty, ["a"], fn, 3, SCHEMA, str(tmp_path)).take_all()
    assert out == [{"rows": 0}]
    assert seen == [SCHEMA]


def test_the_files_are_removed_when_a_partition_fails(ray_local, tmp_path):
    def fails(part: pa.Table) -> pa.Table:
        raise ValueError("boom in a partition")

    with pytest.raises(Exception, match="boom in a partition"):
        spilled_partition_apply(sliced_dataset(ray_local, _rows(2_000, 100), 3), ["a"], fails, 3, SCHEMA, str(tmp_path))
    assert list(tmp_path.iterdir()) == []
