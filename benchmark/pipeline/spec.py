"""Sweep specs: params.yaml parsed and validated into trials, before anything runs.

Usage::

    python -m benchmark sweep --params params.yaml --sweep NAME [--address ADDR] [--max-concurrent N]
    python -m benchmark sweep --params params.yaml --all   # every sweep: one process, one Ray session
    python -m benchmark sweep --params params.yaml --sweep NAME --export-only   # rebuild the table

or from Python: ``run_sweep(load_sweep("params.yaml", "NAME"))``. The CLI prints one line
(``sweep NAME: N finished, M failed (K already done, not rerun) -> results/NAME/trials.csv``), a
progress line per stage on stderr (tuning trials, then trials: done / total, failed, ETA), and
exits 0 when every trial ran, diverged trials included (a NaN loss is a result: a row of the
table); 3 when the sweep (or its tuning stage) was interrupted (Ctrl-C, SIGTERM) or left trials
not run (the table is still written, but a DVC stage fails and records nothing); 4 when every
trial failed; 5 when trials failed with an error other than their own divergence (an exception, a
plugin missing on a worker); 130 on a second Ctrl-C; 2 on a bad spec, a damaged, half-created or
locked store, a full disk, or a results folder that is not writable (one ``error:`` line naming
the key or file). A rerun runs exactly what is missing: trials (and tuning trials) not finished.

params.yaml: every key, its type, default and meaning is in ``docs/params.md``, generated from the
dataclasses below and :class:`~benchmark.experiments.config.RunConfig`
(:mod:`benchmark.pipeline.reference`). Unknown keys anywhere are errors.

Grid keys are RunConfig fields (``codebook_size``) or dotted option keys
(``method_options.gamma``, ``dataset_options.mean``, ``model_options.x``). The RunConfig of one
trial is layered, later wins, option mappings merged key by key::

    top-level base  <-  sweep base  <-  method_options[<the trial's method>]  <-  matching cases  <-  grid point

``cases`` express settings that depend on other factors (the authors' learning rate per method,
the code initialisation per distribution): each case's ``when`` is compared with the trial's
values after the layers before it, and its ``set`` applies when all match (later cases win). A
``set`` key that is also a grid key is an error (the grid would silently override it).

Every option in a trial's ``method_options`` must be a field of that method's options dataclass
(``methods.get(name).options``): a grid over ``method_options.gamma`` therefore only combines with
methods that take ``gamma``. Everything is validated before anything runs; errors are
:class:`benchmark.experiments.config.ConfigError` naming the dotted field (``sweeps.NAME.grid.method``).

A *setting* is a grid point without ``seed`` and ``method``. With ``tune:``, every method of every
setting first gets ``budget`` scored tuning trials (Ray Tune; the first is the setting's default
point, then a seeded Sobol sequence, or Optuna's TPE above 11 trials; none stopped early; see
:mod:`benchmark.pipeline.tuning`) over: ``codebook_lr`` (log-uniform in ``lr``), ``optimizer``
(``optimizers``) and the method's own ``tunables`` (``methods.get(name).tunables``). The search
space must contain every trial's own values (its ``codebook_lr``, ``optimizer`` and searched
options), and ``seed`` must not be a seed of the grid: tuning never sees the reported seeds. A tuning trial trains on the training
stream and is scored on the validation split (:func:`benchmark.experiments.train.run_experiment`,
``evaluation_split="validation"``), never on the test features. The sweep's trials (its seeds)
then run a second time with the best configuration of their (method, setting): ``trials.csv``
holds the default rows (the plain grid) and the tuned rows. Tuning trials are MLflow runs of the
experiment ``NAME-tuning``, tagged ``tuning`` (the id of their method and setting), with
deterministic ids (a rerun spends only what is left of a budget). ``results/NAME/tuning.csv``:
one row per (method, setting): ``default`` and ``tuned`` (mean of ``metric`` over the seeds, test
split), ``validation_best``, ``validation_default``, ``best_is_default``, ``sampler``,
``chosen.<key>`` (the best point), ``budget``, ``tuning_trials`` (attempts), ``scored_trials``,
``tuning_train_seconds``, ``robust_share`` (share of the budget whose validation utilization
reached 0.9), the default and tuned trial ids. A ``tunables`` name that no method of the sweep
declares is an error.

Trials, tracking, faults, resume
--------------------------------
- A trial's id is a hash of its full RunConfig: the same spec always gives the same ids.
- Trials only compute; the driver writes MLflow (a Tune callback receives every reported
  result), so concurrent trials never race on the SQLite store. One run per trial: params =
  ``RunConfig.flat_params()``, tags ``sweep``, ``trial``, ``status``, ``git_commit``,
  ``git_dirty``, ``error``; per-step curves ``train/<metric>``; the final record under its keys.
- A runner that raises (``benchmark.experiments.train.DivergedError`` on a NaN loss, or anything else)
  makes the trial ``failed`` with ``error = "<ExceptionType>: <message>"``; the sweep goes on.
- Interrupted sweep (Ctrl-C): trials already started are closed as ``failed``
  (``Interrupted: ...``), trials never started have no run; the table is still exported and the
  command exits 3, so ``dvc repro`` stops and does not take the partial table as the stage's output.
- One writer per store: a sweep holds ``<store>.lock`` (beside the SQLite file) from reading the
  pending trials to exporting the table; a second sweep on the same store waits (``--lock-timeout``
  to give up), saying which process holds it (pid, host, since), then runs what is still pending.
- Resume: rerunning a sweep skips every trial whose run is ``finished`` (or ``stopped`` by
  ASHA). Failed trials, and ``running`` ones left by a driver that was killed outright, are
  RETRIED: their old run is soft-deleted in MLflow when the retry starts, so a trial never has
  two active runs.
- The table ``<results_dir>/NAME/trials.csv`` is exported from MLflow after every sweep
  (:func:`benchmark.pipeline.tracking.export_table`), one row per trial: ``sweep, trial, run_id, status
  (finished|failed|stopped), error, git_commit, git_dirty``, every flat param, every final metric.
- Browse the runs: ``mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db``.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

import registry
from benchmark import metric_registry, paths
from benchmark.experiments.checks import check_against_registries
from benchmark.experiments.config import OPTIMIZERS, OPTION_FIELDS, RUN_FIELDS, ConfigError, RunConfig
from benchmark.pipeline import code, tracking

@dataclass(frozen=True)
class TrackingSettings:
    """Where runs and tables go (absolute once parsed)."""

    uri: str = paths.TRACKING_DB  # SQLite file (sqlite:///rel.db, sqlite:////abs.db) or a server URI (http://...)
    results_dir: Path = Path(paths.RESULTS_DIR)  # the table of sweep NAME goes to <results_dir>/NAME/trials.csv


@dataclass(frozen=True)
class RaySettings:
    """How trials are fanned out (the ``ray:`` section)."""

    address: str | None = None  # "auto" or "ray://host:10001"; null: $RAY_ADDRESS if set, else a local Ray
    num_cpus: int | None = None  # CPUs of the local Ray (null: all cores); ignored with an address
    cpus_per_trial: float = 1  # a number > 0
    gpus_per_trial: float = 0.0  # may be fractional; requested only when the cluster has GPUs
    early_stopping: bool = False  # true: ASHA stops the worst trials early (their status: stopped)
    early_stopping_metric: str = "loss"  # per-step metric (an on_step key) that ASHA minimises
    max_concurrent: int | None = None  # at most this many trials at once (null: as resources allow)
    storage_path: str | None = None  # Ray Tune's own files (null: ~/ray_results/vqbench)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ConfigError(f"{name}: {why}")  # parse_ray names the section

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
class SweepSettings:
    """The keys of one sweep (``sweeps.NAME``); only ``grid`` is required."""

    title: str | None = None  # its section title in the report (default: NAME)
    base: Mapping[str, Any] = field(default_factory=dict)  # RunConfig fields of this sweep (over the top-level base)
    grid: Mapping[str, list] = field(default_factory=dict)  # key -> values, cartesian product; dotted keys set one option
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # method -> options, its trials only
    cases: list | None = None  # [{when: {key: value}, set: {key: value}}]: settings for the matching trials
    max_trials: int | None = None  # guard: an error if the grid expands to more trials
    tune: Mapping[str, Any] | None = None  # the tuning stage (below)


SWEEP_KEYS = tuple(f.name for f in dataclasses.fields(SweepSettings))
TOP_LEVEL_KEYS = ("tracking", "ray", "base", "sweeps", "questions")


@dataclass(frozen=True)
class QuestionSweeps:
    """The sweeps each open question of the report reads (the ``questions:`` section)."""

    non_gaussian: tuple[str, ...] = ("non_gaussian",)  # question 1: Gaussian W vs non-parametric matching
    density_map: tuple[str, ...] = ("density_map", "density_map_k")  # question 2: the best c over d and K
    three_point: tuple[str, ...] = ("low_d", "low_d_paper")  # question 2: plain f, Gersho's and Theorem 2's density
    generation: tuple[str, ...] = ("vqvae", "transplant")  # question 3: sweeps with a downstream token prior
    dead_codes: tuple[str, ...] = ("dead_codes",)  # the related ablation: dead-code strategies vs matching


def parse_questions(params: Mapping[str, Any]) -> QuestionSweeps:
    """The ``questions:`` section: each key a list of sweep names of ``sweeps:`` (ConfigError naming
    ``questions.KEY`` otherwise); a question left out reads its default sweeps."""
    section = _mapping(params.get("questions"), "questions")
    _check_keys(section, [f.name for f in dataclasses.fields(QuestionSweeps)], "questions")
    sweeps = _mapping(params.get("sweeps"), "sweeps")
    values = {}
    for key, names in section.items():
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"questions.{key}: must be a non-empty list of sweep names, got {names!r}")
        for name in names:
            if name not in sweeps:
                raise ConfigError(f"questions.{key}: {name!r} is not a sweep of sweeps:; valid: {sorted(sweeps)}")
        values[key] = tuple(names)
    return QuestionSweeps(**values)


@dataclass(frozen=True)
class TuneSettings:
    """The ``tune:`` section of a sweep (validated; see the module docstring)."""

    budget: int = 8  # tuning trials per (method, setting); an integer >= 1
    metric: str = "error_vs_kmeans"  # a ranked metric every run records (benchmark/metric_registry.py), on validation
    mode: str = "min"  # min / max; must agree with the metric's direction (omitted: the metric's)
    lr: tuple[float, float] = (1e-3, 3.0)  # codebook_lr range [low, high], log-uniform, 0 < low < high
    optimizers: tuple[str, ...] = OPTIMIZERS  # a non-empty subset of the optimizers, searched
    tunables: tuple[str, ...] | None = None  # null: every tunable each method declares; a list: only these
    seed: int = 1000  # seed of the tuning trials and of the sampler; apart from the grids' reported seeds


MAX_TUNING_BUDGET = 1000  # tuning trials per (method, setting): TPE's returns are long flat by then


def parse_tune(section: Any, where: str, methods_tunables: Mapping[str, Mapping[str, Any]],
               experiments: Iterable[str] = (metric_registry.FIT,)) -> TuneSettings:
    """Validate a ``tune:`` mapping; ``methods_tunables``: method -> its tunables (the sweep's methods);
    ``experiments``: the sweep's, which must all record ``metric`` (``benchmark.metric_registry``)."""
    section = _mapping(section, where, allow_none=False)
    _check_keys(section, [f.name for f in dataclasses.fields(TuneSettings)], where)
    values = {**dataclasses.asdict(TuneSettings()), **section}

    def bad(key: str, why: str) -> None:
        raise ConfigError(f"{where}.{key}: {why}")

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not is_int(values["budget"]) or not 1 <= values["budget"] <= MAX_TUNING_BUDGET:
        bad("budget", f"must be >= 1 and <= {MAX_TUNING_BUDGET} (tuning trials per method and setting), "
                      f"got {values['budget']!r}")
    try:
        values["mode"] = metric_registry.check_objective(values["metric"], section.get("mode"), experiments, where)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    lr = values["lr"]
    if not isinstance(lr, (list, tuple)) or len(lr) != 2 \
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in lr):
        bad("lr", f"must be [low, high], got {lr!r}")
    if not 0 < lr[0] < lr[1]:
        bad("lr", f"must satisfy 0 < low < high (log-uniform), got {list(lr)!r}")
    optimizers = values["optimizers"]
    if not isinstance(optimizers, (list, tuple)) or not optimizers:
        bad("optimizers", f"must be a non-empty list of {list(OPTIMIZERS)}, got {optimizers!r}")
    for name in optimizers:
        if name not in OPTIMIZERS:
            bad("optimizers", f"unknown optimizer {name!r}; valid: {list(OPTIMIZERS)}")
    tunables = values["tunables"]
    if tunables is not None:
        if not isinstance(tunables, (list, tuple)) or not tunables:
            bad("tunables", f"must be null or a non-empty list of option names, got {tunables!r}")
        declared = sorted({name for options in methods_tunables.values() for name in options})
        for name in tunables:
            if name not in declared:
                bad("tunables", f"unknown tunable {name!r}; the sweep's methods declare {declared}")
        tunables = tuple(tunables)
    if not is_int(values["seed"]):
        bad("seed", f"must be an integer, got {values['seed']!r}")
    return TuneSettings(budget=values["budget"], metric=values["metric"], mode=values["mode"],
                        lr=(float(lr[0]), float(lr[1])), optimizers=tuple(optimizers), tunables=tunables,
                        seed=values["seed"])


