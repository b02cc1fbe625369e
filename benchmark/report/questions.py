"""The open questions of the seed paper, answered from the sweep tables: "Open questions" in the report.

``benchmark.report.build`` calls :func:`open_questions_section` with the tables it has read (filtered to
the current sweep specs) and puts the returned markdown into ``reports/ablation.md``. Nothing is
retrained. The questions are the open questions of the seed paper (arXiv 2506.15078):

1. Non-Gaussian features (sweep ``non_gaussian``): does the closed-form Gaussian W loss
   (``wasserstein``) fall behind the non-parametric matching losses (``sliced_wasserstein``,
   ``exact_ot``, ``mmd``) when the features are not Gaussian (bimodal mixture, uniform cube),
   and not when they are (the Gaussian control)?
2. The optimal codebook density in low d (sweeps ``low_d`` and ``low_d_paper``): plain matching
   (target f) vs the W loss aimed at Gersho's f^(d/(d+2)) (``wasserstein_density``, exponent
   ``gersho``) and at Theorem 2's f^((d+2)/d) (exponent ``paper``), on E / k-means.
3. Downstream autoregressive generation (the ``vqvae`` and ``transplant`` sweeps with
   ``model_options.prior_steps`` > 0): does utilization matter for generation? Spearman
   correlations across methods of the prior's held-out NLL and of the samples' Frechet distance
   (classifier features) with U and with PSNR, exact permutation p-values, n methods.

Plus the issue-8 ablation on the atomic mean shift (sweep ``dead_codes``): dead-code strategies
vs distribution matching.

Every conclusion is computed from the tables: means and half-widths of the 95% t-interval over
seeds (``benchmark.report.t_interval``, as in every table of the report); a difference counts as
*resolved* when the two intervals do not overlap, or when the paired difference over seeds has a
95% t-interval that excludes 0 (trials with the same seed share their training stream, held-out
features and k-means reference, so pairing removes that shared noise). With n = 1 nothing is.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from benchmark.report.figures import grouped_figure
from benchmark.report.stats import (
    Estimate, compare_lower, done_rows, estimate, format_cell, paired_difference, paired_p_value, relative_gap,
    separated,
)
from benchmark.report.tables import Summary, sort_key, summarize, summary_table

# Sweep names (params.yaml) of each question.
NON_GAUSSIAN = "non_gaussian"
LOW_D = ("low_d", "low_d_paper")
DEAD_CODES = "dead_codes"

# The methods the questions compare (the question defines the comparison, not the result).
GAUSSIAN_W = "wasserstein"
NONPARAMETRIC = ("sliced_wasserstein", "exact_ot", "mmd")
GAUSSIAN_CONTROL = "gaussian"  # the dataset on which the Gaussian assumption holds
DENSITY_METHOD = "wasserstein_density"
DEFAULT_EXPONENT = "gersho"  # WassersteinDensityOptions.exponent default
TARGET_LABELS = {"plain": "f (plain W)", "gersho": "Gersho f^(d/(d+2))", "paper": "Theorem 2 f^((d+2)/d)"}
# Same thresholds as the paper-vs-ours verdict rule of benchmark.report.
FULL_USE, COLLAPSED = 90.0, 10.0
DATASET_LABELS = {"gaussian": "Gaussian (control)", "gaussian_mixture": "bimodal mixture", "uniform": "uniform cube"}

KEY_METRIC = "error_vs_kmeans"


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
    findings = []
    for dataset in _values(done, "dataset"):
        here = {m: e for (d, m), e in cells.items() if d == dataset and math.isfinite(e.mean)}
        if not here:
            continue
        best = min(here, key=lambda m: here[m].mean)
        record: dict[str, Any] = {"dataset": dataset, "best": best, "best_est": here[best], "cells": here,
                                  "usage": {m: e for (d, m), e in usage.items() if d == dataset}}
        nonparam = {m: here[m] for m in NONPARAMETRIC if m in here}
        if GAUSSIAN_W in here and nonparam:
            best_np = min(nonparam, key=lambda m: nonparam[m].mean)
            record.update(w=here[GAUSSIAN_W], best_np=best_np, best_np_est=nonparam[best_np],
                          np_vs_w=compare_lower(nonparam[best_np], here[GAUSSIAN_W]))
        if GAUSSIAN_W in here and "mmd" in here:
            record["mmd_vs_w"] = compare_lower(here["mmd"], here[GAUSSIAN_W])
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
        if "mmd_vs_w" in f:
            text += (f". MMD vs Gaussian W: {f['cells']['mmd'].text()} vs {f['w'].text()}, "
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


def low_d_table(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame | None:
    """The low-d sweeps in one table, ``method`` relabelled by density target."""
    frames = [tables[name] for name in LOW_D if name in tables and len(tables[name])]
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


def low_d_findings(table: pd.DataFrame, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per d: every target's E / k-means, the best target, and each target vs plain matching."""
    done = done_rows(table)
    cells = _cells(done, ["dim", "target"], KEY_METRIC, confidence)
    findings = []
    for dim in _values(done, "dim"):
        here = {t: e for (d, t), e in cells.items() if d == dim and math.isfinite(e.mean)}
        if not here:
            continue
        best = min(here, key=lambda t: here[t].mean)
        sizes = _values(done[done["dim"] == dim], "codebook_size")
        per_dim = float(sizes[0]) ** (1.0 / float(dim)) if len(sizes) == 1 else math.nan  # K^(1/d)
        record: dict[str, Any] = {"dim": int(dim), "cells": here, "best": best, "codes_per_dim": per_dim}
        if "plain" in here:
            record["vs_plain"] = {t: compare_lower(e, here["plain"]) for t, e in here.items() if t != "plain"}
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
                 "measured: the measurements do not support it.")
    gersho = [f for f in compared if "gersho" in f["vs_plain"]]
    better = [f for f in gersho if f["vs_plain"]["gersho"] == "lower"]
    if better:
        where = _join([f"d = {f['dim']}" + (f" ({f['codes_per_dim']:.1f} codes per dimension)"
                                            if math.isfinite(f["codes_per_dim"]) else "")
                       for f in better])
        text += f" So yes: matching f exactly is not error-optimal at {where}."
    return text


