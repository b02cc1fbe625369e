"""Scale ladder: do small runs rank quantizers like larger ones?

``params-scale.yaml`` (outside ``dvc repro``) runs the same methods and settings at growing scale,
one sweep per rung, in file order; its exported tables are committed under its ``results_dir``.
Per rung and setting (a grid point without ``method`` and ``seed``) the methods are ranked as in the
leaderboard (:func:`benchmark.report.leaderboard.constrained_ranks`: U >= 90% first, then E, which
orders the methods of one rung as E / k-means does: one reference per distribution and K). Between
adjacent rungs, Kendall's tau-b (``scipy.stats.kendalltau``) of the two rankings over the methods
finished at both; its interval is the 95% percentile interval over bootstrap resamples of the seeds,
drawn independently for each rung (different runs) and shared by the methods of one rung (paired).

The verdict, stated either way: the rungs rank alike when tau >= :data:`TAU_ALIKE` and its interval
excludes 0; they do not when the interval includes 0 or tau < 0; anything else is partial agreement.

Against the paper scale (:func:`paper_steps`): every rung and every sweep of the report is ranked the
same way in each (distribution, mu) cell that the reproduction's paper file publishes (the authors'
final E and U at the scale of ``params-reproduce.yaml``, one run per cell), over the methods both
have, and compared with the paper's ranking of those methods by the same rule; the interval resamples
our seeds only (the paper's single runs have no spread to resample), so it understates the
paper side's own noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from benchmark import paths
from benchmark.metric_registry import FIT
from benchmark.report.leaderboard import (
    ALPHA, BOOTSTRAP, BOOTSTRAP_SEED, CONSTRAINT, UTILIZATION_FLOOR, constrained_ranks, ranked_rows,
)
from benchmark.report.reproduce import PAPER_FILE, Paper, load_paper
from benchmark.report.stats import done_rows
from benchmark.report.tables import (
    FACTOR_LABELS, PROTOCOL, factor_columns, fmt_value, markdown_table, method_order, read_table,
)

METRIC = "quantization_error"
TAU_ALIKE = 0.6
LADDER_FACTOR = "dataset_options.mean"  # the ladder's settings: a rung's tables always split by it (rungs may miss one)
RUNG_FIELDS = (("codebook_size", "K"), ("steps", "steps"), ("batch_size", "batch"), ("eval_size", "eval"))


@dataclass(frozen=True)
class Step:
    """Kendall's tau between two adjacent rungs in one setting."""

    small: str
    large: str
    setting: str
    methods: tuple[str, ...]
    tau: float
    low: float
    high: float
    close_pairs: int | None = None  # against the paper: its method pairs with E closer than the reproduction's tolerance

    @property
    def verdict(self) -> str:
        if not math.isfinite(self.tau):
            return "undefined"
        if self.tau >= TAU_ALIKE and self.low > 0:
            return "alike"
        if self.low <= 0 <= self.high or self.tau < 0:
            return "not alike"
        return "partly"


def _values(table: pd.DataFrame, column: str) -> pd.DataFrame:
    frame = pd.DataFrame({"seed": table["seed"], "method": table["method"].astype(str),
                          "value": pd.to_numeric(table[column], errors="coerce")})
    return frame.pivot_table(index="seed", columns="method", values="value", aggfunc="mean")


