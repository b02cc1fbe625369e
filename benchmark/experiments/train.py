"""Experiments: one :class:`~benchmark.experiments.config.RunConfig` in, one flat result record out.

``run_experiment(config)`` runs ``benchmark.experiments.<config.experiment>.run`` (``fit``,
``vqvae``; see those modules). Each experiment module is imported by name, so the code a trial
runs (its fingerprint, :mod:`benchmark.pipeline.code`) is that module and what it imports.
"""
from __future__ import annotations

import importlib
import importlib.util
import traceback
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
    try:
        with seeded_global_rng(config.seed, device):
            artifacts = Path(artifacts_dir) if artifacts_dir is not None else None
            run = importlib.import_module(experiment_module(config.experiment)).run
            return run(config, device, on_step, progress, artifacts, evaluation_split)
    except (DivergedError, ValueError):
        raise
    except Exception as err:  # noqa: BLE001 - re-raised, named when a plugin's code raised it
        named = plugin_failure(err, config)
        if named is None:
            raise
        raise named from err


def plugin_failure(err: BaseException, config: RunConfig) -> Exception | None:
    """``methods.PluginError`` naming the plugin (distribution, file, line) when the innermost
    frame of ``err`` inside a plugin's package raised it; None when no plugin is involved."""
    import datasets
    import methods

    for kind, registry_module, name in (("method", methods, config.method), ("dataset", datasets, config.dataset)):
        spec = registry_module.get(name)
        if not spec.distribution:
            continue
        top = importlib.util.find_spec(spec.module.split(".")[0])
        folders = list(top.submodule_search_locations or []) if top is not None else []
        places = [str(Path(folder).resolve()) for folder in folders] or [str(Path(spec.module_file or "").resolve())]
        frames = [frame for frame in traceback.extract_tb(err.__traceback__)
                  if any(str(Path(frame.filename).resolve()).startswith(place) for place in places)]
        if frames:
            where = f"{frames[-1].filename}:{frames[-1].lineno}"
            return methods.PluginError(f"{kind}: {name!r} from the plugin {spec.distribution} raised "
                                       f"{type(err).__name__}: {err} ({where})")
    return None
