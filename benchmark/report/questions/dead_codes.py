"""The related ablation: dead-code strategies vs distribution matching on the atomic mean shift."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from benchmark.report.stats import Estimate, compare_pairs, done_rows
from benchmark.report.tables import sort_key
from benchmark.report.questions._common import (
    COLLAPSED, DEFAULT_SWEEPS, FULL_USE, GAUSSIAN_W, KEY_METRIC, _cells, _gap_text, _join, _missing, _setting,
    _table_block, _values,
)


@dataclass(frozen=True)
class ShiftFinding:
    """One mean shift mu of the ablation: U (percent) and E / k-means of every method, the lowest E."""

    mu: float
    usage: dict[str, Estimate]
    error: dict[str, Estimate]
    best: str
    full: list[str]  # U >= FULL_USE
    collapsed: list[str]  # U <= COLLAPSED
    tied_best: list[str]  # not resolved from the best (Holm over every test of the ablation)
    verdicts: dict[str, str]  # method -> its paired test against the best: lower / higher / unresolved


def dead_code_findings(table: pd.DataFrame, confidence: float = 0.95) -> list[ShiftFinding]:
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
        by_name = sorted(u.items(), key=lambda kv: sort_key(kv[0]))
        findings.append(ShiftFinding(
            mu=float(mu), usage=u, error=err, best=best,
            full=[m for m, e in by_name if e.mean >= FULL_USE],
            collapsed=[m for m, e in by_name if e.mean <= COLLAPSED],
            # the best is picked after the fact: it is resolved from another method only when the paired
            # test survives Holm's correction over all the tests of the ablation
            tied_best=[m for m in sorted(others, key=sort_key) if family[mu, m][0] == "unresolved"],
            verdicts={m: family[mu, m][0] for m in others},
        ))
    return findings


def _dead_code_text(findings: Sequence[ShiftFinding]) -> list[str]:
    lines = []
    for f in findings:
        best = f.best
        text = (f"- **mu = {f.mu:g}**: full use (U >= {FULL_USE:g}%): " + _join([f"`{m}`" for m in f.full])
                + f"; collapsed (U <= {COLLAPSED:g}%): " + _join([f"`{m}`" for m in f.collapsed])
                + f"; lowest E / k-means `{best}` {f.error[best].text()}")
        if f.tied_best:
            text += (" (not resolved, paired tests Holm-corrected over every test of the ablation, from "
                     + _join([f"`{m}` {f.error[m].text()}" for m in f.tied_best]) + ")")
        lines.append(text + ".")
    return lines


def dead_code_answer(findings: Sequence[ShiftFinding]) -> str:
    if not findings:
        return ""
    methods = sorted({m for f in findings for m in f.usage}, key=sort_key)
    always = [m for m in methods if all(m in f.full for f in findings)]
    ever_collapsed = [m for m in methods if any(m in f.collapsed for f in findings)]
    worst = max(findings, key=lambda f: f.mu)
    partial = [m for m in methods if m not in always and m not in ever_collapsed]
    text = (f"**Summary:** full codebook use at every mu measured: {_join([f'`{m}`' for m in always])}; "
            f"collapsed at some mu: {_join([f'`{m}`' for m in ever_collapsed])}; partly used (between "
            f"{COLLAPSED:g}% and {FULL_USE:g}%) at some mu, never collapsed: {_join([f'`{m}`' for m in partial])}. "
            "At the largest shift "
            f"(mu = {worst.mu:g}) the lowest E / k-means is `{worst.best}` "
            f"{worst.error[worst.best].text()}")
    if GAUSSIAN_W in worst.error and worst.best != GAUSSIAN_W:
        w = worst.error[GAUSSIAN_W]
        text += (f"; the Gaussian W loss (`{GAUSSIAN_W}`) {w.text()}: "
                 f"{_gap_text(w, worst.error[worst.best])} relative to it, "
                 + {"higher": "resolved", "lower": "resolved", "unresolved": "not resolved"}[
                     worst.verdicts[GAUSSIAN_W]] + " (same Holm family)")
    return text + "."


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
