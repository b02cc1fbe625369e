"""The papers' claims as data: one YAML file per paper in this folder, rendered by generic code.

A paper file holds ``paper``, ``reference``, ``thresholds`` (name -> ``{value, side}``: a claim
``expect``-ing ``full_use`` agrees when the whole 95% interval of our mean lies on that ``side``
of ``value``, differs when it lies wholly on the other side, else is ``unresolved``), and ``groups`` of ``claims``. A claim names the
sweep and the row that measure it (``method`` and ``where``: factor values), the ``metric``
column, the paper's value (text) and optionally ``scaled`` (an independent scaled-down
reference), ``paper_setting`` and ``expect``. Adding a paper = adding a file.

A claim is checked in the paper's own setting only: ``setting`` holds what the paper states of it
(``codebook_size``, ``dim``, ``dataset_options.mean``: a value, or ``[low, high]`` for a claim
made over a range), and a row whose value differs gets the verdict ``different setting``, not
``agrees`` / ``differs``. ``protocol`` selects the rows of a tuned sweep (``default``: the grid's
own, or ``tuned``), and ``under`` says whose training protocol the row ran (``ours``, or the
paper's, run by a sweep of its own), so one claim can be shown under both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import yaml

from benchmark.report.stats import format_cell, interval_verdict
from benchmark.report.tables import FACTOR_LABELS, PROTOCOL, Summary, markdown_table, metric

PAPERS_DIR = Path(__file__).resolve().parent
COLUMN_TITLES = {"paper_setting": "paper setting", "paper": "paper", "scaled": "scaled reference"}
SETTING_KEYS = ("codebook_size", "dim", "dataset_options.mean")  # what makes a row the paper's setting
PROTOCOLS = ("default", "tuned")
DIFFERENT_SETTING = "different setting"  # the verdict of a row outside the paper's setting


@dataclass(frozen=True)
class Claim:
    sweep: str
    method: str
    where: Mapping[str, Any]
    metric: str
    paper: str = "-"
    scaled: str = "-"
    paper_setting: str = ""
    expect: str = ""  # a key of the paper's thresholds, or "" (no verdict)
    setting: Mapping[str, Any] = field(default_factory=dict)  # the paper's K / d / mu: a value or [low, high]
    protocol: str = "default"  # the rows of a tuned sweep: "default" or "tuned"
    under: str = "ours"  # whose training protocol the row ran

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol: must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        for key in self.setting:
            if key not in SETTING_KEYS:
                raise ValueError(f"setting.{key}: unknown; valid: {list(SETTING_KEYS)}")


@dataclass(frozen=True)
class ClaimGroup:
    title: str
    intro: str
    columns: tuple[str, ...]
    claims: tuple[Claim, ...]


@dataclass(frozen=True)
class Paper:
    name: str
    reference: str
    thresholds: Mapping[str, Mapping[str, Any]]
    groups: tuple[ClaimGroup, ...] = ()


def load_paper(path: Path) -> Paper:
    data = yaml.safe_load(path.read_text()) or {}
    groups = tuple(
        ClaimGroup(g["title"], g.get("intro", ""), tuple(g.get("columns", ("paper",))),
                   tuple(Claim(**claim) for claim in g.get("claims", ())))
        for g in data.get("groups", ())
    )
    paper = Paper(data["paper"], data["reference"], data.get("thresholds", {}), groups)
    for group in groups:
        for claim in group.claims:
            if claim.expect and claim.expect not in paper.thresholds:
                raise ValueError(f"{path.name}: claim expects {claim.expect!r}; thresholds: {sorted(paper.thresholds)}")
    return paper


def load_papers(folder: Path = PAPERS_DIR) -> list[Paper]:
    """Every paper file of ``folder`` (sorted by file name)."""
    return [load_paper(path) for path in sorted(folder.glob("*.yaml"))]


def check_claims(papers: list[Paper]) -> None:
    """Every claim names a registered method, a metric of the registry and ``where`` values that are
    numbers or strings; a ValueError names the claim otherwise. (A sweep that params.yaml does not
    define is not an error: its claims show as not measured.)"""
    import methods

    from benchmark import metric_registry

    for paper in papers:
        for group in paper.groups:
            for i, claim in enumerate(group.claims):
                where = f"{paper.name}, {group.title!r}, claim {i + 1}"
                if claim.method not in methods.available():
                    raise ValueError(f"{where}: method: unknown {claim.method!r}; valid: {methods.available()}")
                try:
                    metric_registry.get(claim.metric)
                except ValueError as err:
                    raise ValueError(f"{where}: metric: {err}") from None
                for key, value in claim.where.items():
                    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                        raise ValueError(f"{where}: where.{key}: must be a number or a string, got {value!r}")


def select_row(summary: Summary, method: str, where: Mapping[str, Any],
               protocol: str = "default") -> pd.Series | None:
    """The summary row of ``method`` at the factor values ``where`` (None if absent or ambiguous);
    in a tuned sweep, of ``protocol`` (``default`` or ``tuned``)."""
    rows = summary.rows
    if PROTOCOL in rows.columns:
        rows = rows[rows[PROTOCOL] == protocol]
    elif protocol != "default":
        return None
    if "method" in summary.factors:
        rows = rows[rows["method"] == method]
    for key, value in where.items():
        if key not in rows.columns:
            return None
        if isinstance(value, str):
            rows = rows[rows[key].astype(str) == value]
        else:
            rows = rows[np.isclose(pd.to_numeric(rows[key], errors="coerce"), float(value))]
    return rows.iloc[0] if len(rows) == 1 else None


def row_value(row: pd.Series, table: pd.DataFrame | None, key: str) -> Any:
    """The row's value of ``key``: its factor column, else the sweep table's one value (None if several)."""
    if key in row.index and not pd.isna(row[key]):
        return row[key]
    if table is not None and key in table.columns and table[key].nunique(dropna=True) == 1:
        return table[key].dropna().iloc[0]
    return None


def outside_setting(claim: Claim, row: pd.Series, table: pd.DataFrame | None) -> list[str]:
    """The keys of ``claim.setting`` whose value in our row differs from the paper's (a value, or
    outside ``[low, high]``), as ``"K 64 (paper 1024-262144)"``; a value we cannot read counts too."""
    out = []
    for key, paper in claim.setting.items():
        ours = row_value(row, table, key)
        low, high = (paper[0], paper[1]) if isinstance(paper, (list, tuple)) else (paper, paper)
        inside = ours is not None and float(low) <= float(ours) <= float(high)
        if not inside:
            label = FACTOR_LABELS.get(key, key)
            span = f"{low:g}" if low == high else f"{low:g}-{high:g}"
            out.append(f"{label} {'?' if ours is None else f'{float(ours):g}'} (paper {span})")
    return out


def claim_verdict(paper: Paper, claim: Claim, mean: float, half: float) -> str:
    if not claim.expect:
        return "-"
    threshold = paper.thresholds[claim.expect]
    low, high = (mean - half, mean + half) if math.isfinite(half) else (math.nan, math.nan)
    return interval_verdict(low, high, float(threshold["value"]), threshold["side"])


def render_group(paper: Paper, group: ClaimGroup, summaries: Mapping[str, Summary],
                 settings: Mapping[str, str], tables: Mapping[str, pd.DataFrame] | None = None) -> str | None:
    body = []
    measured = 0
    for claim in group.claims:
        summary = summaries.get(claim.sweep)
        row = select_row(summary, claim.method, claim.where, claim.protocol) if summary is not None else None
        m = metric(claim.metric)
        where = ", ".join(f"{FACTOR_LABELS.get(k, k)} {v}" for k, v in claim.where.items()) or "-"
        lead = [getattr(claim, c) for c in group.columns if c == "paper_setting"]
        values = [getattr(claim, c) for c in group.columns if c != "paper_setting"]
        protocol = claim.under + (", tuned" if claim.protocol == "tuned" else "")
        if row is None or f"{m.column}_mean" not in row:  # a claim never vanishes: it says it was not measured
            why = "no such row" if summary is not None else "no results"
            body.append([*lead, claim.method, where, protocol, m.label, *values,
                         f"not measured ({why} in `{claim.sweep}`)", "-"])
            continue
        measured += 1
        mean, half = float(row[f"{m.column}_mean"]), float(row[f"{m.column}_half"])
        outside = outside_setting(claim, row, (tables or {}).get(claim.sweep))
        verdict = claim_verdict(paper, claim, mean, half)
        if outside and claim.expect:
            verdict = f"{DIFFERENT_SETTING}: {', '.join(outside)}"
        body.append([*lead, claim.method, where, protocol, m.label, *values, format_cell(mean, half, m.digits),
                     verdict])
    if not measured:
        return None
    header = ([COLUMN_TITLES[c] for c in group.columns if c == "paper_setting"] + ["method", "row", "protocol", "metric"]
              + [COLUMN_TITLES.get(c, c) for c in group.columns if c != "paper_setting"]
              + ["ours (mean ± 95% CI)", "verdict"])
    used = sorted({claim.sweep for claim in group.claims if claim.sweep in summaries})
    ours = "; ".join(f"`{name}`: {settings.get(name, '')}" for name in used)
    return "\n".join([f"**{group.title}** ({paper.name}, {paper.reference}). {group.intro} Ours: {ours}.", "",
                      markdown_table(header, body), ""])


def papers_section(papers: list[Paper], summaries: Mapping[str, Summary], settings: Mapping[str, str],
                   tables: Mapping[str, pd.DataFrame] | None = None) -> str:
    """The "Paper vs ours" section: one table per claim group whose sweep has results (``tables``: the
    sweeps' trials, where a row's K, d or mu is read when it is not a factor)."""
    lines = []
    for paper in papers:
        for group in paper.groups:
            block = render_group(paper, group, summaries, settings, tables)
            lines.append(block if block is not None else
                         f"**{group.title}** ({paper.name}): not checked, no results for its sweeps.\n")
    rules = sorted({(name, t["value"], t["side"]) for p in papers for name, t in p.thresholds.items()})
    lines.append("Verdict rule: " + "; ".join(f"`{name}` means U {'>=' if side == 'above' else '<='} {value:g}%"
                                              for name, value, side in rules)
                 + ". A claim `agrees` when the whole 95% interval of our mean lies on the paper's side of its "
                 "threshold, `differs` when it lies wholly on the other side, and is `unresolved` otherwise "
                 "(also with a single seed: no interval). A row whose K, d or mu differs from the paper's "
                 f"setting gets `{DIFFERENT_SETTING}` (which, and the paper's value) instead of a verdict. "
                 "`protocol`: whose training protocol the row ran (ours, the default or the tuned rows of a "
                 "tuned sweep, or the paper's own, run by a sweep of its own).")
    return "\n".join(lines)
