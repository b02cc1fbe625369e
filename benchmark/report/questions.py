"""The open questions of Wasserstein VQ (arXiv 2506.15078), answered from the sweep tables: "Open questions".

``benchmark.report.build`` calls :func:`open_questions_section` with the tables it has read (filtered to
the current sweep specs) and puts the returned markdown into ``reports/ablation.md``. Nothing is
retrained. The questions are the open questions of Wasserstein VQ (arXiv 2506.15078):

1. Non-Gaussian features (sweep ``non_gaussian``): does the closed-form Gaussian W loss
   (``wasserstein``) fall behind the non-parametric matching losses (the methods flagged
   ``nonparametric_matching``: sliced W, exact OT, MMD) when the features are not Gaussian (bimodal mixture, uniform cube),
   and not when they are (the Gaussian control)?
2. The error-optimal codebook density. Sweep ``density_map``: E / k-means of the W loss aimed at
   N(mu, c S) (``wasserstein_density`` with ``covariance_scale`` c) over a grid of c x d x K, z ~ N(0, I);
   per (d, K) the best c and its bracket, against d/(d+2) (Theorem 2 as Wasserstein VQ states it),
   (d+2)/d (Gersho 1979) and the finite-K centroid shrinkage 1 - E_kmeans / (d var). Sweeps ``low_d`` and
   ``low_d_paper``: the three-point comparison (plain f, Gersho's f^(d/(d+2)), Theorem 2's f^((d+2)/d)).
3. Downstream autoregressive generation (the ``vqvae`` and ``transplant`` sweeps with
   ``model_options.prior_steps`` > 0): does utilization matter for generation? Spearman
   correlations across methods of the prior's held-out NLL and of the samples' Frechet distance
   (classifier features) with U and with PSNR, exact permutation p-values, n methods.

Plus the ablation on the atomic mean shift (sweep ``dead_codes``): dead-code strategies
vs distribution matching.

Every conclusion is computed from the tables: means and half-widths of the 95% t-interval over
seeds (``benchmark.report.stats.t_interval``, as in every table of the report). All the tests of one
question form one family (``benchmark.report.stats.compare_pairs``): paired t-tests over seeds (trials
with the same seed share their training stream, held-out features and k-means reference),
Holm-corrected together. Default and tuned rows are never pooled into one cell. With n = 1 nothing
is resolved.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pandas as pd

from benchmark import metric_registry
from benchmark.metric_registry import SHORT
from benchmark.pipeline.spec import QuestionSweeps
from benchmark.report.figures import density_map_figure, grouped_figure
from benchmark.report.stats import (
    Estimate, compare_pairs, done_rows, estimate, format_cell, holm, paired_difference, relative_gap,
    separated,
)
from benchmark.report.tables import PROTOCOL, Summary, sort_key, summarize, summary_table

# Sweep names (params.yaml) of each question.
DEFAULT_SWEEPS = QuestionSweeps()  # params.yaml's ``questions:`` section overrides them

# The methods the questions compare (the question defines the comparison, not the result).
GAUSSIAN_W = "wasserstein"
GAUSSIAN_CONTROL = "gaussian"  # the dataset on which the Gaussian assumption holds
DENSITY_METHOD = "wasserstein_density"
DEFAULT_EXPONENT = "gersho"  # WassersteinDensityOptions.exponent default
TARGET_LABELS = {"plain": "f (plain W)", "gersho": "Gersho f^(d/(d+2))", "paper": "Theorem 2 f^((d+2)/d)"}
# Same thresholds as the paper-vs-ours verdict rule of benchmark.report.
FULL_USE, COLLAPSED = 90.0, 10.0
DATASET_LABELS = {"gaussian": "Gaussian (control)", "gaussian_mixture": "bimodal mixture", "uniform": "uniform cube"}

KEY_METRIC = "error_vs_kmeans"


def nonparametric(method: Any) -> bool:
    """A registered method whose distribution loss compares samples (its ``nonparametric_matching`` flag)."""
    import methods

    return isinstance(method, str) and method in methods.available() and methods.get(method).nonparametric_matching


def _gap_text(a: Estimate, b: Estimate, confidence: float = 0.95) -> str:
    gap = relative_gap(a, b)
    sign = f"{gap:+.1f}%" if math.isfinite(gap) else "n/a"
    if separated(a, b):
        return f"{sign}, 95% intervals disjoint"
    diff = paired_difference(a, b, confidence)
    if not math.isfinite(diff.half):
        return f"{sign}, 95% intervals overlap, no paired interval"
    verdict = "excludes 0" if (diff.low > 0 or diff.high < 0) else "includes 0"
    return (f"{sign}, 95% intervals overlap; paired difference over {diff.n} seeds "
            f"{diff.text()} {verdict}")


def _values(table: pd.DataFrame, column: str) -> list[Any]:
    if column not in table.columns:
        return []
    return sorted({v for v in table[column].dropna()}, key=sort_key)


def _finite_groups(done: pd.DataFrame, cells: Mapping[tuple, Estimate],
                   column: str) -> Iterator[tuple[Any, dict[Any, Estimate], Any]]:
    """Per value of ``column`` (in ``_values`` order): its finite cells ``{second key: estimate}`` and the
    key of the lowest mean; a value without a finite cell is skipped."""
    for value in _values(done, column):
        here = {k: e for (v, k), e in cells.items() if v == value and math.isfinite(e.mean)}
        if here:
            yield value, here, min(here, key=lambda k: here[k].mean)


def _cells(table: pd.DataFrame, keys: Sequence[str], column: str, confidence: float,
           scale: float = 1.0) -> dict[tuple, Estimate]:
    out: dict[tuple, Estimate] = {}
    for key, group in table.groupby(list(keys), dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        out[key] = estimate(group, column, confidence, scale)
    return out


def _reordered(summary: Summary, first: Sequence[str]) -> Summary:
    """The same summary with ``first`` as the leading factor columns (rows re-sorted to match)."""
    factors = [f for f in first if f in summary.factors] + [f for f in summary.factors if f not in first]
    rows = summary.rows
    order = sorted(range(len(rows)), key=lambda i: tuple(sort_key(rows.iloc[i][f]) for f in factors))
    return Summary(summary.name, factors, summary.metrics, rows.iloc[order].reset_index(drop=True),
                   summary.failed, summary.commits)


def _table_block(table: pd.DataFrame, name: str, confidence: float, first: Sequence[str]) -> str:
    summary = _reordered(summarize(table, name, confidence), first)
    text = summary_table(summary)
    if not summary.failed.empty:
        text += f"\n\n{len(summary.failed)} failed trial(s), not in the means (listed in the `{name}` section)."
    return text


def _setting(table: pd.DataFrame) -> str:
    parts = []
    for column, label in (("codebook_size", "K"), ("dim", "d"), ("steps", "steps"), ("batch_size", "batch"),
                          ("eval_size", "eval")):
        if column == "eval_size" and "experiment" in table.columns and (table["experiment"] != "fit").all():
            continue  # only fit draws eval_size features
        values = _values(table, column)
        if values:
            parts.append(f"{label} " + "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values))
    seeds = _values(table, "seed")
    parts.append(f"{len(seeds)} seed" + ("s" if len(seeds) != 1 else ""))
    return ", ".join(parts)


def _missing(names: Iterable[str]) -> str:
    return ("Not measured yet: no results table for " + ", ".join(f"`{n}`" for n in names)
            + " (run `dvc repro` or `python -m benchmark sweep --params params.yaml --sweep NAME`).")


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if not items:
        return "none"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --------------------------------------------------------------------------------------------
# Question 1: non-Gaussian features
# --------------------------------------------------------------------------------------------
def non_gaussian_findings(table: pd.DataFrame, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per dataset: the best method by E / k-means, Gaussian W vs the best non-parametric loss,
    MMD vs Gaussian W. One dict per dataset (dataset order as in the table, sorted)."""
    done = done_rows(table)
    cells = _cells(done, ["dataset", "method"], KEY_METRIC, confidence)
    usage = _cells(done, ["dataset", "method"], "utilization", confidence, 100.0)
    groups = list(_finite_groups(done, cells, "dataset"))
    # The question's tests: every non-parametric loss against Gaussian W on every distribution, one
    # Holm family (the best loss per distribution is picked after the fact from it).
    pairs = {(dataset, m): (here[m], here[GAUSSIAN_W]) for dataset, here, _ in groups if GAUSSIAN_W in here
             for m in here if nonparametric(m)}
    family = compare_pairs(pairs, confidence=confidence)
    findings = []
    for dataset, here, best in groups:
        record: dict[str, Any] = {"dataset": dataset, "best": best, "best_est": here[best], "cells": here,
                                  "usage": {m: e for (d, m), e in usage.items() if d == dataset}}
        nonparam = {m: here[m] for m in sorted(here, key=sort_key) if (dataset, m) in pairs}
        if nonparam:
            best_np = min(nonparam, key=lambda m: nonparam[m].mean)
            record.update(w=here[GAUSSIAN_W], best_np=best_np, best_np_est=nonparam[best_np],
                          np_vs_w=family[dataset, best_np][0], np_vs_w_p=family[dataset, best_np][1],
                          family_size=len(pairs))
        if (dataset, "mmd") in pairs:
            record["mmd_vs_w"] = family[dataset, "mmd"][0]
        findings.append(record)
    return findings


