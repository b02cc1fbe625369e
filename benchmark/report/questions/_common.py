"""What the open questions share: cells, intervals, texts."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pandas as pd

from benchmark.pipeline.spec import QuestionSweeps
from benchmark.report.stats import Estimate, estimate, paired_difference, relative_gap, separated
from benchmark.report.tables import Summary, sort_key, summarize, summary_table


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


def merged_table(tables: Mapping[str, pd.DataFrame], names: Sequence[str]) -> pd.DataFrame | None:
    """The tables of ``names`` that have rows, in one table (None when none has)."""
    frames = [tables[name] for name in names if name in tables and len(tables[name])]
    return pd.concat(frames, ignore_index=True) if frames else None


def _figure_lines(path: Path | None, what: str) -> list[str]:
    if path is None:
        return []
    return [f"![{path.stem}](figures/{path.name})", "", f"Figure: {what}; error bars = the table's t-interval; "
            "dashed: the k-means reference (1.0).", ""]
