"""Ablation report: exported sweep tables -> ``reports/ablation.md`` + ``reports/figures/*.png``.

``python -m benchmark report [--params params.yaml]`` is the last stage of ``dvc repro``. It reads
only the tidy tables ``<results_dir>/<sweep>/trials.csv`` that ``benchmark.pipeline.sweep`` exports from
the MLflow store (one row per trial, see docs/contracts.md) and never trains anything. With
``--export`` it first rebuilds those tables from the MLflow store itself
(``benchmark.tracking.export_table``), so the report can be regenerated from the store alone.

Per sweep (in the order of ``sweeps:`` in params.yaml) the report holds: a table of
mean +/- 95% t-interval over seeds for every factor combination, best per column in bold, the
count and list of failed trials, the exact sweep spec and the code version (git commits of its
trials); a figure of the metrics against the sweep's main numeric factor, one line per method.
Then the paper-vs-ours table for the claims of ../shared/REFERENCE.md that the CPU defaults can
check, and ``reports/metrics.json`` (headline means for ``dvc metrics show``).

Which columns are factors is read from the table: ``method`` when it takes several values,
plus every param that takes several values within one method, ``seed`` excluded (seeds are the
replicates). Bold marks the best mean of a column among the rows that differ only by method
(the comparison the suite is for); when a sweep has a single method, among all its rows.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from benchmark.experiments.config import RunConfig

# --------------------------------------------------------------------------------------------
# What the table holds
# --------------------------------------------------------------------------------------------
META_COLUMNS = ("sweep", "trial", "run_id", "status", "error", "git_commit", "git_dirty")
OPTION_PREFIXES = ("dataset_options.", "method_options.", "model_options.")
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
REPLICATE_COLUMNS = ("seed",)
# Params that never define a row of a table (bookkeeping, not part of the ablation).
NON_FACTOR_PARAMS = ("seed", "device", "log_every")
DONE_STATUSES = ("finished", "stopped")
METHOD_ORDER = ("vanilla", "ema", "kmeans_ema", "simvq", "rotation_trick", "fsq", "sinkhorn", "wasserstein",
                "wasserstein_density", "sliced_wasserstein", "mmd", "exact_ot")

# Short names for factor columns in tables and figure axes.
FACTOR_LABELS = {
    "method": "method",
    "codebook_size": "K",
    "dim": "d",
    "dataset_options.mean": "mu",
    "method_options.gamma": "gamma",
    "dataset": "dataset",
    "steps": "steps",
}


@dataclass(frozen=True)
class Metric:
    column: str
    label: str
    better: str | None  # "max", "min" or None (shown, never bold)
    digits: int
    scale: float = 1.0  # utilization is stored as a fraction, shown in %
    definition: str = ""


METRICS = (
    Metric("utilization", "U (%)", "max", 1, 100.0,
           "fraction of the K codes that are the nearest code of at least one held-out feature"),
    Metric("quantization_error", "E", "min", 3, 1.0,
           "mean over held-out features of the squared L2 distance ||z - q(z)||^2 (summed over dims)"),
    Metric("error_vs_kmeans", "E / k-means", "min", 3, 1.0,
           "E divided by the held-out error of faiss k-means (Lloyd) with the same K on the same "
           "data: 1.0 is the practical optimum, below 1 beats it"),
    Metric("perplexity", "perplexity", "max", 1, 1.0,
           "exp(entropy of the code-usage histogram on held-out features); at most K"),
    Metric("psnr", "PSNR (dB)", "max", 2, 1.0,
           "peak signal-to-noise ratio of the VQ-VAE reconstructions of the held-out images"),
    Metric("ssim", "SSIM", "max", 3, 1.0,
           "structural similarity of the held-out reconstructions (scikit-image)"),
    Metric("train_seconds", "train s", None, 1, 1.0, "wall time of the trial's training"),
)
EXTRA_DEFINITIONS = {
    "dead codes": "K minus the number of used codes (dead_codes column of the table)",
    "Gaussian W2": "W2 between Gaussians fitted to features and to code vectors (gaussian_w2 column)",
}


def metric(column: str) -> Metric:
    for m in METRICS:
        if m.column == column:
            return m
    raise KeyError(column)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------
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
    return mean, float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * sem, n


def _ci_bounds(confidence: float):
    """seaborn ``errorbar`` callable: the same t-interval as the tables."""
    def bounds(values: Sequence[float]) -> tuple[float, float]:
        mean, half, _ = t_interval(values, confidence)
        if not math.isfinite(half):
            return mean, mean
        return mean - half, mean + half
    return bounds


# --------------------------------------------------------------------------------------------
# Reading and shaping the table
# --------------------------------------------------------------------------------------------
def is_param_column(column: str) -> bool:
    return column in RUN_FIELDS or column.startswith(OPTION_PREFIXES)


def read_table(path: str | Path) -> pd.DataFrame:
    """An exported trials table; string columns as plain objects (seaborn 0.13 + pandas 3)."""
    table = pd.read_csv(path, keep_default_na=True)
    return _as_object_strings(table)


def _as_object_strings(table: pd.DataFrame) -> pd.DataFrame:
    # pandas 3 infers the "str" dtype; seaborn 0.13.2 mishandles hue_order on it: cast to object.
    table = table.copy()
    for column in table.columns:
        if pd.api.types.is_string_dtype(table[column]) and not pd.api.types.is_numeric_dtype(table[column]):
            table[column] = table[column].astype(object)
    if "status" not in table.columns:
        table["status"] = "finished"
    table["status"] = table["status"].astype(object).fillna("finished").astype(str).astype(object)
    if "error" in table.columns:
        table["error"] = table["error"].astype(object).fillna("").astype(str).astype(object)
    return table


def factor_columns(table: pd.DataFrame) -> list[str]:
    """``method`` if it varies, then every param varying within one method (seed excluded)."""
    params = [c for c in table.columns if is_param_column(c) and c not in NON_FACTOR_PARAMS]
    factors: list[str] = []
    if "method" in table.columns and table["method"].nunique(dropna=False) > 1:
        factors.append("method")
    groups = table.groupby("method", dropna=False) if "method" in table.columns else [(None, table)]
    for column in params:
        if column == "method":
            continue
        if any(group[column].nunique(dropna=False) > 1 for _, group in groups):
            factors.append(column)
    return factors


def _sort_key(value: Any) -> tuple:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (0, float(value) if math.isfinite(float(value)) else math.inf, "")
    if isinstance(value, str) and value in METHOD_ORDER:
        return (1, METHOD_ORDER.index(value), value)
    return (2, 0, str(value))


def method_order(values: Iterable[Any]) -> list[str]:
    present = {str(v) for v in values if isinstance(v, str)}
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


def present_metrics(table: pd.DataFrame) -> list[Metric]:
    out = []
    for m in METRICS:
        if m.column in table.columns and pd.to_numeric(table[m.column], errors="coerce").notna().any():
            out.append(m)
    return out


@dataclass
class Summary:
    """One sweep reduced to one row per factor combination."""

    name: str
    factors: list[str]
    metrics: list[Metric]
    rows: pd.DataFrame  # factors, n, failed, then <metric>_mean / _half per metric
    failed: pd.DataFrame  # the failed trials
    commits: list[str]


def summarize(table: pd.DataFrame, name: str, confidence: float = 0.95) -> Summary:
    table = _as_object_strings(table)
    factors = factor_columns(table)
    metrics = present_metrics(table)
    done = table["status"].isin(DONE_STATUSES)
    keys = factors or ["__all__"]
    work = table.assign(__all__="all") if not factors else table
    records = []
    for key, group in work.groupby(keys, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        record: dict[str, Any] = dict(zip(keys, key))
        ok = group[done.loc[group.index]]
        record["n"] = len(ok)
        record["failed"] = int(len(group) - len(ok))
        for m in metrics:
            values = pd.to_numeric(ok[m.column], errors="coerce").to_numpy(dtype=float) * m.scale
            mean, half, _ = t_interval(values, confidence)
            record[f"{m.column}_mean"] = mean
            record[f"{m.column}_half"] = half
        records.append(record)
    rows = pd.DataFrame(records)
    if factors:
        order = sorted(range(len(rows)), key=lambda i: tuple(_sort_key(rows.iloc[i][f]) for f in factors))
        rows = rows.iloc[order].reset_index(drop=True)
    failed = table[~done]
    commits = _commits(table)
    return Summary(name, factors, metrics, rows, failed, commits)


def _commits(table: pd.DataFrame) -> list[str]:
    """The git commits of a table's trials, each marked ``+dirty`` when a trial ran with local changes."""
    if "git_commit" not in table.columns:
        return []
    dirty = table["git_dirty"] if "git_dirty" in table.columns else pd.Series(False, index=table.index)
    dirty = dirty.astype(object).map(lambda v: str(v).strip().lower() == "true")
    out = []
    for commit in sorted({str(c) for c in table["git_commit"].dropna() if str(c)}):
        rows = table["git_commit"].astype(str) == commit
        out.append(commit + ("+dirty" if bool(dirty[rows].any()) else ""))
    return out