def check_tuning_against_trials(tune: TuneSettings, trials: Sequence["Trial"], where: str, catalog: "Catalog") -> None:
    """The tuning can only pick its default when the search space holds it, and must not see the seeds
    it reports: every trial's ``codebook_lr`` lies in ``lr``, its ``optimizer`` in ``optimizers``,
    each searched option's value (given, else its default) in that tunable's range or choices; and
    ``seed`` is none of the trials' seeds. ConfigError naming the field otherwise."""
    seeds = sorted({trial.config.seed for trial in trials})
    if tune.seed in seeds:
        raise ConfigError(f"{where}.seed: {tune.seed} is also a reported seed of the grid {seeds}; "
                          f"tuning must run on a seed the table does not report")
    for trial in trials:
        config = trial.config
        here = f"(trial {trial.describe()})"
        if not tune.lr[0] <= config.codebook_lr <= tune.lr[1]:
            raise ConfigError(f"{where}.lr: {list(tune.lr)} does not contain the default codebook_lr "
                              f"{config.codebook_lr!r} {here}")
        if config.optimizer not in tune.optimizers:
            raise ConfigError(f"{where}.optimizers: {list(tune.optimizers)} does not contain the default "
                              f"optimizer {config.optimizer!r} {here}")
        tunables = catalog.method_tunables.get(config.method, {})
        options_class = catalog.method_options.get(config.method)
        if not tunables or options_class is None:
            continue
        options = registry.make_options(options_class, dict(config.method_options))
        for name, tunable in tunables.items():
            if tune.tunables is not None and name not in tune.tunables:
                continue
            value = getattr(options, name)
            inside = value in tunable.choices if tunable.choices else tunable.low <= value <= tunable.high
            if not inside:
                span = list(tunable.choices) if tunable.choices else [tunable.low, tunable.high]
                raise ConfigError(f"{where}.tunables: the search range {span} of {config.method}'s {name} does "
                                  f"not contain its default {value!r} (method_options.{name}) {here}")


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
    tune: TuneSettings | None = None

    @property
    def table_path(self) -> Path:
        return self.tracking.results_dir / self.name / paths.TABLE_FILE

    @property
    def artifacts_root(self) -> Path:
        """``<results>/<sweep>/artifacts/<trial id>/``: each trial's final codebook and usage."""
        return self.tracking.results_dir / self.name / paths.ARTIFACTS_DIR


