"""The leaderboard: which quantizer, when, at what cost, and how sure we are of the order.

Computed from the exported sweep tables (one row per trial), never from hand-picked winners.

Scenarios. A scenario is one setting of one sweep (a grid point without ``method`` and ``seed``,
e.g. ``atomic`` at mu 4) restricted to one *comparison group*: methods quantizing in the same
error space with the same bits per token (:func:`benchmark.report.tables.comparable_groups`, the
rule that also decides the tables' bold).
Sweeps with a tuning stage contribute their tuned rows (every method got the same tuning budget);
a scenario needs at least two methods.

Rank within a scenario. Primary metric: :data:`PRIMARY` by experiment (E / k-means for feature
fits, PSNR for image tokenizers; E where the group has no k-means reference, multi-codebook
quantizers), under the stated constraint U >= :data:`UTILIZATION_FLOOR`: every method whose mean U
meets it ranks above every method that does not, and each part is ordered by the primary metric
(ties share the average rank). The rank interval is the percentile interval of the ranks over
:data:`BOOTSTRAP` paired bootstrap resamples of the seeds (one draw of seed indices per replicate,
shared by every method: trials of one seed share their data streams). With 3 seeds there are only
10 distinct resamples, so the interval is coarse by construction.

Across scenarios. Mean rank over the scenarios a method is in. The Friedman test and the Nemenyi
post-hoc test (Demsar 2006, JMLR 7:1-30) need every method in every block, so they run on the
largest complete block: methods added in order of coverage, keeping the prefix that maximises
methods x scenarios; their ranks are recomputed among themselves. Critical difference
CD = q_alpha sqrt(k (k + 1) / (6 N)), q_alpha the studentized range quantile / sqrt 2.

rliable aggregates (Agarwal et al. 2021, arXiv:2108.13264) on the block's feature-fit scenarios,
where the score k-means E / E (the share of the k-means optimum a quantizer reaches, 1 = k-means)
means the same in every scenario: interquartile mean (``rliable.metrics.aggregate_iqm``),
probability of improvement of the best-IQM method over each other
(``rliable.metrics.probability_of_improvement``), and the performance profile (share of runs with a
score above tau). Intervals: stratified bootstrap (runs resampled within each scenario,
:data:`BOOTSTRAP` replicates), percentile 95%. rliable's own bootstrap module is not used: it
imports ``arch``, whose releases rliable allows do not import under pandas 3.

Which quantizer when: per scenario, the best method and the methods not resolved apart from it
(same side of the U constraint, and a paired t-test over seeds, Holm-adjusted over the candidates,
:func:`benchmark.report.stats.compare_pairs`, does not reject equality at 5%), each with its
training cost as a ratio of the best's mean train seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark import metric_registry
from benchmark.metric_registry import FIT, TRANSPLANT, VQVAE
from benchmark.report.stats import Estimate, compare_pairs, done_rows, t_interval
from benchmark.report.tables import (
    FACTOR_LABELS, PROTOCOL, comparable_groups, error_space, factor_columns, fmt_value, markdown_table, method_order,
    sort_key,
)

PRIMARY = {FIT: "error_vs_kmeans", VQVAE: "psnr", TRANSPLANT: "psnr"}  # the ranked metric per experiment
FALLBACK = "quantization_error"  # where a group has no k-means reference (multi-codebook quantizers)
CONSTRAINT = "utilization"
UTILIZATION_FLOOR = 0.9  # stated constraint: U >= 90% ranks above U < 90%
COST = "train_seconds"
BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0  # the resamples are part of the report: the same tables give the same intervals
ALPHA = 0.05
MIN_SCENARIOS = 3  # the overall table lists methods ranked in at least this many scenarios
PROFILE_TAUS = np.linspace(0.0, 1.05, 106)  # performance-profile thresholds on k-means E / E


@dataclass
class Scenario:
    """One setting of one sweep, one comparison group: per-seed values of the ranked metric."""

    sweep: str
    setting: str  # "mu 4" ("" for a sweep with one setting)
    group: str  # "" when the setting has a single group
    metric: str
    values: pd.DataFrame  # index seed, columns method: the primary metric (table units)
    utilization: pd.DataFrame  # same shape, U as a fraction (empty: no constraint)
    cost: pd.Series  # method -> mean train seconds
    kmeans: pd.DataFrame | None = None  # k-means E / E per seed and method (feature fits only)
    ranks: pd.DataFrame = field(default_factory=pd.DataFrame)  # method, rank, low, high, mean, meets

    @property
    def label(self) -> str:
        parts = [self.sweep] + [p for p in (self.setting, self.group and f"[{self.group}]") if p]
        return " ".join(parts)

    @property
    def methods(self) -> list[str]:
        return list(self.values.columns)


# --------------------------------------------------------------------------- scenarios
def scenarios(tables: Mapping[str, pd.DataFrame]) -> list[Scenario]:
    """Every scenario of every sweep table with at least two methods in one comparison group."""
    out: list[Scenario] = []
    for sweep, table in tables.items():
        out += sweep_scenarios(sweep, table)
    return out


def ranked_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows the leaderboard ranks: finished trials, the tuned ones where the sweep has a tuning stage."""
    data = done_rows(table)
    if PROTOCOL in data.columns and (data[PROTOCOL] == "tuned").any():
        data = data[data[PROTOCOL] == "tuned"]
    return data