def _settings(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    keys = [c for c in ("dataset", "dataset_options.mean", "dim") if c in table.columns
            and (table[c].nunique() > 1 or c == LADDER_FACTOR)]
    if not keys:
        return {"": table}
    return {", ".join(f"{FACTOR_LABELS.get(k, k)} {fmt_value(v)}" for k, v in zip(keys, key if isinstance(key, tuple)
                                                                                   else (key,))): rows
            for key, rows in table.groupby(keys, sort=True)}


def _bootstrap_ranks(values: np.ndarray, util: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    idx = rng.integers(0, len(values), size=(count, len(values)))
    return constrained_ranks(values[idx].mean(axis=1), util[idx].mean(axis=1), "min")


def _finished(values: pd.DataFrame) -> set[str]:
    """The methods with a value at some seed."""
    return set(values.columns[values.notna().any(axis=0)])


def _seed_matrices(values: pd.DataFrame, util: pd.DataFrame, methods: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(E, U) as seeds x methods arrays over the seeds with a value for every method (none: empty)."""
    kept = values[list(methods)].dropna()
    return kept.to_numpy(dtype=float), util[list(methods)].reindex(kept.index).to_numpy(dtype=float)


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b along the last axis of two score arrays (batched; NaN where one side is all tied):
    tau_b = sum_{i<j} sign(x_i - x_j) sign(y_i - y_j) / sqrt((n0 - t_x)(n0 - t_y)), n0 = n(n-1)/2 and
    t_x, t_y the tied pairs; scipy.stats.kendalltau's statistic, O(n^2) per row (n: a handful of methods)."""
    x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    upper = np.triu(np.ones(x.shape[-1:] * 2, dtype=bool), k=1)
    concordance = (sx * sy)[..., upper].sum(axis=-1)
    untied_x = (sx != 0)[..., upper].sum(axis=-1)
    untied_y = (sy != 0)[..., upper].sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return concordance / np.sqrt(untied_x * untied_y)


def _tau(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], rng: np.random.Generator,
         bootstrap: int) -> tuple[float, float, float]:
    """Kendall's tau-b between the rankings of the seed means of ``a`` and ``b`` (each (E, U), seeds x
    methods) and its percentile interval over seed resamples drawn independently for ``a`` and ``b``
    (a one-row side, a single run, is the same in every resample)."""
    rank_a = constrained_ranks(a[0].mean(axis=0), a[1].mean(axis=0), "min")
    rank_b = constrained_ranks(b[0].mean(axis=0), b[1].mean(axis=0), "min")
    tau = float(kendall_tau_b(rank_a, rank_b))
    taus = kendall_tau_b(_bootstrap_ranks(*a, rng, bootstrap), _bootstrap_ranks(*b, rng, bootstrap))
    taus = taus[np.isfinite(taus)]
    low, high = np.quantile(taus, [ALPHA / 2, 1 - ALPHA / 2]) if len(taus) else (math.nan, math.nan)
    return tau, float(low), float(high)


def ladder_steps(rungs: Mapping[str, pd.DataFrame | None], bootstrap: int = BOOTSTRAP) -> list[Step]:
    """Kendall's tau between each pair of adjacent rungs (dict order; a rung without a table, None,
    breaks the ladder there), per setting."""
    names = list(rungs)
    out = []
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    for small, large in zip(names, names[1:]):
        if rungs[small] is None or rungs[large] is None:
            continue
        a_settings, b_settings = _settings(done_rows(rungs[small])), _settings(done_rows(rungs[large]))
        for setting in [s for s in a_settings if s in b_settings]:
            a_val, b_val = _values(a_settings[setting], METRIC), _values(b_settings[setting], METRIC)
            a_u, b_u = _values(a_settings[setting], CONSTRAINT), _values(b_settings[setting], CONSTRAINT)
            common = method_order(_finished(a_val) & _finished(b_val))
            a, b = _seed_matrices(a_val, a_u, common), _seed_matrices(b_val, b_u, common)
            if len(common) < 3 or not len(a[0]) or not len(b[0]):
                continue
            tau, low, high = _tau(a, b, rng, bootstrap)
            out.append(Step(small, large, setting, tuple(common), tau, low, high))
    return out


def paper_steps(sources: Mapping[str, pd.DataFrame | None], paper: Paper, label: str = "paper scale",
                bootstrap: int = BOOTSTRAP) -> list[Step]:
    """Kendall's tau between each source table's ranking and the paper-scale cells' ranking, per cell.

    A cell is a (distribution, mu) the paper file publishes; a source's rows in it are its ranked
    rows (:func:`~benchmark.report.leaderboard.ranked_rows`: the tuned ones where the sweep tunes)
    of one ``fit`` setting (its other varying params, e.g. K, split it further) on that distribution
    and mean, with one row per method and seed. Methods: those finished in the source and published
    for the cell (at least 3). Both sides are ranked by E under U >= the floor; the interval
    resamples the source's seeds (the paper's cells are one run each, fixed)."""
    out = []
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    cells = {(dist, mu) for dist, mu, _ in paper.results}
    for name, table in sources.items():
        if table is None or table.empty or not {"dataset", "method", "seed", METRIC, CONSTRAINT} <= set(table.columns):
            continue
        data = ranked_rows(table)
        if "experiment" in data.columns:
            data = data[data["experiment"].astype(str) == FIT]
        if data.empty:
            continue
        mean = pd.to_numeric(data["dataset_options.mean"], errors="coerce") if "dataset_options.mean" in data.columns \
            else pd.Series(0.0, index=data.index)
        data = data.assign(_dist=data["dataset"].astype(str), _mu=mean.astype(float))
        others = [c for c in factor_columns(data, data.attrs.get("not_factors", ()))
                  if c not in ("method", PROTOCOL, "dataset", "dataset_options.mean")]
        keys = ["_dist", "_mu", *others]
        for key, rows in data.groupby(keys, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            dist, mu = str(key[0]), float(key[1])
            if (dist, mu) not in cells or rows.duplicated(["method", "seed"]).any():
                continue
            published = {m for d, u, m in paper.results if (d, u) == (dist, mu)}
            values, util = _values(rows, METRIC), _values(rows, CONSTRAINT)
            common = method_order(_finished(values) & published)
            ours = _seed_matrices(values, util, common)
            if len(common) < 3 or not len(ours[0]):
                continue
            theirs = (np.array([[paper.results[(dist, mu, m)][METRIC] for m in common]]),
                      np.array([[paper.results[(dist, mu, m)][CONSTRAINT] for m in common]]))
            tau, low, high = _tau(ours, theirs, rng, bootstrap)
            close = _close_pairs(theirs[0][0], theirs[1][0], paper.tolerance[METRIC])
            setting = ", ".join([f"{dist}, mu {fmt_value(mu)}",
                                 *(f"{FACTOR_LABELS.get(c, c)} {fmt_value(v)}" for c, v in zip(others, key[2:]))])
            out.append(Step(name, label, setting, tuple(common), tau, low, high, close))
    return out


def _close_pairs(values: np.ndarray, utilization: np.ndarray, tolerance: float) -> int:
    """How many method pairs of one published cell, on the same side of the U floor, differ in E by no
    more than ``tolerance`` (the reproduction's target): pairs whose order one run does not settle."""
    upper = np.triu_indices(len(values), k=1)
    gaps = np.abs(values[:, None] - values[None, :])[upper]
    meets = utilization >= UTILIZATION_FLOOR
    same_side = (meets[:, None] == meets[None, :])[upper]
    return int(((gaps <= tolerance) & same_side).sum())


def load_rungs(params: Mapping[str, Any], root: Path) -> dict[str, pd.DataFrame | None]:
    """Every rung's table in file order (None: the rung has no table)."""
    results = root / ((params.get("tracking") or {}).get("results_dir") or paths.RESULTS_DIR)
    return {name: read_table(results / name / paths.TABLE_FILE) if (results / name / paths.TABLE_FILE).exists()
            else None for name in params.get("sweeps") or {}}


def _rung_text(table: pd.DataFrame) -> str:
    done = done_rows(table)
    parts = [f"{label} " + "/".join(fmt_value(v) for v in sorted(done[c].dropna().unique()))
             for c, label in RUNG_FIELDS if c in done.columns]
    return ", ".join(parts)


def _verdict_line(steps: Sequence[Step], alike_text: str, unlike_text: str) -> str:
    """The answer, stated either way: every step alike, or the steps that are not (and those that are)."""
    alike = [s for s in steps if s.verdict == "alike"]
    unlike = [s for s in steps if s.verdict != "alike"]
    if not unlike:
        return f"{alike_text}: " + "; ".join(f"{s.small} -> {s.large} ({s.setting}) tau = {s.tau:.2f}"
                                             for s in steps) + "."
    return (f"{unlike_text}: " + "; ".join(f"{s.small} -> {s.large} ({s.setting}): tau = {s.tau:.2f} "
                                           f"[{s.low:.2f}, {s.high:.2f}], {s.verdict}" for s in unlike)
            + (". Alike: " + "; ".join(f"{s.small} -> {s.large} ({s.setting}) tau = {s.tau:.2f}" for s in alike)
               if alike else "") + ".")


def _steps_table(steps: Sequence[Step], first: str, second: str) -> str:
    return markdown_table([first, second, "setting", "methods", "tau [95%]", "verdict"],
                          [[s.small, s.large, s.setting or "-", str(len(s.methods)),
                            f"{s.tau:.2f} [{s.low:.2f}, {s.high:.2f}]", s.verdict] for s in steps])


def paper_scale_text(reproduce_params: Path) -> str:
    """The reproduction profile's scale as "K 16384, 2000 steps" (its base), "" without the file."""
    from benchmark.pipeline.spec import load_params

    if not reproduce_params.exists():
        return ""
    base = load_params(reproduce_params).get("base") or {}
    return ", ".join(f"{label} {fmt_value(base[c])}" for c, label in RUNG_FIELDS if c in base)


def paper_section(sources: Mapping[str, pd.DataFrame | None], root: Path, paper_file: Path = PAPER_FILE,
                  bootstrap: int = BOOTSTRAP) -> list[str]:
    """The lines comparing the rankings of ``sources`` (ladder rungs, the report's sweeps) with the
    paper-scale cells (empty when no source shares 3 methods with a published cell)."""
    paper = load_paper(paper_file)
    scale = paper_scale_text(root / paths.REPRODUCE_PARAMS_FILE)
    steps = paper_steps(sources, paper, bootstrap=bootstrap)
    if not steps:
        return []
    return ["### Against the paper-scale cells", "",
            f"{paper.title} ({paper.reference}): the authors' published final E and U, one run per cell"
            + (f" ({scale}; `{paths.REPRODUCE_PARAMS_FILE}` reruns them, `reproduce.md` compares)" if scale else "")
            + ". Each source (a ladder rung, or a sweep of this report with its tuned rows where it tunes) is "
            "ranked per cell as above over the methods it shares with the published cell; tau-b against the "
            "paper's ranking, 95% interval over resamples of the source's seeds (the paper's runs fixed).", "",
            markdown_table(["source", "against", "setting", "methods", "paper pairs within tolerance", "tau [95%]",
                            "verdict"],
                           [[s.small, s.large, s.setting, str(len(s.methods)),
                             f"{s.close_pairs} of {len(s.methods) * (len(s.methods) - 1) // 2}",
                             f"{s.tau:.2f} [{s.low:.2f}, {s.high:.2f}]", s.verdict] for s in steps]), "",
            f"Paper pairs within tolerance: the published cell's method pairs on the same side of the U floor "
            f"whose E differ by at most "
            f"{paper.tolerance[METRIC]:g} (the reproduction's target), an order a single run does not settle; "
            "where they are many, a low tau says little about scale.", "",
            _verdict_line(steps, "Our runs rank like the paper-scale cells here",
                          "Our runs do not rank like the paper-scale cells everywhere here"), ""]


def scale_section(params_path: Path, tables: Mapping[str, pd.DataFrame] | None = None,
                  bootstrap: int = BOOTSTRAP) -> str:
    """The report's scale-ladder section (empty when the profile or its tables are absent); with
    ``tables`` (the report's sweep tables) it also compares them with the paper-scale cells."""
    from benchmark.pipeline.spec import load_params

    if not params_path.exists():
        return ""
    params = load_params(params_path)
    root = params_path.resolve().parent
    rungs = load_rungs(params, root)
    if all(table is None for table in rungs.values()):
        return ""
    lines = ["## Scale ladder: do small runs rank like large ones?", "",
             f"Profile `{params_path.name}` (not part of `dvc repro`; its own MLflow store, tables committed "
             "beside this report). Methods ranked per rung and setting by E under U >= "
             f"{UTILIZATION_FLOOR:.0%} (as the leaderboard; within a rung E orders methods as E / k-means does); "
             "Kendall's tau-b between adjacent rungs over the methods finished at both, 95% interval over "
             f"{bootstrap} seed resamples per rung. Verdict: alike when tau >= {TAU_ALIKE} and the interval "
             "excludes 0; not alike when it includes 0 or tau < 0; else partly.", ""]
    rows = []
    for name, table in rungs.items():
        if table is None:
            rows.append([name, "not run (no table)", "0", "-", "-"])
            continue
        done = done_rows(table)
        rows.append([name, _rung_text(table), str(len(done)), str(len(table) - len(done)),
                     ", ".join(method_order(done["method"].astype(str).unique()))])
    lines += ["Rungs (file order):", "",
              markdown_table(["rung", "scale", "finished trials", "other trials", "methods"], rows), ""]
    steps = ladder_steps(rungs, bootstrap)
    if not steps:
        lines += ["No two adjacent rungs share 3 finished methods in one setting: no tau.", ""]
    else:
        lines += [_steps_table(steps, "smaller rung", "larger rung"), "",
                  _verdict_line(steps, "Small runs rank like larger ones here",
                                "Small runs do not rank like larger ones everywhere here"), ""]
    lines += paper_section({**rungs, **(tables or {})}, root, bootstrap=bootstrap)
    return "\n".join(lines)
