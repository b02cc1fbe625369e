"""Sweep tables: reading the exported ``trials.csv``, one row per factor combination, markdown.

Which columns are factors is read from the table: ``method`` when it takes several values,
plus every param that takes several values within one method, ``seed`` excluded (seeds are the
replicates). Rows are ranked only within a comparable group (:func:`comparable_groups`): the rows
that differ only by method (the comparison the suite is for; when a sweep has a single method, all
its rows), with the same bits per token, and, for a metric measured in each quantizer's own space
(:attr:`Metric.comparable` False), the same error space. Bold marks a best resolved from every
other row of its group (:func:`best_marks`); a best not resolved is marked as a tie instead. A row
of a method with nothing to train in its experiment is marked as a fixed grid
(:func:`fixed_grid`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from benchmark.experiments.config import LEARNED_FEATURES, OPTION_FIELDS, RUN_FIELDS
from benchmark.metric_registry import TABLE_METRICS, Metric
from benchmark.metric_registry import get as metric
from benchmark.pipeline.tracking import DONE_STATUSES
from benchmark.report.stats import Estimate, compare_lower, format_cell, t_interval

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
    ``default`` for the grid's own; a trial whose group tuned to its default point is a row of
    both), and the hyperparameter columns the tuning chose (not factors)."""
    def ids(column: str) -> set[str]:
        return set(" ".join(tuning[column].fillna("").astype(str)).split()) if column in tuning else set()

    tuned, default = ids("tuned_trials"), ids("default_trials")
    table = table.copy()
    trial = table["trial"].astype(str)
    table[PROTOCOL] = np.where(trial.isin(tuned) & ~trial.isin(default), "tuned", "default")
    table[PROTOCOL] = table[PROTOCOL].astype(object)
    # where the default point tuned best, the tuned rows are the default trials: each row is in both
    both = table[trial.isin(tuned) & trial.isin(default)].assign(**{PROTOCOL: "tuned"})
    table = pd.concat([table, both], ignore_index=True) if len(both) else table
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
    rows: pd.DataFrame  # factors, n, failed, then <metric>_mean / _half / _seeds (seed -> value) per metric
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
            seeds = ok["seed"].tolist() if "seed" in ok.columns else list(range(len(ok)))
            per_seed = {seed: float(v) for seed, v in zip(seeds, values) if math.isfinite(v)}
            record[f"{m.column}{SEEDS_SUFFIX}"] = per_seed if len(set(seeds)) == len(seeds) else {}
        for column in CONSTANT_COLUMNS:  # what the comparable groups and the fixed-grid mark read
            if column in group.columns and group[column].nunique(dropna=True) == 1:
                record.setdefault(column, group[column].dropna().iloc[0])
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


SEEDS_SUFFIX = "_seeds"  # Summary.rows column of a metric's per-seed values (for paired comparisons)
# Columns a summary row keeps when its trials share one value (not factors): comparable groups and
# the fixed-grid mark read them.
CONSTANT_COLUMNS = ("experiment", "bits_per_token")
# Error spaces shared by every method quantizing in them (E of one is E of the other); any other
# space ("bounded": the box each method's own levels define) is the method's own.
SHARED_ERROR_SPACES = ("euclidean", "sphere")


def _method_spec(method: Any) -> Any:
    import methods

    return methods.get(method) if isinstance(method, str) and method in methods.available() else None


def error_space(method: Any) -> str:
    """The space a method's E is measured in, as a ranking key: ``euclidean`` or ``sphere`` (shared by
    every method quantizing there), else ``<space>:<method>`` (FSQ's bounded box is set by its own
    levels, so its E is comparable with no other method's). Unknown methods: ``euclidean``."""
    spec = _method_spec(method)
    space = spec.error_space if spec is not None else "euclidean"
    return space if space in SHARED_ERROR_SPACES else f"{space}:{method}"


def fixed_grid(method: Any, experiment: Any) -> bool:
    """True when ``method`` has nothing to train in ``experiment``: its codebook is not learned
    (``learnable_codebook`` False: FSQ's grid, LFQ, BSQ) and the experiment learns no features
    (:data:`~benchmark.experiments.config.LEARNED_FEATURES`; ``fit`` quantizes fixed features, a
    transplant a frozen encoder's). Its entropy and commitment terms then move nothing: the row
    measures a fixed grid."""
    spec = _method_spec(method)
    return spec is not None and not spec.learnable_codebook and experiment not in LEARNED_FEATURES


