"""Arm statistics: means with Student-t intervals, paired differences by seed.

An mIoU lives in [0, 1] and a difference of two in [-1, 1]; with two or three seeds a t-interval
can reach past those ends (0.10 [-0.33, 0.53] over 2 seeds). Such an interval is cut at the
end of the range and marked ``clipped``: cutting removes only values the quantity cannot take,
so the interval keeps its coverage, and the mark says the seeds were too few for the t-interval
to fit. A bootstrap over 2-5 seeds has too few distinct resamples to be trusted, and a
transformed scale would hide the arithmetic a reader can redo by hand; hence this choice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

MIOU_RANGE = (0.0, 1.0)
DIFFERENCE_RANGE = (-1.0, 1.0)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int
    clipped: bool = False
    """The t-interval reached past the range the quantity can take and was cut there."""

    @property
    def excludes_zero(self) -> bool:
        return self.n > 1 and (self.low > 0 or self.high < 0)


def mean_ci(
    values: Sequence[float], level: float = 0.95, bounds: tuple[float, float] | None = None
) -> Interval:
    """Mean with a two-sided Student-t interval (NaN bounds for fewer than two values), cut to
    ``bounds`` (and marked clipped) where it reaches past them."""
    clean = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(clean)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = sum(clean) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in clean) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is None or (bounds[0] <= low and high <= bounds[1]):
        return Interval(mean, low, high, n)
    return Interval(mean, max(low, bounds[0]), min(high, bounds[1]), n, clipped=True)


def miou_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """``mean_ci`` of mIoU values: never a bound outside [0, 1]."""
    return mean_ci(values, level, MIOU_RANGE)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Interval:
    """Interval of a - b over the seeds both have (pairing removes the seed's own effect), cut
    to [-1, 1], the range of a difference of two mIoUs."""
    seeds = sorted(set(a) & set(b))
    return mean_ci([a[s] - b[s] for s in seeds], bounds=DIFFERENCE_RANGE)
