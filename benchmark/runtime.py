"""The process settings every vqbench process runs with, applied before torch and faiss load.

torch and faiss each bring their own OpenMP runtime (two copies of libgomp in one process). By
default a libgomp thread spins for a while after its parallel region ends, waiting for the next
one; the other runtime's threads, starting their own parallel work, then compete with spinning
threads for the cores. On 2 cores shared with other jobs, a vanilla training step (K 1,024,
batch 4,096, d 8) measured 32 ms with the default policy and 3-4 ms with ``OMP_WAIT_POLICY=passive``
(threads sleep at once), with no loss on large searches (``python -m benchmark openmp`` measures
it side by side, ``reports/perf_openmp.md``).

libgomp reads its environment once, when the library loads, so :func:`configure` must run before
the first ``import torch`` / ``import faiss`` of a process: ``python -m benchmark`` calls it first
thing, Ray workers get the same variables through the runtime environment
(:func:`benchmark.pipeline.cluster.runtime_env`), and ``tests/conftest.py`` calls it. A value
already in the environment is kept (the user's choice wins); :func:`environment_tags` records the
values in effect in each MLflow run.

:data:`OFFLINE_SETTINGS` turn off what MLflow and Ray would otherwise send home at run time (usage
telemetry): vqbench runs without internet, and MLflow's telemetry hook inspects the signature of
every tracking call it wraps, which in a sweep's driver cost more than the SQLite writes themselves.
"""
from __future__ import annotations

import os
from typing import Mapping

OPENMP_SETTINGS: Mapping[str, str] = {"OMP_WAIT_POLICY": "passive"}
"""Environment variables read by the OpenMP runtimes at load time, and vqbench's defaults."""

OFFLINE_SETTINGS: Mapping[str, str] = {"MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}
"""Environment variables that keep MLflow and Ray from collecting usage telemetry."""


def configure() -> dict[str, str]:
    """Set every :data:`OPENMP_SETTINGS` and :data:`OFFLINE_SETTINGS` variable not already set;
    returns the OpenMP values in effect."""
    for name, value in {**OPENMP_SETTINGS, **OFFLINE_SETTINGS}.items():
        os.environ.setdefault(name, value)
    return settings_in_effect()


def settings_in_effect() -> dict[str, str]:
    """The :data:`OPENMP_SETTINGS` variables as this process has them ("" when unset)."""
    return {name: os.environ.get(name, "") for name in OPENMP_SETTINGS}


def environment_tags() -> dict[str, str]:
    """MLflow tags of the settings in effect: ``env.OMP_WAIT_POLICY`` = ``passive``, ..."""
    return {f"env.{name}": value for name, value in settings_in_effect().items()}
