"""The tuning stage in the report: default vs tuned results, the chosen hyperparameters, the budget
spent (equal across methods), robustness, and a sensitivity figure from the tuning trials.

Reads ``<results>/<sweep>/tuning.csv`` (one row per method and setting) and ``tuning_trials.csv``
(every tuning trial: its point and its record on the validation split), both written by
:mod:`benchmark.pipeline.tuning`. The default and tuned results are measured on the test split over
the sweep's seeds; the tuning itself never saw it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.pipeline.tuning import TUNING_TRIALS_FILE
from benchmark.report.figures import plt, save
from benchmark.report.stats import compare_lower, done_rows, estimate, format_cell, t_interval
from benchmark.report.tables import PROTOCOL, FACTOR_LABELS, Summary, fmt_value, markdown_table, method_order, metric

FULL_USE = 0.9  # robustness: share of a method's tuning trials that reached U >= 90%
SHOWN = ("error_vs_kmeans", "utilization")


def _cell(table: pd.DataFrame, trials: str, column: str, confidence: float) -> str:
    rows = done_rows(table[table["trial"].astype(str).isin(str(trials).split())])
    if column not in rows.columns:
        return "-"
    m = metric(column)
    mean, half, _ = t_interval(pd.to_numeric(rows[column], errors="coerce") * m.scale, confidence)
    return format_cell(mean, half, m.digits)


SAME_POINT, WORSE = "default point", "worse than default"  # the tuned-vs-default column's notes


def tuned_vs_default(table: pd.DataFrame, row: pd.Series, confidence: float) -> str:
    """How the tuned rows compare with the default rows of one (method, setting) on the test seeds, by
    the tuning metric (:func:`~benchmark.report.stats.compare_lower`, paired over the seeds):
    ``default point`` (the default tuned best: the same trials), ``better``, ``worse than default``
    or ``unresolved``."""
    if bool(row.get("best_is_default", False)):
        return SAME_POINT
    column = str(row["metric"])
    cells = [estimate(table[table["trial"].astype(str).isin(str(row[key]).split())], column, confidence)
             for key in ("tuned_trials", "default_trials")]
    verdict = compare_lower(*cells, confidence)
    if verdict == "unresolved":
        return verdict
    better = verdict == ("lower" if row.get("mode", "min") == "min" else "higher")
    return "better" if better else WORSE


def worse_rows(summary: Summary, table: pd.DataFrame, tuning: pd.DataFrame, confidence: float) -> dict[Any, str]:
    """Summary row index -> ``worse than default`` for every tuned row whose (method, setting) tuned
    to a point worse than its default on the test seeds (:func:`tuned_vs_default`)."""
    rows = summary.rows
    if PROTOCOL not in rows.columns:
        return {}
    notes: dict[Any, str] = {}
    for _, row in tuning.iterrows():
        if tuned_vs_default(table, row, confidence) != WORSE:
            continue
        match = (rows[PROTOCOL] == "tuned") & (rows["method"] == row["method"]) if "method" in rows else \
            rows[PROTOCOL] == "tuned"
        for column in (c for c in tuning.columns if c.startswith("setting.")):
            key = column.removeprefix("setting.")
            if key in rows.columns:
                match &= rows[key].map(fmt_value) == fmt_value(row[column])
        notes.update({index: WORSE for index in rows.index[match]})
    return notes


def _chosen(row: pd.Series) -> str:
    parts = []
    for key, value in row.items():
        if str(key).startswith("chosen.") and not (isinstance(value, float) and math.isnan(value)):
            name = str(key).removeprefix("chosen.").removeprefix("method_options.")
            parts.append(f"{name} {fmt_value(round(value, 4) if isinstance(value, float) else value)}")
    return ", ".join(parts) or "-"


def tuning_block(name: str, table: pd.DataFrame, tuning: pd.DataFrame, confidence: float,
                 figures: Path | None) -> str:
    """Markdown for one tuned sweep (``table`` holds both protocols' trials)."""
    settings = [c for c in tuning.columns if c.startswith("setting.")]
    budget = sorted(set(tuning["budget"].dropna().astype(int)))
    seconds = tuning.groupby("method")["tuning_train_seconds"].sum()
    header = ["method", *[FACTOR_LABELS.get(c.removeprefix("setting."), c.removeprefix("setting.")) for c in settings]]
    for column in SHOWN:
        label = metric(column).label
        header += [f"{label} default", f"{label} tuned"]
    header += ["tuned vs default (test)", "chosen (validation)", "scored / attempts", "U >= 90% share"]
    body = []
    order = method_order(tuning["method"])
    for _, row in tuning.sort_values("method", key=lambda s: s.map(order.index)).iterrows():
        cells = [row["method"], *[fmt_value(row[c]) for c in settings]]
        for column in SHOWN:
            cells += [_cell(table, row["default_trials"], column, confidence),
                      _cell(table, row["tuned_trials"], column, confidence)]
        share = row.get("robust_share", math.nan)
        versus = tuned_vs_default(table, row, confidence)
        scored = row.get("scored_trials", row["tuning_trials"])
        cells += [f"**{versus}**" if versus == WORSE else versus, _chosen(row),
                  f"{int(scored)} / {int(row['tuning_trials'])}", "-" if pd.isna(share) else f"{100 * share:.0f}%"]
        body.append(cells)
    metric_name = tuning["metric"].iloc[0] if "metric" in tuning else "the tuning metric"
    samplers = sorted(set(tuning["sampler"].dropna().astype(str))) if "sampler" in tuning else []
    sampler = " / ".join(samplers) or "an Optuna sampler"
    lines = [f"**Tuning** (`{name}`): every method got the same budget, {', '.join(map(str, budget))} scored "
             f"trials per setting over the codebook learning rate, the optimizer and the method's own tunables: "
             f"first the default point, then {sampler} points; none stopped early; a trial that failed "
             f"without diverging was replaced. Selected by {metric_name} on the validation split (the default "
             f"wins ties, so the pick is never worse than the default there), never on the evaluation features; "
             f"the tuned point is then rerun with the sweep's seeds and evaluated on the test split. "
             f"`tuned vs default (test)`: the tuned rows against the default rows by {metric_name}, paired over "
             f"the seeds (`default point`: the default tuned best, the rows are the same trials; "
             f"`{WORSE}`: the pick did not carry over from the validation split to the test seeds). "
             f"Tuning train time per method: "
             + ", ".join(f"{m} {seconds[m]:.0f} s" for m in order if m in seconds) + ".", "",
             markdown_table(header, body), ""]
    figure = sensitivity_figure(name, tuning, figures) if figures is not None else None
    if figure is not None:
        lines += [f"![{name} sensitivity](figures/{figure.name})", "",
                  "Sensitivity: each tuning trial's validation U and E / k-means against its codebook learning "
                  "rate (marker = optimizer), one colour per method.", ""]
    return "\n".join(lines)


def sensitivity_figure(name: str, tuning: pd.DataFrame, figures: Path) -> Path | None:
    """U and E / k-means of every tuning trial against its learning rate, one colour per method."""
    import seaborn as sns

    source = tuning.attrs.get("trials_path")
    if source is None or not Path(source).exists():
        return None
    trials = done_rows(pd.read_csv(source))
    if trials.empty or "codebook_lr" not in trials.columns:
        return None
    trials = trials.assign(method=trials["method"].astype(str).astype(object),
                           optimizer=trials["optimizer"].astype(str).astype(object))
    pyplot = plt()
    columns = [c for c in SHOWN if c in trials.columns]
    fig, axes = pyplot.subplots(1, len(columns), figsize=(4.4 * len(columns), 3.4), squeeze=False)
    for ax, column in zip(axes[0], columns):
        m = metric(column)
        data = trials.assign(value=pd.to_numeric(trials[column], errors="coerce") * m.scale)
        sns.scatterplot(data=data, x="codebook_lr", y="value", hue="method", style="optimizer",
                        hue_order=method_order(data["method"]), ax=ax, s=28)
        ax.set_xscale("log")
        ax.set_xlabel("codebook learning rate")
        ax.set_ylabel(f"{m.label} (validation)")
        if ax is not axes[0][-1]:
            legend = ax.get_legend()
            if legend is not None:
                legend.remove()
    sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle(f"tuning trials: {name}")
    fig.tight_layout()
    out = figures / f"{name}_tuning.png"
    return save(fig, out)


def load_tuning(folder: Path) -> pd.DataFrame | None:
    """``tuning.csv`` of a sweep's results folder (its trials file path kept in ``attrs``), or None."""
    from benchmark.pipeline.tuning import TUNING_FILE

    path = folder / TUNING_FILE
    if not path.exists():
        return None
    tuning = pd.read_csv(path)
    tuning.attrs["trials_path"] = str(folder / TUNING_TRIALS_FILE)
    return tuning
