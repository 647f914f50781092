"""Vectorised 64-bit hashing helpers shared by the dedup modules (numpy only).

All arithmetic is on uint64 and wraps mod 2**64 on purpose (numpy does not warn for array
uint64 overflow); scalars are `np.uint64` so numpy never promotes to float.
"""
from __future__ import annotations

import numpy as np

U64 = np.uint64
_M1 = U64(0xFF51AFD7ED558CCD)  # murmur3 fmix64 constants
_M2 = U64(0xC4CEB9FE1A85EC53)
_S33 = U64(33)


def fmix64(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser: a bijection with full avalanche. Returns a new array."""
    x = x ^ (x >> _S33)
    x *= _M1
    x ^= x >> _S33
    x *= _M2
    x ^= x >> _S33
    return x


def geometric(base: int, n: int) -> np.ndarray:
    """base**0 .. base**(n-1) mod 2**64 (integer cumprod wraps, which is what we want)."""
    out = np.full(n, U64(base), dtype=U64)
    if n:
        out[0] = 1
    return np.cumprod(out, out=out)


def random_u64(seed: int, n: int, odd: bool = False) -> np.ndarray:
    """n reproducible uint64 constants for a seed (PCG64), optionally forced odd."""
    x = np.random.Generator(np.random.PCG64(seed)).integers(0, 2**64, size=n, dtype=U64)
    return x | U64(1) if odd else x


_BYTE_BASE = 0xA0761D6478BD642F  # odd: invertible mod 2**64
_BYTE_BASE_INV = pow(_BYTE_BASE, -1, 1 << 64)


def hash_column(arr) -> np.ndarray:
    """A stable uint64 per value of an Arrow column (same value -> same hash in every process;
    Python's `hash()` is salted per process, so it cannot pick shuffle partitions).
    Strings/binaries: polynomial hash of the bytes from one prefix sum over the buffer.
    Integers: fmix64 of the value. Nulls hash like empty strings / 0."""
    import pyarrow as pa

    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    t = arr.type
    if pa.types.is_integer(t):
        return fmix64(arr.fill_null(0).to_numpy().astype(U64))
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        raise TypeError(f"cannot hash column of type {t}")
    n = len(arr)
    wide = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64 if wide else np.int32, count=arr.offset + n + 1)[arr.offset:]
    offsets = offsets.astype(np.int64)
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buf, dtype=np.uint8, count=hi)[lo:] if data_buf is not None else np.zeros(0, np.uint8)
    prefix = np.zeros(hi - lo + 1, dtype=U64)
    np.cumsum(data.astype(U64) * geometric(_BYTE_BASE, hi - lo), out=prefix[1:])
    rel = offsets - lo
    raw = (prefix[rel[1:]] - prefix[rel[:-1]]) * geometric(_BYTE_BASE_INV, hi - lo + 1)[rel[:-1]]
    return fmix64(raw ^ np.diff(offsets).astype(U64) * _M1)


def combine(hashes: list[np.ndarray]) -> np.ndarray:
    """Order-sensitive combination of per-column hashes into one uint64 per row."""
    acc = hashes[0]
    for h in hashes[1:]:
        acc = fmix64(acc * _M2 + h)
    return acc
