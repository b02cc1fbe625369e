"""``python -m benchmark COMMAND [options]``: the one command line of vqbench.

Commands (``python -m benchmark COMMAND --help`` for each):
  run       train and evaluate one run (no tracking)
  prepare   pin the data and the code of a sweep (a DVC stage)
  sweep     run a sweep of params.yaml through Ray Tune into MLflow (a DVC stage)
  report    build reports/ablation.md and its figures from the sweep tables (a DVC stage)
  perf      measure search, training-step and OT speed against peers (reports/perf.md)
  overhead  measure the sweep machinery's cost per trial (reports/perf_sweep.md)
  openmp    measure the OpenMP wait policies side by side (reports/perf_openmp.md)
  selftest  check an accelerator: conformance, a step of every method, a GPU-shared sweep, the search
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

from benchmark import runtime

COMMANDS = {
    "run": "benchmark.experiments.run",
    "prepare": "benchmark.pipeline.prepare",
    "sweep": "benchmark.pipeline.sweep",
    "report": "benchmark.report.build",
    "perf": "benchmark.perf.bench",
    "overhead": "benchmark.perf.overhead",
    "openmp": "benchmark.perf.openmp",
    "selftest": "benchmark.perf.selftest",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; valid: {sorted(COMMANDS)}", file=sys.stderr)
        return 2
    runtime.configure()  # before any command imports torch or faiss (their OpenMP runtimes read it once)
    result = importlib.import_module(COMMANDS[command]).main(rest)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