def sweep_scenarios(sweep: str, table: pd.DataFrame) -> list[Scenario]:
    data = ranked_rows(table)
    if "method" not in data.columns or data["method"].nunique() < 2 or "experiment" not in data.columns:
        return []
    experiment = str(data["experiment"].iloc[0])
    metric = PRIMARY.get(experiment)
    if metric is None or metric not in data.columns:
        return []
    factors = [f for f in factor_columns(data, table.attrs.get("not_factors", ())) if f not in ("method", PROTOCOL)]
    ranked = metric_registry.get(metric)
    labels = comparable_groups(data, [*factors, "method"], ranked)
    spaces = data["method"].map(error_space) if not ranked.comparable else pd.Series("", index=data.index)
    out: list[tuple[tuple[Any, ...], Scenario]] = []
    for _, rows in data.groupby(labels, sort=False):
        if rows["method"].nunique() < 2:
            continue
        first = rows.iloc[0]
        setting = ", ".join(f"{FACTOR_LABELS.get(f, f)} {fmt_value(first[f])}" for f in factors)
        same_setting = (data[factors] == first[factors]).all(axis=1) if factors else pd.Series(True, data.index)
        split = labels[same_setting].nunique() > 1  # name the group only where a setting has several
        group = ", ".join(p for p in (str(spaces.loc[rows.index[0]]), f"{fmt_value(_bits(rows))} bits") if p)
        scenario = _scenario(sweep, setting, group if split else "", metric, rows)
        if scenario is not None:
            out.append(((*(_order_key(first[f]) for f in factors), scenario.group), scenario))
    return [scenario for _, scenario in sorted(out, key=lambda pair: pair[0])]


def _order_key(value: Any) -> tuple[int, float, str]:
    """A setting's place among its sweep's scenarios: numbers ascending, then names alphabetically
    (not the order in which the table happens to list the trials)."""
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return (0, float(number), "") if pd.notna(number) else (1, 0.0, str(value))


def _bits(rows: pd.DataFrame) -> float:
    if "bits_per_token" in rows.columns:
        bits = pd.to_numeric(rows["bits_per_token"], errors="coerce").dropna()
        if len(bits):
            return float(bits.iloc[0])
    if "codebook_size" in rows.columns:
        return float(math.log2(float(rows["codebook_size"].iloc[0])))
    return math.nan