def _non_gaussian_text(findings: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for f in findings:
        label = DATASET_LABELS.get(f["dataset"], f["dataset"])
        text = (f"- **{label}** (`{f['dataset']}`): lowest E / k-means: `{f['best']}` "
                f"{f['best_est'].text()}")
        if "w" in f:
            text += (f"; Gaussian W (`{GAUSSIAN_W}`) {f['w'].text()}; best non-parametric "
                     f"`{f['best_np']}` {f['best_np_est'].text()} ({_gap_text(f['best_np_est'], f['w'])} vs "
                     f"Gaussian W): ")
            text += {"lower": "the non-parametric loss quantizes better",
                     "higher": "the Gaussian W loss quantizes better",
                     "unresolved": "no resolved difference"}[f["np_vs_w"]]
            p = f.get("np_vs_w_p", math.nan)
            text += (f" (paired t-test, Holm-corrected over the question's {f.get('family_size', 1)} tests, every "
                     f"non-parametric loss against Gaussian W on every distribution: p = {p:.3g})"
                     if math.isfinite(p) else " (no paired test: intervals compared)")
        if "mmd_vs_w" in f:
            text += (f". MMD vs Gaussian W (same family): {f['cells']['mmd'].text()} vs {f['w'].text()}, "
                     + {"lower": "MMD lower", "higher": "MMD higher", "unresolved": "not resolved"}[f["mmd_vs_w"]])
        usage = f.get("usage", {})
        low_use = [f"`{m}` {e.mean:.1f}%" for m, e in sorted(usage.items(), key=lambda kv: sort_key(kv[0]))
                   if math.isfinite(e.mean) and e.mean < FULL_USE]
        text += ". U below 90%: " + _join(low_use) + "."
        lines.append(text)
    return lines


def non_gaussian_answer(findings: Sequence[Mapping[str, Any]]) -> str:
    """One-paragraph answer computed from :func:`non_gaussian_findings`."""
    compared = [f for f in findings if "np_vs_w" in f]
    if not compared:
        return ("**Answer:** cannot tell: the table lacks the Gaussian W loss or every non-parametric loss "
                "on some dataset.")
    shaped = [f for f in compared if f["dataset"] != GAUSSIAN_CONTROL]
    control = [f for f in compared if f["dataset"] == GAUSSIAN_CONTROL]
    wins = [f["dataset"] for f in shaped if f["np_vs_w"] == "lower"]
    losses = [f["dataset"] for f in shaped if f["np_vs_w"] == "higher"]
    ties = [f["dataset"] for f in shaped if f["np_vs_w"] == "unresolved"]
    parts = []
    if shaped:
        if wins and not losses and not ties:
            parts.append("on every non-Gaussian feature distribution measured ("
                         + _join([f"`{d}`" for d in wins]) + ") a non-parametric matching loss reaches a lower "
                         "E / k-means than the closed-form Gaussian W loss (difference resolved)")
        else:
            if wins:
                parts.append("a non-parametric loss beats the Gaussian W loss (resolved) on "
                             + _join([f"`{d}`" for d in wins]))
            if losses:
                parts.append("the Gaussian W loss is better on " + _join([f"`{d}`" for d in losses]))
            if ties:
                parts.append("no difference is resolved on " + _join([f"`{d}`" for d in ties]))
    if control:
        c = control[0]
        parts.append({"lower": "on the Gaussian control a non-parametric loss is also better, so the gap is not "
                               "only the Gaussian assumption (sampling/optimisation differences count too)",
                      "higher": "on the Gaussian control the Gaussian W loss is the better one, as its "
                                "assumption predicts",
                      "unresolved": "on the Gaussian control the two are not resolved apart"}[c["np_vs_w"]])
    gaps = [f"`{f['dataset']}` {relative_gap(f['w'], f['best_np_est']):+.1f}%" for f in compared]
    text = "**Answer from these measurements:** " + "; ".join(parts) + "."
    text += (" Excess E / k-means of the Gaussian W loss over the best non-parametric loss: "
             + ", ".join(gaps) + ".")
    if wins and not losses and not ties and (not control or control[0]["np_vs_w"] != "lower"):
        text += (" So yes: a distribution-free matching loss generalises the method to non-Gaussian features "
                 "here, and the Gaussian assumption is what it costs.")
    return text


# --------------------------------------------------------------------------------------------
# Question 2: optimal density in low d
# --------------------------------------------------------------------------------------------
def density_target(row: Mapping[str, Any]) -> str:
    """'plain', 'gersho', 'paper' or 'c=<scale>' for one trial row of the low-d sweeps."""
    if row.get("method") != DENSITY_METHOD:
        return "plain"
    scale = pd.to_numeric(pd.Series([row.get("method_options.covariance_scale")]), errors="coerce").iloc[0]
    if pd.notna(scale) and scale > 0:
        return f"c={scale:g}"
    exponent = row.get("method_options.exponent")
    return str(exponent) if isinstance(exponent, str) and exponent else DEFAULT_EXPONENT


def target_scale(target: str, dim: int) -> float:
    """Covariance factor c of the target N(mu, c S) (1 for plain matching)."""
    if target == "plain":
        return 1.0
    if target == "gersho":
        return (dim + 2) / dim
    if target == "paper":
        return dim / (dim + 2)
    if target.startswith("c="):
        return float(target[2:])
    return math.nan


def merged_table(tables: Mapping[str, pd.DataFrame], names: Sequence[str]) -> pd.DataFrame | None:
    """The tables of ``names`` that have rows, in one table (None when none has)."""
    frames = [tables[name] for name in names if name in tables and len(tables[name])]
    return pd.concat(frames, ignore_index=True) if frames else None


def low_d_table(tables: Mapping[str, pd.DataFrame],
                names: Sequence[str] = DEFAULT_SWEEPS.three_point) -> pd.DataFrame | None:
    """The low-d sweeps in one table, ``method`` relabelled by density target."""
    frames = [tables[name] for name in names if name in tables and len(tables[name])]
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    table["target"] = [density_target(row) for row in table.to_dict("records")]
    table["method"] = [
        m if t == "plain" else f"{m} ({t})" for m, t in zip(table["method"].astype(str), table["target"])
    ]
    table["method"] = table["method"].astype(object)
    drop = [c for c in table.columns if c.startswith("method_options.") and c != "method_options.gamma"]
    return table.drop(columns=drop)


def low_d_pairs(table: pd.DataFrame, confidence: float = 0.95) -> dict[tuple, tuple[Estimate, Estimate]]:
    """The tests of the three-point comparison: every target against plain matching, per d."""
    done = done_rows(table)
    cells = _cells(done, ["dim", "target"], KEY_METRIC, confidence)
    return {("low_d", int(dim), t): (e, here["plain"]) for dim, here, _ in _finite_groups(done, cells, "dim")
            if "plain" in here for t, e in here.items() if t != "plain"}


def low_d_findings(table: pd.DataFrame, confidence: float = 0.95,
                   verdicts: Mapping[tuple, tuple[str, float]] | None = None) -> list[dict[str, Any]]:
    """Per d: every target's E / k-means, the best target, and each target vs plain matching.

    ``verdicts``: the question's Holm family (:func:`question_two_family`); default: these tests alone."""
    done = done_rows(table)
    cells = _cells(done, ["dim", "target"], KEY_METRIC, confidence)
    if verdicts is None:
        verdicts = compare_pairs(low_d_pairs(table, confidence), confidence=confidence)
    findings = []
    for dim, here, best in _finite_groups(done, cells, "dim"):
        sizes = _values(done[done["dim"] == dim], "codebook_size")
        per_dim = float(sizes[0]) ** (1.0 / float(dim)) if len(sizes) == 1 else math.nan  # K^(1/d)
        record: dict[str, Any] = {"dim": int(dim), "cells": here, "best": best, "codes_per_dim": per_dim}
        if "plain" in here:
            record["vs_plain"] = {t: verdicts[("low_d", int(dim), t)][0] for t in here if t != "plain"}
        findings.append(record)
    return findings


def _low_d_text(findings: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for f in findings:
        d = f["dim"]
        cells = f["cells"]
        parts = [f"{TARGET_LABELS.get(t, t)} (c = {target_scale(t, d):.3g}): {e.text()}" for t, e in
                 sorted(cells.items(), key=lambda kv: target_scale(kv[0], d))]
        per_dim = f['codes_per_dim']
        per_dim = f" (K^(1/d) = {per_dim:.1f} codes per dimension)" if math.isfinite(per_dim) else ""
        text = (f"- **d = {d}**{per_dim}: E / k-means " + "; ".join(parts)
                + f". Lowest: {TARGET_LABELS.get(f['best'], f['best'])}")
        if "vs_plain" in f:
            rel = [f"{TARGET_LABELS.get(t, t)} {_gap_text(cells[t], cells['plain'])} vs plain"
                   for t in f["vs_plain"]]
            text += " (" + "; ".join(rel) + ")"
        lines.append(text + ".")
    return lines


def low_d_answer(findings: Sequence[Mapping[str, Any]]) -> str:
    compared = [f for f in findings if "vs_plain" in f]
    if not compared:
        return "**Answer:** cannot tell: plain matching (`wasserstein`) is missing from the low-d tables."
    parts = []
    for target in ("gersho", "paper"):
        have = [f for f in compared if target in f["vs_plain"]]
        if not have:
            continue
        label = TARGET_LABELS[target]
        lower = [str(f["dim"]) for f in have if f["vs_plain"][target] == "lower"]
        higher = [str(f["dim"]) for f in have if f["vs_plain"][target] == "higher"]
        tie = [str(f["dim"]) for f in have if f["vs_plain"][target] == "unresolved"]
        bits = []
        if lower:
            bits.append("lowers E / k-means vs plain matching at d = " + _join(lower))
        if higher:
            bits.append("raises it at d = " + _join(higher))
        if tie:
            bits.append("is not resolved from it at d = " + _join(tie))
        parts.append(f"aiming the W loss at {label} " + ", ".join(bits))
    best = [f"d = {f['dim']}: {TARGET_LABELS.get(f['best'], f['best'])}" for f in findings]
    text = "**Answer from these measurements:** " + "; ".join(parts) + ". Lowest E / k-means per d: " \
        + ", ".join(best) + "."
    paper = [f for f in compared if "paper" in f["vs_plain"]]
    if paper and all(f["vs_plain"]["paper"] == "higher" for f in paper):
        text += (" Theorem 2's exponent, as stated, makes the codebook worse than plain matching at every d "
                 f"of these sweeps (d = {_join([str(f['dim']) for f in paper])}); see the density map for "
                 "larger d, where the finite-K centroid shrinkage can make a narrower codebook better.")
    gersho = [f for f in compared if "gersho" in f["vs_plain"]]
    better = [f for f in gersho if f["vs_plain"]["gersho"] == "lower"]
    if better:
        where = _join([f"d = {f['dim']}" + (f" ({f['codes_per_dim']:.1f} codes per dimension)"
                                            if math.isfinite(f["codes_per_dim"]) else "")
                       for f in better])
        text += f" So yes: matching f exactly is not error-optimal at {where}."
    return text


# --------------------------------------------------------------------------------------------
# Question 2 as a map: the error-optimal covariance scale c over d and K
# --------------------------------------------------------------------------------------------
def trial_scale(row: Mapping[str, Any]) -> float:
    """Covariance factor c a trial's W loss aims at: 1 for plain matching, the override or the exponent's
    for ``wasserstein_density``, NaN for any other method."""
    if row.get("method") not in (GAUSSIAN_W, DENSITY_METHOD):
        return math.nan
    dim = pd.to_numeric(pd.Series([row.get("dim")]), errors="coerce").iloc[0]
    return target_scale(density_target(row), int(dim)) if pd.notna(dim) else math.nan


def feature_variance(row: Mapping[str, Any]) -> float:
    """Per-coordinate feature variance of a trial's data: scale^2 for the isotropic ``gaussian`` dataset
    (default scale 1), NaN for any other (its variance is not in the table)."""
    if row.get("dataset") != GAUSSIAN_CONTROL:
        return math.nan
    scale = pd.to_numeric(pd.Series([row.get("dataset_options.scale", 1.0)]), errors="coerce").iloc[0]
    return float(scale) ** 2 if pd.notna(scale) else 1.0


def shrinkage_scale(kmeans_error: float, dim: int, variance: float) -> float:
    """c a centroidal codebook has at finite K: Cov(codes) = Cov(z) - Cov(z - q(z)) ~ (var - E/d) I, so
    c = 1 - E / (d var), with E the k-means error summed over the d coordinates."""
    return 1.0 - float(kmeans_error) / (dim * variance)


def density_map_table(table: pd.DataFrame) -> pd.DataFrame:
    """Finished trials of a density map with columns ``c`` (covariance scale) and ``c_shrinkage``
    (the finite-K centroid prediction from the trial's k-means reference)."""
    done = done_rows(table).copy()
    records = done.to_dict("records")
    done["c"] = [trial_scale(r) for r in records]
    done["c_shrinkage"] = [
        shrinkage_scale(r.get("kmeans_error", math.nan), int(r["dim"]), feature_variance(r))
        if pd.notna(r.get("kmeans_error")) else math.nan for r in records]
    return done[done["c"].notna()]


def _map_cells(table: pd.DataFrame, confidence: float) -> dict[tuple[int, int], dict[float, Estimate]]:
    """Per (d, K) of a density map: E / k-means at every c with a finite mean."""
    out = {}
    for (dim, size), group in density_map_table(table).groupby(["dim", "codebook_size"], sort=True):
        cells = {float(c): estimate(g, KEY_METRIC, confidence) for c, g in group.groupby("c", sort=True)}
        cells = {c: e for c, e in cells.items() if math.isfinite(e.mean)}
        if cells:
            out[int(dim), int(size)] = cells
    return out


def density_map_pairs(table: pd.DataFrame, confidence: float = 0.95) -> dict[tuple, tuple[Estimate, Estimate]]:
    """The tests of the density map: per (d, K), every c against the best c."""
    pairs = {}
    for (dim, size), cells in _map_cells(table, confidence).items():
        best = min(cells, key=lambda c: cells[c].mean)
        pairs.update({("map", dim, size, c): (e, cells[best]) for c, e in cells.items() if c != best})
    return pairs


def question_two_family(map_table: pd.DataFrame | None, low_d: pd.DataFrame | None,
                        confidence: float = 0.95) -> dict[tuple, tuple[str, float]]:
    """Every test of question 2 (the density map and the three-point comparison) in one Holm family."""
    pairs = {}
    if map_table is not None and len(map_table):
        pairs.update(density_map_pairs(map_table, confidence))
    if low_d is not None and len(low_d):
        pairs.update(low_d_pairs(low_d, confidence))
    return compare_pairs(pairs, confidence=confidence)


def best_scale_findings(table: pd.DataFrame, confidence: float = 0.95,
                        verdicts: Mapping[tuple, tuple[str, float]] | None = None) -> list[dict[str, Any]]:
    """Per (d, K): E / k-means at every c, the best c (argmin of the mean over seeds) and its interval.

    ``low``-``high`` is the run of grid values on both sides of the argmin whose E / k-means is not resolved
    from the argmin's (``verdicts``: the question's Holm family of paired tests, :func:`question_two_family`;
    default: the map's tests alone); it stops at the first resolved-worse value on each side, and those two values are the ``bracket``
    (-inf / inf where the run reaches the grid's edge): for an error curve with one minimum in c, the
    optimum lies strictly inside it. ``inside`` lists the references in the bracket. ``edge`` says the
    argmin is the smallest or largest c measured. References: Theorem 2 as Wasserstein VQ
    states it, c = d/(d+2); Gersho, c = (d+2)/d; the centroid shrinkage 1 - E_kmeans / (d var) (t-interval
    over seeds)."""
    data = density_map_table(table)
    if verdicts is None:
        verdicts = compare_pairs(density_map_pairs(table, confidence), confidence=confidence)
    all_cells = _map_cells(table, confidence)
    findings = []
    for (dim, size), group in data.groupby(["dim", "codebook_size"], sort=True):
        dim, size = int(dim), int(size)
        cells = all_cells.get((dim, size))
        if not cells:
            continue
        grid = sorted(cells)
        best = min(grid, key=lambda c: cells[c].mean)
        i = grid.index(best)

        def unresolved(c: float) -> bool:
            return verdicts[("map", dim, size, c)][0] == "unresolved"

        lo, hi = i, i
        while lo > 0 and unresolved(grid[lo - 1]):
            lo -= 1
        while hi < len(grid) - 1 and unresolved(grid[hi + 1]):
            hi += 1
        neighbours = {grid[j]: paired_difference(cells[grid[j]], cells[best], confidence)
                      for j in (i - 1, i + 1) if 0 <= j < len(grid)}
        per_seed = group.drop_duplicates("seed") if "seed" in group.columns else group
        shrink = estimate(per_seed, "c_shrinkage", confidence)
        references = {"paper": dim / (dim + 2), "gersho": (dim + 2) / dim, "shrinkage": shrink.mean}
        low, high = grid[lo], grid[hi]
        below = grid[lo - 1] if lo > 0 else -math.inf  # first resolved-worse value on each side
        above = grid[hi + 1] if hi < len(grid) - 1 else math.inf
        distance = {k: abs(math.log(best / v)) for k, v in references.items() if math.isfinite(v) and v > 0}
        findings.append({
            "dim": dim, "codebook_size": size, "codes_per_dim": size ** (1.0 / dim), "cells": cells,
            "best": best, "best_est": cells[best], "low": low, "high": high, "bracket": (below, above),
            "edge": len(grid) > 1 and best in (grid[0], grid[-1]), "neighbours": neighbours,
            "shrinkage": shrink, "references": references,
            "inside": [k for k, v in references.items() if math.isfinite(v) and below < v < above],
            "closest": min(distance, key=distance.get) if distance else None,
            "plain": verdicts[("map", dim, size, 1.0)][0] if 1.0 in cells and best != 1.0 else None,
        })
    return findings


REFERENCE_LABELS = {"paper": "d/(d+2) (Theorem 2 as Wasserstein VQ states it)", "gersho": "(d+2)/d (Gersho)",
                    "shrinkage": "centroid shrinkage 1 - E_km/(d var)"}


def _diff_text(diff: Estimate) -> str:
    if not math.isfinite(diff.mean):
        return "-"
    return f"{diff.mean:+.3f}" + (f" ± {diff.half:.3f}" if math.isfinite(diff.half) else "")


def _bound(value: float) -> str:
    return "-inf" if value == -math.inf else "inf" if value == math.inf else f"{value:g}"


def best_scale_table(findings: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown table: one row per (K, d)."""
    lines = ["| K | d | K^(1/d) | best c | E / k-means at best c | c not resolved from best, in (bracket) | "
             "paired diff. (neighbour - best) lower / upper | d/(d+2) | (d+2)/d | shrinkage 1 - E_km/(d var) | "
             "closest |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in sorted(findings, key=lambda f: (f["codebook_size"], f["dim"])):
        below = [c for c in f["neighbours"] if c < f["best"]]
        above = [c for c in f["neighbours"] if c > f["best"]]
        neighbour = " / ".join(f"c {c:g}: {_diff_text(f['neighbours'][c])}" if c in f["neighbours"] else "-"
                               for c in (below[0] if below else None, above[0] if above else None))
        refs = f["references"]
        best = f"{f['best']:g}" + (" (grid edge)" if f["edge"] else "")
        lines.append(
            f"| {f['codebook_size']} | {f['dim']} | {f['codes_per_dim']:.2f} | {best} | {f['best_est'].text()} | "
            f"{f['low']:g} - {f['high']:g} in ({_bound(f['bracket'][0])}, {_bound(f['bracket'][1])}) | {neighbour} | {refs['paper']:.3g} | {refs['gersho']:.3g} | "
            f"{f['shrinkage'].text()} | {f['closest'] or '-'} |")
    return lines


def _plain_words(findings: Sequence[Mapping[str, Any]]) -> str:
    """The plain-language reading of the map; every clause is conditional on the findings."""
    from scipy import stats

    words = []
    bests = {round(f["best"], 9) for f in findings}
    if len(bests) == 1:
        words.append(f"one target scale, c = {findings[0]['best']:g}, is best in every cell measured")
    else:
        words.append("no single target scale (so no single exponent) is best in every cell measured")
    if len(findings) >= 3 and len(bests) > 1:
        rho = stats.spearmanr([f["codes_per_dim"] for f in findings], [f["best"] for f in findings]).statistic
        if math.isfinite(rho) and rho > 0:
            words.append(f"the best c grows with the number of codes per dimension K^(1/d) (Spearman {rho:.2f}), "
                         "towards Gersho's (d+2)/d: wider than the features when codes are dense")
        elif math.isfinite(rho) and rho < 0:
            words.append(f"the best c falls as K^(1/d) grows (Spearman {rho:.2f}), against high-resolution theory")
    narrow = [f for f in findings if f["bracket"][1] <= 1.0]
    explained = [f for f in narrow if "shrinkage" in f["inside"] or f["closest"] == "shrinkage"]
    if narrow and len(explained) == len(narrow):
        words.append("where the optimum is narrower than the features, the centroid shrinkage "
                     "1 - E_km/(d var) accounts for it (a codebook of cell means sits inside the features by "
                     "about its own error per coordinate)")
    paper = [f for f in findings if "paper" in f["inside"]]
    if paper:
        also = [f for f in paper if "shrinkage" in f["inside"]]
        text = (f"d/(d+2) is inside the bracket of the optimum in {len(paper)} of {len(findings)} cells")
        if also and len(also) == len(paper):
            text += (", each time together with the shrinkage prediction: it is near the optimum where the "
                     "finite-K shrinkage happens to be about 2/(d+2), not as an asymptotic density")
        words.append(text)
    else:
        words.append("d/(d+2) is outside the bracket of the optimum in every cell")
    return "; ".join(words) + "."


def density_map_answer(findings: Sequence[Mapping[str, Any]]) -> str:
    """Plain-language answer computed from :func:`best_scale_findings`."""
    if not findings:
        return "**Answer:** cannot tell: no finished trial of the density map."

    def where(items):
        return _join([f"d = {f['dim']}, K = {f['codebook_size']} ({f['codes_per_dim']:.1f} codes per dimension)"
                      for f in sorted(items, key=lambda f: f["codes_per_dim"])])

    narrow = [f for f in findings if f["bracket"][1] <= 1.0]
    wide = [f for f in findings if f["bracket"][0] >= 1.0]
    near = [f for f in findings if f not in narrow and f not in wide]
    parts = []
    if narrow:
        parts.append("the error-optimal codebook is narrower than the features (its bracket lies below c = 1) at "
                     + where(narrow))
    if wide:
        parts.append("wider (bracket above c = 1) at " + where(wide))
    if near:
        parts.append("the bracket contains c = 1 (plain matching) at " + where(near))
    text = "**Answer from these measurements:** " + "; ".join(parts) + "."
    ranked = sorted(findings, key=lambda f: f["codes_per_dim"])
    text += (" Best c by resolution (codes per dimension K^(1/d)): "
             + ", ".join(f"{f['codes_per_dim']:.1f} -> {f['best']:g}" for f in ranked) + ".")
    counts = []
    for key in ("paper", "gersho", "shrinkage"):
        hits = [f for f in findings if key in f["inside"]]
        closest = [f for f in findings if f["closest"] == key]
        counts.append(f"{REFERENCE_LABELS[key]} lies inside the bracket of the optimum in {len(hits)} of "
                      f"{len(findings)} cells and is the closest of the three in {len(closest)}")
    text += " " + "; ".join(counts) + "."
    edge = [f for f in findings if f["edge"]]
    if edge:
        text += (" The best c is at the edge of the grid at " + where(edge)
                 + ": the optimum there may lie beyond the values measured.")
    plain = [f for f in findings if f["plain"] == "higher"]
    if plain:
        text += " Plain matching (c = 1) is resolved worse than the best c at " + where(plain) + "."
    text += " In plain words: " + _plain_words(findings)
    return text


# --------------------------------------------------------------------------------------------
# Related ablation: dead-code strategies vs distribution matching (atomic mean shift)
# --------------------------------------------------------------------------------------------
def dead_code_findings(table: pd.DataFrame, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per mean shift mu: U of every method (full use / collapsed), best E / k-means."""
    done = done_rows(table)
    usage = _cells(done, ["dataset_options.mean", "method"], "utilization", confidence, 100.0)
    error = _cells(done, ["dataset_options.mean", "method"], KEY_METRIC, confidence)
    findings = []
    shifts = []
    for mu in _values(done, "dataset_options.mean"):
        err = {m: e for (x, m), e in error.items() if x == mu and math.isfinite(e.mean)}
        if err:
            shifts.append((mu, err, min(err, key=lambda m: err[m].mean)))
    # The question's tests: every method against the best one at every mu, one Holm family.
    family = compare_pairs({(mu, m): (e, err[best]) for mu, err, best in shifts for m, e in err.items() if m != best},
                           confidence=confidence)
    for mu, err, best in shifts:
        u = {m: e for (x, m), e in usage.items() if x == mu and math.isfinite(e.mean)}
        others = {m: e for m, e in err.items() if m != best}
        findings.append({
            "mu": float(mu), "usage": u, "error": err, "best": best,
            "full": [m for m, e in sorted(u.items(), key=lambda kv: sort_key(kv[0])) if e.mean >= FULL_USE],
            "collapsed": [m for m, e in sorted(u.items(), key=lambda kv: sort_key(kv[0])) if e.mean <= COLLAPSED],
            # the best is picked after the fact: it is resolved from another method only when the paired
            # test survives Holm's correction over all the tests of the ablation
            "tied_best": [m for m in sorted(others, key=sort_key) if family[mu, m][0] == "unresolved"],
            "verdicts": {m: family[mu, m][0] for m in others},
        })
    return findings


def _dead_code_text(findings: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for f in findings:
        best = f["best"]
        text = (f"- **mu = {f['mu']:g}**: full use (U >= {FULL_USE:g}%): " + _join([f"`{m}`" for m in f["full"]])
                + f"; collapsed (U <= {COLLAPSED:g}%): " + _join([f"`{m}`" for m in f["collapsed"]])
                + f"; lowest E / k-means `{best}` {f['error'][best].text()}")
        if f["tied_best"]:
            text += (" (not resolved, paired tests Holm-corrected over every test of the ablation, from "
                     + _join([f"`{m}` {f['error'][m].text()}" for m in f["tied_best"]]) + ")")
        lines.append(text + ".")
    return lines


def dead_code_answer(findings: Sequence[Mapping[str, Any]]) -> str:
    if not findings:
        return ""
    methods = sorted({m for f in findings for m in f["usage"]}, key=sort_key)
    always = [m for m in methods if all(m in f["full"] for f in findings)]
    ever_collapsed = [m for m in methods if any(m in f["collapsed"] for f in findings)]
    worst = max(findings, key=lambda f: f["mu"])
    partial = [m for m in methods if m not in always and m not in ever_collapsed]
    text = (f"**Summary:** full codebook use at every mu measured: {_join([f'`{m}`' for m in always])}; "
            f"collapsed at some mu: {_join([f'`{m}`' for m in ever_collapsed])}; partly used (between "
            f"{COLLAPSED:g}% and {FULL_USE:g}%) at some mu, never collapsed: {_join([f'`{m}`' for m in partial])}. "
            "At the largest shift "
            f"(mu = {worst['mu']:g}) the lowest E / k-means is `{worst['best']}` "
            f"{worst['error'][worst['best']].text()}")
    if GAUSSIAN_W in worst["error"] and worst["best"] != GAUSSIAN_W:
        w = worst["error"][GAUSSIAN_W]
        text += (f"; the Gaussian W loss (`{GAUSSIAN_W}`) {w.text()}: "
                 f"{_gap_text(w, worst['error'][worst['best']])} relative to it, "
                 + {"higher": "resolved", "lower": "resolved", "unresolved": "not resolved"}[
                     worst["verdicts"][GAUSSIAN_W]] + " (same Holm family)")
    return text + "."


# --------------------------------------------------------------------------------------------
# Question 3: downstream autoregressive generation (the token prior of vqvae / transplant)
# --------------------------------------------------------------------------------------------
PRIOR_COLUMN = "prior_bits_per_token"
PRIOR_COLUMNS = tuple(metric_registry.get(name) for name in (
    "utilization", "perplexity", "psnr", "prior_bits_per_token", "prior_bits_per_image", "frechet_classifier",
    "knn_precision", "knn_recall"))
# (x, y) pairs correlated across methods: does the prior's NLL / sample quality follow U or reconstruction?
PRIOR_PAIRS = (("prior_bits_per_token", "utilization"), ("prior_bits_per_token", "psnr"),
               ("frechet_classifier", "utilization"), ("frechet_classifier", "psnr"))


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int]:
    """Spearman's rho, its two-sided p-value and n; the p-value is exact (all pairings permuted,
    ``scipy.stats.permutation_test``) for n <= 8, scipy's t approximation above. NaN for n < 3."""
    from scipy import stats

    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    n = len(pairs)
    if n < 3:
        return math.nan, math.nan, n
    a, b = (list(v) for v in zip(*pairs))
    rho = float(stats.spearmanr(a, b).statistic)
    if not math.isfinite(rho):  # a constant column
        return math.nan, math.nan, n
    if n <= 8:
        test = stats.permutation_test((a,), lambda u: stats.spearmanr(u, b).statistic,
                                      permutation_type="pairings", n_resamples=math.inf)  # all n! pairings
        return rho, float(test.pvalue), n
    return rho, float(stats.spearmanr(a, b).pvalue), n


def prior_findings(tables: Mapping[str, pd.DataFrame], confidence: float = 0.95,
                   names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per (sweep, dataset, protocol) with prior results: per-method estimates and the across-method
    Spearman correlations of ``PRIOR_PAIRS`` (method means over seeds). Default and tuned rows of a tuned
    sweep are two configs of each method, never pooled into one cell. ``adjusted``: each correlation's
    p-value Holm-corrected over every correlation of the question."""
    findings = []
    for sweep in sorted(tables if names is None else [n for n in names if n in tables], key=sort_key):
        table = done_rows(tables[sweep])
        if PRIOR_COLUMN not in table.columns or "method" not in table.columns:
            continue
        table = table[pd.to_numeric(table[PRIOR_COLUMN], errors="coerce").notna()]
        if not len(table):
            continue
        datasets = _values(table, "dataset") or [None]
        protocols = _values(table, PROTOCOL) or [None]
        for dataset, protocol in itertools.product(datasets, protocols):
            rows = table if dataset is None else table[table["dataset"] == dataset]
            rows = rows if protocol is None else rows[rows[PROTOCOL] == protocol]
            if not len(rows):
                continue
            cells = {m.name: _cells(rows, ["method"], m.name, confidence, m.scale) for m in PRIOR_COLUMNS}
            methods = sorted({key[0] for key in cells[PRIOR_COLUMN]}, key=sort_key)
            means = {column: [cells[column].get((m,), Estimate(math.nan, math.nan, 0)).mean for m in methods]
                     for column in (m.name for m in PRIOR_COLUMNS)}
            correlations = {pair: spearman(means[pair[0]], means[pair[1]]) for pair in PRIOR_PAIRS}
            experiment = _values(rows, "experiment")
            findings.append({"sweep": sweep, "dataset": dataset, "protocol": protocol,
                             "experiment": "/".join(map(str, experiment)), "methods": methods, "cells": cells,
                             "correlations": correlations, "setting": _setting(rows)})
    tests = [(i, pair) for i, f in enumerate(findings) for pair, (_, p, _) in f["correlations"].items()
             if math.isfinite(p)]
    adjusted = holm([findings[i]["correlations"][pair][1] for i, pair in tests]) if tests else []
    for f in findings:
        f["adjusted"] = {}
    for (i, pair), p in zip(tests, adjusted):
        findings[i]["adjusted"][pair] = p
    return findings


def _prior_table(f: Mapping[str, Any]) -> list[str]:
    header = "| method | " + " | ".join(m.label for m in PRIOR_COLUMNS) + " |"
    lines = [header, "|---|" + "---|" * len(PRIOR_COLUMNS)]
    for m in f["methods"]:
        row = [f["cells"][c.name].get((m,), Estimate(math.nan, math.nan, 0)).text(c.digits) for c in PRIOR_COLUMNS]
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return lines


def _correlation_text(pair: tuple[str, str], result: tuple[float, float, int], adjusted: float = math.nan) -> str:
    rho, p, n = result
    if not math.isfinite(rho):
        return f"{SHORT[pair[0]]} vs {SHORT[pair[1]]}: undefined (n = {n} methods, or a constant column)"
    exact = "exact permutation " if n <= 8 else ""
    holm_text = f", Holm-corrected p = {adjusted:.3f}" if math.isfinite(adjusted) else ""
    return (f"{SHORT[pair[0]]} vs {SHORT[pair[1]]}: Spearman rho = {rho:+.2f}, {exact}p = {p:.3f}{holm_text} "
            f"(n = {n} methods)")


def _where(f: Mapping[str, Any]) -> str:
    """`sweep` (dataset, protocol rows) of one prior finding."""
    details = [str(f["dataset"])] if f["dataset"] else []
    if f.get("protocol"):
        details.append(f"{f['protocol']} rows")
    return f"`{f['sweep']}`" + (f" ({', '.join(details)})" if details else "")


def prior_answer(findings: Sequence[Mapping[str, Any]]) -> str:
    if not findings:
        return ""
    resolved = [(f, pair) for f in findings for pair, p in f.get("adjusted", {}).items() if p < 0.05]
    tests = sum(len(f.get("adjusted", {})) for f in findings)
    smallest = min((f["correlations"][PRIOR_PAIRS[0]][2] for f in findings), default=0)
    floor = 2.0 / math.factorial(smallest) if smallest >= 3 else math.nan
    text = "**Answer from these measurements:** "
    if resolved:
        text += (f"correlations with p < 0.05 after Holm's correction over the question's {tests} tests: "
                 + "; ".join(_where(f) + ": " + _correlation_text(pair, f["correlations"][pair], f["adjusted"][pair])
                             for f, pair in resolved) + ". ")
    else:
        text += (f"no across-method correlation reaches p < 0.05 after Holm's correction over the question's "
                 f"{tests} tests. ")
    if math.isfinite(floor):
        text += (f"With {smallest} methods the smallest two-sided p an exact Spearman test can give is "
                 f"2/{smallest}! = {floor:.3f}; ")
        text += ("so a non-significant result here is expected at any true correlation, and needs more methods "
                 "(tokenizers), not more seeds. " if floor >= 0.05 else "")
    text += ("What can be concluded: the sign and size of rho for these tokenizers at this scale. The NLL in bits "
             "per token is bounded by the token entropy log2(perplexity) of a context-free model, so it rises "
             "with U and perplexity by construction: a positive NLL-U correlation says the prior has more to "
             "model, not that generation is worse. Whether utilization helps generation is read from the sample "
             "proxy (Frechet distance in the classifier's feature space, k-NN precision / recall): a negative "
             "Frechet-U correlation would favour high U. What cannot be concluded: causation (the methods differ "
             "in more than U), FID-level sample quality (the feature space is a small in-suite classifier, a "
             "domain proxy), or anything at the paper's scale (CIFAR-10, K >= 1024, large priors).")
    return text


def ar_generation_text(tables: Mapping[str, pd.DataFrame], confidence: float = 0.95,
                       names: Sequence[str] | None = None) -> list[str]:
    findings = prior_findings(tables, confidence, names)
    if not findings:
        return [
            "**Answer:** not measured yet: no `vqvae` or `transplant` table has prior results. Set "
            "`model_options.prior_steps` > 0 in those sweeps: each tokenizer then gets the same small "
            "autoregressive transformer prior (equal budget), scored by held-out NLL in bits per token and per "
            "image and by the Frechet distance and k-NN precision / recall of decoded samples in the feature "
            "space of a classifier trained in the suite (a domain proxy, not FID).",
        ]
    lines = ["Every tokenizer gets the same autoregressive transformer prior trained on its training-split token "
             "grids with an equal budget (`model_options.prior_steps`); held-out NLL on the test tokens; samples "
             "decoded and compared with the test images in the penultimate features of a classifier trained in "
             "the suite on the dataset's labels (`frechet_classifier`, a domain-feature proxy, not FID; k-NN "
             "precision / recall, k = 3). Correlations: Spearman across methods of their seed means.", ""]
    for f in findings:
        where = (f"`{f['sweep']}` ({f['experiment']}" + (f", `{f['dataset']}`" if f["dataset"] else "")
                 + (f", {f['protocol']} rows only" if f.get("protocol") else "") + ")")
        lines += [f"Sweep {where}: {f['setting']}.", "", *_prior_table(f), ""]
        lines += [f"- {_correlation_text(pair, result, f['adjusted'].get(pair, math.nan))}"
                  for pair, result in f["correlations"].items()]
        lines.append("")
    lines.append(prior_answer(findings))
    return lines


def _t_note(tables: Mapping[str, pd.DataFrame], confidence: float, sweeps: QuestionSweeps = DEFAULT_SWEEPS) -> str:
    """How wide the intervals are for the seed counts of the question sweeps (t quantile)."""
    names = [*sweeps.non_gaussian, *sweeps.density_map, *sweeps.three_point, *sweeps.dead_codes]
    counts = sorted({len(_values(done_rows(tables[n]), "seed")) for n in names if n in tables and len(tables[n])})
    counts = [n for n in counts if n >= 2]
    if not counts:
        return ""
    from scipy import stats

    quantiles = ", ".join(f"{stats.t.ppf((1 + confidence) / 2, n - 1):.1f} with {n} seeds" for n in counts)
    more = counts[-1] + 1
    return (f" The t quantile of these intervals is {quantiles} ({stats.t.ppf((1 + confidence) / 2, more - 1):.1f} "
            f"with {more}): with few seeds only large or very consistent differences are resolved, and "
            "'not resolved' means exactly that, not 'equal'.")


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def _figure_lines(path: Path | None, what: str) -> list[str]:
    if path is None:
        return []
    return [f"![{path.stem}](figures/{path.name})", "", f"Figure: {what}; error bars = the table's t-interval; "
            "dashed: the k-means reference (1.0).", ""]


def density_map_lines(table: pd.DataFrame | None, confidence: float = 0.95,
                      figures: Path | None = None, verdicts: Mapping[tuple, tuple[str, float]] | None = None,
                      names: Sequence[str] = DEFAULT_SWEEPS.density_map) -> list[str]:
    """The density-map part of question 2: setting, figure, best-c table, answer."""
    if table is None or not len(table):
        return [_missing(names)]
    findings = best_scale_findings(table, confidence, verdicts)
    lines = [
        f"Sweeps {', '.join(f'`{n}`' for n in _values(table, 'sweep')) or '-'}: z ~ N(0, I_d), {_setting(table)}; the W loss aimed at N(mu, c S) "
        "(`wasserstein_density` with `covariance_scale` c; c = 1 is plain matching), c = "
        + "/".join(f"{c:g}" for c in sorted({c for f in findings for c in f["cells"]})) + ". "
        "References: c = d/(d+2) is Theorem 2's exponent f^((d+2)/d) as Wasserstein VQ states it (Gersho 1979 "
        "gives the point density f^(d/(d+2)) for squared error, i.e. c = (d+2)/d); the finite-K prediction: "
        "a centroidal codebook has Cov(codes) = Cov(z) - Cov(z - q(z)) ~ (var - E/d) I, so c = 1 - E_km/(d var) "
        "with E_km the k-means reference error of the cell (mean over seeds). Best c = the argmin over c of the "
        "mean E / k-means over seeds; the values not resolved from it (paired difference over seeds, as "
        "everywhere in this section) and the bracket between the first resolved-worse values on each side "
        "(for an error curve with one minimum in c, the optimum lies inside the bracket; inf = the grid's edge).",
        "",
    ]
    if figures is not None:
        path = density_map_figure(findings, Path(figures) / "open_questions_density_map.png")
        if path is not None:
            lines += [f"![{path.stem}](figures/{path.name})", "",
                      "Figure: mean E / k-means over seeds per (c, d), one panel per K; red box: the best c of "
                      "each column; markers: d/(d+2) (v), (d+2)/d (^), centroid shrinkage (o), where inside "
                      "the grid.", ""]
    lines += best_scale_table(findings)
    lines += ["", density_map_answer(findings)]
    return lines


# --------------------------------------------------------------------------------------------
# The section
# --------------------------------------------------------------------------------------------
def open_questions_section(tables: Mapping[str, pd.DataFrame], confidence: float = 0.95,
                           figures: Path | None = None, sweeps: QuestionSweeps = DEFAULT_SWEEPS) -> str:
    """Markdown of the "Open questions" section from the sweep tables (missing sweeps are said so).

    ``figures``: folder for the section's figures (``open_questions_*.png``), None = tables only;
    ``sweeps``: the sweeps each question reads (params.yaml ``questions:``)."""
    lines = _preamble_lines(tables, confidence, sweeps)
    lines += ["", "### 1. Non-Gaussian features: Gaussian W vs non-parametric matching", ""]
    lines += _non_gaussian_lines(merged_table(tables, sweeps.non_gaussian), confidence, figures, sweeps.non_gaussian)
    lines += ["", "### 2. The error-optimal codebook density: a map over c, d and K", ""]
    density = merged_table(tables, sweeps.density_map)
    family = question_two_family(density, low_d_table(tables, sweeps.three_point), confidence)
    lines += [f"The {len(family)} tests of this question (every c against the best c of its cell, every density "
              "target against plain matching) are one family: paired t-tests over seeds, Holm-corrected together.",
              ""]
    lines += density_map_lines(density, confidence, figures, family, sweeps.density_map)
    lines += ["", "#### Three-point comparison: plain matching, Gersho, Theorem 2", ""]
    lines += _low_d_lines(tables, confidence, figures, family, sweeps.three_point)
    lines += ["", "### 3. Downstream autoregressive generation", ""]
    lines += ar_generation_text(tables, confidence, sweeps.generation)
    lines += ["", "### Related ablation: dead-code strategies vs distribution matching", ""]
    lines += _dead_code_lines(merged_table(tables, sweeps.dead_codes), confidence, sweeps.dead_codes)
    return "\n".join(lines) + "\n"


def _preamble_lines(tables: Mapping[str, pd.DataFrame], confidence: float, sweeps: QuestionSweeps) -> list[str]:
    """The section's heading and how a difference counts as resolved."""
    return [
        "## Open questions of Wasserstein VQ (arXiv 2506.15078)",
        "",
        f"What our measurements say on each open question, computed from the tables below (mean ± "
        f"half-width of the {confidence:.0%} t-interval over seeds). The tests of one question (every candidate "
        "against its reference, at every setting) are one family: paired t-tests over seeds (same seed = same "
        "training stream, held-out features and k-means reference), Holm-corrected together (unpaired: "
        "t-intervals widened to the Bonferroni level); a difference counts as resolved when its corrected p "
        "is below 0.05. Default and tuned rows are never pooled. Scale: "
        "small CPU runs (see each setting); they answer for that setting, not for the paper's."
        + _t_note(tables, confidence, sweeps),
    ]


def _non_gaussian_lines(table: pd.DataFrame | None, confidence: float, figures: Path | None,
                        names: Sequence[str] = DEFAULT_SWEEPS.non_gaussian) -> list[str]:
    """Question 1: the non-Gaussian sweep's table, figure, findings and answer."""
    if table is None or not len(table):
        return [_missing(names)]
    lines = [f"Sweep {', '.join(f'`{n}`' for n in names)}: {_setting(table)}. Datasets: "
             + ", ".join(f"`{d}` ({DATASET_LABELS.get(d, d)})" for d in _values(table, "dataset")) + ".", "",
             _table_block(table, names[0], confidence, ["dataset", "method"]), ""]
    if figures is not None and "dataset" in table.columns:
        path = grouped_figure(table, "dataset", "method", Path(figures) / "open_questions_non_gaussian.png",
                              confidence, "E / k-means by feature distribution", "features")
        lines += _figure_lines(path, "E / k-means per feature distribution, one bar per method")
    findings = non_gaussian_findings(table, confidence)
    lines += _non_gaussian_text(findings)
    lines += ["", non_gaussian_answer(findings)]
    return lines


def _low_d_lines(tables: Mapping[str, pd.DataFrame], confidence: float, figures: Path | None,
                 verdicts: Mapping[tuple, tuple[str, float]] | None = None,
                 names: Sequence[str] = DEFAULT_SWEEPS.three_point) -> list[str]:
    """Question 2's three-point comparison over the low-d sweeps: table, figure, findings and answer."""
    merged = low_d_table(tables, names)
    if merged is None:
        return [_missing(names)]
    present = [n for n in names if n in tables and len(tables[n])]
    lines = [
        f"Sweeps {', '.join(f'`{n}`' for n in present)}: z ~ N(0, I_d), {_setting(merged)}. The W loss "
        "is aimed at N(mu, c S): plain matching c = 1 (`wasserstein`), Gersho's point density "
        "f^(d/(d+2)) c = (d+2)/d, Theorem 2 as Wasserstein VQ states it f^((d+2)/d) c = d/(d+2) "
        "(`wasserstein_density`, exponent in parentheses).",
        "",
        _table_block(merged, "low_d", confidence, ["dim", "method"]), "",
    ]
    if len(present) < len(names):
        lines += [_missing([n for n in names if n not in present]), ""]
    if figures is not None:
        path = grouped_figure(merged, "dim", "method", Path(figures) / "open_questions_low_d.png", confidence,
                              "E / k-means vs d by density target", "d", lines=True)
        lines += _figure_lines(path, "E / k-means against d, one line per density target")
    findings = low_d_findings(merged, confidence, verdicts)
    lines += _low_d_text(findings)
    lines += ["", low_d_answer(findings)]
    return lines


def _dead_code_lines(table: pd.DataFrame | None, confidence: float,
                     names: Sequence[str] = DEFAULT_SWEEPS.dead_codes) -> list[str]:
    """The related dead-code ablation: table, findings and answer."""
    if table is None or not len(table):
        return [_missing(names)]
    lines = [f"Sweep {', '.join(f'`{n}`' for n in names)}: the atomic mean shift z ~ N(mu 1, I), codes initialised N(0, I), "
             f"{_setting(table)}.", "",
             _table_block(table, names[0], confidence, ["dataset_options.mean", "method"]), ""]
    findings = dead_code_findings(table, confidence)
    lines += _dead_code_text(findings)
    lines += ["", dead_code_answer(findings)]
    return lines
