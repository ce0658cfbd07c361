"""Arm statistics: means with Student-t intervals, paired differences by seed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.n > 1 and (self.low > 0 or self.high < 0)


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean with a two-sided Student-t interval (NaN bounds for fewer than two values)."""
    clean = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(clean)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = sum(clean) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in clean) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Interval:
    """Interval of a - b over the seeds both have (pairing removes the seed's own effect)."""
    seeds = sorted(set(a) & set(b))
    return mean_ci([a[s] - b[s] for s in seeds])