@dataclass(frozen=True)
class Catalog:
    """What validation needs from the registries: name -> options dataclass, per registry.

    ``dataset_options`` is None when datasets go unchecked (names and options).
    """

    method_options: Mapping[str, type]
    dataset_options: Mapping[str, type] | None = None
    live: bool = False  # the real registries: also run benchmark.experiments.config.check_against_registries
    method_tunables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

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
            live=True,
            method_tunables={name: dict(methods.get(name).tunables) for name in methods.available()},
        )


def _options_type(spec: Any) -> type:
    """The options dataclass of a registry spec."""
    options = getattr(spec, "options", None)
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise TypeError(f"registry spec {spec!r} has no options dataclass")
    return options


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when PyYAML has it
    """``yaml.SafeLoader`` refusing a key written twice in one mapping (YAML keeps the last one
    silently); keys merged in by ``<<: *anchor`` may be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (YAML would keep only the last)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_params(path: str | Path) -> dict[str, Any]:
    """Read params.yaml (UTF-8); unreadable or non-UTF-8 files, malformed YAML, a key written twice
    in one mapping or a non-mapping top level raise ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read params file ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8") from None
    try:
        params = copy.deepcopy(_parse_yaml(text))  # the caller's own copy of the one parse of this text
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(params).__name__}")
    return params


