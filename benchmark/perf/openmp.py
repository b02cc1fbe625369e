"""OpenMP wait policies side by side: the same cells in fresh processes, one per policy, interleaved.

    python -m benchmark openmp [--rounds 3] [--policies default,passive] [--concurrency 1,2] \\
        [--out reports/]

torch and faiss each load their own libgomp, and libgomp reads ``OMP_WAIT_POLICY`` once, when it
loads; so each policy is measured in its own child process (``python -m benchmark.perf.openmp
--child``) started with that environment (``default``: the variable unset, libgomp's own
spin-then-sleep). Rounds alternate the policies' order. With concurrency 2, two children of the
same policy run at once (two 2-thread processes on the machine, as two trials or a trial beside
the tests would be). Each child times every cell round-robin (ours and faiss alternate in the
search cells) and prints its medians; the report gives, per cell, the median over rounds.

Writes ``<out>/perf_openmp.md`` and ``<out>/perf_openmp.json``. Not a test: the machine's load
is recorded beside the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from benchmark import paths

POLICY_VARIABLE = "OMP_WAIT_POLICY"
DEFAULT_POLICY = "default"  # the variable unset: libgomp's own choice

# (method, K, batch, d) of the training-step cells, (N, K, d) of the search cells.
STEP_CELLS = (("vanilla", 1_024, 4_096, 8), ("wasserstein", 1_024, 4_096, 8), ("vanilla", 16_384, 8_192, 8))
SEARCH_CELLS = ((4_096, 1_024, 8), (65_536, 1_024, 8), (65_536, 16_384, 8), (65_536, 1_024, 64),
                (131_072, 16_384, 8))


def measure_cells(repeats: int) -> dict[str, float]:
    """The child's side: ``{cell: median seconds}`` for every step and search cell (this process's
    OpenMP settings, torch's and faiss' default thread counts)."""
    import torch

    from benchmark.perf import bench

    device = torch.device("cpu")
    out: dict[str, float] = {}
    for method, k, batch, dim in STEP_CELLS:
        step = bench._training_step(method, dim, k, batch, device)
        out[f"step {method} K={k} batch={batch} d={dim}"] = bench.time_round_robin(
            {"step": step}, device, repeats, warmup=2)["step"].median_s
    generator = torch.Generator().manual_seed(0)
    for n, k, dim in SEARCH_CELLS:
        features = torch.randn(n, dim, generator=generator)
        codebook = torch.randn(k, dim, generator=generator)
        calls = {"ours": lambda: bench.methods.nearest_code(features, codebook),
                 "faiss": bench._faiss_flat_search_bound(codebook, features)}
        for name, result in bench.time_round_robin(calls, device, repeats, warmup=1).items():
            out[f"search {name} N={n} K={k} d={dim}"] = result.median_s
    return out


def _child_env(policy: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != POLICY_VARIABLE}
    if policy != DEFAULT_POLICY:
        env[POLICY_VARIABLE] = policy
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(paths.REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_children(policy: str, concurrency: int, repeats: int) -> list[dict[str, float]]:
    """``concurrency`` children with ``policy`` at once; each one's medians."""
    command = [sys.executable, "-m", "benchmark.perf.openmp", "--child", "--repeats", str(repeats)]
    children = [subprocess.Popen(command, env=_child_env(policy), stdout=subprocess.PIPE, text=True)
                for _ in range(concurrency)]
    results = []
    for child in children:
        stdout, _ = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"openmp child ({POLICY_VARIABLE}={policy}) exited with {child.returncode}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def measure(policies: Sequence[str], concurrencies: Sequence[int], rounds: int,
            repeats: int) -> dict[str, Any]:
    """Every (concurrency, policy) pair ``rounds`` times, the policies' order alternating per round:
    ``{"runs": [{"policy", "concurrency", "round", "cells"}...]}``."""
    runs: list[dict[str, Any]] = []
    for concurrency in concurrencies:
        for round_ in range(rounds):
            order = list(policies) if round_ % 2 == 0 else list(reversed(policies))
            for policy in order:
                print(f"concurrency {concurrency}, round {round_ + 1}/{rounds}: {POLICY_VARIABLE}={policy}",
                      flush=True)
                for cells in run_children(policy, concurrency, repeats):
                    runs.append({"policy": policy, "concurrency": concurrency, "round": round_, "cells": cells})
    return {"runs": runs}