def _pivot(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    seeds = rows["seed"] if "seed" in rows.columns else pd.Series(range(len(rows)), index=rows.index)
    frame = pd.DataFrame({"seed": seeds, "method": rows["method"].astype(str),
                          "value": pd.to_numeric(rows[column], errors="coerce")})
    wide = frame.pivot_table(index="seed", columns="method", values="value", aggfunc="mean", dropna=False)
    wide = wide[method_order(wide.columns)]
    return wide


def _scenario(sweep: str, setting: str, group: str, metric: str, rows: pd.DataFrame) -> Scenario | None:
    if metric == "error_vs_kmeans" and pd.to_numeric(rows[metric], errors="coerce").isna().all():
        metric = FALLBACK
    if metric not in rows.columns:
        return None
    values = _pivot(rows, metric).dropna(axis=1, how="all")
    complete = values.dropna(axis=0, how="any")
    if len(complete) >= 2:
        values = complete  # paired seeds only, when at least two are shared by every method
    if values.shape[1] < 2 or values.empty:
        return None
    utilization = (_pivot(rows, CONSTRAINT).reindex(index=values.index, columns=values.columns)
                   if CONSTRAINT in rows.columns else pd.DataFrame())
    cost = (pd.to_numeric(rows[COST], errors="coerce").groupby(rows["method"].astype(str)).mean()
            if COST in rows.columns else pd.Series(dtype=float))
    kmeans = None
    if metric == "error_vs_kmeans":
        kmeans = 1.0 / values
    scenario = Scenario(sweep, setting, group, metric, values, utilization, cost, kmeans)
    scenario.ranks = rank_scenario(scenario)
    return scenario


# --------------------------------------------------------------------------- ranks
def constrained_ranks(values: np.ndarray, utilization: np.ndarray | None, better: str) -> np.ndarray:
    """Ranks (1 = best, ties averaged) along the last axis: methods meeting U >= the floor first,
    each part ordered by ``values`` (``better`` "min" or "max"). NaN utilization meets nothing."""
    signed = np.asarray(values, dtype=float) * (1.0 if better == "min" else -1.0)
    n = signed.shape[-1]
    within = sps.rankdata(signed, axis=-1, nan_policy="omit")
    within = np.where(np.isnan(within), n + 1.0, within)
    fails = np.zeros_like(within) if utilization is None else ~(np.asarray(utilization) >= UTILIZATION_FLOOR)
    return sps.rankdata(fails * (n + 2.0) + within, axis=-1)


def rank_scenario(scenario: Scenario, methods: Sequence[str] | None = None,
                  bootstrap: int = BOOTSTRAP) -> pd.DataFrame:
    """method, rank (from the seed means), low / high (bootstrap percentile interval), mean, meets."""
    methods = list(methods) if methods is not None else scenario.methods
    better = metric_registry.get(scenario.metric).better or "min"
    values = scenario.values[methods].to_numpy(dtype=float)
    has_u = not scenario.utilization.empty
    util = scenario.utilization[methods].to_numpy(dtype=float) if has_u else None
    means = np.nanmean(values, axis=0)
    u_means = np.nanmean(util, axis=0) if has_u else None
    ranks = constrained_ranks(means, u_means, better)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    idx = rng.integers(0, len(values), size=(bootstrap, len(values)))
    with np.errstate(invalid="ignore"), _quiet():
        boot = constrained_ranks(np.nanmean(values[idx], axis=1), np.nanmean(util[idx], axis=1) if has_u else None,
                                 better)
    low, high = np.quantile(boot, [ALPHA / 2, 1 - ALPHA / 2], axis=0)
    return pd.DataFrame({"method": methods, "rank": ranks, "low": low, "high": high, "mean": means,
                         "meets": (u_means >= UTILIZATION_FLOOR) if has_u else np.ones(len(methods), bool)})


class _quiet:
    """Silence numpy's 'mean of empty slice' for a method without values in a resample."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)


# --------------------------------------------------------------------------- across scenarios
@dataclass
class Block:
    """The largest complete block: every method in every scenario, ranks among themselves."""

    methods: list[str]
    scenarios: list[Scenario]
    ranks: pd.DataFrame  # index scenario label, columns method
    friedman: tuple[float, float]  # statistic, p-value
    nemenyi: pd.DataFrame  # p-values, method x method
    cd: float


def complete_block(all_scenarios: Sequence[Scenario], minimum_methods: int = 3) -> Block | None:
    coverage: dict[str, int] = {}
    for s in all_scenarios:
        for m in s.methods:
            coverage[m] = coverage.get(m, 0) + 1
    order = sorted(coverage, key=lambda m: (-coverage[m], sort_key(m)))
    best: tuple[int, list[str], list[Scenario]] | None = None
    for k in range(minimum_methods, len(order) + 1):
        chosen = order[:k]
        inside = [s for s in all_scenarios if all(m in s.methods for m in chosen)]
        if len(inside) >= 2 and (best is None or k * len(inside) > best[0]):
            best = (k * len(inside), chosen, inside)
    if best is None:
        return None
    _, chosen, inside = best
    chosen = method_order(chosen)
    ranks = pd.DataFrame([rank_scenario(s, chosen, bootstrap=1).set_index("method")["rank"] for s in inside],
                         index=[s.label for s in inside])[chosen]
    matrix = ranks.to_numpy(dtype=float)
    if np.all(matrix == matrix[0]):
        friedman = (0.0, 1.0)
    else:
        statistic, p = sps.friedmanchisquare(*matrix.T)
        friedman = (float(statistic), float(p))
    import scikit_posthocs

    nemenyi = scikit_posthocs.posthoc_nemenyi_friedman(matrix)
    nemenyi.index = nemenyi.columns = chosen
    k, n = len(chosen), len(inside)
    q = float(sps.studentized_range.ppf(1 - ALPHA, k, np.inf)) / math.sqrt(2)
    return Block(chosen, inside, ranks, friedman, nemenyi, q * math.sqrt(k * (k + 1) / (6.0 * n)))


def mean_ranks(all_scenarios: Sequence[Scenario]) -> pd.DataFrame:
    """method, mean rank, mean relative rank ((rank - 1) / (n - 1): 0 = best, 1 = last of the n methods
    of a scenario, so ranks among 2 and among 12 methods average on one scale), scenarios, wins (rank 1);
    sorted by the relative rank."""
    rows: dict[str, list[tuple[float, int]]] = {}
    for s in all_scenarios:
        for _, r in s.ranks.iterrows():
            rows.setdefault(r["method"], []).append((float(r["rank"]), len(s.ranks)))
    frame = pd.DataFrame([{"method": m, "mean_rank": float(np.mean([r for r, _ in v])),
                           "relative": float(np.mean([(r - 1) / (n - 1) for r, n in v])), "scenarios": len(v),
                           "wins": int(sum(r == 1.0 for r, _ in v))} for m, v in rows.items()])
    return frame.sort_values(["relative", "scenarios"], ascending=[True, False]).reset_index(drop=True)


@dataclass
class Aggregates:
    """rliable aggregates of the block's feature-fit scenarios (score: k-means E / E)."""

    methods: list[str]
    tasks: list[str]
    iqm: pd.DataFrame  # method, iqm, low, high
    improvement: pd.DataFrame  # method, p (best over it), low, high
    best: str
    profiles: dict[str, np.ndarray]  # method -> (3, len(taus)): share, low, high


def rliable_aggregates(block: Block, bootstrap: int = BOOTSTRAP) -> Aggregates | None:
    from rliable import metrics as rl

    tasks = [s for s in block.scenarios if s.kmeans is not None]
    if not tasks:
        return None
    runs = min(len(s.kmeans) for s in tasks)
    scores = {m: np.stack([s.kmeans[m].to_numpy(dtype=float)[:runs] for s in tasks], axis=1) for m in block.methods}
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    # stratified: runs resampled within each task; the second method of a pair draws its own runs
    draws = rng.integers(0, runs, size=(2, bootstrap, runs, len(tasks)))
    columns = np.arange(len(tasks))

    def resample(matrix: np.ndarray, second: bool = False) -> np.ndarray:
        """(bootstrap, runs, tasks) resampled score matrices."""
        return matrix[draws[int(second)], columns]

    iqm_rows, profiles = [], {}
    for m, matrix in scores.items():
        boot = resample(matrix).reshape(bootstrap, -1)
        low, high = np.quantile(sps.trim_mean(boot, 0.25, axis=1), [ALPHA / 2, 1 - ALPHA / 2])
        iqm_rows.append({"method": m, "iqm": float(rl.aggregate_iqm(matrix)), "low": low, "high": high})
        share = (matrix.reshape(-1, 1) > PROFILE_TAUS).mean(axis=0)
        boot_share = (boot[:, :, None] > PROFILE_TAUS).mean(axis=1)
        profiles[m] = np.stack([share, *np.quantile(boot_share, [ALPHA / 2, 1 - ALPHA / 2], axis=0)])
    iqm = pd.DataFrame(iqm_rows).sort_values("iqm", ascending=False).reset_index(drop=True)
    best = str(iqm["method"].iloc[0])
    improvement_rows = []
    for m in block.methods:
        if m == best:
            continue
        point = float(rl.probability_of_improvement(scores[best], scores[m]))
        boot = _improvement_probability(resample(scores[best]), resample(scores[m], second=True))
        low, high = np.quantile(boot, [ALPHA / 2, 1 - ALPHA / 2])
        improvement_rows.append({"method": m, "p": point, "low": low, "high": high})
    return Aggregates(list(block.methods), [s.label for s in tasks], iqm, pd.DataFrame(improvement_rows), best,
                      profiles)


def _improvement_probability(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """rliable's probability of improvement for a batch of (replicate, runs, tasks) matrices: per task
    P(X > Y) + P(X = Y) / 2 over all run pairs (the Mann-Whitney U / (n m) that
    ``rliable.metrics.probability_of_improvement`` computes, 0.5 for identical columns), mean over tasks."""
    greater = (x[:, :, None, :] > y[:, None, :, :]).mean(axis=(1, 2))
    ties = (x[:, :, None, :] == y[:, None, :, :]).mean(axis=(1, 2))
    identical = np.all(x == y, axis=1)
    return np.where(identical, 0.5, greater + 0.5 * ties).mean(axis=1)


# --------------------------------------------------------------------------- which quantizer when
def not_resolved_from_best(scenario: Scenario) -> tuple[str, list[str]]:
    """The best method of a scenario and the others not resolved apart from it (see module doc)."""
    ranks = scenario.ranks.sort_values("rank")
    best = str(ranks["method"].iloc[0])
    meets = dict(zip(ranks["method"], ranks["meets"]))
    sign = 1.0 if (metric_registry.get(scenario.metric).better or "min") == "min" else -1.0

    def estimate(method: str) -> Estimate:
        column = scenario.values[method].dropna()
        mean, half, n = t_interval(sign * column.to_numpy(dtype=float))
        return Estimate(mean, half, n, {s: sign * float(v) for s, v in column.items()})

    reference = estimate(best)
    candidates = {m: estimate(m) for m in scenario.methods if m != best and meets[m] == meets[best]}
    verdicts = compare_pairs({m: (e, reference) for m, e in candidates.items()}, ALPHA) if candidates else {}
    tied = [m for m, (verdict, _) in verdicts.items() if verdict == "unresolved"]
    return best, method_order(tied)


# --------------------------------------------------------------------------- the section
def leaderboard_section(tables: Mapping[str, pd.DataFrame], figures: Path | None) -> str:
    """The markdown that opens the report (and its figures under ``figures``)."""
    found = scenarios(tables)
    lines = ["## Leaderboard", ""]
    if not found:
        return "\n".join(lines + ["No sweep table with two or more methods in one comparison group.", ""])
    u = metric_registry.get(CONSTRAINT).words
    lines += [
        f"{len(found)} scenarios (one setting of one sweep, one comparison group: same error space and bits "
        f"per token). Ranked metric: {_primary_text()}; stated constraint: methods with mean {u} >= "
        f"{UTILIZATION_FLOOR:.0%} rank above those without. Sweeps with a tuning stage count with their tuned "
        f"rows (equal budget per method). Rank intervals: 95% percentile interval over {BOOTSTRAP} paired "
        "bootstrap resamples of the seeds (coarse with 3 seeds). Method: `benchmark/report/leaderboard.py`.", ""]
    lines += _which_when_lines(found)
    lines += _overall_lines(found, figures)
    lines += _scenario_rank_lines(found)
    return "\n".join(lines)


def _primary_text() -> str:
    by_metric: dict[str, list[str]] = {}
    for experiment, metric in PRIMARY.items():
        by_metric.setdefault(metric, []).append(experiment)
    parts = [f"{metric_registry.get(m).label} ({metric_registry.get(m).better}) for {'/'.join(e)}"
             for m, e in by_metric.items()]
    return "; ".join(parts) + f" ({metric_registry.get(FALLBACK).label} where a group has no k-means reference)"


def _which_when_lines(found: Sequence[Scenario]) -> list[str]:
    rows = []
    for s in found:
        best, tied = not_resolved_from_best(s)
        base = s.cost.get(best, math.nan)
        costs = ", ".join(f"{m} {_ratio(s.cost.get(m, math.nan), base)}" for m in [best, *tied])
        mean = s.ranks.set_index("method").loc[best, "mean"]
        digits = metric_registry.get(s.metric).digits
        rows.append([s.label, f"{metric_registry.get(s.metric).label} {mean:.{digits}f}", best,
                     ", ".join(tied) or "none", costs])
    return ["### Which quantizer when", "",
            "Per scenario: the best method (under the U constraint), the methods not resolved apart from it "
            f"(same side of the constraint; paired t-test over seeds, Holm-adjusted, alpha {ALPHA}) and their "
            "training cost as a multiple of the best's mean train seconds. 'Not resolved' is not 'equal'.", "",
            markdown_table(["scenario", "best (mean)", "best method", "not resolved apart", "train s ratio"], rows),
            ""]


def _ratio(value: float, base: float) -> str:
    if not (math.isfinite(value) and math.isfinite(base)) or base <= 0:
        return "(-)"
    return f"({value / base:.2g}x)"


def _overall_lines(found: Sequence[Scenario], figures: Path | None) -> list[str]:
    lines = ["### Across scenarios", ""]
    overall = mean_ranks(found)
    often = overall[overall["scenarios"] >= MIN_SCENARIOS]
    rare = overall[overall["scenarios"] < MIN_SCENARIOS]
    lines += [markdown_table(["method", "mean relative rank", "mean rank", "scenarios", "wins (rank 1)"],
                             [[r["method"], f"{r['relative']:.2f}", f"{r['mean_rank']:.2f}", str(r["scenarios"]),
                               str(r["wins"])] for _, r in often.iterrows()]), "",
              f"Methods in at least {MIN_SCENARIOS} scenarios, by mean relative rank ((rank - 1) / (methods - 1): "
              "0 = best, 1 = last). They are in different scenarios, against different numbers of methods: the "
              "test below uses a complete block."
              + (f" In fewer scenarios (relative rank, scenarios): "
                 + ", ".join(f"{r['method']} ({r['relative']:.2f}, {r['scenarios']})" for _, r in rare.iterrows())
                 + "." if len(rare) else ""), ""]
    block = complete_block(found)
    if block is None:
        return lines + ["No complete block of at least 3 methods in 2 scenarios: no Friedman test.", ""]
    statistic, p = block.friedman
    mean = block.ranks.mean(axis=0).sort_values()
    lines += [f"Complete block: {len(block.methods)} methods ({', '.join(block.methods)}) in all of "
              f"{len(block.scenarios)} scenarios. Friedman chi^2 = {statistic:.2f}, p = {p:.2g}"
              f" ({'the methods rank differently' if p < ALPHA else 'no rank difference resolved'} at alpha "
              f"{ALPHA}). Nemenyi critical difference CD = {block.cd:.2f} mean-rank units: two methods whose mean "
              "ranks differ by less are not resolved apart.", "",
              markdown_table(["method", "mean rank in the block"], [[m, f"{r:.2f}"] for m, r in mean.items()]), ""]
    if figures is not None:
        from benchmark.report.figures import cd_figure

        path = cd_figure(mean, block.nemenyi, figures / "leaderboard_cd.png", ALPHA)
        lines += [f"![critical difference diagram](figures/{path.name})", "",
                  "Figure: mean rank in the block (left = better); a bar joins methods the Nemenyi test does not "
                  f"resolve apart at alpha {ALPHA}.", ""]
    aggregates = rliable_aggregates(block)
    if aggregates is not None:
        lines += _rliable_lines(aggregates, figures)
    return lines


def _rliable_lines(agg: Aggregates, figures: Path | None) -> list[str]:
    lines = [f"rliable aggregates over the block's {len(agg.tasks)} feature-fit scenarios (score = k-means E / E: "
             "1 = the k-means reference; no U constraint here), 95% stratified-bootstrap intervals:", "",
             markdown_table(["method", "IQM", f"P({agg.best} > method)"],
                            [[r["method"], f"{r['iqm']:.3f} [{r['low']:.3f}, {r['high']:.3f}]",
                              _improvement(agg, r["method"])] for _, r in agg.iqm.iterrows()]), ""]
    if figures is not None:
        from benchmark.report.figures import profile_figure

        path = profile_figure(PROFILE_TAUS, agg.profiles, figures / "leaderboard_profiles.png")
        lines += [f"![performance profiles](figures/{path.name})", "",
                  "Figure: performance profiles, the share of (scenario, seed) runs whose score k-means E / E "
                  "exceeds tau; bands = 95% stratified-bootstrap intervals.", ""]
    return lines


def _improvement(agg: Aggregates, method: str) -> str:
    row = agg.improvement[agg.improvement["method"] == method] if len(agg.improvement) else agg.improvement
    if row.empty:
        return "-"
    r = row.iloc[0]
    return f"{r['p']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"


def _scenario_rank_lines(found: Sequence[Scenario]) -> list[str]:
    lines = ["### Ranks per scenario", "",
             "<details><summary>Each scenario's ranks (95% bootstrap interval), mean of the ranked metric and "
             "whether the U constraint is met</summary>", ""]
    for s in found:
        digits = metric_registry.get(s.metric).digits
        rows = [[r["method"], f"{r['rank']:g} [{r['low']:g}, {r['high']:g}]", f"{r['mean']:.{digits}f}",
                 "yes" if r["meets"] else "no"] for _, r in s.ranks.sort_values("rank").iterrows()]
        lines += [f"**{s.label}** ({len(s.values)} seeds)", "",
                  markdown_table(["method", "rank [95%]", metric_registry.get(s.metric).label,
                                 f"{metric_registry.get(CONSTRAINT).words} >= {UTILIZATION_FLOOR:.0%}"], rows),
                  ""]
    return lines + ["</details>", ""]
