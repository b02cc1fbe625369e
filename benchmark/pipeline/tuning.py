"""The tuning stage of a sweep: an equal budget per (method, setting), scored on the validation split.

The search space of one method (:func:`search_space`): ``codebook_lr`` log-uniform in
``tune.lr``, ``optimizer`` in ``tune.optimizers`` and every entry of the method's own
``tunables`` (``methods.get(name).tunables``; only those named in ``tune.tunables`` when given),
as Ray Tune domains for Optuna's TPE (``ray.tune.search.optuna.OptunaSearch``). A sampled point
is applied to the setting's config by :func:`apply` (``method_options.<name>`` for a tunable).

A tuning trial's id (:func:`tuning_trial_id`) hashes the setting's config, the tuning settings and
the trial's index in the budget, so a rerun finds the same runs (tag ``tuning``) in MLflow.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

from benchmark.experiments.config import RunConfig
from benchmark.pipeline import code
from benchmark.pipeline.spec import TuneSettings

LR_KEY, OPTIMIZER_KEY = "codebook_lr", "optimizer"
OPTION_PREFIX = "method_options."


def search_space(tunables: Mapping[str, Any], settings: TuneSettings) -> dict[str, Any]:
    """Ray Tune domains of one method: learning rate, optimizer and the method's tunables."""
    from ray import tune

    space: dict[str, Any] = {
        LR_KEY: tune.loguniform(*settings.lr),
        OPTIMIZER_KEY: tune.choice(list(settings.optimizers)),
    }
    for name, tunable in sorted(tunables.items()):
        if settings.tunables is not None and name not in settings.tunables:
            continue
        if tunable.choices:
            space[OPTION_PREFIX + name] = tune.choice(list(tunable.choices))
        elif tunable.log:
            space[OPTION_PREFIX + name] = tune.loguniform(tunable.low, tunable.high)
        else:
            space[OPTION_PREFIX + name] = tune.uniform(tunable.low, tunable.high)
    return space


def apply(config: RunConfig, point: Mapping[str, Any]) -> RunConfig:
    """``config`` with a sampled point of :func:`search_space` set."""
    options = dict(config.method_options)
    changes: dict[str, Any] = {}
    for key, value in point.items():
        if key.startswith(OPTION_PREFIX):
            options[key[len(OPTION_PREFIX):]] = value
        elif key in (LR_KEY, OPTIMIZER_KEY):
            changes[key] = float(value) if key == LR_KEY else value
        else:
            raise ValueError(f"point: unknown key {key!r}")
    return config.replace(method_options=options, **changes)


def tuning_trial_id(setting: RunConfig, settings: TuneSettings, index: int) -> str:
    """Deterministic id of tuning trial ``index`` of a (method, setting): config, code, settings, index."""
    canonical = json.dumps({"setting": code.trial_id_of(setting), "tune": dataclasses.asdict(settings),
                            "index": index}, sort_keys=True, default=repr)
    return "tune-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]
