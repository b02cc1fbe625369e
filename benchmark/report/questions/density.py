"""Question 2: the error-optimal codebook density. The density map (best covariance scale c per
(d, K)) and the three-point comparison (plain f, Gersho's f^(d/(d+2)), Theorem 2's f^((d+2)/d)); all
their tests are one Holm family (:func:`question_two_family`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from benchmark.report.figures import density_map_figure, grouped_figure
from benchmark.report.stats import Estimate, compare_pairs, done_rows, estimate, paired_difference
from benchmark.report.questions._common import (
    DEFAULT_EXPONENT, DEFAULT_SWEEPS, DENSITY_METHOD, GAUSSIAN_CONTROL, GAUSSIAN_W, KEY_METRIC, TARGET_LABELS,
    _cells, _figure_lines, _finite_groups, _gap_text, _join, _missing, _setting, _table_block, _values,
)


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


@dataclass(frozen=True)
class LowDFinding:
    """One d of the three-point comparison: every target's E / k-means, the lowest, each target's
    verdict against plain matching (None without plain matching)."""

    dim: int
    cells: dict[str, Estimate]  # target -> E / k-means
    best: str
    codes_per_dim: float  # K^(1/d); NaN where the rows mix K
    vs_plain: dict[str, str] | None = None  # target -> lower / higher / unresolved


def low_d_findings(table: pd.DataFrame, confidence: float = 0.95,
                   verdicts: Mapping[tuple, tuple[str, float]] | None = None) -> list[LowDFinding]:
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
        vs_plain = {t: verdicts[("low_d", int(dim), t)][0] for t in here if t != "plain"} if "plain" in here else None
        findings.append(LowDFinding(int(dim), here, best, per_dim, vs_plain))
    return findings


def _low_d_text(findings: Sequence[LowDFinding]) -> list[str]:
    lines = []
    for f in findings:
        d = f.dim
        cells = f.cells
        parts = [f"{TARGET_LABELS.get(t, t)} (c = {target_scale(t, d):.3g}): {e.text()}" for t, e in
                 sorted(cells.items(), key=lambda kv: target_scale(kv[0], d))]
        per_dim = f.codes_per_dim
        per_dim = f" (K^(1/d) = {per_dim:.1f} codes per dimension)" if math.isfinite(per_dim) else ""
        text = (f"- **d = {d}**{per_dim}: E / k-means " + "; ".join(parts)
                + f". Lowest: {TARGET_LABELS.get(f.best, f.best)}")
        if f.vs_plain is not None:
            rel = [f"{TARGET_LABELS.get(t, t)} {_gap_text(cells[t], cells['plain'])} vs plain"
                   for t in f.vs_plain]
            text += " (" + "; ".join(rel) + ")"
        lines.append(text + ".")
    return lines


def low_d_answer(findings: Sequence[LowDFinding]) -> str:
    compared = [f for f in findings if f.vs_plain is not None]
    if not compared:
        return "**Answer:** cannot tell: plain matching (`wasserstein`) is missing from the low-d tables."
    parts = []
    for target in ("gersho", "paper"):
        have = [f for f in compared if target in f.vs_plain]
        if not have:
            continue
        label = TARGET_LABELS[target]
        lower = [str(f.dim) for f in have if f.vs_plain[target] == "lower"]
        higher = [str(f.dim) for f in have if f.vs_plain[target] == "higher"]
        tie = [str(f.dim) for f in have if f.vs_plain[target] == "unresolved"]
        bits = []
        if lower:
            bits.append("lowers E / k-means vs plain matching at d = " + _join(lower))
        if higher:
            bits.append("raises it at d = " + _join(higher))
        if tie:
            bits.append("is not resolved from it at d = " + _join(tie))
        parts.append(f"aiming the W loss at {label} " + ", ".join(bits))
    best = [f"d = {f.dim}: {TARGET_LABELS.get(f.best, f.best)}" for f in findings]
    text = "**Answer from these measurements:** " + "; ".join(parts) + ". Lowest E / k-means per d: " \
        + ", ".join(best) + "."
    paper = [f for f in compared if "paper" in f.vs_plain]
    if paper and all(f.vs_plain["paper"] == "higher" for f in paper):
        text += (" Theorem 2's exponent, as stated, makes the codebook worse than plain matching at every d "
                 f"of these sweeps (d = {_join([str(f.dim) for f in paper])}); see the density map for "
                 "larger d, where the finite-K centroid shrinkage can make a narrower codebook better.")
    gersho = [f for f in compared if "gersho" in f.vs_plain]
    better = [f for f in gersho if f.vs_plain["gersho"] == "lower"]
    if better:
        where = _join([f"d = {f.dim}" + (f" ({f.codes_per_dim:.1f} codes per dimension)"
                                            if math.isfinite(f.codes_per_dim) else "")
                       for f in better])
        text += f" So yes: matching f exactly is not error-optimal at {where}."
    return text


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


@dataclass(frozen=True)
class ScaleFinding:
    """One (d, K) of the density map (see :func:`best_scale_findings` for each field's meaning)."""

    dim: int
    codebook_size: int
    codes_per_dim: float  # K^(1/d)
    cells: dict[float, Estimate]  # c -> E / k-means
    best: float  # the argmin c
    best_est: Estimate
    low: float  # the run of c not resolved from the best
    high: float
    bracket: tuple[float, float]  # the first resolved-worse c on each side (-inf / inf at the edge)
    edge: bool  # the best c is the grid's first or last
    neighbours: dict[float, Estimate]  # the adjacent c -> paired difference (neighbour - best)
    shrinkage: Estimate  # 1 - E_kmeans / (d var), one value per seed
    references: dict[str, float]  # paper / gersho / shrinkage -> c
    inside: list[str]  # the references inside the bracket
    closest: str | None  # the reference nearest the best c (log scale)
    plain: str | None  # c = 1 against the best: lower / higher / unresolved (None: c = 1 is the best or absent)


def best_scale_findings(table: pd.DataFrame, confidence: float = 0.95,
                        verdicts: Mapping[tuple, tuple[str, float]] | None = None) -> list[ScaleFinding]:
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
        findings.append(ScaleFinding(
            dim=dim, codebook_size=size, codes_per_dim=size ** (1.0 / dim), cells=cells,
            best=best, best_est=cells[best], low=low, high=high, bracket=(below, above),
            edge=len(grid) > 1 and best in (grid[0], grid[-1]), neighbours=neighbours,
            shrinkage=shrink, references=references,
            inside=[k for k, v in references.items() if math.isfinite(v) and below < v < above],
            closest=min(distance, key=distance.get) if distance else None,
            plain=verdicts[("map", dim, size, 1.0)][0] if 1.0 in cells and best != 1.0 else None,
        ))
    return findings


REFERENCE_LABELS = {"paper": "d/(d+2) (Theorem 2 as Wasserstein VQ states it)", "gersho": "(d+2)/d (Gersho)",
                    "shrinkage": "centroid shrinkage 1 - E_km/(d var)"}


def _diff_text(diff: Estimate) -> str:
    if not math.isfinite(diff.mean):
        return "-"
    return f"{diff.mean:+.3f}" + (f" ± {diff.half:.3f}" if math.isfinite(diff.half) else "")


def _bound(value: float) -> str:
    return "-inf" if value == -math.inf else "inf" if value == math.inf else f"{value:g}"


def best_scale_table(findings: Sequence[ScaleFinding]) -> list[str]:
    """Markdown table: one row per (K, d)."""
    lines = ["| K | d | K^(1/d) | best c | E / k-means at best c | c not resolved from best, in (bracket) | "
             "paired diff. (neighbour - best) lower / upper | d/(d+2) | (d+2)/d | shrinkage 1 - E_km/(d var) | "
             "closest |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in sorted(findings, key=lambda f: (f.codebook_size, f.dim)):
        below = [c for c in f.neighbours if c < f.best]
        above = [c for c in f.neighbours if c > f.best]
        neighbour = " / ".join(f"c {c:g}: {_diff_text(f.neighbours[c])}" if c in f.neighbours else "-"
                               for c in (below[0] if below else None, above[0] if above else None))
        refs = f.references
        best = f"{f.best:g}" + (" (grid edge)" if f.edge else "")
        lines.append(
            f"| {f.codebook_size} | {f.dim} | {f.codes_per_dim:.2f} | {best} | {f.best_est.text()} | "
            f"{f.low:g} - {f.high:g} in ({_bound(f.bracket[0])}, {_bound(f.bracket[1])}) | {neighbour} | {refs['paper']:.3g} | {refs['gersho']:.3g} | "
            f"{f.shrinkage.text()} | {f.closest or '-'} |")
    return lines


def _plain_words(findings: Sequence[ScaleFinding]) -> str:
    """The plain-language reading of the map; every clause is conditional on the findings."""
    from scipy import stats

    words = []
    bests = {round(f.best, 9) for f in findings}
    if len(bests) == 1:
        words.append(f"one target scale, c = {findings[0].best:g}, is best in every cell measured")
    else:
        words.append("no single target scale (so no single exponent) is best in every cell measured")
    if len(findings) >= 3 and len(bests) > 1:
        rho = stats.spearmanr([f.codes_per_dim for f in findings], [f.best for f in findings]).statistic
        if math.isfinite(rho) and rho > 0:
            words.append(f"the best c grows with the number of codes per dimension K^(1/d) (Spearman {rho:.2f}), "
                         "towards Gersho's (d+2)/d: wider than the features when codes are dense")
        elif math.isfinite(rho) and rho < 0:
            words.append(f"the best c falls as K^(1/d) grows (Spearman {rho:.2f}), against high-resolution theory")
    narrow = [f for f in findings if f.bracket[1] <= 1.0]
    explained = [f for f in narrow if "shrinkage" in f.inside or f.closest == "shrinkage"]
    if narrow and len(explained) == len(narrow):
        words.append("where the optimum is narrower than the features, the centroid shrinkage "
                     "1 - E_km/(d var) accounts for it (a codebook of cell means sits inside the features by "
                     "about its own error per coordinate)")
    paper = [f for f in findings if "paper" in f.inside]
    if paper:
        also = [f for f in paper if "shrinkage" in f.inside]
        text = (f"d/(d+2) is inside the bracket of the optimum in {len(paper)} of {len(findings)} cells")
        if also and len(also) == len(paper):
            text += (", each time together with the shrinkage prediction: it is near the optimum where the "
                     "finite-K shrinkage happens to be about 2/(d+2), not as an asymptotic density")
        words.append(text)
    else:
        words.append("d/(d+2) is outside the bracket of the optimum in every cell")
    return "; ".join(words) + "."


def density_map_answer(findings: Sequence[ScaleFinding]) -> str:
    """Plain-language answer computed from :func:`best_scale_findings`."""
    if not findings:
        return "**Answer:** cannot tell: no finished trial of the density map."

    def where(items):
        return _join([f"d = {f.dim}, K = {f.codebook_size} ({f.codes_per_dim:.1f} codes per dimension)"
                      for f in sorted(items, key=lambda f: f.codes_per_dim)])

    narrow = [f for f in findings if f.bracket[1] <= 1.0]
    wide = [f for f in findings if f.bracket[0] >= 1.0]
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
    ranked = sorted(findings, key=lambda f: f.codes_per_dim)
    text += (" Best c by resolution (codes per dimension K^(1/d)): "
             + ", ".join(f"{f.codes_per_dim:.1f} -> {f.best:g}" for f in ranked) + ".")
    counts = []
    for key in ("paper", "gersho", "shrinkage"):
        hits = [f for f in findings if key in f.inside]
        closest = [f for f in findings if f.closest == key]
        counts.append(f"{REFERENCE_LABELS[key]} lies inside the bracket of the optimum in {len(hits)} of "
                      f"{len(findings)} cells and is the closest of the three in {len(closest)}")
    text += " " + "; ".join(counts) + "."
    edge = [f for f in findings if f.edge]
    if edge:
        text += (" The best c is at the edge of the grid at " + where(edge)
                 + ": the optimum there may lie beyond the values measured.")
    plain = [f for f in findings if f.plain == "higher"]
    if plain:
        text += " Plain matching (c = 1) is resolved worse than the best c at " + where(plain) + "."
    text += " In plain words: " + _plain_words(findings)
    return text


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
        + "/".join(f"{c:g}" for c in sorted({c for f in findings for c in f.cells})) + ". "
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
