"""Sweep overhead benchmark: the wall time a pipeline spends outside training, per trial.

    python -m benchmark overhead [--sweeps 6] [--trials 6] [--preset tiny] [--method vanilla] \\
        [--num-cpus 2] [--out reports/perf_sweep.md]

One params file of ``--sweeps`` small sweeps (``--trials`` seeds each, the same ``fit`` trial
settings) is run twice, each time in a fresh folder with a fresh MLflow store, as a user runs it:

- *one process per sweep*: ``python -m benchmark sweep --sweep NAME`` for each sweep in turn, as
  the per-sweep DVC stages did: every sweep starts Python, Ray and its Ray workers again;
- *one process for all sweeps*: ``python -m benchmark sweep --all`` (the ``sweeps`` stage): one
  Python process, one Ray session, every pending trial in one Ray Tune grid whose workers are reused.

Overhead per trial = (wall - sum of the trials' ``train_seconds`` / concurrency) / trials, with
concurrency = ``num_cpus`` trials at once (1 CPU per trial): the wall time beyond a perfect split
of the training itself over the workers, whatever it went to (process and Ray start-up, imports,
worker start, evaluation, MLflow writes, export). Not a test: timings depend on the machine and its
load (recorded beside the figures), so the two modes run back to back, alternating when repeated.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any, Sequence

import yaml

from benchmark import paths
from benchmark.experiments.config import RunConfig

PRESETS = {
    # name: (codebook_size, dim, steps, batch_size, eval_size)
    "tiny": (16, 2, 20, 256, 1024),
    "small": (256, 8, 300, 2048, 8192),
}
MODES = ("one process per sweep", "one process for all sweeps")


def preset_config(name: str, method: str = "vanilla") -> RunConfig:
    codebook_size, dim, steps, batch_size, eval_size = PRESETS[name]
    return RunConfig(experiment="fit", dataset="gaussian", method=method, codebook_size=codebook_size, dim=dim,
                     steps=steps, batch_size=batch_size, eval_size=eval_size, log_every=max(1, steps // 4),
                     device="cpu")


def sweep_params(base: RunConfig, sweeps: int, trials: int, num_cpus: int) -> dict[str, Any]:
    """A params file of ``sweeps`` sweeps, ``trials`` seeds each, all on ``base``."""
    return {
        "tracking": {"uri": paths.TRACKING_DB, "results_dir": paths.RESULTS_DIR},
        "ray": {"num_cpus": num_cpus, "cpus_per_trial": 1, "storage_path": "ray"},
        "base": base.to_dict(),
        "sweeps": {f"s{index}": {"grid": {"seed": list(range(trials))}} for index in range(sweeps)},
    }


@dataclass(frozen=True)
class ModeResult:
    """One mode's run: its wall time, and the trials' own training time from the exported tables."""

    mode: str
    wall: float
    trials: int
    finished: int
    train_seconds: float  # summed over the trials (each trial's own training loop)
    concurrency: int

    @property
    def overhead_per_trial(self) -> float:
        """(wall - train_seconds / concurrency) / trials."""
        return (self.wall - self.train_seconds / self.concurrency) / self.trials


def run_mode(mode: str, params: dict[str, Any], workdir: Path) -> ModeResult:
    """Run every sweep of ``params`` in ``workdir`` (fresh) the way ``mode`` says; read the tables."""
    import pandas as pd

    workdir.mkdir(parents=True)
    params_path = workdir / paths.PARAMS_FILE
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    command = [sys.executable, "-m", "benchmark", "sweep", "--params", str(params_path)]
    calls = [command + ["--sweep", name] for name in params["sweeps"]] if mode == MODES[0] else [command + ["--all"]]
    start = time.perf_counter()
    for call in calls:
        subprocess.run(call, cwd=paths.REPO_ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    tables = [pd.read_csv(workdir / paths.RESULTS_DIR / name / paths.TABLE_FILE) for name in params["sweeps"]]
    table = pd.concat(tables, ignore_index=True)
    return ModeResult(mode=mode, wall=wall, trials=len(table), finished=int((table["status"] == "finished").sum()),
                      train_seconds=float(table["train_seconds"].sum()), concurrency=int(params["ray"]["num_cpus"]))


def measure(params: dict[str, Any], repeats: int, root: Path) -> dict[str, list[ModeResult]]:
    """Both modes ``repeats`` times, alternating their order (a load that changes over time then
    touches both alike)."""
    results: dict[str, list[ModeResult]] = {mode: [] for mode in MODES}
    for repeat in range(repeats):
        order = MODES if repeat % 2 == 0 else MODES[::-1]
        for mode in order:
            results[mode].append(run_mode(mode, params, root / f"{repeat}-{MODES.index(mode)}"))
    return results


def render(base: RunConfig, params: dict[str, Any], results: dict[str, list[ModeResult]], command: str) -> str:
    """reports/perf_sweep.md: the command, commit and machine, then one row per mode (medians)."""
    from benchmark.pipeline import tracking

    git = tracking.git_state(paths.REPO_ROOT)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    sweeps, per_sweep = len(params["sweeps"]), len(next(iter(params["sweeps"].values()))["grid"]["seed"])
    settings = (f"{base.method}, K={base.codebook_size}, d={base.dim}, {base.steps} steps x {base.batch_size}, "
                f"eval {base.eval_size}")
    lines = [
        "# Sweep overhead",
        "",
        f"Generated by `{command}` at commit {git.commit[:12]}{' (with uncommitted changes)' if git.dirty else ''}; "
        "not a test.",
        "",
        f"{sweeps} sweeps x {per_sweep} trials ({settings}), each mode in a fresh folder with a fresh MLflow "
        f"store, {params['ray']['num_cpus']} trials at once (1 CPU each). *One process per sweep*: "
        "`python -m benchmark sweep --sweep NAME` per sweep, as the former per-sweep DVC stages ran "
        "(Python, Ray and the Ray workers started again for every sweep). *One process for all sweeps*: "
        "`python -m benchmark sweep --all`, the `sweeps` stage (one Ray session, one Ray Tune grid over "
        "every sweep's trials, workers reused).",
        "",
        "Overhead per trial = (wall - summed `train_seconds` / concurrency) / trials: the wall time beyond "
        "a perfect split of the training over the workers (start-up, imports, worker start, evaluation, "
        "MLflow writes, export).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs visible; load average when written "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min). Other jobs may share the CPUs: "
        "the modes run back to back, alternating, and the figures are medians over the repeats.",
        "",
        "| mode | repeats | trials (finished) | wall (s) | summed train_seconds (s) | overhead per trial (s) |",
        "|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        runs = results[mode]
        lines.append(
            f"| {mode} | {len(runs)} | {runs[0].trials} ({min(r.finished for r in runs)}) "
            f"| {median(r.wall for r in runs):.1f} | {median(r.train_seconds for r in runs):.1f} "
            f"| **{median(r.overhead_per_trial for r in runs):.2f}** |")
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--sweeps", type=int, default=6)
    parser.add_argument("--trials", type=int, default=6, help="trials (seeds) per sweep")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--method", default="vanilla")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=paths.REPORTS_DIR / "perf_sweep.md")
    args = parser.parse_args(argv)
    for name in ("sweeps", "trials", "num_cpus", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    base = preset_config(args.preset, args.method)
    params = sweep_params(base, args.sweeps, args.trials, args.num_cpus)
    with tempfile.TemporaryDirectory(prefix="vqbench-perf-sweep-") as root:
        results = measure(params, args.repeats, Path(root))
    command = "python -m benchmark overhead " + " ".join(
        [f"--sweeps {args.sweeps}", f"--trials {args.trials}", f"--preset {args.preset}", f"--method {args.method}",
         f"--num-cpus {args.num_cpus}", f"--repeats {args.repeats}"])
    text = render(base, params, results, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