@functools.lru_cache(maxsize=8)
def _parse_yaml(text: str) -> Any:
    """The document of ``text``, parsed once per process (``sweep --all`` loads the params file once
    per sweep)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


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
        uri = tracking.resolve_tracking_uri(section.get("uri", paths.TRACKING_DB), base_dir)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    results_dir = section.get("results_dir", paths.RESULTS_DIR)
    if not isinstance(results_dir, str) or not results_dir:
        raise ConfigError(f"tracking.results_dir: must be a path, got {results_dir!r}")
    return TrackingSettings(uri=uri, results_dir=(base_dir / Path(results_dir).expanduser()).resolve())


def parse_ray(params: Mapping[str, Any], base_dir: Path) -> RaySettings:
    section = _mapping(params.get("ray"), "ray")
    _check_keys(section, [f.name for f in dataclasses.fields(RaySettings)], "ray")
    try:
        settings = registry.make_options(RaySettings, section, where="ray")
    except ValueError as err:
        raise ConfigError(str(err)) from None
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


def _parse_cases(
    value: Any, where: str, grid_keys: Sequence[str]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``cases``: a list of ``{when: {key: value}, set: {key: value}}`` with dotted keys."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list of {{when, set}} mappings, got {type(value).__name__}")
    cases = []
    for index, case in enumerate(value):
        here = f"{where}[{index}]"
        case = _mapping(case, here, allow_none=False)
        _check_keys(case, ("when", "set"), here)
        when = _mapping(case.get("when"), f"{here}.when", allow_none=False)
        settings = _mapping(case.get("set"), f"{here}.set", allow_none=False)
        for part, mapping in (("when", when), ("set", settings)):
            if not mapping:
                raise ConfigError(f"{here}.{part}: must not be empty")
            for key in mapping:
                head = key.partition(".")[0]
                if head not in RUN_FIELDS or (head in OPTION_FIELDS) != ("." in key):
                    raise ConfigError(f"{here}.{part}.{key}: not a RunConfig field or a dotted option key "
                                      f"(method_options.NAME, dataset_options.NAME, model_options.NAME)")
        for key in settings:
            if key in grid_keys:
                raise ConfigError(f"{here}.set.{key}: also a grid key; the grid would override it")
        cases.append((dict(when), dict(settings)))
    return cases


def _lookup(values: Mapping[str, Any], key: str) -> Any:
    """The value of a (dotted) key in merged RunConfig values; the RunConfig default when unset."""
    head, dot, option = key.partition(".")
    if dot:
        return values.get(head, {}).get(option)
    return values.get(head, getattr(RunConfig(), head))


def _field_path(origin: Mapping[str, str], key: str) -> str:
    """Dotted params.yaml path that set ``key`` (e.g. ``sweeps.s.grid.method``); bare if a default.

    An option mapping (``model_options``) is named by where its last option was set.
    """
    if key in origin:
        return origin[key]
    inner = [path for dotted, path in origin.items() if dotted.startswith(f"{key}.")]
    return inner[-1].rsplit(".", 1)[0] if inner else key


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
    where, sweep = _sweep_entry(params, name)
    top_base = _mapping(params.get("base"), "base")
    sweep_base = _mapping(sweep.get("base"), f"{where}.base")
    for layer_where, layer in (("base", top_base), (f"{where}.base", sweep_base)):
        _check_keys(layer, RUN_FIELDS, layer_where)
    axes, per_method, cases, max_trials = _sweep_grid(sweep, where)

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
        trial = _trial_at(point, top_base, sweep_base, per_method, cases, where, catalog)
        if trial.trial_id in seen:
            raise ConfigError(f"{where}.grid: points {seen[trial.trial_id].describe()} and "
                              f"{trial.describe()} give the same run")
        seen[trial.trial_id] = trial
        trials.append(trial)
    _check_cases_match(cases, trials, where, catalog)
    tune = None
    if sweep.get("tune") is not None:
        sweep_methods = {trial.config.method for trial in trials}
        tune = parse_tune(sweep["tune"], f"{where}.tune",
                          {m: catalog.method_tunables.get(m, {}) for m in sorted(sweep_methods)},
                          sorted({trial.config.experiment for trial in trials}))
        check_tuning_against_trials(tune, trials, f"{where}.tune", catalog)
        _check_tuning_bounds(tune, trials, where, max_trials)
    return SweepSpec(
        name=name, trials=tuple(trials), tracking=parse_tracking(params, base_dir), ray=parse_ray(params, base_dir),
        tune=tune,
    )


def _check_cases_match(cases: Sequence[tuple[dict[str, Any], dict[str, Any]]], trials: Sequence[Trial], where: str,
                       catalog: Catalog) -> None:
    """Every case names known methods / datasets and sets something on at least one trial.

    A case whose ``when`` names a method or dataset this sweep does not run may match nothing: it
    is a per-method (per-dataset) setting shared between sweeps, like ``method_options.<method>``."""
    registries = {"method": catalog.method_options, "dataset": catalog.dataset_options}
    for index, (when, settings) in enumerate(cases):
        here = f"{where}.cases[{index}]"
        for part, mapping in (("when", when), ("set", settings)):
            for kind, known in registries.items():
                if known is not None and kind in mapping and mapping[kind] not in known:
                    name = mapping[kind]
                    raise ConfigError(f"{here}.{part}.{kind}: unknown {kind} {name!r}."
                                      f"{registry.close_match_hint(str(name), sorted(known))} "
                                      f"Valid {kind}s: {sorted(known)}")
        matched = any(all(_trial_value(trial, key) == value for key, value in when.items()) for trial in trials)
        elsewhere = any(kind in when and when[kind] not in {_trial_value(t, kind) for t in trials}
                        for kind in registries)
        if not matched and not elsewhere:
            values = {key: sorted({repr(_trial_value(t, key)) for t in trials}) for key in when}
            raise ConfigError(f"{here}.when: matches no trial of the sweep (a typo?); the trials have "
                              + "; ".join(f"{key} in {vals}" for key, vals in values.items()))


def _trial_value(trial: Trial, key: str) -> Any:
    """The value of a (dotted) key in a trial's config, None when an option is unset."""
    return _lookup(trial.config.to_dict(), key)


