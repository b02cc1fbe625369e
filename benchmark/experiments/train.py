"""Experiments: one :class:`~benchmark.experiments.config.RunConfig` in, one flat result record out.

``run_experiment(config)`` runs ``benchmark.experiments.<config.experiment>.run`` (``fit``,
``vqvae``; see those modules). Each experiment module is imported by name, so the code a trial
runs (its fingerprint, :mod:`benchmark.pipeline.code`) is that module and what it imports.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from benchmark.experiments.checks import check_against_registries
from benchmark.experiments.config import RunConfig
from benchmark.experiments.training import DivergedError, OnStep, resolve_device, seeded_global_rng

__all__ = ["DivergedError", "experiment_module", "run_experiment"]


def experiment_module(name: str) -> str:
    """Dotted module of experiment ``name`` (a :data:`~benchmark.experiments.config.EXPERIMENTS` value)."""
    return f"benchmark.experiments.{name}"

def run_experiment(
    config: RunConfig,
    *,
    on_step: OnStep | None = None,
    progress: bool = False,
    artifacts_dir: str | Path | None = None,
    evaluation_split: str = "test",
) -> dict[str, float]:
    """Train and evaluate one run; returns the flat result record (floats).

    ``artifacts_dir``: where to write the final ``codebook.npy`` and ``code_counts.npy`` (optional).

    ``on_step(step, metrics)`` is called every ``config.log_every`` steps and at the last step with
    the loss, each unweighted loss component of the quantizer and ``batch_utilization``.
    ``evaluation_split``: what the final record is measured on, ``"test"`` (a trial of the table)
    or ``"validation"`` (a tuning trial: the validation split, its own random stream; the test
    features are never read).
    Raises :class:`DivergedError` when the loss turns NaN/inf, ValueError (ConfigError) on bad
    settings; unknown dataset/method names raise the registries' ValueErrors.
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"config: expected a RunConfig, got {type(config).__name__}")
    if evaluation_split not in ("test", "validation"):
        raise ValueError(f"evaluation_split: must be 'test' or 'validation', got {evaluation_split!r}")
    check_against_registries(config)
    device = resolve_device(config.device)
    with seeded_global_rng(config.seed, device):
        artifacts = Path(artifacts_dir) if artifacts_dir is not None else None
        run = importlib.import_module(experiment_module(config.experiment)).run
        return run(config, device, on_step, progress, artifacts, evaluation_split)
