"""Power analysis: the smallest paired difference a comparison of this size can detect.

Used by `lib.stats` for every comparison (`mde`, `mde_bonferroni` in metrics/stats.json), so the
paper can say which differences its n prompts could not have shown, not only which it did.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize
from scipy import stats as sps


def t_test_power(d: float, n: int, alpha: float) -> float:
    """Power of the two-sided one-sample (paired) t-test on n values at level alpha, effect d.

    T = mean/(SD/√n) is noncentral t with n − 1 degrees of freedom and noncentrality d·√n;
    power = P(T > c) + P(T < −c), c = t_{1−alpha/2, n−1}. The lower tail is taken as P(T > c)
    at −d·√n (the same number by symmetry): scipy's nct.cdf is NaN far in that tail, which is
    also why statsmodels' TTestPower.power (and so solve_power) fails there.
    """
    df = n - 1
    c = sps.t.isf(alpha / 2, df)
    nc = d * math.sqrt(n)
    return float(sps.nct.sf(c, df, nc) + sps.nct.sf(c, df, -nc))


@functools.cache
def detectable_d(n: int, alpha: float, power: float) -> float:
    """d* with t_test_power(d*, n, alpha) = power: the standardized minimum detectable effect.

    Power rises with d from alpha at d = 0, so the root is bracketed and found by Brent's method.
    Not statsmodels' TTestPower.solve_power: at small n or small alpha it returns, without a
    warning, a d whose power is far from the target (n = 10, alpha = 0.05/124, power 0.8: d = 1.85
    with power 0.64; tests/test_stats.py).
    """
    if n < 2 or not 0 < alpha < power < 1:
        raise ValueError(
            f"detectable_d: need n >= 2 and 0 < alpha < power < 1, got {n, alpha, power}"
        )

    def gap(d: float) -> float:
        return t_test_power(d, n, alpha) - power

    hi = 1.0
    while gap(hi) < 0:
        hi *= 2
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-12, rtol=1e-12))


def min_detectable_effect(diffs: Sequence[float], alpha: float, power: float) -> float:
    """Smallest true mean of the paired differences a two-sided paired t-test detects.

    MDE = d*·SD(diff) (ddof 1), d* the standardized effect at which the test at level `alpha` on
    the n pairs rejects with probability `power` (noncentral t; Cohen 1988, ch. 2). Its normal
    approximation is (z_{1−alpha/2} + z_power)·SD/√n, which the t version exceeds at small n.
    NaN when n < 2 or every difference is equal (no variance estimate: undefined, not 0).
    """
    if not 0 < alpha < power < 1:
        raise ValueError(f"min_detectable_effect: need 0 < alpha < power < 1, got {alpha}, {power}")
    d = np.asarray(diffs, float)
    if d.size < 2:
        return math.nan
    if (d == d[0]).all():  # no spread; the computed SD may be 1e-17 rather than 0
        return math.nan
    sd = float(d.std(ddof=1))
    return detectable_d(int(d.size), float(alpha), float(power)) * sd
