"""Confidence intervals and robust means for paired gains (no Lightning, no torch).

``bootstrap_ci``: percentile bootstrap of a statistic over one sample (a run's episodes).
``paired_gain_ci``: that interval for a run's paired per-episode gains, or n/a (NaN) with
fewer than ``MIN_PAIRED_EPISODES`` of them.
``stratified_bootstrap_ci``: rliable's stratified bootstrap (Agarwal et al. 2021): each
stratum (a dataset) is resampled on its own, then the statistic is taken over all strata, so
every resample keeps each dataset's count. ``iqm``: the interquartile mean (mean of the middle
50%, rliable's aggregate).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np


def iqm(x: Sequence[float]) -> float:
    """Mean of the values between the 25th and 75th percentiles (rliable's trimmed mean)."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    n = len(x)
    if n == 0:
        return float("nan")
    lo, hi = int(np.floor(0.25 * n)), int(np.ceil(0.75 * n))
    return float(x[lo:hi].mean()) if hi > lo else float(x.mean())


# The fewest paired episodes a gain's bootstrap interval is reported from. With one episode
# every resample is that episode (an interval of zero width); with two to four the resamples
# take only a handful of distinct means (2 episodes: 3 of them), whose percentiles are the
# sample's extremes, not a 95% interval.
MIN_PAIRED_EPISODES = 5


def paired_gain_ci(
    gains: Sequence[float], level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean paired gain over a run's episodes, or
    ``(nan, nan)`` (reported as n/a) with fewer than ``MIN_PAIRED_EPISODES`` episodes."""
    if len(gains) < MIN_PAIRED_EPISODES:
        return float("nan"), float("nan")
    return bootstrap_ci(gains, level=level, seed=seed)


def bootstrap_ci(
    x: Sequence[float],
    stat: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over the sample ``x`` (fixed ``seed``)."""
    return stratified_bootstrap_ci({"": x}, stat, n_boot, level, seed)


def stratified_bootstrap_ci(
    strata: Mapping[str, Sequence[float]],
    stat: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``stat`` over all strata pooled, each stratum resampled with
    replacement on its own (its size kept). One value per stratum: no spread to resample,
    the interval is that point's."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(v, dtype=np.float64) for v in strata.values() if len(v)]
    if not arrays:
        return float("nan"), float("nan")
    stats = np.empty(n_boot)
    for b in range(n_boot):
        stats[b] = stat(np.concatenate([a[rng.integers(0, len(a), len(a))] for a in arrays]))
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)
