"""The statistics behind every verdict: pure functions of numbers.

A paired comparison is the mean of per-seed differences, its t-interval and the paired t-test; the Wilcoxon
signed-rank p-value is shown only from the number of pairs at which it can fall below 0.05 (exact two-sided test:
its smallest p is 2 / 2^n, 0.0625 at n = 5). A family of comparisons has its p-values adjusted — Holm's step-down
method for the family-wise error rate (Holm, "A simple sequentially rejective multiple test procedure", Scand. J.
Statist. 6, 1979) or Benjamini–Hochberg for the false discovery rate (Benjamini & Hochberg, JRSS B 57, 1995) — and
its intervals widened to match: Bonferroni level 1 − α/m with Holm, false-coverage-rate level 1 − Rα/m with BH
(R = comparisons called; Benjamini & Yekutieli, JASA 100, 2005). A verdict needs the adjusted p below α *and* the
adjusted interval clear of zero, at least three pairs, and some variance among the differences.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

CORRECTIONS = ("holm", "bh", "none")
ALPHA = 0.05
MIN_PAIRS = 3  # with two pairs the t quantile is 12.7: too little to call anything
WILCOXON_MIN_PAIRS = next(n for n in range(1, 64) if 2 / 2**n < ALPHA)


def mean_ci(values, level: float = 0.95) -> dict[str, float]:
    """n, mean, sample sd and the `level` t-interval of the mean (NaN bounds when n < 2)."""
    x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


@dataclass
class Paired:
    """One paired comparison before correction."""

    n: int
    mean_diff: float
    sd: float
    t_p: float  # two-sided paired t-test (NaN without variance or with fewer than 2 pairs)
    wilcoxon_p: float  # exact two-sided signed-rank test (NaN below WILCOXON_MIN_PAIRS pairs)

    def interval(self, level: float) -> tuple[float, float]:
        """The `level` t-interval of the mean difference."""
        if self.n < 2 or math.isnan(self.sd):
            return math.nan, math.nan
        half = stats.t.ppf(0.5 + level / 2, self.n - 1) * self.sd / math.sqrt(self.n)
        return self.mean_diff - half, self.mean_diff + half


def paired(diffs) -> Paired:
    """The statistics of per-seed differences `diffs`."""
    d = np.asarray(list(diffs), float)
    n = len(d)
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    t_p = float(stats.ttest_1samp(d, 0).pvalue) if n > 1 and sd > 0 else math.nan
    wilcoxon_p = (
        float(stats.wilcoxon(d, method="exact").pvalue) if n >= WILCOXON_MIN_PAIRS and (d != 0).any() else math.nan
    )
    return Paired(n, float(d.mean()) if n else math.nan, sd, t_p, wilcoxon_p)


def adjust(pvalues: list[float], method: str) -> list[float]:
    """Adjusted p-values of one family (NaN entries stay NaN and do not count in the family size)."""
    p = np.asarray(pvalues, float)
    out = np.full(len(p), np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m == 0 or method == "none":
        return p.tolist()
    order = valid[np.argsort(p[valid], kind="stable")]
    ranked = p[order]
    if method == "holm":  # p_(i) · (m − i + 1), made non-decreasing
        adjusted = np.maximum.accumulate(ranked * (m - np.arange(m)))
    elif method == "bh":  # p_(i) · m / i, made non-increasing from the largest
        adjusted = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    else:
        raise ValueError(f"unknown correction {method!r} (expected one of {', '.join(CORRECTIONS)})")
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def interval_level(method: str, family: int, called: int, alpha: float = ALPHA) -> float:
    """The confidence level of intervals in a family of `family` comparisons of which `called` were called."""
    if method == "none" or family <= 1:
        return 1 - alpha
    if method == "holm":
        return 1 - alpha / family
    return 1 - max(called, 1) * alpha / family


def verdict(comparison: Paired, p_adjusted: float, low: float, high: float, alpha: float = ALPHA) -> str:
    """ "better" / "worse" when the adjusted p is below `alpha` and the adjusted interval excludes zero; else why
    not."""
    if comparison.n < MIN_PAIRS:
        return "no verdict (fewer than 3 seeds)"
    if not comparison.sd > 0:
        return "no verdict (no variance)"
    if p_adjusted < alpha and low > 0:
        return "better"
    if p_adjusted < alpha and high < 0:
        return "worse"
    return "no evidence"


POWER = 0.8


def minimum_detectable_effect(sd: float, n: int, family: int, correction: str, alpha: float = ALPHA) -> float:
    """The smallest true mean difference a family of `family` paired comparisons on `n` seeds, with differences of
    standard deviation `sd`, calls with probability POWER, at the per-comparison level α' of the correction (α/m
    for Holm's first step and for a single call under BH: the worst case; α without correction). Exact: the
    two-sided paired t-test's power from the noncentral t distribution (statsmodels' `TTestPower.power`), solved
    for the effect by bisection (`effect_for_power`; its own `solve_power` does not converge at n = 3 with a
    corrected α). The normal-quantile shortcut (t_{1−α'/2} + t_{POWER}) · sd / √n understates it (n = 3, m = 15:
    by a sixth). NaN below MIN_PAIRS seeds or without a spread."""
    if n < MIN_PAIRS or not sd > 0:
        return math.nan
    level = alpha if correction == "none" or family <= 1 else alpha / family
    return effect_for_power(n, level) * sd


def claim_mde(sd: float, n: int, family: int, correction: str, parts: int = 3, alpha: float = ALPHA) -> float:
    """The smallest true difference at which a claim — better than each of `parts` references (its baseline and two
    matched controls), an intersection–union of one-sided paired t-tests (`results.claims`) — is made with
    probability POWER, at the per-claim level of the correction (α/m at Holm's first step, as
    `minimum_detectable_effect`), when the configuration beats every reference by that difference. The parts share
    the configuration's trials, so their differences correlate (ρ = ½ when every arm is as noisy: `sd` is a
    difference's spread); their joint power is simulated with a fixed seed (40,000 studies) and solved by bisection:
    below one test's power, so above its MDE (one test at the printed MDE: power 0.745–0.769 as a claim). NaN below
    MIN_PAIRS seeds or without a spread."""
    if n < MIN_PAIRS or not sd > 0:
        return math.nan
    level = alpha if correction == "none" or family <= 1 else alpha / family
    return claim_effect_for_power(n, level, parts) * sd


@functools.lru_cache(maxsize=256)
def claim_effect_for_power(n: int, level: float, parts: int) -> float:
    """`claim_mde`'s standardised effect (difference / a difference's sd) on `n` seeds at `level` per part."""
    rng = np.random.default_rng(20241982)
    arm = rng.standard_normal((40_000, 1 + parts, n)) / math.sqrt(2)  # each arm's noise: a difference has sd 1
    noise = arm[:, :1, :] - arm[:, 1:, :]  # configuration minus each reference, per seed
    critical = float(stats.t.ppf(1 - level, n - 1))

    def power_at(effect: float) -> float:
        diffs = noise + effect
        t = diffs.mean(axis=2) / (diffs.std(axis=2, ddof=1) / math.sqrt(n))
        return float((t > critical).all(axis=1).mean())

    return _solve_increasing(power_at, POWER)


def effect_for_power(n: int, level: float, power: float = POWER) -> float:
    """The standardised effect (mean difference / sd) a two-sided paired t-test on `n` pairs at `level` detects
    with probability `power`: bisection on statsmodels' power, which is increasing in the effect. (scipy's
    noncentral t, under statsmodels, returns NaN at some points, e.g. effect 8 at n = 3, α = 0.05/15: there the
    same power is integrated directly, `_t_test_power`.)"""
    from statsmodels.stats.power import TTestPower

    def power_at(effect: float) -> float:
        value = float(TTestPower().power(effect_size=effect, nobs=n, alpha=level))
        return value if math.isfinite(value) else _t_test_power(effect, n, level)

    return _solve_increasing(power_at, power)


def _solve_increasing(f: Callable[[float], float], target: float) -> float:
    """The smallest x ≥ 0 with f(x) ≥ `target`, f increasing: doubling, then bisection to a relative 1e-10."""
    low, high = 0.0, 1.0
    while f(high) < target:
        low, high = high, high * 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if f(middle) < target else (low, middle)
        if high - low < 1e-10 * high:
            break
    return high


def _t_test_power(effect: float, n: int, level: float) -> float:
    """The two-sided one-sample t-test's power at standardised `effect` on `n` pairs, by integrating over the
    chi-square of the sample variance: E_V[Φ(δ − c·√(V/df)) + Φ(−δ − c·√(V/df))], δ = effect·√n, c the critical t."""
    from scipy.integrate import quad

    df, shift = n - 1, effect * math.sqrt(n)
    critical = stats.t.ppf(1 - level / 2, df)

    def integrand(v: float) -> float:
        scale = critical * math.sqrt(v / df)
        return float((stats.norm.cdf(shift - scale) + stats.norm.cdf(-shift - scale)) * stats.chi2.pdf(v, df))

    return float(quad(integrand, 0, math.inf, limit=200)[0])
