"""Sweeps: a named grid of runs from params.yaml, fanned out by Ray Tune, recorded in MLflow.

Usage::

    python -m benchmark.sweep --params params.yaml --sweep NAME [--address ADDR] [--max-concurrent N]
    python -m benchmark.sweep --params params.yaml --sweep NAME --export-only   # rebuild the table

or from Python: ``run_sweep(load_sweep("params.yaml", "NAME"))``. The CLI prints one line
(``sweep NAME: N finished, M failed (K already done, not rerun) -> results/NAME/trials.csv``) and
exits 0 when the sweep ran, failed trials included (they are rows of the table), 2 on a bad spec.

params.yaml schema (authoritative; ``docs/contracts.md`` points here)
--------------------------------------------------------------------
Relative paths are relative to the directory of the params file. Only ``sweeps`` and each
sweep's ``grid`` are required; the ``tracking`` and ``ray`` values shown are the defaults, the
``base`` and sweep contents are an example. Unknown keys anywhere are errors::

    tracking:
      uri: mlflow.db          # SQLite file -> sqlite:////<abs path>/mlflow.db; also accepts
                              # sqlite:///rel.db, sqlite:////abs.db or a server URI (http://...)
      results_dir: results    # the table of sweep NAME goes to <results_dir>/NAME/trials.csv
    ray:
      address: null           # "auto" or "ray://host:10001": join a running cluster. null: join
                              # $RAY_ADDRESS if set, else start a local Ray. --address beats both.
      num_cpus: null          # CPUs of the local Ray (null: all cores); ignored with an address
      cpus_per_trial: 1       # number > 0
      gpus_per_trial: 0.0     # may be fractional; requested ONLY when the cluster has GPUs
      early_stopping: false   # true: ASHA stops the worst trials early (their status: stopped)
      early_stopping_metric: loss   # per-step metric (an on_step key) that ASHA minimises
      max_concurrent: null    # at most this many trials at once (null: as resources allow)
      storage_path: null      # Ray Tune's own files (null: ~/ray_results/vqbench)
    base:                     # RunConfig fields shared by all sweeps (benchmark/config.py)
      experiment: fit
      dataset: gaussian
      steps: 500
    sweeps:
      NAME:                   # one sweep = one MLflow experiment named NAME
        base:                 # RunConfig fields for this sweep (override the top-level base)
          codebook_size: 1024
          dataset_options: {mean: 4.0}
        grid:                 # cartesian product; every value list must be non-empty
          method: [vanilla, wasserstein]
          seed: [0, 1]
          method_options.beta: [0.1, 0.25]      # dotted keys set one option
        method_options:       # fixed options per method, applied only to that method's trials
          wasserstein: {gamma: 10.0}
        max_trials: null      # optional guard: error if the grid expands to more trials

Grid keys are RunConfig fields (``codebook_size``) or dotted option keys
(``method_options.gamma``, ``dataset_options.mean``, ``model_options.x``). The RunConfig of one
trial is layered, later wins, option mappings merged key by key::

    top-level base  <-  sweep base  <-  method_options[<the trial's method>]  <-  grid point

Every option in a trial's ``method_options`` must be a field of that method's options dataclass
(``methods.get(name).options``): a grid over ``method_options.gamma`` therefore only combines with
methods that take ``gamma``. Everything is validated before anything runs; errors are
:class:`benchmark.config.ConfigError` naming the dotted field (``sweeps.NAME.grid.method``).

Trials, tracking, faults, resume
--------------------------------
- A trial's id is a hash of its full RunConfig: the same spec always gives the same ids.
- Trials only compute; the driver writes MLflow (a Tune callback receives every reported
  result), so concurrent trials never race on the SQLite store. One run per trial: params =
  ``RunConfig.flat_params()``, tags ``sweep``, ``trial``, ``status``, ``git_commit``,
  ``git_dirty``, ``error``; per-step curves ``train/<metric>``; the final record under its keys.
- A runner that raises (``benchmark.train.DivergedError`` on a NaN loss, or anything else)
  makes the trial ``failed`` with ``error = "<ExceptionType>: <message>"``; the sweep goes on.
- Interrupted sweep (Ctrl-C): trials already started are closed as ``failed``
  (``Interrupted: ...``), trials never started have no run; the table is still exported.
- Resume: rerunning a sweep skips every trial whose run is ``finished`` (or ``stopped`` by
  ASHA). Failed trials, and ``running`` ones left by a driver that was killed outright, are
  RETRIED: their old run is soft-deleted in MLflow when the retry starts, so a trial never has
  two active runs.
- The table ``<results_dir>/NAME/trials.csv`` is exported from MLflow after every sweep
  (:func:`benchmark.tracking.export_table`), one row per trial: ``sweep, trial, run_id, status
  (finished|failed|stopped), error, git_commit, git_dirty``, every flat param, every final metric.
- Browse the runs: ``mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db``.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import yaml

from benchmark import tracking
from benchmark.config import ConfigError, RunConfig

if TYPE_CHECKING:
    import pandas

REPO_ROOT = Path(__file__).resolve().parents[1]
OPTION_FIELDS = ("dataset_options", "method_options", "model_options")
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))

# Keys of the results a trial reports to Tune (see _run_trial).
KIND_KEY = "vqbench_kind"  # "step" | "final" | "failed"
STEP_KEY = "vqbench_step"
OBJECTIVE_KEY = "vqbench_objective"  # what ASHA minimises (present only with early stopping)

Runner = Callable[..., Mapping[str, float]]
"""``runner(config: RunConfig, *, on_step) -> {metric: value}`` (benchmark.train.run_experiment)."""


# --------------------------------------------------------------------------------------------
# Spec


@dataclass(frozen=True)
class TrackingSettings:
    """Where runs and tables go (absolute)."""

    uri: str
    results_dir: Path


@dataclass(frozen=True)
class RaySettings:
    """How trials are fanned out (the ``ray:`` section)."""

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0.0
    early_stopping: bool = False
    early_stopping_metric: str = "loss"
    max_concurrent: int | None = None
    storage_path: str | None = None

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ConfigError(f"ray.{name}: {why}")

        if self.address is not None and (not isinstance(self.address, str) or not self.address):
            bad("address", f"must be null or a non-empty string, got {self.address!r}")
        for name in ("num_cpus", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                bad(name, f"must be null or an integer >= 1, got {value!r}")
        if isinstance(self.cpus_per_trial, bool) or not isinstance(self.cpus_per_trial, (int, float)) \
                or not self.cpus_per_trial > 0:
            bad("cpus_per_trial", f"must be a number > 0, got {self.cpus_per_trial!r}")
        if isinstance(self.gpus_per_trial, bool) or not isinstance(self.gpus_per_trial, (int, float)) \
                or not self.gpus_per_trial >= 0:
            bad("gpus_per_trial", f"must be a number >= 0, got {self.gpus_per_trial!r}")
        if not isinstance(self.early_stopping, bool):
            bad("early_stopping", f"must be true or false, got {self.early_stopping!r}")
        if not isinstance(self.early_stopping_metric, str) or not self.early_stopping_metric:
            bad("early_stopping_metric", f"must be a metric name, got {self.early_stopping_metric!r}")
        if self.storage_path is not None and not isinstance(self.storage_path, str):
            bad("storage_path", f"must be null or a path, got {self.storage_path!r}")


@dataclass(frozen=True)
class Trial:
    """One point of a sweep's grid: its deterministic id, its full config, and the grid values."""

    trial_id: str
    config: RunConfig
    point: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.point) or "(no grid keys)"


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: everything needed to run it, nothing left to parse."""

    name: str
    trials: tuple[Trial, ...]
    tracking: TrackingSettings
    ray: RaySettings = field(default_factory=RaySettings)

    @property
    def table_path(self) -> Path:
        return self.tracking.results_dir / self.name / "trials.csv"

    @property
    def artifacts_root(self) -> Path:
        """``<results>/<sweep>/artifacts/<trial id>/``: each trial's final codebook and usage."""
        return self.tracking.results_dir / self.name / "artifacts"


