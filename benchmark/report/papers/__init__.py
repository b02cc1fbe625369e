"""The papers' claims as data: one YAML file per paper in this folder, rendered by generic code.

A paper file holds ``paper``, ``reference``, ``thresholds`` (name -> ``{value, side}``: a claim
``expect``-ing ``full_use`` agrees when the whole 95% interval of our mean lies on that ``side``
of ``value``, differs when it lies wholly on the other side, else is ``unresolved``), optional
``sections`` (sweep -> report section title) and ``groups`` of ``claims``. A claim names the
sweep and the row that measure it (``method`` and ``where``: factor values), the ``metric``
column, the paper's value (text) and optionally ``scaled`` (an independent scaled-down
reference), ``paper_setting`` and ``expect``. Adding a paper = adding a file.
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
from benchmark.report.tables import FACTOR_LABELS, Summary, markdown_table, metric

PAPERS_DIR = Path(__file__).resolve().parent
COLUMN_TITLES = {"paper_setting": "paper setting", "paper": "paper", "scaled": "scaled reference"}


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
    sections: Mapping[str, str] = field(default_factory=dict)
    groups: tuple[ClaimGroup, ...] = ()


def load_paper(path: Path) -> Paper:
    data = yaml.safe_load(path.read_text()) or {}
    groups = tuple(
        ClaimGroup(g["title"], g.get("intro", ""), tuple(g.get("columns", ("paper",))),
                   tuple(Claim(**claim) for claim in g.get("claims", ())))
        for g in data.get("groups", ())
    )
    paper = Paper(data["paper"], data["reference"], data.get("thresholds", {}), data.get("sections", {}), groups)
    for group in groups:
        for claim in group.claims:
            if claim.expect and claim.expect not in paper.thresholds:
                raise ValueError(f"{path.name}: claim expects {claim.expect!r}; thresholds: {sorted(paper.thresholds)}")
    return paper


def load_papers(folder: Path = PAPERS_DIR) -> list[Paper]:
    """Every paper file of ``folder`` (sorted by file name)."""
    return [load_paper(path) for path in sorted(folder.glob("*.yaml"))]


def section_titles(papers: list[Paper]) -> dict[str, str]:
    titles: dict[str, str] = {}
    for paper in papers:
        titles.update(paper.sections)
    return titles


def select_row(summary: Summary, method: str, where: Mapping[str, Any]) -> pd.Series | None:
    """The summary row of ``method`` at the factor values ``where`` (None if absent or ambiguous)."""
    rows = summary.rows
    if "method" in summary.factors:
        rows = rows[rows["method"] == method]
    for key, value in where.items():
        if key not in rows.columns:
            return None
        rows = rows[np.isclose(pd.to_numeric(rows[key], errors="coerce"), float(value))]
    return rows.iloc[0] if len(rows) == 1 else None


def claim_verdict(paper: Paper, claim: Claim, mean: float, half: float) -> str:
    if not claim.expect:
        return "-"
    threshold = paper.thresholds[claim.expect]
    low, high = (mean - half, mean + half) if math.isfinite(half) else (math.nan, math.nan)
    return interval_verdict(low, high, float(threshold["value"]), threshold["side"])


def render_group(paper: Paper, group: ClaimGroup, summaries: Mapping[str, Summary],
                 settings: Mapping[str, str]) -> str | None:
    body = []
    for claim in group.claims:
        summary = summaries.get(claim.sweep)
        row = select_row(summary, claim.method, claim.where) if summary is not None else None
        if row is None:
            continue
        m = metric(claim.metric)
        mean, half = float(row[f"{m.column}_mean"]), float(row[f"{m.column}_half"])
        where = ", ".join(f"{FACTOR_LABELS.get(k, k)} {v}" for k, v in claim.where.items()) or "-"
        lead = [getattr(claim, c) for c in group.columns if c == "paper_setting"]
        values = [getattr(claim, c) for c in group.columns if c != "paper_setting"]
        body.append([*lead, claim.method, where, m.label, *values, format_cell(mean, half, m.digits),
                     claim_verdict(paper, claim, mean, half)])
    if not body:
        return None
    header = ([COLUMN_TITLES[c] for c in group.columns if c == "paper_setting"] + ["method", "row", "metric"]
              + [COLUMN_TITLES.get(c, c) for c in group.columns if c != "paper_setting"]
              + ["ours (mean ± 95% CI)", "verdict"])
    used = sorted({claim.sweep for claim in group.claims if claim.sweep in summaries})
    ours = "; ".join(f"`{name}`: {settings.get(name, '')}" for name in used)
    return "\n".join([f"**{group.title}** ({paper.name}, {paper.reference}). {group.intro} Ours: {ours}.", "",
                      markdown_table(header, body), ""])


def papers_section(papers: list[Paper], summaries: Mapping[str, Summary], settings: Mapping[str, str]) -> str:
    """The "Paper vs ours" section: one table per claim group whose sweep has results."""
    lines = []
    for paper in papers:
        for group in paper.groups:
            block = render_group(paper, group, summaries, settings)
            lines.append(block if block is not None else
                         f"**{group.title}** ({paper.name}): not checked, no results for its sweeps.\n")
    rules = sorted({(name, t["value"], t["side"]) for p in papers for name, t in p.thresholds.items()})
    lines.append("Verdict rule: " + "; ".join(f"`{name}` means U {'>=' if side == 'above' else '<='} {value:g}%"
                                              for name, value, side in rules)
                 + ". A claim `agrees` when the whole 95% interval of our mean lies on the paper's side of its "
                 "threshold, `differs` when it lies wholly on the other side, and is `unresolved` otherwise "
                 "(also with a single seed: no interval). Rows compare like with like: the same mu, K or "
                 "gamma as the paper's value.")
    return "\n".join(lines)
