"""Exact top-fraction cut of a score column over a whole Ray Dataset, without collecting it.

`keep_top_fraction` needs the score t such that `score >= t` keeps ceil(fraction * n) rows
(`quantile_threshold` on one array, below). Over a corpus that does not fit on the driver:

1. every batch histograms its scores into `bins` fixed bins over [0, 1]; a Ray Data groupby
   sums the non-empty bins, so the driver receives at most `bins` (bin, count) rows;
2. walking the bins from the top finds the one holding the k-th best score, and how many of
   its scores are still needed;
3. a second pass brings back only that bin's scores (n / bins of them for spread-out scores)
   and picks the exact one.

The result equals `quantile_threshold` on all scores. Scores outside [0, 1] are clipped into
the edge bins (still exact); NaN scores (unscored rows) are ignored, as there.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_BINS = 1 << 16
# More scores than this in the deciding bin (a pile of identical scores) and we cut at the
# bin's lower edge instead of bringing them back: the fraction kept is then off by at most
# that bin's share, never silently by more.
MAX_BIN_SCORES = 2_000_000


def quantile_threshold(scores: np.ndarray | Sequence[float], fraction: float) -> float:
    """The score t such that keeping `score >= t` keeps the top `fraction` of `scores`.

    Keeps ceil(fraction * n) documents, plus any tied with the last one kept. NaN scores (rows
    that were not scored) are ignored. Computed over a whole dataset, this turns
    `keep_top_fraction` into a threshold the per-batch stage can apply.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    s = np.asarray(scores, dtype=np.float64)
    s = s[~np.isnan(s)]
    if len(s) == 0:
        raise ValueError("no scores to take a quantile of")
    k = max(1, int(np.ceil(fraction * len(s) - 1e-9)))
    return float(np.partition(s, len(s) - k)[len(s) - k])


def _bins_of(scores: np.ndarray, bins: int) -> np.ndarray:
    return np.clip(np.floor(scores * bins), 0, bins - 1).astype(np.int64)


def _scores(batch: pa.Table, column: str) -> np.ndarray:
    s = batch.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
    return s[~np.isnan(s)]


def _histogram(batch: pa.Table, column: str, bins: int) -> pa.Table:
    counts = np.bincount(_bins_of(_scores(batch, column), bins), minlength=bins)
    nz = np.flatnonzero(counts)
    return pa.table({"bin": pa.array(nz, pa.int64()), "n": pa.array(counts[nz], pa.int64())})


def _in_bin(batch: pa.Table, column: str, bins: int, target: int) -> pa.Table:
    s = _scores(batch, column)
    return pa.table({"score": pa.array(s[_bins_of(s, bins) == target], pa.float64())})


def top_fraction_threshold(ds, column: str, fraction: float, bins: int = DEFAULT_BINS) -> float:
    """The threshold keeping the top `fraction` of `ds[column]` (see the module docstring)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    ds = ds.select_columns([column])
    rows = (ds.map_batches(_histogram, fn_kwargs={"column": column, "bins": bins}, batch_format="pyarrow")
            .groupby("bin").sum("n").to_arrow_refs())
    import ray

    table = pa.concat_tables(ray.get(rows)) if rows else pa.table({"bin": [], "sum(n)": []})
    counts = np.zeros(bins, np.int64)
    if table.num_rows:
        counts[table.column("bin").to_numpy()] = table.column("sum(n)").to_numpy()
    n = int(counts.sum())
    if n == 0:
        raise ValueError(f"no {column} values to take a quantile of")
    k = max(1, int(np.ceil(fraction * n - 1e-9)))
    from_top = np.cumsum(counts[::-1])
    target = bins - 1 - int(np.searchsorted(from_top, k))  # bin holding the k-th best score
    above = int(counts[target + 1:].sum())
    if counts[target] > MAX_BIN_SCORES:
        return target / bins
    in_bin = (ds.map_batches(_in_bin, fn_kwargs={"column": column, "bins": bins, "target": target},
                             batch_format="pyarrow").to_arrow_refs())
    scores = pc.drop_null(pa.concat_tables(ray.get(in_bin)).column("score")).to_numpy()
    return quantile_threshold(scores, (k - above) / len(scores))