# --------------------------------------------------------------------------------------------
# Issue-8 ablation: dead-code strategies vs distribution matching (atomic mean shift)
# --------------------------------------------------------------------------------------------
def dead_code_findings(table: pd.DataFrame, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per mean shift mu: U of every method (full use / collapsed), best E / k-means."""
    done = done_rows(table)
    usage = _cells(done, ["dataset_options.mean", "method"], "utilization", confidence, 100.0)
    error = _cells(done, ["dataset_options.mean", "method"], KEY_METRIC, confidence)
    findings = []
    for mu in _values(done, "dataset_options.mean"):
        u = {m: e for (x, m), e in usage.items() if x == mu and math.isfinite(e.mean)}
        err = {m: e for (x, m), e in error.items() if x == mu and math.isfinite(e.mean)}
        if not err:
            continue
        best = min(err, key=lambda m: err[m].mean)
        findings.append({
            "mu": float(mu), "usage": u, "error": err, "best": best,
            "full": [m for m, e in sorted(u.items(), key=lambda kv: sort_key(kv[0])) if e.mean >= FULL_USE],
            "collapsed": [m for m, e in sorted(u.items(), key=lambda kv: sort_key(kv[0])) if e.mean <= COLLAPSED],
            "tied_best": [m for m, e in sorted(err.items(), key=lambda kv: sort_key(kv[0]))
                          if m != best and compare_lower(err[best], e) == "unresolved"],
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
            text += " (not resolved from " + _join([f"`{m}` {f['error'][m].text()}" for m in f["tied_best"]]) + ")"
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
                     compare_lower(w, worst["error"][worst["best"]])])
    return text + "."


# --------------------------------------------------------------------------------------------
# Question 3: downstream autoregressive generation (the token prior of vqvae / transplant)
# --------------------------------------------------------------------------------------------
PRIOR_COLUMN = "prior_bits_per_token"
PRIOR_COLUMNS = (("utilization", "U (%)", 100.0, 1), ("perplexity", "perplexity", 1.0, 1), ("psnr", "PSNR", 1.0, 2),
                 ("prior_bits_per_token", "bits/token", 1.0, 3), ("prior_bits_per_image", "bits/image", 1.0, 1),
                 ("frechet_classifier", "Frechet (classifier)", 1.0, 2), ("knn_precision", "precision", 1.0, 3),
                 ("knn_recall", "recall", 1.0, 3))
# (x, y) pairs correlated across methods: does the prior's NLL / sample quality follow U or reconstruction?
PRIOR_PAIRS = (("prior_bits_per_token", "utilization"), ("prior_bits_per_token", "psnr"),
               ("frechet_classifier", "utilization"), ("frechet_classifier", "psnr"))
SHORT = {"prior_bits_per_token": "NLL bits/token", "utilization": "U", "psnr": "PSNR",
         "frechet_classifier": "Frechet (classifier)"}


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


def prior_findings(tables: Mapping[str, pd.DataFrame], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per (sweep, dataset) with prior results: per-method estimates and the across-method
    Spearman correlations of ``PRIOR_PAIRS`` (method means over seeds)."""
    findings = []
    for sweep in sorted(tables, key=sort_key):
        table = done_rows(tables[sweep])
        if PRIOR_COLUMN not in table.columns or "method" not in table.columns:
            continue
        table = table[pd.to_numeric(table[PRIOR_COLUMN], errors="coerce").notna()]
        if not len(table):
            continue
        datasets = _values(table, "dataset") or [None]
        for dataset in datasets:
            rows = table if dataset is None else table[table["dataset"] == dataset]
            cells = {column: _cells(rows, ["method"], column, confidence, scale) for column, _, scale, _ in PRIOR_COLUMNS}
            methods = sorted({key[0] for key in cells[PRIOR_COLUMN]}, key=sort_key)
            means = {column: [cells[column].get((m,), Estimate(math.nan, math.nan, 0)).mean for m in methods]
                     for column, _, _, _ in PRIOR_COLUMNS}
            correlations = {pair: spearman(means[pair[0]], means[pair[1]]) for pair in PRIOR_PAIRS}
            experiment = _values(rows, "experiment")
            findings.append({"sweep": sweep, "dataset": dataset, "experiment": "/".join(map(str, experiment)),
                             "methods": methods, "cells": cells, "correlations": correlations,
                             "setting": _setting(rows)})
    return findings


def _prior_table(f: Mapping[str, Any]) -> list[str]:
    header = "| method | " + " | ".join(label for _, label, _, _ in PRIOR_COLUMNS) + " |"
    lines = [header, "|---|" + "---|" * len(PRIOR_COLUMNS)]
    for m in f["methods"]:
        row = [f["cells"][column].get((m,), Estimate(math.nan, math.nan, 0)).text(digits)
               for column, _, _, digits in PRIOR_COLUMNS]
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return lines


def _correlation_text(pair: tuple[str, str], result: tuple[float, float, int]) -> str:
    rho, p, n = result
    if not math.isfinite(rho):
        return f"{SHORT[pair[0]]} vs {SHORT[pair[1]]}: undefined (n = {n} methods, or a constant column)"
    exact = "exact permutation " if n <= 8 else ""
    return f"{SHORT[pair[0]]} vs {SHORT[pair[1]]}: Spearman rho = {rho:+.2f}, {exact}p = {p:.3f} (n = {n} methods)"


def prior_answer(findings: Sequence[Mapping[str, Any]]) -> str:
    if not findings:
        return ""
    resolved = [(f, pair) for f in findings for pair, (rho, p, n) in f["correlations"].items()
                if math.isfinite(p) and p < 0.05]
    smallest = min((f["correlations"][PRIOR_PAIRS[0]][2] for f in findings), default=0)
    floor = 2.0 / math.factorial(smallest) if smallest >= 3 else math.nan
    text = "**Answer from these measurements:** "
    if resolved:
        text += ("correlations with p < 0.05: " + "; ".join(
            f"`{f['sweep']}`" + (f" ({f['dataset']})" if f["dataset"] else "") + ": "
            + _correlation_text(pair, f["correlations"][pair]) for f, pair in resolved) + ". ")
    else:
        text += "no across-method correlation reaches p < 0.05. "
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


def ar_generation_text(tables: Mapping[str, pd.DataFrame], confidence: float = 0.95) -> list[str]:
    findings = prior_findings(tables, confidence)
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
        where = f"`{f['sweep']}` ({f['experiment']}" + (f", `{f['dataset']}`" if f["dataset"] else "") + ")"
        lines += [f"Sweep {where}: {f['setting']}.", "", *_prior_table(f), ""]
        lines += [f"- {_correlation_text(pair, result)}" for pair, result in f["correlations"].items()]
        lines.append("")
    lines.append(prior_answer(findings))
    return lines


def _t_note(tables: Mapping[str, pd.DataFrame], confidence: float) -> str:
    """How wide the intervals are for the seed counts of the question sweeps (t quantile)."""
    names = [NON_GAUSSIAN, *LOW_D, DEAD_CODES]
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


# --------------------------------------------------------------------------------------------
# The section
# --------------------------------------------------------------------------------------------
def open_questions_section(tables: Mapping[str, pd.DataFrame], confidence: float = 0.95,
                           figures: Path | None = None) -> str:
    """Markdown of the "Open questions" section from the sweep tables (missing sweeps are said so).

    ``figures``: folder for the section's figures (``open_questions_*.png``), None = tables only."""
    lines = [
        "## Open questions (seed paper arXiv 2506.15078)",
        "",
        f"What our measurements say on each open question, computed from the tables below (mean ± "
        f"half-width of the {confidence:.0%} t-interval over seeds). A difference counts as resolved when "
        "the two intervals do not overlap, or when the paired difference over seeds (same seed = same "
        "training stream, held-out features and k-means reference) has a 95% t-interval excluding 0. Scale: "
        "small CPU runs (see each setting); they answer for that setting, not for the paper's."
        + _t_note(tables, confidence),
        "",
        "### 1. Non-Gaussian features: Gaussian W vs non-parametric matching",
        "",
    ]
    table = tables.get(NON_GAUSSIAN)
    if table is None or not len(table):
        lines.append(_missing([NON_GAUSSIAN]))
    else:
        lines += [f"Sweep `{NON_GAUSSIAN}`: {_setting(table)}. Datasets: "
                  + ", ".join(f"`{d}` ({DATASET_LABELS.get(d, d)})" for d in _values(table, "dataset")) + ".", "",
                  _table_block(table, NON_GAUSSIAN, confidence, ["dataset", "method"]), ""]
        if figures is not None and "dataset" in table.columns:
            path = grouped_figure(table, "dataset", "method", Path(figures) / "open_questions_non_gaussian.png",
                                  confidence, "E / k-means by feature distribution", "features")
            lines += _figure_lines(path, "E / k-means per feature distribution, one bar per method")
        findings = non_gaussian_findings(table, confidence)
        lines += _non_gaussian_text(findings)
        lines += ["", non_gaussian_answer(findings)]
    lines += ["", "### 2. Optimal codebook density in low d: Theorem 2 vs Gersho", ""]
    merged = low_d_table(tables)
    if merged is None:
        lines.append(_missing(LOW_D))
    else:
        present = [n for n in LOW_D if n in tables and len(tables[n])]
        lines += [
            f"Sweeps {', '.join(f'`{n}`' for n in present)}: z ~ N(0, I_d), {_setting(merged)}. The W loss "
            "is aimed at N(mu, c S): plain matching c = 1 (`wasserstein`), Gersho's point density "
            "f^(d/(d+2)) c = (d+2)/d, Theorem 2 as the seed states it f^((d+2)/d) c = d/(d+2) "
            "(`wasserstein_density`, exponent in parentheses).",
            "",
            _table_block(merged, "low_d", confidence, ["dim", "method"]), "",
        ]
        if len(present) < len(LOW_D):
            lines += [_missing([n for n in LOW_D if n not in present]), ""]
        if figures is not None:
            path = grouped_figure(merged, "dim", "method", Path(figures) / "open_questions_low_d.png", confidence,
                                  "E / k-means vs d by density target", "d", lines=True)
            lines += _figure_lines(path, "E / k-means against d, one line per density target")
        findings = low_d_findings(merged, confidence)
        lines += _low_d_text(findings)
        lines += ["", low_d_answer(findings)]
    lines += ["", "### 3. Downstream autoregressive generation", ""]
    lines += ar_generation_text(tables, confidence)
    lines += ["", "### Related ablation: dead-code strategies vs distribution matching", ""]
    table = tables.get(DEAD_CODES)
    if table is None or not len(table):
        lines.append(_missing([DEAD_CODES]))
    else:
        lines += [f"Sweep `{DEAD_CODES}`: the atomic mean shift z ~ N(mu 1, I), codes initialised N(0, I), "
                  f"{_setting(table)}.", "",
                  _table_block(table, DEAD_CODES, confidence, ["dataset_options.mean", "method"]), ""]
        findings = dead_code_findings(table, confidence)
        lines += _dead_code_text(findings)
        lines += ["", dead_code_answer(findings)]
    return "\n".join(lines) + "\n"