def comparable_groups(rows: pd.DataFrame, factors: Sequence[str], m: Metric) -> pd.Series:
    """The comparable group of each summary row for metric ``m`` (rows with equal labels are ranked
    together; a label of None: never ranked).

    A group holds the rows that differ only by ``method`` (every row when ``method`` is not a
    factor), with the same bits per token (``bits_per_token``: a 16-bit residual or grouped code is
    never ranked against 8-bit ones) and, when ``m`` is measured in each quantizer's own space
    (``m.comparable`` False: E, E / k-means), the same :func:`error_space`. A metric that is never
    ranked (``m.better`` None) gives every row None. ``rows``: :attr:`Summary.rows` or any frame
    with the factor columns, ``method`` and optionally ``bits_per_token`` (a column or
    ``bits_per_token_mean``).
    """
    if m.better is None:
        return pd.Series([None] * len(rows), index=rows.index, dtype=object)
    others = [f for f in factors if f != "method"] if "method" in factors else []
    parts = [rows[f].map(fmt_value) for f in others]
    bits = rows["bits_per_token"] if "bits_per_token" in rows else rows.get("bits_per_token_mean")
    if bits is not None:
        parts.append(pd.to_numeric(bits, errors="coerce").round(6).map(fmt_value))
    if "method" in rows and not m.comparable:
        parts.append(rows["method"].map(error_space))
    labels = [" | ".join(values) for values in zip(*parts)] if parts else [""] * len(rows)
    return pd.Series(labels, index=rows.index, dtype=object)


BEST, TIED = "best", "tied"  # best_marks: a resolved best, or a row tied for the best


def _row_estimate(row: pd.Series, m: Metric) -> Estimate:
    seeds = row.get(f"{m.column}{SEEDS_SUFFIX}")
    return Estimate(float(row[f"{m.column}_mean"]), float(row[f"{m.column}_half"]), 0,
                    seeds if isinstance(seeds, dict) else {})


def best_marks(summary: Summary, m: Metric, confidence: float = 0.95) -> pd.Series:
    """``best`` on the row whose mean is the best of its comparable group (:func:`comparable_groups`)
    when it is resolved from every other row of the group (:func:`~benchmark.report.stats.compare_lower`:
    disjoint t-intervals, or a paired difference over the common seeds whose interval excludes 0);
    otherwise ``tied`` on it and on every row not resolved from it. "" elsewhere, and in a group
    with fewer than two rows or whose means are all equal at display precision.

    Claiming the best is an intersection-union test (the best beats each other row), so each
    comparison is made at the full level, with no multiplicity correction."""
    rows = summary.rows
    marks = pd.Series("", index=rows.index, dtype=object)
    if m.better is None or f"{m.column}_mean" not in rows:
        return marks
    groups = comparable_groups(rows, summary.factors, m)
    for label in groups.dropna().unique():
        group = rows[groups == label]
        values = group[f"{m.column}_mean"].round(m.digits)
        values = values[np.isfinite(values)]
        if len(values) < 2 or values.nunique() == 1:
            continue  # nothing to compare, or all tied at display precision: no mark
        best = values.idxmax() if m.better == "max" else values.idxmin()
        lower_wins = "lower" if m.better == "min" else "higher"
        estimates = {i: _row_estimate(rows.loc[i], m) for i in values.index}
        tied = [i for i in values.index if i != best
                and compare_lower(estimates[best], estimates[i], confidence) != lower_wins]
        if tied:
            marks.loc[[best, *tied]] = TIED
        else:
            marks.loc[best] = BEST
    return marks


def best_mask(summary: Summary, m: Metric) -> pd.Series:
    """True where the row is the resolved best of its comparable group (:func:`best_marks`)."""
    return best_marks(summary, m) == BEST


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


FIXED_GRID = "fixed grid"  # the mark of a row whose method has nothing to train (fixed_grid)


def mark_cell(cell: str, mark: str) -> str:
    """A table cell with its :func:`best_marks` mark: bold for a resolved best, ``≈`` for a tie."""
    return f"**{cell}**" if mark == BEST else f"≈ {cell}" if mark == TIED else cell


def summary_table(summary: Summary, confidence: float = 0.95, notes: Mapping[Any, str] | None = None) -> str:
    """The summary as a markdown table; ``notes``: row index -> a note after the row's protocol
    (or first factor), e.g. a tuned row worse than its default."""
    header = [FACTOR_LABELS.get(f, f) for f in summary.factors] + ["n", "failed"]
    header += [m.label for m in summary.metrics]
    marks = {m.column: best_marks(summary, m, confidence) for m in summary.metrics}
    body = []
    for i, row in summary.rows.iterrows():
        # iterrows() upcasts an all-numeric row to float: counts are ints again here.
        cells = [fmt_value(row[f]) for f in summary.factors] + [str(int(row["n"])), str(int(row["failed"]))]
        if "method" in summary.factors and fixed_grid(row["method"], row.get("experiment")):
            cells[summary.factors.index("method")] += f" ({FIXED_GRID})"
        if notes and i in notes and summary.factors:
            where = summary.factors.index(PROTOCOL) if PROTOCOL in summary.factors else 0
            cells[where] += f" ({notes[i]})"
        for m in summary.metrics:
            cell = format_cell(row[f"{m.column}_mean"], row[f"{m.column}_half"], m.digits)
            cells.append(mark_cell(cell, marks[m.column].loc[i]))
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
