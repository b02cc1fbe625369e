"""Statistics of the report: t-intervals over seeds, paired differences, interval verdicts, Holm.

Every interval is the two-sided Student t confidence interval of the mean over seeds
(``scipy.stats.t.interval`` with n - 1 degrees of freedom, scale = s / sqrt(n)).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.pipeline.tracking import DONE_STATUSES


def t_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the two-sided t confidence interval, n) over the finite values.

    half-width = t_{(1+confidence)/2, n-1} * s / sqrt(n) with s the sample std (ddof 1);
    NaN when n < 2 (no interval from one seed), mean NaN when n == 0.
    """
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, n
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    if sem == 0.0:
        return mean, 0.0, n
    low, _ = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return mean, float(mean - low), n


def ci_bounds(confidence: float):
    """seaborn ``errorbar`` callable: the same t-interval as the tables."""
    def bounds(values: Sequence[float]) -> tuple[float, float]:
        mean, half, _ = t_interval(values, confidence)
        if not math.isfinite(half):
            return mean, mean
        return mean - half, mean + half
    return bounds


def format_cell(mean: float, half: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "-"
    if not math.isfinite(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def done_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The finished (or ASHA-stopped) trials of a table."""
    return table[table["status"].isin(DONE_STATUSES)] if "status" in table.columns else table


@dataclass(frozen=True)
class Estimate:
    """One metric in one cell: its values per seed, their mean and the half-width of the t-interval."""

    mean: float
    half: float
    n: int
    per_seed: Mapping[Any, float] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    def text(self, digits: int = 3) -> str:
        return format_cell(self.mean, self.half, digits)


def estimate(table: pd.DataFrame, column: str, confidence: float = 0.95, scale: float = 1.0) -> Estimate:
    """t-interval of ``column`` over the finished trials of ``table`` (the rows of one cell)."""
    done = done_rows(table)
    if column not in done.columns:
        return Estimate(math.nan, math.nan, 0)
    values = pd.to_numeric(done[column], errors="coerce").to_numpy(dtype=float) * scale
    mean, half, n = t_interval(values, confidence)
    seeds = done["seed"].tolist() if "seed" in done.columns else list(range(len(done)))
    per_seed = {s: float(v) for s, v in zip(seeds, values) if math.isfinite(v)}
    if len(per_seed) != n:  # repeated seeds in one cell: no pairing
        per_seed = {}
    return Estimate(mean, half, n, per_seed)


def separated(a: Estimate, b: Estimate) -> bool:
    """True when both intervals exist and do not overlap."""
    if not all(math.isfinite(v) for v in (a.mean, a.half, b.mean, b.half)):
        return False
    return a.high < b.low or b.high < a.low


def paired_difference(a: Estimate, b: Estimate, confidence: float = 0.95) -> Estimate:
    """t-interval of a - b over the seeds both have. Trials of one seed share their training stream,
    held-out features and k-means reference, so the paired difference removes that shared noise."""
    seeds = [s for s in a.per_seed if s in b.per_seed]
    diffs = [a.per_seed[s] - b.per_seed[s] for s in seeds]
    mean, half, n = t_interval(diffs, confidence)
    return Estimate(mean, half, n, dict(zip(seeds, diffs)))


def relative_gap(a: Estimate, b: Estimate) -> float:
    """(a - b) / b in percent."""
    if not (math.isfinite(a.mean) and math.isfinite(b.mean)) or b.mean == 0:
        return math.nan
    return 100.0 * (a.mean - b.mean) / abs(b.mean)


def compare_lower(a: Estimate, b: Estimate, confidence: float = 0.95) -> str:
    """'lower' / 'higher' when a differs from b (min is better) by either criterion, else 'unresolved'.

    Resolved: the two intervals are disjoint, or the paired difference over common seeds has an
    interval that excludes 0.
    """
    if separated(a, b):
        return "lower" if a.mean < b.mean else "higher"
    diff = paired_difference(a, b, confidence)
    if math.isfinite(diff.half) and (diff.low > 0 or diff.high < 0):
        return "lower" if diff.mean < 0 else "higher"
    return "unresolved"


def interval_verdict(low: float, high: float, threshold: float, side: str) -> str:
    """A claim that the value lies at or above (``side = "above"``) or at or below (``"below"``)
    ``threshold``: ``agrees`` when the whole interval [low, high] lies on that side, ``differs``
    when it lies wholly on the other side, else ``unresolved`` (also when there is no interval)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "unresolved"
    if side == "above":
        return "agrees" if low >= threshold else "differs" if high < threshold else "unresolved"
    if side == "below":
        return "agrees" if high <= threshold else "differs" if low > threshold else "unresolved"
    raise ValueError(f"side: must be 'above' or 'below', got {side!r}")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given), for a family of tests."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def paired_p_value(diff: "Estimate") -> float:
    """Two-sided one-sample t-test p-value of the paired differences against 0, with the test's limits
    where the differences have no spread: p = 0 for the same non-zero difference on every seed, p = 1
    for an identically zero one. NaN with fewer than two paired values."""
    values = list(diff.per_seed.values())
    if len(values) < 2:
        return math.nan
    if max(values) == min(values):  # exactly (a float std of equal values need not be 0)
        return 0.0 if values[0] != 0 else 1.0
    return float(stats.ttest_1samp(values, 0.0).pvalue)


def rescaled(e: "Estimate", confidence: float, to: float) -> "Estimate":
    """``e`` (a t-interval at ``confidence`` over ``e.n`` values) with its half-width at level ``to``:
    half x t_{(1+to)/2, n-1} / t_{(1+confidence)/2, n-1}. No interval (NaN) when n < 2."""
    if e.n < 2 or not math.isfinite(e.half):
        return Estimate(e.mean, math.nan, e.n, e.per_seed)
    factor = stats.t.ppf((1 + to) / 2, e.n - 1) / stats.t.ppf((1 + confidence) / 2, e.n - 1)
    return Estimate(e.mean, e.half * float(factor), e.n, e.per_seed)


def compare_pairs(pairs: Mapping[Any, tuple["Estimate", "Estimate"]], alpha: float = 0.05,
                  confidence: float = 0.95) -> dict[Any, tuple[str, float]]:
    """Every test of one question at once: ``key -> (a, b)``, is a lower than b (min is better)?

    The m tests form one family, corrected for picking among them (a best picked after the fact
    against every other method is such a family: ``{m: (e_m, e_best)}``): paired t-tests over the
    common seeds (:func:`paired_p_value`), Holm-adjusted together (:func:`holm`); ``lower`` /
    ``higher`` when the adjusted p-value is below ``alpha``, else ``unresolved``. A pair without
    paired values (fewer than two common seeds) is decided by disjoint t-intervals at the Bonferroni
    level 1 - alpha / m (its half-widths :func:`rescaled` from ``confidence``).
    Returns key -> (verdict, adjusted p; NaN for an interval verdict).
    """
    keys = list(pairs)
    diffs = {key: paired_difference(*pairs[key], confidence) for key in keys}
    p_values = [paired_p_value(diffs[key]) for key in keys]
    finite = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    adjusted = [math.nan] * len(keys)
    for i, p in zip(finite, holm([p_values[i] for i in finite])):
        adjusted[i] = p
    level = 1.0 - alpha / max(len(keys), 1)
    out = {}
    for i, key in enumerate(keys):
        a, b = pairs[key]
        if math.isfinite(adjusted[i]):
            verdict = ("lower" if diffs[key].mean < 0 else "higher") if adjusted[i] < alpha else "unresolved"
        else:
            a, b = rescaled(a, confidence, level), rescaled(b, confidence, level)
            verdict = "lower" if a.high < b.low else "higher" if a.low > b.high else "unresolved"
        out[key] = (verdict, adjusted[i])
    return out
