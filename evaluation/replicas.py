"""Scoring work spread over model replicas: Ray Data actors (one model each, loaded once) or the
driver's own process, through the same callable so both give the same numbers.

    blocks = length_blocks(lengths, budget)             # positions, longest first
    for table in map_blocks(tables, Scorer, (model_path, device), replicas=2): ...

A callable takes a pyarrow Table (one block of rows) and returns a Table with an `index` column
the caller sorts the results back by. Blocks are cut from rows sorted by length, so each
forward pass pads little, and the first block shows the peak memory at once.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:
    import pyarrow as pa


def length_blocks(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Positions of `lengths` sorted longest first (ties in position order), cut into blocks
    whose lengths sum to at most `budget` (a longer row alone makes its own block)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    blocks: list[list[int]] = []
    total = 0
    for i in order:
        if blocks and total + lengths[i] <= budget:
            blocks[-1].append(i)
            total += lengths[i]
        else:
            blocks.append([i])
            total = lengths[i]
    return blocks


def load_model(model_path: str, device: str = "cpu"):
    """(model, ChatTokenizer) for scoring, DeepSpeed's stdout chatter kept off stdout."""
    from training.sources import load_for_inference

    return load_for_inference(model_path, device)


def gpus_per_replica(device: str, num_gpus: float | None) -> float:
    if num_gpus is not None:
        return num_gpus
    return 1.0 if device.startswith("cuda") else 0.0


def map_blocks(tables: list["pa.Table"], fn_class: type, ctor_args: tuple[Any, ...], replicas: int = 0,
               num_cpus: float = 1.0, num_gpus: float = 0.0) -> Iterator["pa.Table"]:
    """`fn_class(*ctor_args)(table)` for every table: in this process when `replicas` is 0 (one
    instance), else on Ray Data with `replicas` actors (Ray is started or joined). Results come
    back in the tables' order."""
    if not tables:
        return
    if replicas == 0:
        fn = fn_class(*ctor_args)
        for t in tables:
            yield fn(t)
        return
    from llmforge.common.ray_session import init_ray, quiet_ray_data

    init_ray()
    quiet_ray_data()
    import ray.data

    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        ds = ray.data.from_arrow(tables)
        result = ds.map_batches(fn_class, fn_constructor_args=ctor_args, batch_size=None, batch_format="pyarrow",
                                concurrency=replicas, num_cpus=num_cpus, num_gpus=num_gpus)
        yield from result.iter_batches(batch_format="pyarrow", batch_size=None)
    finally:
        ctx.execution_options.preserve_order = before