def best_mask(summary: Summary, m: Metric) -> pd.Series:
    """True where the row's mean is the best of its comparison group (ties at display precision)."""
    rows = summary.rows
    mask = pd.Series(False, index=rows.index)
    if m.better is None or f"{m.column}_mean" not in rows:
        return mask
    others = [f for f in summary.factors if f != "method"]
    compare_methods = "method" in summary.factors
    groups = rows.groupby(others, dropna=False, sort=False) if (compare_methods and others) else [(None, rows)]
    for _, group in groups:
        values = group[f"{m.column}_mean"].round(m.digits)
        values = values[np.isfinite(values)]
        if len(values) < 2 or values.nunique() == 1:
            continue  # nothing to compare, or all tied: no bold
        target = values.max() if m.better == "max" else values.min()
        mask.loc[values.index[values == target]] = True
    return mask


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------
def _fmt_value(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "-"
        return f"{value:g}"
    return str(value)


def format_cell(mean: float, half: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "-"
    if not math.isfinite(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(summary: Summary) -> str:
    header = [FACTOR_LABELS.get(f, f) for f in summary.factors] + ["n", "failed"]
    header += [m.label for m in summary.metrics]
    bold = {m.column: best_mask(summary, m) for m in summary.metrics}
    body = []
    for i, row in summary.rows.iterrows():
        # iterrows() upcasts an all-numeric row to float: counts are ints again here.
        cells = [_fmt_value(row[f]) for f in summary.factors] + [str(int(row["n"])), str(int(row["failed"]))]
        for m in summary.metrics:
            cell = format_cell(row[f"{m.column}_mean"], row[f"{m.column}_half"], m.digits)
            cells.append(f"**{cell}**" if bold[m.column].loc[i] else cell)
        body.append(cells)
    return markdown_table(header, body)


def failed_list(summary: Summary, limit: int = 50) -> str:
    if summary.failed.empty:
        return "Failed trials: none."
    cols = [c for c in ["trial", *summary.factors, "seed"] if c in summary.failed.columns]
    rows = []
    for _, row in summary.failed.head(limit).iterrows():
        error = str(row.get("error", "") or "")
        error = error.strip().splitlines()[-1] if error.strip() else "(no error recorded)"
        rows.append([_fmt_value(row[c]) for c in cols] + [str(row["status"]), error[:160]])
    text = f"Failed trials: {len(summary.failed)}.\n\n" + markdown_table(
        [FACTOR_LABELS.get(c, c) for c in cols] + ["status", "error (last line)"], rows
    )
    if len(summary.failed) > limit:
        text += f"\n\n({len(summary.failed) - limit} more in the trials table.)"
    return text


# --------------------------------------------------------------------------------------------
# Paper vs ours
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """One number of ../shared/REFERENCE.md and where our defaults measure the same thing."""

    sweep_role: str  # key of ROLES: which sweep measures it
    method: str
    where: Mapping[str, Any]  # factor values of the row, e.g. {"dataset_options.mean": 4}
    column: str  # metric column
    paper: str  # the paper's value and setting
    scaled: str  # the scaled-down reference (K = 1024) where REFERENCE.md has one
    verdict_rule: str  # "high" (U >= 90%), "collapsed" (U <= 10%), or "" (no verdict)
    paper_setting: str = ""  # for claims measured in another setting than ours


ATOMIC_PAPER = "K 16384, 2000 steps x 50k, eval 200k"
ATOMIC_SCALED = "K 1024, 500 steps x 4096, eval 65536"
CLAIMS = (
    Claim("atomic", "wasserstein", {"dataset_options.mean": 0}, "utilization", "99.8", "99.7", "high"),
    Claim("atomic", "wasserstein", {"dataset_options.mean": 4}, "utilization", "99.9", "99.6", "high"),
    Claim("atomic", "wasserstein", {"dataset_options.mean": 8}, "utilization", "99.4", "99.8", "high"),
    Claim("atomic", "vanilla", {"dataset_options.mean": 0}, "utilization", "-", "100", "high"),
    Claim("atomic", "vanilla", {"dataset_options.mean": 4}, "utilization", "- (mu 2: 6.5)", "0.3", "collapsed"),
    Claim("atomic", "vanilla", {"dataset_options.mean": 8}, "utilization", "0.006 (mu >= 6)", "0.1", "collapsed"),
    Claim("atomic", "ema", {"dataset_options.mean": 4}, "utilization", "0.8", "0.7 (VQP EMA, decay 0.8)", "collapsed"),
    Claim("atomic", "simvq", {"dataset_options.mean": 0}, "utilization", "99.4 (linear reparam, mu <= 3)", "-", "high"),
    Claim("atomic", "simvq", {"dataset_options.mean": 8}, "utilization", "7.7 (linear reparam)", "-", "collapsed"),
    Claim("atomic", "wasserstein", {"dataset_options.mean": 0}, "error_vs_kmeans", "-", "1.03 (1.96 / 1.91)", ""),
    Claim("atomic", "wasserstein", {"dataset_options.mean": 8}, "error_vs_kmeans", "-", "1.03 (1.97 / 1.91)", ""),
    Claim("atomic", "vanilla", {"dataset_options.mean": 8}, "error_vs_kmeans", "-", "4.21 (8.05 / 1.91)", ""),
)
# Claims the paper makes in other settings (VQ-VAE / VQGAN on real images); our sweeps test the
# same qualitative statement on synthetic features or small images, labelled as such.
OTHER_CLAIMS = (
    Claim("d_sweep", "wasserstein", {"dim": 2}, "utilization", "96-100 (d = 2..32)", "-", "high",
          "CIFAR-10 VQ-VAE, d sweep"),
    Claim("d_sweep", "wasserstein", {"dim": 32}, "utilization", "96-100 (d = 2..32)", "-", "high",
          "CIFAR-10 VQ-VAE, d sweep"),
    Claim("gamma_sweep", "wasserstein", {"method_options.gamma": 0}, "utilization", "3.8", "-", "collapsed",
          "FFHQ VQGAN, K 16384, gamma sweep"),
    Claim("gamma_sweep", "wasserstein", {"method_options.gamma": 0.01}, "utilization", "100 (gamma >= 0.01)", "-",
          "high", "FFHQ VQGAN, K 16384, gamma sweep"),
    Claim("vqvae", "vanilla", {}, "utilization", "2.7", "-", "collapsed", "CIFAR-10 VQ-VAE, K 8192, d 8"),
    Claim("vqvae", "ema", {}, "utilization", "99.7", "-", "high", "CIFAR-10 VQ-VAE, K 8192, d 8"),
    Claim("vqvae", "wasserstein", {}, "utilization", "100", "-", "high", "CIFAR-10 VQ-VAE, K 8192, d 8"),
)


def _verdict(rule: str, value: float) -> str:
    if not rule or not math.isfinite(value):
        return "-"
    if rule == "high":
        return "agrees" if value >= 90.0 else "differs"
    if rule == "collapsed":
        return "agrees" if value <= 10.0 else "differs"
    return "-"


def _select(summary: Summary, method: str, where: Mapping[str, Any]) -> pd.Series | None:
    rows = summary.rows
    if "method" in summary.factors:
        rows = rows[rows["method"] == method]
    for key, value in where.items():
        if key not in rows.columns:
            return None
        rows = rows[np.isclose(pd.to_numeric(rows[key], errors="coerce"), float(value))]
    if len(rows) != 1:
        return None
    return rows.iloc[0]


def _claim_rows(claims, summaries, roles, with_setting: Mapping[str, str] | None = None) -> list[list[str]]:
    body = []
    for claim in claims:
        name = roles.get(claim.sweep_role, claim.sweep_role)
        summary = summaries.get(name)
        row = _select(summary, claim.method, claim.where) if summary is not None else None
        if row is None:
            continue
        m = metric(claim.column)
        mean, half = row[f"{m.column}_mean"], row[f"{m.column}_half"]
        where = ", ".join(f"{FACTOR_LABELS.get(k, k)} {v}" for k, v in claim.where.items())
        label = m.label.replace(" (%)", "") + (" (%)" if m.scale == 100.0 else "")
        cells = [claim.method, where or "-", label, claim.paper]
        if with_setting is None:
            cells.append(claim.scaled)
        else:
            cells = [claim.paper_setting] + cells + [f"`{name}`: {with_setting.get(name, '')}"]
        body.append(cells + [format_cell(mean, half, m.digits), _verdict(claim.verdict_rule, mean)])
    return body


def paper_vs_ours(summaries: Mapping[str, Summary], roles: Mapping[str, str], setting: Mapping[str, str]) -> str:
    lines = []
    body = _claim_rows(CLAIMS, summaries, roles)
    if body:
        lines.append(
            "Atomic experiment. Paper: arXiv 2506.15078, " + ATOMIC_PAPER + ". Scaled: the scaled-down "
            "independent reproduction in REFERENCE.md, " + ATOMIC_SCALED + " (the closest comparator). "
            "Ours: " + setting.get("atomic", "") + ". Utilization depends on K and the step budget, E on "
            "K: compare the qualitative outcome (full use vs collapse); E only through E / k-means."
        )
        lines += ["", markdown_table(
            ["method", "setting", "metric", "paper", "scaled (REFERENCE.md)", "ours (mean ± 95% CI)", "verdict"], body
        ), ""]
    else:
        lines += ["No atomic sweep results: the atomic claims are not checked.", ""]
    other = _claim_rows(OTHER_CLAIMS, summaries, roles, with_setting=setting)
    if other:
        lines.append("Claims the paper makes on real images (VQ-VAE / VQGAN), tested here in a smaller "
                     "or synthetic setting: same qualitative statement, different data and scale.")
        lines += ["", markdown_table(
            ["paper setting", "method", "row", "metric", "paper", "our setting", "ours (mean ± 95% CI)",
             "verdict"], other), ""]
    lines.append("Verdict rule: U >= 90% counts as full use, U <= 10% as collapse; 'agrees' when ours is "
                 "on the same side as the reference, 'differs' otherwise (in between counts as differs).")
    return "\n".join(lines)


def _setting_text(table: pd.DataFrame) -> str:
    parts = []
    for column, label in (("dataset", "data"), ("dataset_options.mean", "mu"), ("codebook_size", "K"),
                          ("dim", "d"), ("steps", "steps"),
                          ("batch_size", "batch"), ("eval_size", "eval"), ("seed", "seeds")):
        if column == "eval_size" and "experiment" in table.columns and (table["experiment"] == "vqvae").all():
            continue  # a VQ-VAE is evaluated on its whole test split
        if column in table.columns:
            values = sorted({v for v in table[column].dropna()}, key=_sort_key)
            if column == "seed":
                parts.append(f"{len(values)} seed" + ("s" if len(values) != 1 else ""))
            else:
                parts.append(f"{label} " + "/".join(_fmt_value(v) for v in values))
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def main_axis(summary: Summary, table: pd.DataFrame) -> str | None:
    """The numeric factor a sweep is about (the x axis of its figure)."""
    for column in summary.factors:
        if column == "method":
            continue
        if pd.to_numeric(table[column], errors="coerce").notna().all():
            return column
    return None


def sweep_figure(table: pd.DataFrame, summary: Summary, path: Path, confidence: float,
                 title: str | None = None) -> Path | None:
    import seaborn as sns

    x = main_axis(summary, table)
    # A categorical factor besides method (dataset): grouped bars without a numeric axis, line
    # styles with one, so that its levels are never pooled.
    others = [f for f in summary.factors if f not in ("method", x)]
    category = others[0] if others else None
    metrics = [m for m in summary.metrics if m.better is not None]
    if not metrics:
        return None
    plt = _plt()
    data = table[table["status"].isin(DONE_STATUSES)].copy()
    if data.empty:
        return None
    hue = "method" if "method" in data.columns else None
    if hue:
        data[hue] = data[hue].astype(str).astype(object)
    order = method_order(data[hue]) if hue else None
    ncols = len(metrics) if len(metrics) <= 4 else 3
    nrows = math.ceil(len(metrics) / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.2 * nrows), squeeze=False)
    axes = [list(grid.flat)]
    for ax in axes[0][len(metrics):]:
        ax.remove()
    axes = [axes[0][:len(metrics)]]
    if category is not None:
        data[category] = data[category].astype(str).astype(object)
        levels = sorted(data[category].unique(), key=_sort_key)
    for ax, m in zip(axes[0], metrics):
        data[m.label] = pd.to_numeric(data[m.column], errors="coerce") * m.scale
        if x is not None:
            data[x] = pd.to_numeric(data[x])
            sns.lineplot(data=data, x=x, y=m.label, hue=hue, hue_order=order, marker="o",
                         style=category, style_order=levels if category else None,
                         errorbar=_ci_bounds(confidence), err_style="bars", ax=ax)
            values = sorted(data[x].unique())
            positive = [v for v in values if v > 0]
            if x == "codebook_size" or (positive and len(positive) == len(values) and values[-1] / values[0] >= 16):
                ax.set_xscale("log", base=2)
            elif positive and len(positive) < len(values) and max(positive) / min(positive) >= 100:
                ax.set_xscale("symlog", linthresh=min(positive))
                ax.set_xlim(-0.3 * min(positive), max(positive) * 1.5)  # no empty negative half
            elif all(float(v).is_integer() for v in values):
                from matplotlib.ticker import MaxNLocator

                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(FACTOR_LABELS.get(x, x))
            y = data[m.label].dropna()
            if m.column != "utilization" and len(y) and y.min() > 0 and y.max() / y.min() > 20:
                ax.set_yscale("log")
        elif category is not None:
            sns.barplot(data=data, x=category, y=m.label, order=levels, hue=hue, hue_order=order,
                        errorbar=_ci_bounds(confidence), ax=ax)
            ax.set_xlabel(FACTOR_LABELS.get(category, category))
            plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
        else:
            sns.barplot(data=data, x=hue, y=m.label, order=order, errorbar=_ci_bounds(confidence), ax=ax)
            plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
        if m.column == "utilization":
            ax.set_ylim(-3, 103)  # a share: the t-interval of 2 seeds can reach far past [0, 100]
        if ax.get_legend() is not None and ax is not axes[0][-1]:
            ax.get_legend().remove()
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle(title or summary.name)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def codebook_figure(codebooks: Mapping[str, np.ndarray], data: np.ndarray | None, path: Path) -> Path:
    """2-D scatter: the data (grey) and each method's code vectors, one panel per method."""
    plt = _plt()
    names = method_order(codebooks)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.3), squeeze=False)
    for ax, name in zip(axes[0], names):
        if data is not None:
            ax.scatter(data[:, 0], data[:, 1], s=1, c="0.8", rasterized=True, label="data")
        code = np.asarray(codebooks[name])
        ax.scatter(code[:, 0], code[:, 1], s=4, c="C3", label="codes")
        ax.set_title(name)
        ax.set_aspect("equal")
    axes[0][0].legend(loc="lower left", fontsize=7, markerscale=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def usage_figure(usage: Mapping[str, np.ndarray], path: Path, title: str) -> Path:
    """Code-usage histograms: codes sorted by use, share of features per code (log y)."""
    import seaborn as sns

    plt = _plt()
    frames = []
    for name, counts in usage.items():
        counts = np.sort(np.asarray(counts, dtype=float))[::-1]
        share = counts / max(counts.sum(), 1.0)
        frames.append(pd.DataFrame({"rank": np.arange(1, len(counts) + 1), "share": share,
                                    "method": np.array([name] * len(counts), dtype=object)}))
    data = pd.concat(frames, ignore_index=True)
    data["method"] = data["method"].astype(object)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    sns.lineplot(data=data[data["share"] > 0], x="rank", y="share", hue="method",
                 hue_order=method_order(usage), drawstyle="steps-post", ax=ax)
    ax.set_yscale("log")
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("share of features")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------
# Sections of the default sweeps (params.yaml): titles, and which sweep checks which claims.
TITLES = {
    "atomic": "Atomic mean-shift experiment: z ~ N(mu 1, I), all methods",
    "k_sweep": "Codebook size K",
    "d_sweep": "Feature dimension d",
    "gamma_sweep": "Weight gamma of the Wasserstein term",
    "vqvae": "Image VQ-VAE",
    "disk": "2-D uniform disk (K = 400)",
    "non_gaussian": "Non-Gaussian features: Gaussian W vs sliced W, exact OT, MMD",
    "low_d": "Low d: plain W vs the W loss aimed at Gersho's density",
    "low_d_paper": "Low d: the W loss aimed at Theorem 2's density",
    "dead_codes": "Dead-code strategies vs distribution matching (mean shift, K = 256)",
}
ROLES = {"atomic": "atomic", "d_sweep": "d_sweep", "gamma_sweep": "gamma_sweep", "vqvae": "vqvae"}  # role -> sweep
CODEBOOK_SWEEP = "disk"  # its saved codebooks are drawn over its prepared data sample


@dataclass
class ReportConfig:
    params_path: Path
    results_dir: Path
    out_dir: Path
    prepared_dir: Path
    confidence: float = 0.95
    roles: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(ROLES))
    titles: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(TITLES))
    codebook_sweep: str | None = CODEBOOK_SWEEP
    filter_to_spec: bool = True  # drop table rows whose trial is not in the current sweep spec
    figures: bool = True  # False: tables only (quick look; the pipeline always draws them)


