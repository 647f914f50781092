"""Small Ray Datasets built in memory for tests."""
from __future__ import annotations

import pyarrow as pa


def sliced_dataset(ray, table: pa.Table, blocks: int):
    """`table` as a Ray Dataset of `blocks` consecutive slices (one block each)."""
    step = -(-table.num_rows // blocks)
    return ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])
