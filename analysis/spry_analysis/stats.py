"""Confidence intervals used by every verb (stated in docs/analysis.md).

- mean_ci: Student-t interval of a mean over independent samples (seeds, rounds or slots), level `level`.
- ratio_ci: interval of mean(a) / mean(b) for paired samples by the delta method (t quantile); for ratios of
  positive quantities over seeds (memory, bytes, seconds).
- diff_ci: paired-or-unpaired difference of means (Welch's t when the sample counts differ).
One sample gives a point estimate and an infinite interval (nothing is known about the spread).
"""
import math

import numpy as np
from scipy import stats as st


def _t(level, dof):
    return st.t.ppf(0.5 + level / 2, dof) if dof > 0 else math.inf


def mean_ci(x, level=0.95):
    """(mean, low, high) of a Student-t interval over the finite entries of x."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    m = float(x.mean())
    if x.size == 1:
        return (m, -math.inf, math.inf)
    h = _t(level, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return (m, m - h, m + h)


def diff_ci(a, b, level=0.95):
    """(mean(a) - mean(b), low, high): Welch's t interval (a and b independent samples, e.g. seeds)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return (math.nan, math.nan, math.nan)
    d = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return (d, -math.inf, math.inf)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return (d, d, d)
    dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    h = _t(level, dof) * se
    return (d, d - h, d + h)


def ratio_ci(a, b, level=0.95):
    """(mean(a) / mean(b), low, high) for independent samples a, b (delta method on the log ratio)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0 or a.mean() <= 0 or b.mean() <= 0:
        return (math.nan, math.nan, math.nan)
    r = float(a.mean() / b.mean())
    if a.size < 2 or b.size < 2:
        return (r, -math.inf, math.inf)
    va = a.var(ddof=1) / a.size / a.mean() ** 2
    vb = b.var(ddof=1) / b.size / b.mean() ** 2
    se = math.sqrt(va + vb)
    dof = max(min(a.size, b.size) - 1, 1)
    h = _t(level, dof) * se
    return (r, r * math.exp(-h), r * math.exp(h))


def fmt_ci(t, digits=4):
    m, lo, hi = t
    if not math.isfinite(m):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "%.*g (one sample: no CI)" % (digits, m)
    return "%.*g [%.*g, %.*g]" % (digits, m, digits, lo, digits, hi)
