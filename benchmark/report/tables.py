"""Sweep tables: reading the exported ``trials.csv``, one row per factor combination, markdown.

Which columns are factors is read from the table: ``method`` when it takes several values,
plus every param that takes several values within one method, ``seed`` excluded (seeds are the
replicates). Bold marks the best mean of a column among the rows that differ only by method
(the comparison the suite is for; when a sweep has a single method, among all its rows), and only
among methods whose metric is measured in the same space (:attr:`Metric.comparable`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from benchmark.experiments.config import OPTION_FIELDS, RUN_FIELDS
from benchmark.metric_registry import TABLE_METRICS, Metric
from benchmark.metric_registry import get as metric
from benchmark.pipeline.tracking import DONE_STATUSES
from benchmark.report.stats import format_cell, t_interval

_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
OPTION_PREFIXES = tuple(f"{field}." for field in OPTION_FIELDS)
# Params that never define a row of a table (bookkeeping, not part of the ablation).
NON_FACTOR_PARAMS = ("seed", "device", "log_every")

PROTOCOL = "protocol"  # in a sweep with a tuning stage: "default" rows (the grid) or "tuned" rows
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


def with_protocol(table: pd.DataFrame, tuning: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The trials table with a ``protocol`` column (``tuned`` for the trials rerun at a tuned point,
    ``default`` for the grid's own), and the hyperparameter columns the tuning chose (not factors)."""
    tuned = set(" ".join(tuning["tuned_trials"].fillna("").astype(str)).split()) if "tuned_trials" in tuning else set()
    table = table.copy()
    table[PROTOCOL] = np.where(table["trial"].astype(str).isin(tuned), "tuned", "default")
    table[PROTOCOL] = table[PROTOCOL].astype(object)
    chosen = [c.removeprefix("chosen.") for c in tuning.columns if c.startswith("chosen.")]
    return table, sorted({"codebook_lr", "optimizer", *chosen})


def method_rank() -> dict[str, int]:
    """Display order of methods: the registry's order (built-ins first, then plugins)."""
    import methods

    return {name: i for i, name in enumerate(methods.display_order())}


def is_param_column(column: str) -> bool:
    return column in RUN_FIELDS or column.startswith(OPTION_PREFIXES)


STATUS_INTERRUPTED = "interrupted"  # started, cut off before its end (Ctrl-C, or its driver was killed)
STATUS_NOT_RUN = "not run"  # a trial of the current spec with no row in the table: never started
STALE_RUN_ERROR = "the sweep driver stopped (killed?) while this trial ran; no result was recorded"
NOT_RUN_ERROR = "never started (the sweep was interrupted or has not reached it); rerun the sweep"


def read_table(path: str | Path) -> pd.DataFrame:
    """An exported trials table; string columns as plain objects (seaborn 0.13 + pandas 3)."""
    table = pd.read_csv(path, keep_default_na=True)
    return as_object_strings(table)


def as_object_strings(table: pd.DataFrame) -> pd.DataFrame:
    # pandas 3 infers the "str" dtype; seaborn 0.13.2 mishandles hue_order on it: cast to object.
    table = table.copy()
    for column in table.columns:
        if pd.api.types.is_string_dtype(table[column]) and not pd.api.types.is_numeric_dtype(table[column]):
            table[column] = table[column].astype(object)
    if "status" not in table.columns:
        table["status"] = "finished"
    table["status"] = table["status"].astype(object).fillna("finished").astype(str).astype(object)
    if "error" not in table.columns:
        table["error"] = ""
    table["error"] = table["error"].astype(object).fillna("").astype(str).astype(object)
    # A run left "running" (its sweep driver was killed) or failed "Interrupted: ..." (Ctrl-C) did
    # not fail: it was cut off, and a rerun of the sweep resumes it.
    running = table["status"] == "running"
    table.loc[running & (table["error"] == ""), "error"] = STALE_RUN_ERROR
    cut_off = running | ((table["status"] == "failed") & table["error"].str.startswith("Interrupted"))
    table.loc[cut_off, "status"] = STATUS_INTERRUPTED
    return table


