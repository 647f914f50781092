"""The distributed top-fraction cut equals the single-array one, ties and NaN included."""
from __future__ import annotations

import numpy as np
import pytest

from dataproc.corpus.quantile import quantile_threshold
from dataproc.corpus.quantile import top_fraction_threshold

pytestmark = pytest.mark.ray


# 8 bins: the deciding bin holds hundreds of scores (the refinement pass matters); 2^16: the default.
@pytest.mark.parametrize("fraction,bins", [(0.001, 8), (0.37, 8), (0.37, 1 << 16), (1.0, 1 << 16)])
def test_matches_quantile_threshold(ray_local, fraction, bins):
    import ray

    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.beta(2, 5, 3000), np.full(200, 0.25), [np.nan] * 7, [0.0, 1.0]])
    rng.shuffle(scores)
    ds = ray.data.from_items([{"s": float(x)} for x in scores], override_num_blocks=6)
    assert top_fraction_threshold(ds, "s", fraction, bins=bins) == quantile_threshold(scores, fraction)


def test_refuses_empty_and_bad_fraction(ray_local):
    import ray

    ds = ray.data.from_items([{"s": float("nan")}])
    with pytest.raises(ValueError, match="no s values"):
        top_fraction_threshold(ds, "s", 0.5)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        top_fraction_threshold(ds, "s", 0.0)