def _check_tuning_bounds(tune: TuneSettings, trials: Sequence[Trial], where: str, max_trials: int | None) -> None:
    """``max_trials`` caps the tuning trials and the tuned reruns too, not only the grid."""
    if max_trials is None:
        return
    groups = len({code.trial_id_of(trial.config.replace(seed=tune.seed)) for trial in trials})
    total = len(trials) + groups * tune.budget + len(trials)
    if total > max_trials:
        raise ConfigError(f"{where}.max_trials: {len(trials)} trials + {groups} x {tune.budget} tuning trials "
                          f"+ {len(trials)} tuned reruns = {total}, more than max_trials={max_trials}")


SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")  # names folders, MLflow experiments, DVC stages


def check_sweep_name(name: Any) -> str:
    """A sweep's name becomes a folder (``data/prepared/NAME``, ``results/NAME``): letters, digits,
    ``_`` and ``-`` only, starting with a letter or digit, at most 100 characters."""
    if not isinstance(name, str) or not SWEEP_NAME.fullmatch(name):
        raise ConfigError(f"sweeps.{name}: a sweep name names folders; use letters, digits, '_' and '-' only "
                          f"(starting with a letter or digit, at most 100 characters), got {name!r}")
    return name


def sweep_names(params: Mapping[str, Any]) -> list[str]:
    """The names under ``sweeps:``, in the file's order (each checked by :func:`check_sweep_name`)."""
    _check_keys(params, TOP_LEVEL_KEYS, "params")
    return [check_sweep_name(name) for name in _mapping(params.get("sweeps"), "sweeps")]