def factor_columns(table: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """``method`` if it varies, then ``protocol`` (default / tuned) if present, then every param varying
    within one method (seed and ``exclude``, e.g. the tuned hyperparameters, excluded)."""
    params = [c for c in table.columns if is_param_column(c) and c not in NON_FACTOR_PARAMS and c not in exclude]
    factors: list[str] = []
    if "method" in table.columns and table["method"].nunique(dropna=False) > 1:
        factors.append("method")
    if PROTOCOL in table.columns and table[PROTOCOL].nunique(dropna=False) > 1:
        factors.append(PROTOCOL)
    groups = table.groupby("method", dropna=False) if "method" in table.columns else [(None, table)]
    for column in params:
        if column == "method":
            continue
        if any(group[column].nunique(dropna=False) > 1 for _, group in groups):
            factors.append(column)
    return factors


def sort_key(value: Any) -> tuple:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (0, float(value) if math.isfinite(float(value)) else math.inf, "")
    rank = method_rank()
    if isinstance(value, str) and value in rank:
        return (1, rank[value], value)
    return (2, 0, str(value))


def method_order(values: Iterable[Any]) -> list[str]:
    present = {str(v) for v in values if isinstance(v, str)}
    return sorted(present, key=sort_key)


def present_metrics(table: pd.DataFrame) -> list[Metric]:
    out = []
    for m in (metric(column) for column in TABLE_METRICS):
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


def summarize(table: pd.DataFrame, name: str, confidence: float = 0.95, exclude: Sequence[str] = ()) -> Summary:
    """One row per factor combination: n, failed, mean and t-interval half-width of every metric."""
    table = as_object_strings(table)
    factors = factor_columns(table, exclude)
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
        order = sorted(range(len(rows)), key=lambda i: tuple(sort_key(rows.iloc[i][f]) for f in factors))
        rows = rows.iloc[order].reset_index(drop=True)
    failed = table[~done]
    commits = commits_of(table)
    return Summary(name, factors, metrics, rows, failed, commits)


def commits_of(table: pd.DataFrame) -> list[str]:
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


def _error_space(method: Any) -> str:
    import methods

    return methods.get(method).error_space if isinstance(method, str) and method in methods.available() \
        else "euclidean"


def best_mask(summary: Summary, m: Metric) -> pd.Series:
    """True where the row's mean is the best of its comparison group (ties at display precision)."""
    rows = summary.rows
    mask = pd.Series(False, index=rows.index)
    if m.better is None or f"{m.column}_mean" not in rows:
        return mask
    others = [f for f in summary.factors if f != "method"]
    compare_methods = "method" in summary.factors
    if compare_methods and not m.comparable:  # e.g. E on the sphere is never ranked against Euclidean E
        rows = rows.assign(__space=rows["method"].map(_error_space))
        others = [*others, "__space"]
    groups = rows.groupby(others, dropna=False, sort=False) if (compare_methods and others) else [(None, rows)]
    for _, group in groups:
        values = group[f"{m.column}_mean"].round(m.digits)
        values = values[np.isfinite(values)]
        if len(values) < 2 or values.nunique() == 1:
            continue  # nothing to compare, or all tied: no bold
        target = values.max() if m.better == "max" else values.min()
        mask.loc[values.index[values == target]] = True
    return mask


def fmt_value(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "-"
        return f"{value:g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A pipe table of strings (``DataFrame.to_markdown``), cells kept verbatim and unpadded."""
    frame = pd.DataFrame([[str(c).replace("\n", " ").replace("|", "\\|") for c in row] for row in rows],
                         columns=[str(h) for h in header], dtype=object)
    lines = frame.to_markdown(index=False, tablefmt="pipe", disable_numparse=True).splitlines()
    cells = [[c.strip() for c in _UNESCAPED_PIPE.split(line.strip())[1:-1]] for line in lines]
    out = ["| " + " | ".join(row) + " |" for row in cells]
    out[1] = "|" + "|".join("---" for _ in header) + "|"
    return "\n".join(out)


def summary_table(summary: Summary) -> str:
    header = [FACTOR_LABELS.get(f, f) for f in summary.factors] + ["n", "failed"]
    header += [m.label for m in summary.metrics]
    bold = {m.column: best_mask(summary, m) for m in summary.metrics}
    body = []
    for i, row in summary.rows.iterrows():
        # iterrows() upcasts an all-numeric row to float: counts are ints again here.
        cells = [fmt_value(row[f]) for f in summary.factors] + [str(int(row["n"])), str(int(row["failed"]))]
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
        rows.append([fmt_value(row[c]) for c in cols] + [str(row["status"]), error[:160]])
    text = f"Failed trials: {len(summary.failed)}.\n\n" + markdown_table(
        [FACTOR_LABELS.get(c, c) for c in cols] + ["status", "error (last line)"], rows
    )
    if len(summary.failed) > limit:
        text += f"\n\n({len(summary.failed) - limit} more in the trials table.)"
    return text