def load_params(path: str | Path) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle) or {}


def report_config(params: Mapping[str, Any], params_path: Path, out_dir: Path | None = None,
                  results_dir: Path | None = None) -> ReportConfig:
    root = params_path.resolve().parent
    tracking = params.get("tracking") or {}
    return ReportConfig(
        params_path=params_path,
        results_dir=Path(results_dir or root / tracking.get("results_dir", "results")),
        out_dir=Path(out_dir or root / "reports"),
        prepared_dir=root / "data" / "prepared",
    )


def current_trial_ids(params_path: Path, name: str) -> set[str] | None:
    """Trial ids of sweep ``name`` as params.yaml defines it now (None when it cannot be parsed).

    The MLflow store keeps the trials of earlier specs of the same sweep; the exported table holds
    them all. The report describes the current spec only.
    """
    try:
        from benchmark.pipeline.spec import load_sweep

        return {trial.trial_id for trial in load_sweep(params_path, name).trials}
    except Exception as err:  # an unparsable spec must not stop the report: say so instead
        print(f"note: sweep {name}: cannot expand the spec ({err}); reporting every trial in the table")
        return None


def _trial_artifacts(config: ReportConfig) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Final codebooks and code-usage histograms of the 2-D sweep's lowest-seed trial per method.

    Both are the artifacts each trial wrote (and logged to its MLflow run):
    ``<results>/<sweep>/artifacts/<trial>/codebook.npy`` and ``code_counts.npy``, the latter the
    usage on the trial's held-out evaluation features.
    """
    if not config.codebook_sweep:
        return {}, {}
    folder = config.results_dir / config.codebook_sweep
    table_path = folder / "trials.csv"
    if not table_path.exists():
        return {}, {}
    table = pd.read_csv(table_path)
    current = current_trial_ids(config.params_path, config.codebook_sweep) if config.filter_to_spec else None
    table = table[table["status"] == "finished"]
    if current is not None:
        table = table[table["trial"].isin(current)]
    codebooks, usage = {}, {}
    for method, rows in table.sort_values("seed").groupby("method", sort=False):
        trial_dir = folder / "artifacts" / str(rows.iloc[0]["trial"])
        if (trial_dir / "codebook.npy").exists() and (trial_dir / "code_counts.npy").exists():
            codebooks[str(method)] = np.load(trial_dir / "codebook.npy")
            usage[str(method)] = np.load(trial_dir / "code_counts.npy")
    return codebooks, usage


def _prepared_sample(config: ReportConfig, sweep: str) -> np.ndarray | None:
    """The pinned data sample of ``sweep`` written by benchmark.pipeline.prepare (first dataset config)."""
    path = config.prepared_dir / sweep / "sample_0.npy"
    return np.load(path) if path.exists() else None


HEADLINE_METRICS = ("utilization", "error_vs_kmeans", "psnr")  # metrics.json: the columns that decide


def headline_metrics(summaries: Mapping[str, Summary]) -> dict[str, Any]:
    """Nested means for ``dvc metrics show``: sweep -> row label -> metric -> mean (table units,
    utilization as a fraction)."""
    out: dict[str, Any] = {}
    for name, summary in summaries.items():
        section: dict[str, Any] = {}
        for _, row in summary.rows.iterrows():
            label = "_".join(
                f"{FACTOR_LABELS.get(f, f)}{_fmt_value(row[f])}" if f != "method" else str(row[f])
                for f in summary.factors
            ) or "all"
            values = {m.column: round(float(row[f"{m.column}_mean"]) / m.scale, 4) for m in summary.metrics
                      if m.column in HEADLINE_METRICS and math.isfinite(row[f"{m.column}_mean"])}
            if row["failed"]:
                values["failed"] = int(row["failed"])
            section[label] = values
        out[name] = section
    return out


def build_report(config: ReportConfig, params: Mapping[str, Any]) -> Path:
    """Write ``ablation.md``, ``figures/*.png`` and ``metrics.json`` under ``config.out_dir``."""
    out_dir = config.out_dir
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for stale in figures.glob("*.png"):
        stale.unlink()
    sweeps = params.get("sweeps") or {}
    summaries: dict[str, Summary] = {}
    tables: dict[str, pd.DataFrame] = {}
    sections: list[str] = []
    missing: list[str] = []
    for name, spec in sweeps.items():
        path = config.results_dir / name / "trials.csv"
        if not path.exists():
            missing.append(name)
            continue
        table = read_table(path)
        stale = 0
        if config.filter_to_spec and "trial" in table.columns:
            ids = current_trial_ids(config.params_path, name)
            if ids is not None:
                keep = table["trial"].astype(str).isin(ids)
                stale = int((~keep).sum())
                table = table[keep].reset_index(drop=True)
        table.attrs["stale"] = stale
        tables[name] = table
        summary = summarize(table, name, config.confidence)
        summaries[name] = summary
        sections.append(_sweep_section(config, name, spec, table, summary, figures))

    lines = [
        "# vqbench ablation report",
        "",
        "Generated by `python -m benchmark report` (last stage of `dvc repro`) from the exported "
        "trial tables `" + _rel(config.results_dir) + "/<sweep>/trials.csv` (MLflow store -> table); "
        "nothing here was retrained to write it. How to read it: reports/README.md.",
        "",
        f"Each cell: mean ± half-width of the {config.confidence:.0%} t-interval over seeds "
        "(t quantile with n-1 degrees of freedom; no interval when n = 1). **Bold**: best mean in the "
        "column among methods at the same setting (among all rows when the sweep has one method); "
        "max for U, perplexity, PSNR, SSIM, min for E and E / k-means. `n`: finished trials, "
        "`failed`: failed trials (not in the means, listed under each table).",
        "",
        "## Metrics",
        "",
    ]
    for m in METRICS:
        lines.append(f"- **{m.label}** (`{m.column}`): {m.definition}.")
    for label, text in EXTRA_DEFINITIONS.items():
        lines.append(f"- {label}: {text}.")
    lines += ["", "## Paper vs ours", ""]
    setting = {name: _setting_text(table) for name, table in tables.items()}
    setting["atomic"] = setting.get(config.roles.get("atomic", "atomic"), "")
    lines.append(paper_vs_ours(summaries, config.roles, setting))
    from benchmark.report.questions import open_questions_section  # the seed's open questions (issue 8)

    lines += ["", open_questions_section(tables, config.confidence, figures if config.figures else None)]
    lines += ["", *sections]
    extra = _extra_figures(config, figures) if config.figures else []
    if extra:
        lines += ["", *extra]
    if missing:
        lines += ["", "## Not run", "",
                  "No results table for: " + ", ".join(f"`{n}`" for n in missing) + "."]
    lines += ["", "## Code version and base params", ""]
    commits = sorted({c for s in summaries.values() for c in s.commits})
    lines.append("Git commits of the trials: " + (", ".join(f"`{c}`" for c in commits) or "unknown")
                 + " (`+dirty`: the work tree had uncommitted or untracked files when the trial ran; "
                 "during `dvc repro` that includes the dvc.lock DVC is rewriting).")
    lines += ["", "Shared `base:` of every sweep (params.yaml):", "", "```yaml",
              yaml.safe_dump({"base": params.get("base") or {}}, sort_keys=False).rstrip(), "```", ""]
    report_path = out_dir / "ablation.md"
    report_path.write_text("\n".join(lines))
    (out_dir / "metrics.json").write_text(json.dumps(headline_metrics(summaries), indent=1, sort_keys=True) + "\n")
    return report_path


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path, Path.cwd())
    except ValueError:
        return str(path)


def _sweep_section(config: ReportConfig, name: str, spec: Any, table: pd.DataFrame,
                   summary: Summary, figures: Path) -> str:
    title = config.titles.get(name, name)
    lines = [f"## {title} (`{name}`)", ""]
    stale = table.attrs.get("stale", 0)
    lines.append(f"Setting: {_setting_text(table)}. Trials: {len(table)} "
                 f"({len(summary.failed)} failed)."
                 + (f" {stale} trials of earlier specs of this sweep in the table are not shown." if stale else ""))
    lines += ["", summary_table(summary), "", failed_list(summary), ""]
    figure = (sweep_figure(table, summary, figures / f"{name}.png", config.confidence, title)
              if config.figures else None)
    if figure is not None:
        axis = main_axis(summary, table)
        others = [f for f in summary.factors if f not in ("method", axis)]
        what = (f"against {FACTOR_LABELS.get(axis, axis)}, one line per method" if axis
                else f"per {FACTOR_LABELS.get(others[0], others[0])} and method (bars)" if others
                else "per method (bars)")
        if axis and others:
            what += f", line style = {FACTOR_LABELS.get(others[0], others[0])}"
        lines += [f"![{name}](figures/{figure.name})", "",
                  f"Figure: metrics {what}; error bars = the table's t-interval.", ""]
    lines += ["Code version: " + (", ".join(f"`{c[:12]}{'+dirty' if c.endswith('+dirty') else ''}`"
                                          for c in summary.commits) or "unknown") + ".", ""]
    lines += ["<details><summary>Sweep spec (params.yaml)</summary>", "", "```yaml",
              yaml.safe_dump({"sweeps": {name: spec}}, sort_keys=False).rstrip(), "```", "", "</details>", ""]
    return "\n".join(lines)


def _extra_figures(config: ReportConfig, figures: Path) -> list[str]:
    lines: list[str] = []
    codebooks, usage = _trial_artifacts(config)
    sample = _prepared_sample(config, config.codebook_sweep) if config.codebook_sweep else None
    title = config.titles.get(config.codebook_sweep or "", config.codebook_sweep or "")
    if codebooks:
        path = codebook_figure(codebooks, sample, figures / "disk_codebooks.png")
        lines += ["## Codebook over data (2-D disk)", "", f"![disk codebooks](figures/{path.name})", "",
                  f"Final code vectors (red) of each method of `{config.codebook_sweep}` (lowest seed) over "
                  "a sample of the data (grey).", ""]
        path = usage_figure(usage, figures / "disk_code_usage.png", f"code usage: {title}")
        lines += ["## Code usage", "", f"![code usage](figures/{path.name})", "",
                  "Codes sorted by use; y = share of the trial's held-out evaluation features whose "
                  "nearest code it is (the trial's saved usage histogram). A curve that ends early = "
                  "dead codes.", ""]
    else:
        lines += ["## Codebook over data (2-D disk)", "",
                  "Left out: no saved trial artifacts found"
                  + (f" under `{_rel(config.results_dir / config.codebook_sweep / 'artifacts')}`"
                     if config.codebook_sweep else "")
                  + "; the code-usage histogram needs them too.", ""]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv) if argv is not None else None
    if argv is not None and "--reproduce" in argv:  # the paper-vs-ours reproduction report
        from benchmark.report import reproduce

        return reproduce.main([arg for arg in argv if arg != "--reproduce"])
    parser = argparse.ArgumentParser(prog="python -m benchmark report", description=__doc__.split("\n")[0],
                                     epilog="--reproduce: write reports/reproduce.md instead "
                                            "(python -m benchmark report --reproduce --help)")
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    parser.add_argument("--results", default=None, help="results dir (default tracking.results_dir)")
    parser.add_argument("--out", default=None, help="output dir (default reports)")
    parser.add_argument("--no-figures", action="store_true", help="tables only (no seaborn figures)")
    parser.add_argument("--export", action="store_true",
                        help="first rebuild results/<sweep>/trials.csv from the MLflow store")
    args = parser.parse_args(argv)
    params_path = Path(args.params)
    params = load_params(params_path)
    config = report_config(params, params_path, Path(args.out) if args.out else None,
                           Path(args.results) if args.results else None)
    if args.export:
        from benchmark.pipeline import tracking

        uri = tracking.resolve_tracking_uri((params.get("tracking") or {}).get("uri", "mlflow.db"),
                                            params_path.resolve().parent)
        for name in params.get("sweeps") or {}:
            try:
                table = tracking.export_table(uri, name)
            except ValueError as err:
                print(f"skip {name}: {err}")
                continue
            tracking.write_table(table, config.results_dir / name / "trials.csv")
    config.figures = not args.no_figures
    path = build_report(config, params)
    print(f"wrote {_rel(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