def _sweep_entry(params: Mapping[str, Any], name: str) -> tuple[str, Mapping[str, Any]]:
    """The dotted place of sweep ``name`` and its mapping, the top level's and its keys checked."""
    _check_keys(params, TOP_LEVEL_KEYS, "params")
    sweeps = _mapping(params.get("sweeps"), "sweeps")
    if name not in sweeps:
        raise ConfigError(f"sweeps.{name}: unknown sweep; valid: {sorted(sweeps)}")
    check_sweep_name(name)
    where = f"sweeps.{name}"
    sweep = _mapping(sweeps[name], where, allow_none=False)
    _check_keys(sweep, SWEEP_KEYS, where)
    if "title" in sweep and (not isinstance(sweep["title"], str) or not sweep["title"].strip()):
        raise ConfigError(f"{where}.title: must be a non-empty string (the report's section title), "
                          f"got {sweep['title']!r}")
    return where, sweep


def _sweep_grid(
    sweep: Mapping[str, Any], where: str,
) -> tuple[list[tuple[str, list[Any]]], Mapping[str, Any], list[tuple[dict[str, Any], dict[str, Any]]], int | None]:
    """The sweep's grid axes, per-method options, cases and ``max_trials``, each checked."""
    if "grid" not in sweep:
        raise ConfigError(f"{where}.grid: missing; a sweep needs a grid of at least one key")
    axes = _grid_axes(sweep["grid"], f"{where}.grid")
    per_method = _mapping(sweep.get("method_options"), f"{where}.method_options")
    for method, options in per_method.items():
        _mapping(options, f"{where}.method_options.{method}", allow_none=False)
    cases = _parse_cases(sweep.get("cases"), f"{where}.cases", [key for key, _ in axes])
    max_trials = sweep.get("max_trials")
    if max_trials is not None and (isinstance(max_trials, bool) or not isinstance(max_trials, int)
                                   or max_trials < 1):
        raise ConfigError(f"{where}.max_trials: must be null or an integer >= 1, got {max_trials!r}")
    return axes, per_method, cases, max_trials


