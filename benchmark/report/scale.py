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
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark import paths
from benchmark.report.leaderboard import (
    ALPHA, BOOTSTRAP, BOOTSTRAP_SEED, CONSTRAINT, UTILIZATION_FLOOR, constrained_ranks,
)
from benchmark.report.stats import done_rows
from benchmark.report.tables import FACTOR_LABELS, fmt_value, markdown_table, method_order, read_table

METRIC = "quantization_error"
TAU_ALIKE = 0.6
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
    keys = [c for c in ("dataset", "dataset_options.mean", "dim") if c in table.columns and table[c].nunique() > 1]
    if not keys:
        return {"": table}
    return {", ".join(f"{FACTOR_LABELS.get(k, k)} {fmt_value(v)}" for k, v in zip(keys, key if isinstance(key, tuple)
                                                                                   else (key,))): rows
            for key, rows in table.groupby(keys, sort=True)}


def _bootstrap_ranks(values: np.ndarray, util: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    idx = rng.integers(0, len(values), size=(count, len(values)))
    return constrained_ranks(values[idx].mean(axis=1), util[idx].mean(axis=1), "min")


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
            common = method_order(set(a_val.dropna(axis=1).columns) & set(b_val.dropna(axis=1).columns))
            if len(common) < 3:
                continue
            a = (a_val[common].dropna().to_numpy(), a_u[common].reindex(a_val[common].dropna().index).to_numpy())
            b = (b_val[common].dropna().to_numpy(), b_u[common].reindex(b_val[common].dropna().index).to_numpy())
            rank_a = constrained_ranks(a[0].mean(axis=0), a[1].mean(axis=0), "min")
            rank_b = constrained_ranks(b[0].mean(axis=0), b[1].mean(axis=0), "min")
            tau = float(sps.kendalltau(rank_a, rank_b).statistic)
            boot_a = _bootstrap_ranks(*a, rng, bootstrap)
            boot_b = _bootstrap_ranks(*b, rng, bootstrap)
            taus = np.array([sps.kendalltau(x, y).statistic for x, y in zip(boot_a, boot_b)], dtype=float)
            taus = taus[np.isfinite(taus)]
            low, high = np.quantile(taus, [ALPHA / 2, 1 - ALPHA / 2]) if len(taus) else (math.nan, math.nan)
            out.append(Step(small, large, setting, tuple(common), tau, float(low), float(high)))
    return out


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


def scale_section(params_path: Path) -> str:
    """The report's scale-ladder section (empty when the profile or its tables are absent)."""
    from benchmark.pipeline.spec import load_params

    if not params_path.exists():
        return ""
    params = load_params(params_path)
    rungs = load_rungs(params, params_path.resolve().parent)
    if all(table is None for table in rungs.values()):
        return ""
    lines = ["## Scale ladder: do small runs rank like large ones?", "",
             f"Profile `{params_path.name}` (not part of `dvc repro`; its own MLflow store, tables committed "
             "beside this report). Methods ranked per rung and setting by E under U >= "
             f"{UTILIZATION_FLOOR:.0%} (as the leaderboard; within a rung E orders methods as E / k-means does); "
             "Kendall's tau-b between adjacent rungs over the methods finished at both, 95% interval over "
             f"{BOOTSTRAP} seed resamples per rung. Verdict: alike when tau >= {TAU_ALIKE} and the interval "
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
    steps = ladder_steps(rungs)
    if not steps:
        return "\n".join(lines + ["No two adjacent rungs share 3 finished methods in one setting: no tau.", ""])
    lines += [markdown_table(["smaller rung", "larger rung", "setting", "methods", "tau [95%]", "verdict"],
                             [[s.small, s.large, s.setting or "-", str(len(s.methods)),
                               f"{s.tau:.2f} [{s.low:.2f}, {s.high:.2f}]", s.verdict] for s in steps]), ""]
    alike = [s for s in steps if s.verdict == "alike"]
    unlike = [s for s in steps if s.verdict != "alike"]
    if not unlike:
        lines.append("Small runs rank like larger ones here: " + "; ".join(
            f"{s.small} -> {s.large} ({s.setting}) tau = {s.tau:.2f}" for s in steps) + ".")
    else:
        lines.append("Small runs do not rank like larger ones everywhere here: "
                     + "; ".join(f"{s.small} -> {s.large} ({s.setting}): tau = {s.tau:.2f} [{s.low:.2f}, "
                                 f"{s.high:.2f}], {s.verdict}" for s in unlike)
                     + (". Alike: " + "; ".join(f"{s.small} -> {s.large} ({s.setting}) tau = {s.tau:.2f}"
                                               for s in alike) if alike else "") + ".")
    return "\n".join(lines + [""])