@dataclass(frozen=True)
class Catalog:
    """What validation needs from the registries: name -> options dataclass, per registry.

    ``dataset_options`` is None when datasets go unchecked (names and options).
    """

    method_options: Mapping[str, type]
    dataset_options: Mapping[str, type] | None = None

    @classmethod
    def from_registries(cls) -> "Catalog":
        """Read the live ``methods`` and ``datasets`` registries (``.get(name).options``)."""
        import datasets as dataset_registry
        import methods

        return cls(
            method_options={name: _options_type(methods.get(name)) for name in methods.available()},
            dataset_options={
                name: _options_type(dataset_registry.get(name)) for name in dataset_registry.available()
            },
        )


def _options_type(spec: Any) -> type:
    """The options dataclass of a registry spec."""
    options = getattr(spec, "options", None)
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise TypeError(f"registry spec {spec!r} has no options dataclass")
    return options


def load_params(path: str | Path) -> dict[str, Any]:
    """Read params.yaml; malformed YAML or a non-mapping top level raise ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read params file ({err.strerror})") from None
    try:
        params = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(params).__name__}")
    return params


def load_sweep(params_path: str | Path, name: str, *, catalog: Catalog | None = None) -> SweepSpec:
    """Parse and validate sweep ``name`` of the params file (paths relative to its folder)."""
    params_path = Path(params_path).expanduser().resolve()
    return parse_sweep(load_params(params_path), name, base_dir=params_path.parent, catalog=catalog)


def _mapping(value: Any, where: str, *, allow_none: bool = True) -> dict[str, Any]:
    if value is None and allow_none:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a mapping, got {type(value).__name__}")
    return dict(value)


def _check_keys(values: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = list(allowed)
    for key in values:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key; valid: {allowed}")


def parse_tracking(params: Mapping[str, Any], base_dir: Path) -> TrackingSettings:
    section = _mapping(params.get("tracking"), "tracking")
    _check_keys(section, ("uri", "results_dir"), "tracking")
    try:
        uri = tracking.resolve_tracking_uri(section.get("uri", "mlflow.db"), base_dir)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    results_dir = section.get("results_dir", "results")
    if not isinstance(results_dir, str) or not results_dir:
        raise ConfigError(f"tracking.results_dir: must be a path, got {results_dir!r}")
    return TrackingSettings(uri=uri, results_dir=(base_dir / Path(results_dir).expanduser()).resolve())


def parse_ray(params: Mapping[str, Any], base_dir: Path) -> RaySettings:
    section = _mapping(params.get("ray"), "ray")
    _check_keys(section, [f.name for f in dataclasses.fields(RaySettings)], "ray")
    settings = RaySettings(**section)
    if settings.storage_path is not None:
        absolute = str((base_dir / Path(settings.storage_path).expanduser()).resolve())
        settings = dataclasses.replace(settings, storage_path=absolute)
    return settings


def _grid_axes(grid: Any, where: str) -> list[tuple[str, list[Any]]]:
    """Validated ``[(key, values)]`` of a grid mapping (order kept)."""
    grid = _mapping(grid, where, allow_none=False)
    if not grid:
        raise ConfigError(f"{where}: empty grid; give at least one key with a list of values")
    axes: list[tuple[str, list[Any]]] = []
    for key, values in grid.items():
        here = f"{where}.{key}"
        head, dot, option = str(key).partition(".")
        if head not in RUN_FIELDS:
            raise ConfigError(f"{here}: unknown run setting {head!r}; valid: {sorted(RUN_FIELDS)}")
        if dot and (head not in OPTION_FIELDS or not option):
            raise ConfigError(f"{here}: dotted keys must be <options>.<name> with options one of "
                              f"{list(OPTION_FIELDS)}")
        if not isinstance(values, list):
            raise ConfigError(f"{here}: must be a list of values, got {values!r}")
        if not values:
            raise ConfigError(f"{here}: empty list of values")
        seen: list[Any] = []
        for value in values:
            if value in seen:
                raise ConfigError(f"{here}: duplicate value {value!r}")
            seen.append(value)
        axes.append((str(key), values))
    return axes


def expand_grid(axes: Sequence[tuple[str, Sequence[Any]]]) -> list[dict[str, Any]]:
    """Cartesian product of ``[(key, values)]`` as a list of ``{key: value}`` points (first key slowest)."""
    keys = [key for key, _ in axes]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(values for _, values in axes))]


# The code that determines a trial's result (the sweep stages' code deps in dvc.yaml).
RESULT_CODE = ("methods", "datasets", "benchmark/config.py", "benchmark/train.py",
               "benchmark/metrics.py", "benchmark/models.py")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of the Python sources in RESULT_CODE: a trial run by other code is another trial.

    Content, not the git commit, so a README edit or a dirty work tree does not invalidate
    results, while any change to a quantizer, dataset, metric or training loop does.
    """
    digest = hashlib.sha256()
    for entry in RESULT_CODE:
        path = REPO_ROOT / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(REPO_ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def trial_id_of(config: RunConfig) -> str:
    """Deterministic id of a trial: a hash of its full configuration and of the result code
    (12 hex characters). Resuming skips a trial only if both are unchanged."""
    canonical = json.dumps({"config": config.to_dict(), "code": code_fingerprint()}, sort_keys=True, default=repr)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _Layer:
    """One layer of a trial's config and the params.yaml path it came from (for error messages).

    ``options_only``: the layer is a per-method ``method_options.<method>`` block whose keys are
    option names, not RunConfig fields.
    """

    where: str
    values: Mapping[str, Any]
    options_only: bool = False


def _split_point(point: Mapping[str, Any]) -> dict[str, Any]:
    """Grid point with dotted keys folded into option mappings."""
    values: dict[str, Any] = {}
    for key, value in point.items():
        head, dot, option = key.partition(".")
        if dot:
            values.setdefault(head, {})[option] = value
        else:
            values[key] = value
    return values


def _merge_layers(layers: Sequence[_Layer]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merged RunConfig values, and for every (dotted) key the params.yaml path that set it last."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for layer in layers:
        values = {"method_options": layer.values} if layer.options_only else layer.values
        for key, value in values.items():
            if key in OPTION_FIELDS and isinstance(value, Mapping):
                merged.setdefault(key, {}).update(value)
                for option in value:
                    origin[f"{key}.{option}"] = (
                        f"{layer.where}.{option}" if layer.options_only else f"{layer.where}.{key}.{option}"
                    )
            else:
                merged[key] = value
                origin[key] = f"{layer.where}.{key}"
    return merged, origin


def _field_path(origin: Mapping[str, str], key: str) -> str:
    """Dotted params.yaml path that set ``key`` (e.g. ``sweeps.s.grid.method``); bare if a default."""
    return origin.get(key, key)


def parse_sweep(
    params: Mapping[str, Any], name: str, *, base_dir: str | Path = ".", catalog: Catalog | None = None
) -> SweepSpec:
    """Validate sweep ``name`` of a params mapping and expand it into trials.

    ``catalog`` defaults to the live ``methods`` / ``datasets`` registries.
    Raises ConfigError (a ValueError) naming the dotted field at the first problem.
    """
    if not isinstance(params, Mapping):
        raise ConfigError(f"params: top level must be a mapping, got {type(params).__name__}")
    base_dir = Path(base_dir).expanduser().resolve()
    _check_keys(params, ("tracking", "ray", "base", "sweeps"), "params")
    sweeps = _mapping(params.get("sweeps"), "sweeps")
    if name not in sweeps:
        raise ConfigError(f"sweeps.{name}: unknown sweep; valid: {sorted(sweeps)}")
    where = f"sweeps.{name}"
    sweep = _mapping(sweeps[name], where, allow_none=False)
    _check_keys(sweep, ("base", "grid", "method_options", "max_trials"), where)
    top_base = _mapping(params.get("base"), "base")
    sweep_base = _mapping(sweep.get("base"), f"{where}.base")
    for layer_where, layer in (("base", top_base), (f"{where}.base", sweep_base)):
        _check_keys(layer, RUN_FIELDS, layer_where)
    if "grid" not in sweep:
        raise ConfigError(f"{where}.grid: missing; a sweep needs a grid of at least one key")
    axes = _grid_axes(sweep["grid"], f"{where}.grid")
    per_method = _mapping(sweep.get("method_options"), f"{where}.method_options")
    for method, options in per_method.items():
        _mapping(options, f"{where}.method_options.{method}", allow_none=False)
    max_trials = sweep.get("max_trials")
    if max_trials is not None and (isinstance(max_trials, bool) or not isinstance(max_trials, int)
                                   or max_trials < 1):
        raise ConfigError(f"{where}.max_trials: must be null or an integer >= 1, got {max_trials!r}")

    points = expand_grid(axes)
    if max_trials is not None and len(points) > max_trials:
        raise ConfigError(f"{where}.max_trials: the grid expands to {len(points)} trials, "
                          f"more than max_trials={max_trials}")
    catalog = catalog if catalog is not None else Catalog.from_registries()
    for method in per_method:
        if method not in catalog.method_options:
            raise ConfigError(f"{where}.method_options.{method}: unknown method; "
                              f"valid: {sorted(catalog.method_options)}")

    trials: list[Trial] = []
    seen: dict[str, Trial] = {}
    for point in points:
        layers = [_Layer("base", top_base), _Layer(f"{where}.base", sweep_base)]
        grid_values = _split_point(point)
        method = grid_values.get("method", sweep_base.get("method", top_base.get("method", RunConfig.method)))
        if isinstance(method, str) and method in per_method:
            layers.append(_Layer(f"{where}.method_options.{method}", per_method[method], options_only=True))
        layers.append(_Layer(f"{where}.grid", grid_values))
        values, origin = _merge_layers(layers)
        config = _build_config(values, origin, point)
        _validate_against_catalog(config, origin, point, catalog)
        trial = Trial(trial_id=trial_id_of(config), config=config, point=tuple(point.items()))
        if trial.trial_id in seen:
            raise ConfigError(f"{where}.grid: points {seen[trial.trial_id].describe()} and "
                              f"{trial.describe()} give the same run")
        seen[trial.trial_id] = trial
        trials.append(trial)
    return SweepSpec(
        name=name, trials=tuple(trials), tracking=parse_tracking(params, base_dir), ray=parse_ray(params, base_dir)
    )


def _build_config(values: Mapping[str, Any], origin: Mapping[str, str], point: Mapping[str, Any]) -> RunConfig:
    try:
        return RunConfig.from_dict(values)
    except ConfigError as err:
        key, _, why = str(err).partition(": ")
        raise ConfigError(f"{_field_path(origin, key)}: {why} (trial {_describe(point)})") from None


def _describe(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in point.items())


def _validate_against_catalog(
    config: RunConfig, origin: Mapping[str, str], point: Mapping[str, Any], catalog: Catalog
) -> None:
    """Method (and dataset) exist and take every given option; values checked by the dataclasses."""
    trial = f"(trial {_describe(point)})"
    registries = [("method", config.method, config.method_options, catalog.method_options)]
    if catalog.dataset_options is not None:
        registries.append(("dataset", config.dataset, config.dataset_options, catalog.dataset_options))
    for kind, name, options, known in registries:
        if name not in known:
            raise ConfigError(f"{_field_path(origin, kind)}: unknown {kind} {name!r}; valid: {sorted(known)}")
        accepted = [f.name for f in dataclasses.fields(known[name])]
        for option in options:
            if option not in accepted:
                path = _field_path(origin, f"{kind}_options.{option}")
                raise ConfigError(f"{path}: {kind} {name!r} does not take option {option!r}; "
                                  f"its options: {accepted} {trial}")
        try:
            known[name](**dict(options))
        except (ValueError, TypeError) as err:
            named = [option for option in options if option in str(err)]
            path = _field_path(origin, f"{kind}_options.{named[0]}" if named else f"{kind}_options")
            raise ConfigError(f"{path}: invalid option for {kind} {name!r}: {err} {trial}") from None


# --------------------------------------------------------------------------------------------
# Running


def _default_runner() -> Runner:
    from benchmark.train import run_experiment

    return run_experiment


def _run_trial(
    param: Mapping[str, Any],
    *,
    configs: Mapping[str, Mapping[str, Any]],
    runner: Runner | None,
    objective: str | None,
    artifacts_root: str,
) -> None:
    """Tune function-trainable: run one trial, report every step and the outcome to the driver.

    Exceptions from the runner never escape: they are reported as a ``failed`` result so the
    driver records the reason and Tune does not treat the trial as crashed (no retry noise).
    """
    from ray import tune

    config = RunConfig.from_dict(configs[param["trial_id"]])
    run = runner if runner is not None else _default_runner()
    last_objective = math.inf

    def on_step(step: int, metrics: Mapping[str, float]) -> None:
        nonlocal last_objective
        result: dict[str, Any] = {KIND_KEY: "step", STEP_KEY: int(step), "metrics": _as_floats(metrics)}
        if objective is not None:
            if objective not in metrics:
                raise ConfigError(f"ray.early_stopping_metric: {objective!r} is not a per-step metric; "
                                  f"reported: {sorted(metrics)}")
            last_objective = float(metrics[objective])
            result[OBJECTIVE_KEY] = last_objective
        tune.report(result)

    try:
        final = run(config, on_step=on_step, artifacts_dir=str(Path(artifacts_root) / param["trial_id"]))
    except Exception as err:  # noqa: BLE001 - any failure is recorded, the sweep goes on
        result = {KIND_KEY: "failed", "error": f"{type(err).__name__}: {err}"}
    else:
        result = {KIND_KEY: "final", "metrics": _as_floats(final)}
    if objective is not None:
        result[OBJECTIVE_KEY] = last_objective if result[KIND_KEY] == "final" else math.inf
    tune.report(result)


def _as_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Plain floats (0-d tensors and numpy scalars included; Tune refuses tensors); drop the rest."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, (str, bytes)):
            continue
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def trial_resources(settings: RaySettings, cluster: Mapping[str, float]) -> dict[str, float]:
    """Resources one trial asks for: GPUs only when the cluster has some (else trials would hang).

    Raises ConfigError when a trial could never be placed on this cluster.
    """
    cpus = float(settings.cpus_per_trial)
    cluster_cpus = float(cluster.get("CPU", 0))
    if cpus > cluster_cpus:
        raise ConfigError(f"ray.cpus_per_trial: {settings.cpus_per_trial} exceeds the cluster's "
                          f"{cluster_cpus:g} CPUs; trials would never start")
    cluster_gpus = float(cluster.get("GPU", 0))
    gpus = float(settings.gpus_per_trial) if cluster_gpus > 0 else 0.0
    if gpus > cluster_gpus > 0:
        raise ConfigError(f"ray.gpus_per_trial: {settings.gpus_per_trial} exceeds the cluster's "
                          f"{cluster_gpus:g} GPUs; trials would never start")
    return {"cpu": cpus, "gpu": gpus}


def ray_runtime_env() -> dict[str, Any]:
    """Runtime env making this repo importable in Ray workers (they run in trial directories)."""
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": python_path}}


def start_ray(settings: RaySettings, *, address: str | None = None, quiet: bool = True) -> bool:
    """Connect to Ray: ``address`` > ``settings.address`` > $RAY_ADDRESS > a new local instance.

    A local instance gets ``num_cpus`` (default: all cores) and no dashboard. Returns False if
    Ray was already initialised in this process (then it is used as is), else True.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or settings.address or os.environ.get("RAY_ADDRESS") or None
    common: dict[str, Any] = {
        "runtime_env": ray_runtime_env(),
        "log_to_driver": not quiet,
        "logging_level": logging.ERROR if quiet else logging.INFO,
    }
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(num_cpus=settings.num_cpus or os.cpu_count() or 1, include_dashboard=False, **common)
    return True


@dataclass(frozen=True)
class SweepOutcome:
    """What one ``run_sweep`` call did, and the resulting table."""

    name: str
    finished: int
    failed: int
    stopped: int
    skipped: int  # already finished before this call (resume)
    not_run: int  # pending trials this call never started (the sweep was interrupted)
    table_path: Path
    table: "pandas.DataFrame" = field(repr=False, compare=False)

    def summary(self) -> str:
        stopped = f", {self.stopped} stopped early" if self.stopped else ""
        not_run = f", {self.not_run} not run (interrupted)" if self.not_run else ""
        return (f"sweep {self.name}: {self.finished} finished, {self.failed} failed{stopped}{not_run} "
                f"({self.skipped} already done, not rerun) -> {self.table_path}")


class _MlflowRecorder:
    """Driver-side MLflow writer fed by Tune callbacks: the only writer of the SQLite store."""

    def __init__(self, client: Any, experiment_id: str, spec: SweepSpec, git: tracking.GitState,
                 stale_runs: Mapping[str, Sequence[str]]) -> None:
        self._client = client
        self._experiment_id = experiment_id
        self._spec = spec
        self._git = git
        self._configs = {trial.trial_id: trial.config for trial in spec.trials}
        self._stale_runs = dict(stale_runs)
        self._run_ids: dict[str, str] = {}  # Tune trial id -> MLflow run id
        self._closed: set[str] = set()

    def run_id(self, tune_trial: Any) -> str:
        """MLflow run of a Tune trial, created on first use (replacing stale runs of the trial)."""
        key = tune_trial.trial_id
        if key not in self._run_ids:
            trial_id = tune_trial.config["trial_id"]
            for stale in self._stale_runs.pop(trial_id, ()):
                self._client.delete_run(stale)
            self._run_ids[key] = tracking.start_trial_run(
                self._client, self._experiment_id, sweep=self._spec.name, trial_id=trial_id,
                config=self._configs[trial_id], git=self._git,
            )
        return self._run_ids[key]

    def on_start(self, tune_trial: Any) -> None:
        self.run_id(tune_trial)

    def on_result(self, tune_trial: Any, result: Mapping[str, Any]) -> None:
        kind = result.get(KIND_KEY)
        run_id = self.run_id(tune_trial)
        if kind == "step":
            tracking.log_step_metrics(self._client, run_id, result[STEP_KEY], result.get("metrics", {}))
        elif kind in ("final", "failed"):
            trial_id = tune_trial.config["trial_id"]
            config = self._configs[trial_id]
            artifacts = self._spec.artifacts_root / trial_id
            if kind == "final" and artifacts.is_dir():
                self._client.log_artifacts(run_id, str(artifacts))
            status = tracking.STATUS_FINISHED if kind == "final" else tracking.STATUS_FAILED
            self._close(tune_trial, status, metrics=result.get("metrics"), error=result.get("error"),
                        final_step=config.steps)

    def on_complete(self, tune_trial: Any) -> None:
        """Trial ended without a final report: ASHA stopped it, or the sweep was interrupted."""
        if tune_trial.trial_id not in self._closed:
            step = (tune_trial.last_result or {}).get(STEP_KEY, 0)
            if self._spec.ray.early_stopping:
                self._close(tune_trial, tracking.STATUS_STOPPED, error=f"stopped early by ASHA at step {step}")
            else:  # failed, so that a resumed sweep runs it again
                self._close(tune_trial, tracking.STATUS_FAILED,
                            error=f"Interrupted: trial ended at step {step} without a final result")

    def on_error(self, tune_trial: Any) -> None:
        """The trial process itself crashed (killed, out of memory): failed with Ray's message."""
        if tune_trial.trial_id not in self._closed:
            message = getattr(tune_trial, "error_msg", None) or "trial crashed in Ray"
            error_file = getattr(tune_trial, "error_file", None)
            if error_file and os.path.exists(error_file):
                lines = Path(error_file).read_text().strip().splitlines()
                message = lines[-1] if lines else message
            self._close(tune_trial, tracking.STATUS_FAILED, error=f"RayTrialError: {message}")

    def close_open_runs(self) -> None:
        """Fail every run still open (the sweep was interrupted, e.g. Ctrl-C): retried on resume."""
        for key, run_id in self._run_ids.items():
            if key not in self._closed:
                tracking.finish_trial_run(self._client, run_id, status=tracking.STATUS_FAILED,
                                          error="Interrupted: the sweep stopped before this trial finished")
                self._closed.add(key)

    def _close(self, tune_trial: Any, status: str, *, metrics: Mapping[str, Any] | None = None,
               error: str | None = None, final_step: int = 0) -> None:
        tracking.finish_trial_run(self._client, self.run_id(tune_trial), status=status, metrics=metrics,
                                  error=error, final_step=final_step)
        self._closed.add(tune_trial.trial_id)


def _tune_callback(recorder: _MlflowRecorder) -> Any:
    """A ray.tune Callback forwarding trial events to ``recorder`` (runs in the driver)."""
    from ray import tune

    class MlflowCallback(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            recorder.on_start(trial)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            recorder.on_result(trial, result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            recorder.on_complete(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            recorder.on_error(trial)

    return MlflowCallback()


def pending_trials(spec: SweepSpec, runs_by_trial: Mapping[str, Any]) -> list[Trial]:
    """Trials of ``spec`` without a finished (or ASHA-stopped) run: what a (re)run must do."""
    return [
        trial for trial in spec.trials
        if trial.trial_id not in runs_by_trial
        or runs_by_trial[trial.trial_id].data.tags.get("status") not in tracking.DONE_STATUSES
    ]


def run_sweep(
    spec: SweepSpec,
    *,
    runner: Runner | None = None,
    address: str | None = None,
    max_concurrent: int | None = None,
    quiet: bool = True,
) -> SweepOutcome:
    """Run every pending trial of ``spec`` through Ray Tune, record it in MLflow, export the table.

    ``runner`` (default ``benchmark.train.run_experiment``, imported in the workers) must be
    picklable by cloudpickle. Ray is started (and shut down afterwards) unless already
    initialised; see :func:`start_ray` for the address order. ``max_concurrent`` overrides
    ``ray.max_concurrent``.
    """
    from ray import tune

    client = tracking.make_client(spec.tracking.uri)
    experiment_id = tracking.get_or_create_experiment(client, spec.name)
    all_runs = tracking.search_sweep_runs(client, experiment_id)
    runs_by_trial = tracking.latest_runs_by_trial(all_runs)
    todo = pending_trials(spec, runs_by_trial)
    todo_ids = {trial.trial_id for trial in todo}
    stale: dict[str, list[str]] = {}
    for run in all_runs:
        trial_id = run.data.tags.get("trial")
        if trial_id in todo_ids:
            stale.setdefault(trial_id, []).append(run.info.run_id)

    if todo:
        started = start_ray(spec.ray, address=address, quiet=quiet)
        try:
            _fit(spec, todo, client, experiment_id, stale, runner, max_concurrent, quiet)
        finally:
            if started:
                import ray

                ray.shutdown()

    table = tracking.export_table(spec.tracking.uri, spec.name)
    path = tracking.write_table(table, spec.table_path)
    statuses = table.set_index("trial")["status"].to_dict() if len(table) else {}
    ran = [statuses.get(trial.trial_id) for trial in todo]
    return SweepOutcome(
        name=spec.name,
        finished=ran.count(tracking.STATUS_FINISHED),
        failed=ran.count(tracking.STATUS_FAILED) + ran.count(tracking.STATUS_RUNNING),
        stopped=ran.count(tracking.STATUS_STOPPED),
        skipped=len(spec.trials) - len(todo),
        not_run=ran.count(None),
        table_path=path,
        table=table,
    )


def _fit(spec: SweepSpec, todo: Sequence[Trial], client: Any, experiment_id: str,
         stale: Mapping[str, Sequence[str]], runner: Runner | None, max_concurrent: int | None,
         quiet: bool) -> None:
    """The Ray Tune part of :func:`run_sweep` (Ray already connected)."""
    import ray
    from ray import tune

    resources = trial_resources(spec.ray, ray.cluster_resources())
    objective = spec.ray.early_stopping_metric if spec.ray.early_stopping else None
    trainable = tune.with_resources(
        tune.with_parameters(
            _run_trial,
            configs={trial.trial_id: trial.config.to_dict() for trial in todo},
            runner=runner,
            objective=objective,
            artifacts_root=str(spec.artifacts_root.resolve()),
        ),
        resources,
    )
    scheduler = None
    if objective is not None:
        from ray.tune.schedulers import ASHAScheduler

        max_steps = max(trial.config.steps for trial in todo)
        # max_t one past the last step: ASHA stops any trial reaching max_t, which would cut off
        # the final evaluation of every trial that trains to the end.
        scheduler = ASHAScheduler(time_attr=STEP_KEY, metric=OBJECTIVE_KEY, mode="min", max_t=max_steps + 1,
                                  grace_period=max(1, max_steps // 4), reduction_factor=3)
    recorder = _MlflowRecorder(client, experiment_id, spec, tracking.git_state(REPO_ROOT), stale)
    storage = Path(spec.ray.storage_path or Path.home() / "ray_results" / "vqbench").expanduser().resolve()
    tuner = tune.Tuner(
        trainable,
        param_space={"trial_id": tune.grid_search([trial.trial_id for trial in todo])},
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            max_concurrent_trials=max_concurrent or spec.ray.max_concurrent,
            reuse_actors=True,  # a trial is a pure function of its config: skip a process start each
        ),
        run_config=tune.RunConfig(
            name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(storage),
            callbacks=[_tune_callback(recorder)],
            verbose=0 if quiet else 1,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    # Tune's console output engine ignores verbose=0 for its banner unless the legacy engine is
    # selected; the variable is read during fit() only, so it is set just around it.
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    if quiet:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        tuner.fit()
    finally:
        recorder.close_open_runs()
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--sweep", required=True, help="name of the sweep under `sweeps:`")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: params, "
                        "then $RAY_ADDRESS, then a local Ray)")
    parser.add_argument("--max-concurrent", type=int, default=None, help="at most N trials at once")
    parser.add_argument("--export-only", action="store_true", help="only rebuild the table from MLflow")
    parser.add_argument("--verbose", action="store_true", help="show Ray / Tune output")
    args = parser.parse_args(argv)
    if not args.verbose:
        import mlflow  # noqa: F401  (mlflow sets its loggers' level on import: import, then quieten)

        for noisy in ("mlflow", "alembic", "ray"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        parser.error("--max-concurrent must be >= 1")
    try:
        spec = load_sweep(args.params, args.sweep)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.export_only:
        table = tracking.export_table(spec.tracking.uri, spec.name)
        path = tracking.write_table(table, spec.table_path)
        print(f"sweep {spec.name}: exported {len(table)} trials -> {path}")
        return 0
    outcome = run_sweep(spec, address=args.address, max_concurrent=args.max_concurrent, quiet=not args.verbose)
    print(outcome.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
