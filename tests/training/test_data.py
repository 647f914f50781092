"""Packed windows over shards and the global sample order that makes resume exact."""
from __future__ import annotations

import numpy as np
import pytest

from llmforge import shard_format
from training.data import GlobalOrder, PackedWindows, TokenStream, rank_micro_batches, split_train_val


@pytest.fixture()
def shard_dir(tmp_path):
    rng = np.random.default_rng(0)
    writer = shard_format.ShardWriter(str(tmp_path), vocab_size=500, shard_tokens=300)
    docs = [np.append(rng.integers(1, 500, rng.integers(5, 120)), 0) for _ in range(60)]
    for d in docs:
        writer.add(d)
    shards = writer.close()
    shard_format.write_manifest(str(tmp_path), shard_format.build_manifest(
        shards, vocab_size=500, tokenizer_sha256=None, config_sha256=None, eos_token_id=0,
        document_boundary_token_id=0))
    return str(tmp_path), np.concatenate(docs)


def test_stream_slices_across_shards(shard_dir):
    path, everything = shard_dir
    stream = TokenStream(path)
    assert len(stream.parts) > 3 and len(stream) == len(everything)
    for start, stop in [(0, 1), (250, 700), (299, 301), (0, len(everything)), (len(everything), len(everything))]:
        assert stream.slice(start, stop).tolist() == everything[start:stop].tolist()
    with pytest.raises(IndexError):
        stream.slice(0, len(everything) + 1)


def test_windows_shift_by_one_and_tile_the_stream(shard_dir):
    path, everything = shard_dir
    windows = PackedWindows(TokenStream(path), seq_len=32)
    assert len(windows) == (len(everything) - 1) // 32
    x, y = windows.batch([0, 3])
    assert x.shape == y.shape == (2, 32)
    assert x[1].tolist() == everything[96:128].tolist() and y[1].tolist() == everything[97:129].tolist()


def test_train_and_validation_windows_are_disjoint(shard_dir):
    path, everything = shard_dir
    train, val = split_train_val(path, 16, 0.1)
    total = (len(everything) - 1) // 16
    assert len(train) + len(val) == total and len(val) == round(total * 0.1)
    assert val.first == len(train)
    with pytest.raises(ValueError, match="leave none for training"):
        split_train_val(path, 4000, 0.5)


def test_every_window_once_per_epoch_and_steps_do_not_overlap():
    order = GlobalOrder(50, seed=3)
    seen = np.concatenate([np.concatenate(rank_micro_batches(order, s, 10, r, 2, 1)) for s in range(5) for r in (0, 1)])
    assert sorted(seen.tolist()) == list(range(50))
    assert not np.array_equal(order.windows(0, 50), order.windows(50, 100))  # a new permutation per epoch
    assert sorted(order.windows(50, 100).tolist()) == list(range(50))


def test_same_global_batches_on_any_worker_count():
    """4 workers x 1 accum, 2 x 2 and 1 x 4 consume the same windows at every step."""
    order = GlobalOrder(1000, seed=0)
    for step in (0, 7, 99):
        layouts = []
        for world, accum in ((4, 1), (2, 2), (1, 4)):
            got = [rank_micro_batches(order, step, 16, r, world, accum) for r in range(world)]
            assert all(len(m) == accum and all(len(b) == 16 // world // accum for b in m) for m in got)
            layouts.append(sorted(np.concatenate([b for m in got for b in m]).tolist()))
        assert layouts[0] == layouts[1] == layouts[2]
