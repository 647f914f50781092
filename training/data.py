"""Packed training sequences from memory-mapped token shards, with an exact resume position.

The shards' documents, each ending in the boundary (EOS) token, are one token stream. Window
w is stream[w * seq_len : w * seq_len + seq_len + 1]: inputs are its first seq_len tokens,
targets the last seq_len (neighbouring windows share one token, nothing is dropped but the
tail). The last `val_fraction` of the windows is held out unless a separate validation
directory is given.

Order: epoch e visits the training windows in the permutation drawn from (seed, e). Global
sample g is window perm_{g // n}[g % n]. Optimizer step s consumes global samples
[s * G, (s + 1) * G) for the global batch G; rank r of W takes the r-th W-th of them, split
into its gradient-accumulation micro-batches. The resume position is therefore just the
step: no sample is seen twice or skipped after a restart, and with G unchanged a different
number of workers sees exactly the same batches.
"""
from __future__ import annotations

import bisect
from functools import lru_cache

import numpy as np

from llmforge.common.errors import ConfigError
from llmforge.shard_format import ShardReader


class TokenStream:
    """All shards of a directory as one read-only sequence of token ids."""

    def __init__(self, shard_dir: str):
        reader = ShardReader(shard_dir)
        self.manifest = reader.manifest
        self.parts = [s.tokens for s in reader.shards if len(s.tokens)]
        self.starts = np.cumsum([0] + [len(p) for p in self.parts]).tolist()

    def __len__(self) -> int:
        return self.starts[-1]

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) as int64, crossing shard boundaries when needed."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"token range [{start}, {stop}) outside the stream of {len(self)} tokens")
        if start == stop:
            return np.zeros(0, dtype=np.int64)
        out, pos = [], start
        i = bisect.bisect_right(self.starts, start) - 1
        while pos < stop:
            part, base = self.parts[i], self.starts[i]
            take = min(stop, base + len(part)) - pos
            out.append(np.asarray(part[pos - base : pos - base + take], dtype=np.int64))
            pos += take
            i += 1
        return np.concatenate(out) if len(out) != 1 else out[0]


class PackedWindows:
    """Windows [first, first + count) of `seq_len + 1` tokens over a stream."""

    def __init__(self, stream: TokenStream, seq_len: int, first: int = 0, count: int | None = None):
        total = (len(stream) - 1) // seq_len
        self.stream, self.seq_len, self.first = stream, seq_len, first
        self.count = total - first if count is None else count
        if self.count <= 0 or first + self.count > total:
            raise ValueError(f"{len(stream)} tokens make {total} windows of {seq_len}; asked for "
                             f"[{first}, {first + self.count})")

    def __len__(self) -> int:
        return self.count

    def window(self, i: int) -> np.ndarray:
        start = (self.first + i) * self.seq_len
        return self.stream.slice(start, start + self.seq_len + 1)

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        rows = np.stack([self.window(int(i)) for i in indices])
        return rows[:, :-1], rows[:, 1:]


def split_train_val(shards: str, seq_len: int, val_fraction: float,
                    val_shards: str | None = None) -> tuple[PackedWindows, PackedWindows | None]:
    stream = TokenStream(shards)
    if val_shards:
        return PackedWindows(stream, seq_len), PackedWindows(TokenStream(val_shards), seq_len)
    total = (len(stream) - 1) // seq_len
    n_val = int(round(total * val_fraction))
    if val_fraction > 0:
        n_val = max(1, n_val)
    if total - n_val <= 0:
        raise ConfigError(f"{shards}: {total} windows of {seq_len} tokens leave none for training "
                          f"after data.val_fraction {val_fraction}")
    train = PackedWindows(stream, seq_len, 0, total - n_val)
    return train, (PackedWindows(stream, seq_len, total - n_val, n_val) if n_val else None)


class GlobalOrder:
    """Which window each global sample index reads (see the module docstring)."""

    def __init__(self, n_windows: int, seed: int):
        self.n, self.seed = n_windows, seed

    @lru_cache(maxsize=2)
    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def windows(self, start: int, stop: int) -> np.ndarray:
        g = np.arange(start, stop)
        out = np.empty(len(g), dtype=np.int64)
        for epoch in np.unique(g // self.n):
            sel = (g // self.n) == epoch
            out[sel] = self.permutation(int(epoch))[g[sel] % self.n]
        return out


def rank_micro_batches(order: GlobalOrder, step: int, global_batch: int, rank: int, world: int,
                       accum: int) -> list[np.ndarray]:
    """Window indices of rank `rank`'s `accum` micro-batches at optimizer step `step`."""
    per_rank = global_batch // world
    start = step * global_batch + rank * per_rank
    mine = order.windows(start, start + per_rank)
    return np.split(mine, accum)
