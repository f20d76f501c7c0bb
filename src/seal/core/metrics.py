"""Statistics for benchmark tables: means, spreads and bootstrap confidence intervals."""

from __future__ import annotations

import math
import random
import statistics


def mean(xs: list[float]) -> float:
    """Exactly rounded sum (fsum), so the mean does not depend on the order of the values (Ray
    returns trial records in the order they finish, the local executor in job order)."""
    return math.fsum(xs) / len(xs) if xs else float("nan")


def std(xs: list[float]) -> float:
    """Population standard deviation (0 for fewer than two values)."""
    return statistics.pstdev(xs) if len(xs) > 1 else 0.0


def bootstrap_ci(values: list[float], n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean, resampling the values (e.g. passages) with replacement."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choice(values) for _ in range(n)) / n for _ in range(n_resamples))
    lo_i = int((1 - level) / 2 * n_resamples)
    hi_i = min(n_resamples - 1, int((1 + level) / 2 * n_resamples))
    return (means[lo_i], means[hi_i])


def pearson(x: list[float], y: list[float]) -> float | None:
    """Pearson correlation; None for fewer than three pairs or a constant series."""
    if len(x) < 3:
        return None
    mx, my = mean(x), mean(y)
    sx = math.sqrt(sum((a - mx) ** 2 for a in x))
    sy = math.sqrt(sum((b - my) ** 2 for b in y))
    return None if sx == 0 or sy == 0 else sum((a - mx) * (b - my) for a, b in zip(x, y)) / (sx * sy)
