"""Reproduction report: the Wasserstein-VQ authors' atomic experiment, paper vs ours.

``python -m benchmark report --reproduce [--params params-reproduce.yaml]`` (``make reproduce``
runs the sweep first) writes ``reports/reproduce.md``: for every (distribution, mu, method) the
authors published, their final E (quantization error, squared distance summed over d) and U
(utilization), ours from the exported table ``<results_dir>/reproduce/trials.csv`` (the mean
over the finished trials of that cell) and the absolute differences dE and dU, marked "ok" within
the tolerance of the paper file (|dE| <= 0.02, |dU| <= 1 point). Cells without a finished trial
say "not run"; a cell whose trials all failed says "failed". The ``draws`` column says whose random
draws a cell's runs saw: "theirs" (``random_stream: single``, the authors' stream replayed) or
"ours" (per-purpose streams), and the summary counts the cells within the target by draws.

The paper file names the profile's other sweeps. Seed sweeps (``seed_sweeps``) rerun cells with
more seeds: for those cells the report adds the range over every seed (the profile's own seed included) and marks an outside cell "in seed range"
when the authors' value lies within that range widened by the tolerance: a value our protocol
also produces, with another seed. ``seed-sensitive`` counts the outside cells whose seeds alone
spread by more than the tolerance: a one-seed target is finer than the experiment's own noise.
Variant sweeps (``variants``: sweep -> what it changes) run cells under other settings and get a
table each, compared with the same published numbers.

The authors' numbers are data: ``benchmark/report/papers/wasserstein_vq_atomic.yaml`` (see its
header for where they come from), read by :func:`load_paper`. The file also has the ``paper`` and
``reference`` keys of the claim files beside it (``benchmark.report.papers``) and no claim groups,
so the ablation report passes over it.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import yaml

from benchmark import paths
from benchmark.pipeline.spec import load_params, load_sweep

PAPER_FILE = Path(__file__).parent / "papers" / "wasserstein_vq_atomic.yaml"
METRICS = ("quantization_error", "utilization")


@dataclass(frozen=True)
class Paper:
    """The published numbers: ``results[(distribution, mu, method)] = {metric: value}``."""

    paper: str
    reference: str
    title: str
    source: str
    sweep: str
    tolerance: Mapping[str, float]
    results: Mapping[tuple[str, float, str], Mapping[str, float]]
    seed_sweeps: tuple[str, ...] = ()  # sweeps rerunning cells with more seeds (the range columns)
    variants: Mapping[str, str] = dataclasses.field(default_factory=dict)  # sweep -> what it changes
    findings: tuple[str, ...] = ()  # what we found out about the cells outside the target (measured)


def load_paper(path: str | Path = PAPER_FILE) -> Paper:
    """Read and check a paper file; ValueError naming the field on a malformed one."""
    with open(path) as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: must be a mapping")
    for key in ("paper", "reference", "title", "source", "sweep", "tolerance", "results"):
        if key not in data:
            raise ValueError(f"{key}: missing in {path}")
    tolerance = data["tolerance"]
    if not isinstance(tolerance, Mapping) or set(tolerance) != set(METRICS):
        raise ValueError(f"tolerance: must give exactly {list(METRICS)}, got {tolerance!r}")
    results: dict[tuple[str, float, str], dict[str, float]] = {}
    for distribution, methods in data["results"].items():
        for method, by_mu in methods.items():
            for mu, values in by_mu.items():
                where = f"results.{distribution}.{method}.{mu}"
                if not isinstance(values, Mapping) or set(values) != set(METRICS):
                    raise ValueError(f"{where}: must give exactly {list(METRICS)}, got {values!r}")
                results[(str(distribution), float(mu), str(method))] = {k: float(v) for k, v in values.items()}
    return Paper(
        paper=str(data["paper"]), reference=str(data["reference"]), title=str(data["title"]), source=str(data["source"]), sweep=str(data["sweep"]),
        tolerance={k: float(v) for k, v in tolerance.items()}, results=results,
        seed_sweeps=tuple(str(name) for name in data.get("seed_sweeps") or ()),
        variants={str(name): str(text) for name, text in (data.get("variants") or {}).items()},
        findings=tuple(str(text) for text in data.get("findings") or ()),
    )


def ours_by_cell(table: pd.DataFrame | None) -> dict[tuple[str, float, str], dict[str, Any]]:
    """Per (dataset, mean, method): the mean metrics over finished trials, their (min, max), and
    the trial counts."""
    cells: dict[tuple[str, float, str], dict[str, Any]] = {}
    if table is None or table.empty:
        return cells
    status = table["status"] if "status" in table.columns else pd.Series("finished", index=table.index)
    mean = table["dataset_options.mean"] if "dataset_options.mean" in table.columns else 0.0
    keys = pd.DataFrame({"dataset": table["dataset"].astype(str), "mu": pd.to_numeric(mean).astype(float),
                         "method": table["method"].astype(str), "status": status.astype(str)})
    for (dataset, mu, method), rows in keys.groupby(["dataset", "mu", "method"]):
        finished = table.loc[rows.index[rows["status"] == "finished"]]
        errors = table.loc[rows.index, "error"] if "error" in table.columns else pd.Series("", index=rows.index)
        stopped = (rows["status"] == "running") | errors.fillna("").astype(str).str.startswith("Interrupted")
        cell: dict[str, Any] = {"finished": len(finished), "trials": len(rows), "interrupted": int(stopped.sum()),
                                "draws": _draws(finished)}
        for metric in METRICS:
            values = pd.to_numeric(finished[metric])
            cell[metric] = float(values.mean()) if len(finished) else math.nan
            cell[f"{metric}_range"] = (float(values.min()), float(values.max())) if len(finished) else None
        cells[(dataset, float(mu), method)] = cell
    return cells


DRAWS = {"single": "theirs", "per_purpose": "ours"}  # random_stream -> whose random draws a run sees


def _draws(finished: pd.DataFrame) -> str:
    """"theirs" when the finished runs replayed the authors' random stream, "ours" when they drew
    their own (per-purpose streams), "" when the table does not say or the runs differ."""
    if "random_stream" not in finished.columns or finished.empty:
        return ""
    kinds = {DRAWS.get(str(value), "") for value in finished["random_stream"]}
    return kinds.pop() if len(kinds) == 1 else ""


def _seed_range(cell: dict[str, Any] | None, metric: str, scale: float, digits: int) -> str:
    if cell is None or cell["finished"] < 2:
        return ""
    low, high = cell[f"{metric}_range"]
    return f"{scale * low:.{digits}f}-{scale * high:.{digits}f} ({cell['finished']})"


def _in_seed_range(cell: dict[str, Any] | None, theirs: Mapping[str, float], tolerance: Mapping[str, float]) -> bool:
    """The authors' value of every metric within our seeds' range widened by the tolerance."""
    if cell is None or cell["finished"] < 2:
        return False
    return all(cell[f"{m}_range"][0] - tolerance[m] <= theirs[m] <= cell[f"{m}_range"][1] + tolerance[m] + 1e-12
               for m in METRICS)


def _seed_sensitive(cell: dict[str, Any] | None, tolerance: Mapping[str, float]) -> bool:
    """Our seeds alone spread by more than the tolerance in some metric."""
    if cell is None or cell["finished"] < 2:
        return False
    return any(cell[f"{m}_range"][1] - cell[f"{m}_range"][0] > tolerance[m] for m in METRICS)


def _comparison(theirs: Mapping[str, float], cell: dict[str, Any] | None,
                tolerance: Mapping[str, float]) -> tuple[str, list[str]]:
    """(state, [E ours, dE, U ours, dU]) of one cell: state "ok", "off", "not run", "interrupted"
    (its runs were stopped before they finished) or "failed"."""
    if cell is None or cell["finished"] == 0:
        state = "not run" if cell is None else "interrupted" if cell["interrupted"] == cell["trials"] else "failed"
        return state, [state, "", state, ""]
    e_o, u_o = cell["quantization_error"], cell["utilization"]
    d_e, d_u = abs(e_o - theirs["quantization_error"]), abs(u_o - theirs["utilization"])
    within = d_e <= tolerance["quantization_error"] and d_u <= tolerance["utilization"] + 1e-12
    return ("ok" if within else "off"), [f"{e_o:.3f}", f"{d_e:.3f}", f"{100 * u_o:.2f}%", f"{100 * d_u:.2f}"]


def _row(key: tuple[str, float, str], theirs: Mapping[str, float], values: list[str], extra: list[str],
         draws: str) -> str:
    distribution, mu, method = key
    e_o, d_e, u_o, d_u = values
    cells = [distribution, f"{mu:g}", method, draws, f"{theirs['quantization_error']:.3f}", e_o, d_e,
             f"{100 * theirs['utilization']:.2f}%", u_o, d_u, *extra]
    return "| " + " | ".join(cells) + " |"


def _variant_section(paper: Paper, name: str, description: str, table: pd.DataFrame | None) -> list[str]:
    """One variant sweep against the authors' numbers, on the cells it runs."""
    ours = ours_by_cell(table)
    lines = [f"## Variant `{name}`: {description}", ""]
    if not ours:
        return lines + ["Not run.", ""]
    lines += ["| distribution | mu | method | draws | E paper | E ours | dE | U paper | U ours | dU (points) | within |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, cell in sorted(ours.items()):
        if key in paper.results:
            state, values = _comparison(paper.results[key], cell, paper.tolerance)
            lines.append(_row(key, paper.results[key], values, ["ok" if state == "ok" else "no"], cell["draws"]))
    return lines + [""]


def render(paper: Paper, table: pd.DataFrame | None, table_name: str = "the sweep table",
           seeds: pd.DataFrame | None = None, variants: Mapping[str, pd.DataFrame | None] | None = None) -> str:
    """The markdown of reports/reproduce.md; ``seeds``: the rows of the seed sweeps; ``variants``:
    each variant sweep's rows."""
    ours = ours_by_cell(table)
    frames = [frame for frame in (table, seeds) if frame is not None and not frame.empty]
    all_seeds = ours_by_cell(pd.concat(frames, ignore_index=True) if frames else None)
    tol_e, tol_u = paper.tolerance["quantization_error"], paper.tolerance["utilization"]
    lines = [
        "# Reproduction: the Wasserstein-VQ atomic experiment",
        "",
        f"Paper: {paper.title} ({paper.reference}); the authors' numbers: {paper.source} (final step of each run).",
        f"Ours: sweep `{paper.sweep}` of `{paths.REPRODUCE_PARAMS_FILE}` ({table_name}). E: quantization error "
        "(squared distance summed over d, mean over the evaluation features); U: utilization (share of codes used).",
        f"Target: |dE| <= {tol_e:g} and |dU| <= {100 * tol_u:g} point(s); ok marks a cell within both.",
        "",
        "Draws: theirs where the run replays the authors' random stream (their codes, batches and evaluation "
        "samples), ours where it draws its own (one seed: a difference then includes sampling noise).",
        "E and U over seeds: min-max (number of seeds) where the profile reruns a cell with more seeds.",
        "",
        "| distribution | mu | method | draws | E paper | E ours | dE | U paper | U ours | dU (points) | within "
        "| E over seeds | U over seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    within_by_draws: dict[str, list[int]] = {}
    counts = {"ok": 0, "off": 0, "not run": 0, "interrupted": 0, "failed": 0, "in seed range": 0, "seed-sensitive": 0}
    for key, theirs in sorted(paper.results.items()):
        state, values = _comparison(theirs, ours.get(key), paper.tolerance)
        counts[state] += 1
        seeded = all_seeds.get(key) if state in ("ok", "off") else None
        verdict = {"ok": "ok", "off": "no"}.get(state, "")
        if state == "off":
            counts["seed-sensitive"] += _seed_sensitive(seeded, paper.tolerance)
            if _in_seed_range(seeded, theirs, paper.tolerance):
                counts["in seed range"] += 1
                verdict = "in seed range"
        draws = (ours.get(key) or {}).get("draws", "") if state in ("ok", "off") else ""
        if draws:
            within_by_draws.setdefault(draws, [0, 0])[state == "ok"] += 1
        lines.append(_row(key, theirs, values, [verdict, _seed_range(seeded, "quantization_error", 1, 3),
                                                _seed_range(seeded, "utilization", 100, 2)], draws))
    lines += ["", f"Cells: {counts['ok']} within the target, {counts['off']} outside "
                  f"({counts['in seed range']} of them in our seed range, {counts['seed-sensitive']} seed-sensitive), "
                  f"{counts['failed']} failed, {counts['interrupted']} interrupted, {counts['not run']} not run "
                  f"(of {len(paper.results)})."]
    if within_by_draws:
        lines.append("By draws: " + "; ".join(f"{draws}: {ok} of {off + ok} within the target"
                                              for draws, (off, ok) in sorted(within_by_draws.items(), reverse=True)) + ".")
    lines.append("")
    for name, description in paper.variants.items():
        lines += _variant_section(paper, name, description, (variants or {}).get(name))
    if paper.findings:
        lines += ["## What we found", "", *(f"- {text}" for text in paper.findings), ""]
    return "\n".join(lines)


def sweep_rows(pool: pd.DataFrame | None, trial_ids: set[str]) -> pd.DataFrame | None:
    """The rows of ``pool`` (exported sweep tables) that are trials of one sweep, one per trial, a
    finished run first. A sweep's table also lists the runs of trials that an earlier version of
    the profile defined, and a trial can have run under another sweep of the profile (a trial's id
    is its configuration and code): what counts is the profile as it is."""
    if pool is None or pool.empty:
        return None
    rows = pool[pool["trial"].astype(str).isin(trial_ids)]
    unfinished = (rows["status"] != "finished").to_numpy()
    rows = rows.iloc[unfinished.argsort(kind="stable")].drop_duplicates("trial")
    return rows if not rows.empty else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark report --reproduce",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--params", default=paths.REPRODUCE_PARAMS_FILE, help="the reproduction profile")
    parser.add_argument("--results", default=None, help="results dir (default: the profile's tracking.results_dir)")
    parser.add_argument("--out", default=None, help="output dir (default reports)")
    parser.add_argument("--paper", default=str(PAPER_FILE), help="the paper file (YAML)")
    args = parser.parse_args(argv)
    paper = load_paper(args.paper)
    params_path = Path(args.params)
    root = params_path.resolve().parent
    params = load_params(params_path)
    results_dir = Path(args.results) if args.results else root / (params.get("tracking") or {}).get(
        "results_dir", paths.RESULTS_DIR)
    def read(name: str) -> pd.DataFrame | None:
        path = results_dir / name / paths.TABLE_FILE
        return pd.read_csv(path) if path.exists() else None

    tables = [frame for frame in map(read, [paper.sweep, *paper.seed_sweeps, *paper.variants]) if frame is not None]
    pool = pd.concat(tables, ignore_index=True) if tables else None

    def rows_of(name: str) -> pd.DataFrame | None:
        return sweep_rows(pool, {trial.trial_id for trial in load_sweep(params_path, name).trials})

    table = rows_of(paper.sweep)
    found = [frame for frame in map(rows_of, paper.seed_sweeps) if frame is not None]
    seeds = pd.concat(found, ignore_index=True) if found else None
    variants = {name: rows_of(name) for name in paper.variants}
    out = Path(args.out) if args.out else root / paths.REPORTS_DIR.name
    out.mkdir(parents=True, exist_ok=True)
    path = out / "reproduce.md"
    name = f"`{paper.sweep}/{paths.TABLE_FILE}`" if table is not None else "no table yet"
    path.write_text(render(paper, table, name, seeds, variants))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