def medians(runs: Sequence[dict[str, Any]]) -> dict[tuple[int, str], dict[str, float]]:
    """``{(concurrency, policy): {cell: median over rounds and concurrent children}}``."""
    grouped: dict[tuple[int, str], dict[str, list[float]]] = {}
    for run in runs:
        cells = grouped.setdefault((run["concurrency"], run["policy"]), {})
        for cell, seconds in run["cells"].items():
            cells.setdefault(cell, []).append(seconds)
    return {key: {cell: statistics.median(values) for cell, values in cells.items()}
            for key, cells in grouped.items()}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def render(report: dict[str, Any]) -> str:
    """reports/perf_openmp.md: per concurrency, every cell under every policy, and ours / faiss."""
    env, policies = report["environment"], report["policies"]
    table = medians(report["runs"])
    base = policies[0]
    lines = ["# OpenMP wait policy, side by side", "",
             f"Generated by `{' '.join(['python -m benchmark openmp', *report['argv']])}` at {env['time']} "
             f"(commit {env['commit']}). Each policy runs in fresh processes (libgomp reads "
             f"`{POLICY_VARIABLE}` when it loads; *default* = unset), {report['rounds']} rounds with the "
             f"policies' order alternating, median of {report['repeats']} timed calls per cell in each "
             "process, then the median over rounds (and over the concurrent processes). Search cells time "
             "ours (`methods.nearest_code`) and faiss `IndexFlatL2` round-robin in the same process.", "",
             f"Machine: {env['cpu_count']} CPUs, {env['machine']}; load average at start {env['load_start']}, "
             f"at end {env['load_end']} (other jobs shared the machine: absolute times are inflated; the "
             "policies are interleaved so that load hits each alike).", ""]
    for concurrency in report["concurrencies"]:
        header = ("one process at a time" if concurrency == 1 else
                  f"{concurrency} processes at once, each with torch's and faiss' default threads")
        lines += [f"## {header}", "",
                  "| cell | " + " | ".join(policies) + " | " +
                  " | ".join(f"{p} / {base}" for p in policies[1:]) + " |",
                  "|---|" + "---|" * (2 * len(policies) - 1)]
        cells = table[(concurrency, base)]
        for cell in cells:
            values = [table[(concurrency, p)].get(cell) for p in policies]
            ratios = [f"{v / values[0]:.2f}x" if v and values[0] else "-" for v in values[1:]]
            lines.append(f"| {cell} | " + " | ".join(_ms(v) for v in values) + " | " + " | ".join(ratios) + " |")
        lines += ["", "Ours / faiss in the same process:", "",
                  "| N | K | d | " + " | ".join(policies) + " |", "|---|---|---|" + "---|" * len(policies)]
        for n, k, dim in SEARCH_CELLS:
            suffix = f"N={n} K={k} d={dim}"
            ratios = []
            for policy in policies:
                ours, faiss = (table[(concurrency, policy)].get(f"search {name} {suffix}") for name in ("ours", "faiss"))
                ratios.append(f"{ours / faiss:.2f}x" if ours and faiss else "-")
            lines.append(f"| {n:,} | {k:,} | {dim} | " + " | ".join(ratios) + " |")
        lines.append("")
    return "\n".join(lines)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=paths.REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark openmp", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per cell in each process")
    parser.add_argument("--policies", default=f"{DEFAULT_POLICY},passive",
                        help=f"comma-separated {POLICY_VARIABLE} values; '{DEFAULT_POLICY}' leaves it unset")
    parser.add_argument("--concurrency", default="1,2", help="comma-separated numbers of processes at once")
    parser.add_argument("--out", type=Path, default=paths.REPORTS_DIR)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats must be >= 1")
    if args.child:
        print(json.dumps(measure_cells(args.repeats)))
        return 0
    policies = [p for p in args.policies.split(",") if p]
    try:
        concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    except ValueError:
        parser.error(f"--concurrency: expected comma-separated integers, got {args.concurrency!r}")
    if len(policies) < 2 or any(c < 1 for c in concurrencies) or not concurrencies:
        parser.error("--policies needs at least two values and --concurrency positive integers")
    load_start = [round(x, 2) for x in os.getloadavg()]
    report = measure(policies, concurrencies, args.rounds, args.repeats)
    report.update(policies=policies, concurrencies=concurrencies, rounds=args.rounds, repeats=args.repeats,
                  argv=list(argv if argv is not None else sys.argv[1:]))
    report["environment"] = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": _commit(),
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "load_start": load_start,
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "perf_openmp.json").write_text(json.dumps(report, indent=2) + "\n")
    text = render(report)
    (args.out / "perf_openmp.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