def _trial_at(point: dict[str, Any], top_base: Mapping[str, Any], sweep_base: Mapping[str, Any],
              per_method: Mapping[str, Any], cases: list[tuple[dict[str, Any], dict[str, Any]]], where: str,
              catalog: Catalog) -> Trial:
    """The trial of one grid point: the bases, the method's options, the matching cases, then the point."""
    layers = [_Layer("base", top_base), _Layer(f"{where}.base", sweep_base)]
    grid_values = _split_point(point)
    method = grid_values.get("method", sweep_base.get("method", top_base.get("method", RunConfig.method)))
    if isinstance(method, str) and method in per_method:
        layers.append(_Layer(f"{where}.method_options.{method}", per_method[method], options_only=True))
    if cases:
        current, _ = _merge_layers(layers + [_Layer(f"{where}.grid", grid_values)])
        for index, (when, settings) in enumerate(cases):
            if all(_lookup(current, key) == value for key, value in when.items()):
                layers.append(_Layer(f"{where}.cases[{index}].set", _split_point(settings)))
    layers.append(_Layer(f"{where}.grid", grid_values))
    values, origin = _merge_layers(layers)
    config = _build_config(values, origin, point)
    _validate_against_catalog(config, origin, point, catalog)
    if catalog.live:
        try:
            check_against_registries(config)
        except ConfigError as err:
            key, _, why = str(err).partition(": ")
            raise ConfigError(f"{_field_path(origin, key)}: {why} (trial {_describe(point)})") from None
    return Trial(trial_id=code.trial_id_of(config), config=config, point=tuple(point.items()))


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
            valid = sorted(known)
            raise ConfigError(f"{_field_path(origin, kind)}: unknown {kind} {name!r}."
                              f"{registry.close_match_hint(str(name), valid)} Valid {kind}s: {valid}")
        try:
            registry.make_options(known[name], options)
        except (ValueError, TypeError) as err:
            field, _, why = str(err).partition(": ")
            key = f"{kind}_options.{field}" if field in options else f"{kind}_options"
            raise ConfigError(f"{_field_path(origin, key)}: {why if field in options else err} "
                              f"({kind} {name!r}) {trial}") from None
