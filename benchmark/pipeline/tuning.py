"""The tuning stage of a sweep: an equal budget per (method, setting), scored on the validation split.

The search space of one method (:func:`search_space`): ``codebook_lr`` log-uniform in
``tune.lr``, ``optimizer`` in ``tune.optimizers`` and every entry of the method's own
``tunables`` (``methods.get(name).tunables``; only those named in ``tune.tunables`` when given),
as Ray Tune domains for an Optuna sampler (``ray.tune.search.optuna.OptunaSearch``). A sampled
point is applied to the setting's config by :func:`apply` (``method_options.<name>`` for a tunable).

A tuning that cannot lose to the default:

- The first candidate of every group is its default point (:func:`default_point`: the setting's own
  learning rate, optimizer and option values; ``points_to_evaluate``), and the spec checks at parse
  time that the search space contains it. The chosen point is therefore never worse than the default
  on the validation split; when the default is the best, the tuned rows are the default rows.
- ``budget`` counts *scored* trials: a trial that trained to its end (finished, or diverged: a
  NaN loss is the worst result of that point) is scored; one that failed otherwise does not count
  and the group gets another trial, up to ``ATTEMPTS_PER_TRIAL x budget`` attempts. No trial is
  stopped early: the training loss scales with each trial's own loss weights, so it does not rank
  trials, and a validation score per rung would cost more than the stopped steps save here.
- The sampler is named for what it is (:func:`sampler_for`): up to ``TPE_STARTUP`` points after the
  default, TPE would still be drawing its random start-up points, so a scrambled Sobol sequence
  (Optuna's ``QMCSampler``, seeded) covers the space instead; above that, TPE.
- Tuning trials run on ``tune.seed``, which the spec keeps apart from the grid's reported seeds.

A tuning trial's id (:func:`tuning_trial_id`) hashes the setting's config, the tuning settings and
the trial's index in the budget, so a rerun finds the same runs (tag ``tuning``) in MLflow.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from benchmark import paths
from benchmark.experiments.config import RunConfig
from benchmark.pipeline import cluster, code, tracking
from benchmark.pipeline.recorder import (STEP_KEY, TAGS_KEY, HeldBack, IncompleteError, Progress, SweepsRecorder, grid_key,
                                         kept_interrupt_handler, split_grid_key, tune_callback)
from benchmark.pipeline.spec import SweepSpec, Trial, TuneSettings

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


def default_point(setting: RunConfig, space: Mapping[str, Any]) -> dict[str, Any]:
    """The setting's own values at the keys of ``space``: its learning rate, its optimizer and the value
    of each searched option (given in ``method_options``, else the option's default)."""
    import methods
    import registry

    options = registry.make_options(methods.get(setting.method).options, dict(setting.method_options))
    point: dict[str, Any] = {}
    for key in space:
        if key == LR_KEY:
            point[key] = float(setting.codebook_lr)
        elif key == OPTIMIZER_KEY:
            point[key] = setting.optimizer
        else:
            point[key] = getattr(options, key.removeprefix(OPTION_PREFIX))
    return point


def same_point(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Equal points (floats to 1e-9 relative: a point read back from MLflow went through text)."""
    if a is None or b is None or set(a) != set(b):
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if not math.isclose(float(x), float(y), rel_tol=1e-9):
                return False
        elif x != y:
            return False
    return True


TPE_STARTUP = 10  # Optuna TPE's n_startup_trials: its first 10 points are random draws
SOBOL, TPE = "Sobol quasi-random (Optuna QMCSampler, scrambled)", "TPE (Optuna TPESampler)"


def sampler_name(budget: int) -> str:
    """The sampler of a group with ``budget`` trials (the first is the default point): a scrambled
    Sobol sequence while the other ``budget - 1`` points fit in TPE's random start-up, else TPE."""
    return SOBOL if budget - 1 <= TPE_STARTUP else TPE


def sampler_for(budget: int, seed: int) -> tuple[str, Any]:
    """(:func:`sampler_name`, that Optuna sampler seeded by ``seed``)."""
    import warnings

    import optuna

    if sampler_name(budget) == SOBOL:
        with warnings.catch_warnings():  # "QMCSampler is experimental": its interface, not its sequence
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return SOBOL, optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                                     warn_independent_sampling=False)
    return TPE, optuna.samplers.TPESampler(n_startup_trials=TPE_STARTUP, seed=seed)


def tuning_trial_id(setting: RunConfig, settings: TuneSettings, index: int) -> str:
    """Deterministic id of tuning trial ``index`` of a (method, setting): config, code, settings, index."""
    canonical = json.dumps({"setting": code.trial_id_of(setting), "tune": dataclasses.asdict(settings),
                            "index": index}, sort_keys=True, default=repr)
    return "tune-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# The stage: one Ray Tune search per (method, setting), recorded in MLflow, resumable

TUNING_SUFFIX = "-tuning"  # tuning runs live in the MLflow experiment <sweep>-tuning
GROUP_TAG = "tuning"  # tag of a tuning run: the id of its (method, setting)
TUNING_FILE = "tuning.csv"
TUNING_TRIALS_FILE = "tuning_trials.csv"
OBJECTIVE_KEY = "vqbench_tuning_objective"  # what Optuna optimises: the validation metric
LOSS_KEY = "vqbench_tuning_loss"  # the training loss of a step (logged as its curve, never compared)
KIND_FINAL, KIND_DIVERGED, KIND_FAILED = "final", "diverged", "failed"  # how a tuning trial ended
SCORED_KINDS = (KIND_FINAL, KIND_DIVERGED)  # a trial that trained to its end: it counts in the budget
DIVERGED_PREFIX = "DivergedError"  # the error of a diverged run (tracking: "<ExceptionType>: <message>")
ATTEMPTS_PER_TRIAL = 2  # a group may spend up to 2 x budget attempts to score its budget
GROUP_KEY = "vqbench_tuning_group"  # in a tuning trial's config: the (method, setting) it belongs to
ROBUST_UTILIZATION = 0.9  # the robustness column: share of the budget reaching this utilization


@dataclass(frozen=True)
class Group:
    """One (method, setting) of a tuned sweep: its tuning base config and the sweep trials it covers."""

    group_id: str
    setting: RunConfig  # the trials' config with seed = tune.seed
    trials: tuple[Trial, ...]


@dataclass(frozen=True)
class GroupResult:
    """What tuning one group gave: the best point (None: no tuning trial finished) and its cost."""

    group: Group
    best: Mapping[str, Any] | None
    best_objective: float
    trials: int  # tuning trials recorded (scored or failed)
    train_seconds: float
    robust_share: float  # share of the budget whose validation utilization reached ROBUST_UTILIZATION
    scored: int = 0  # trials that count in the budget (trained to their end)
    best_is_default: bool = False  # the default point scored best: the tuned rows are the default rows
    default_objective: float = math.nan  # the default point's validation score


def groups_of(spec: SweepSpec) -> list[Group]:
    """The (method, setting) groups of a tuned sweep, in the order of their first trial."""
    if spec.tune is None:
        raise ValueError(f"sweep {spec.name!r}: has no tune section")
    members: dict[str, list[Trial]] = {}
    settings: dict[str, RunConfig] = {}
    for trial in spec.trials:
        setting = trial.config.replace(seed=spec.tune.seed)
        key = code.trial_id_of(setting)
        settings[key] = setting
        members.setdefault(key, []).append(trial)
    return [Group(group_id=key, setting=settings[key], trials=tuple(members[key])) for key in members]


def tuned_trials(results: Sequence[GroupResult]) -> list[Trial]:
    """The sweep trials rerun with the best point of their group (groups without one: none). Where
    the default point scored best, the tuned trials are the default trials themselves."""
    out: list[Trial] = []
    for result in results:
        if result.best is None:
            continue
        if result.best_is_default:
            out.extend(result.group.trials)
            continue
        for trial in result.group.trials:
            config = apply(trial.config, result.best)
            out.append(Trial(trial_id=code.trial_id_of(config), config=config,
                             point=(*trial.point, ("tuned", True))))
    return out


def _tuning_trial(point: Mapping[str, Any], *, settings: Mapping[str, Mapping[str, Any]], runner: Any,
                  scoring: Mapping[str, tuple[str, str]], gpus_scheduled: bool = False) -> None:
    """Tune function-trainable of one tuning trial: train, score on the validation split, report.
    ``point`` carries its group (``GROUP_KEY``: ``grid_key(sweep, group id)``); ``settings``: that key ->
    the group's base config; ``scoring``: that key -> its sweep's (``tune.metric``, ``tune.mode``).
    The first report says where it runs (``sweep._run_trial`` does the same)."""
    from ray import tune

    point = dict(point)
    key = point.pop(GROUP_KEY)
    setting = settings[key]
    metric, mode = scoring[key]
    worst = math.inf if mode == "min" else -math.inf
    config = cluster.placed_config(apply(RunConfig.from_dict(setting), point), gpus_scheduled)
    first: dict[str, Any] = {TAGS_KEY: tracking.worker_tags(config)}
    run = runner
    if run is None:
        from benchmark.experiments.train import run_experiment as run

    def report(result: dict[str, Any]) -> None:
        tune.report({**first, **result})
        first.clear()

    def on_step(step: int, metrics: Mapping[str, float]) -> None:
        report({"kind": "step", STEP_KEY: int(step), OBJECTIVE_KEY: worst,
                LOSS_KEY: float(metrics.get("loss", math.inf))})

    from benchmark.experiments.train import DivergedError

    try:
        final = run(config, on_step=on_step, evaluation_split="validation")
        value = float(final[metric])
    except Exception as err:  # noqa: BLE001 - a failed tuning trial is recorded, the search goes on
        kind = KIND_DIVERGED if isinstance(err, DivergedError) else KIND_FAILED
        report({"kind": kind, "error": f"{type(err).__name__}: {err}", OBJECTIVE_KEY: worst,
                LOSS_KEY: math.inf, STEP_KEY: config.steps})
        return
    report({"kind": KIND_FINAL, "metrics": {k: float(v) for k, v in final.items()},
            OBJECTIVE_KEY: value if math.isfinite(value) else worst, LOSS_KEY: math.inf,
            STEP_KEY: config.steps})


class _TuningRecorder:
    """Driver-side: one MLflow run per tuning trial, id ``tuning_trial_id(setting, settings, index)``
    with index the trial's place in its group's budget: the lowest not held by a spent run
    (``free``: group -> those indices, in order), so a rerun fills exactly the holes."""

    def __init__(self, client: Any, experiment_id: str, spec: SweepSpec, groups: Mapping[str, Group],
                 free: Mapping[str, Sequence[int]], git: tracking.GitState, progress: Progress | None = None) -> None:
        self._client, self._experiment_id, self._spec, self._groups = client, experiment_id, spec, groups
        self._progress = progress
        self._free = {name: list(indices) for name, indices in free.items()}
        self._git = git
        self._runs: dict[str, str] = {}
        self._group_of: dict[str, Group] = {}
        self._closed: set[str] = set()
        self._held = HeldBack(client)

    def run_id(self, tune_trial: Any) -> str:
        if tune_trial.trial_id not in self._runs:
            assert self._spec.tune is not None
            point = dict(tune_trial.config)
            group = self._groups[split_grid_key(point.pop(GROUP_KEY))[1]]
            index = self._free[group.group_id].pop(0)
            trial_id = tuning_trial_id(group.setting, self._spec.tune, index)
            setting = [item for item in group.trials[0].point if item[0] != "seed"]
            name = f"{tracking.make_run_name(group.setting, setting)} tuning {index + 1}"
            run_id = tracking.start_trial_run(self._client, self._experiment_id, sweep=self._spec.name,
                                              trial_id=trial_id, config=apply(group.setting, point), git=self._git,
                                              run_name=name, tags={GROUP_TAG: group.group_id})
            self._runs[tune_trial.trial_id] = run_id
            self._group_of[tune_trial.trial_id] = group
        return self._runs[tune_trial.trial_id]

    def on_start(self, tune_trial: Any) -> None:
        self.run_id(tune_trial)

    def on_result(self, tune_trial: Any, result: Mapping[str, Any]) -> None:
        run_id = self.run_id(tune_trial)
        if result.get("kind") == "step":
            self._held.add(run_id, metrics=tracking.step_metric_entities(result[STEP_KEY], {"loss": result[LOSS_KEY]}),
                           tags=result.get(TAGS_KEY))
        elif result.get("kind") in (*SCORED_KINDS, KIND_FAILED):
            status = tracking.STATUS_FINISHED if result["kind"] == KIND_FINAL else tracking.STATUS_FAILED
            self._close(tune_trial, status, metrics=result.get("metrics"), error=result.get("error"),
                        tags=result.get(TAGS_KEY))

    def on_complete(self, tune_trial: Any) -> None:
        if tune_trial.trial_id not in self._closed:
            step = (tune_trial.last_result or {}).get(STEP_KEY, 0)
            self._close(tune_trial, tracking.STATUS_FAILED, error=f"ended at step {step} without a result")

    def on_error(self, tune_trial: Any) -> None:
        self.on_complete(tune_trial)

    def close_open_runs(self) -> None:
        for key, run_id in self._runs.items():
            if key not in self._closed:
                self._held.finish(run_id, status=tracking.STATUS_FAILED,
                                  error="Interrupted: the tuning stopped before this trial finished")
                self._closed.add(key)
        if self._progress is not None:
            self._progress.close()

    def _close(self, tune_trial: Any, status: str, **kwargs: Any) -> None:
        self._held.finish(self.run_id(tune_trial), status=status,
                          final_step=self._group_of[tune_trial.trial_id].setting.steps, **kwargs)
        self._closed.add(tune_trial.trial_id)
        if self._progress is not None:
            self._progress.done(failed=status == tracking.STATUS_FAILED)


def _point_of(run: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    return {key: tracking.restore_param(key, run.data.params.get(key)) for key in space}


def _runs_by_group(client: Any, experiment_id: str) -> dict[str, list[Any]]:
    """Every tuning run of the sweep, by the group it belongs to (one query for all groups)."""
    runs: dict[str, list[Any]] = {}
    for run in tracking.search_sweep_runs(client, experiment_id):
        runs.setdefault(run.data.tags.get(GROUP_TAG), []).append(run)
    return runs


def _scored(runs: Sequence[Any], metric: str) -> list[Any]:
    """The finished runs with a finite value of the tuning metric (the candidates for the best)."""
    return [run for run in runs if run.data.tags.get("status") == tracking.STATUS_FINISHED
            and math.isfinite(run.data.metrics.get(metric, math.nan))]


def _counted(runs: Sequence[Any]) -> list[Any]:
    """The runs that count in the budget: they trained to their end (finished, or diverged)."""
    return [run for run in runs if run.data.tags.get("status") == tracking.STATUS_FINISHED
            or (run.data.tags.get("status") == tracking.STATUS_FAILED
                and str(run.data.tags.get("error", "")).startswith(DIVERGED_PREFIX))]


def _spent(client: Any, runs: Sequence[Any]) -> tuple[int, int]:
    """(attempts, scored) of a group's recorded tuning runs. Stale open runs, runs cut off by an
    interruption (Ctrl-C, SIGTERM) and runs failed by an error (a missing plugin, a bug) are deleted:
    an earlier call's faults use none of this call's attempts, and a rerun runs them again."""
    done = [run for run in runs if run.data.tags.get("status") in (*tracking.DONE_STATUSES, tracking.STATUS_FAILED)
            and run.info.status != "RUNNING"
            and not tracking.is_fault(run.data.tags.get("status"), run.data.tags.get("error"))]
    for run in runs:
        if run not in done:
            client.delete_run(run.info.run_id)
    return len(done), len(_counted(done))


def _check_spent(spec: SweepSpec, groups: Mapping[str, Group], runs: Mapping[str, Sequence[Any]]) -> None:
    """Raise IncompleteError unless every group scored its whole budget (interrupted, or its attempts
    ran out on errors: the tuned points would come from a part of it, and a rerun tunes them again)."""
    assert spec.tune is not None
    short = {name: len(_counted(runs.get(name, []))) for name in groups}
    short = {name: spent for name, spent in short.items() if spent < spec.tune.budget}
    if not short:
        return
    faults = [run.data.tags.get("error", "") for name in short for run in runs.get(name, [])
              if tracking.is_fault(run.data.tags.get("status"), run.data.tags.get("error"))]
    errors = [error for error in faults if not error.startswith(tracking.INTERRUPTED_ERROR)]
    spent = ", ".join(f"{groups[name].setting.method} {n}/{spec.tune.budget}" for name, n in short.items())
    why = f"{len(errors)} tuning trials failed with an error (e.g. {errors[0][:200]})" if errors else "interrupted"
    raise IncompleteError(f"tuning incomplete ({why}): tuning trials scored per method and setting: {spent}; "
                          f"no trial runs on a partly tuned point. Rerun the sweep to run exactly the missing "
                          f"tuning trials", interrupted=not errors)


SEED_IGNORED = ("device",)  # where a trial runs draws no other point


def searcher_seed(tune_seed: int, setting: RunConfig) -> int:
    """Seed of one group's searcher: the tuning seed and the setting's values that differ from
    RunConfig's defaults. Not the group id, which holds the code's fingerprint: an edit of the code
    (or a new config field with its default) reruns a group's trials but redraws none of its points,
    and with a budget below TPE's start-up trials the points are all random draws."""
    defaults = RunConfig().to_dict()
    own = {key: value for key, value in setting.to_dict().items()
           if key not in SEED_IGNORED and value != defaults[key]}
    canonical = json.dumps({"seed": tune_seed, "setting": own}, sort_keys=True, default=repr)
    return int(hashlib.sha256(canonical.encode()).hexdigest()[:8], 16)


def _group_searcher(spec: SweepSpec, group: Group, space: Mapping[str, Any], runs: Sequence[Any]) -> Any:
    """The Optuna sampler of one group (:func:`sampler_for`) behind Ray Tune's OptunaSearch: its first
    candidate is the default point (unless a resumed group has scored it already), and it is told
    the results its group already has (a resumed search)."""
    from ray.tune.search.optuna import OptunaSearch

    settings = spec.tune
    assert settings is not None
    finished = _scored(runs, settings.metric)
    default = default_point(group.setting, space)
    known = [_point_of(run, space) for run in finished]
    _, sampler = sampler_for(settings.budget, searcher_seed(settings.seed, group.setting))
    searcher = OptunaSearch(
        space=dict(space), metric=OBJECTIVE_KEY, mode=settings.mode, sampler=sampler,
        points_to_evaluate=None if any(same_point(point, default) for point in known) else [default],
    )
    for point, run in zip(known, finished):
        searcher.add_evaluated_point(point, run.data.metrics[settings.metric])
    return searcher


def _grouped_search(searchers: Mapping[str, Any], budgets: Mapping[str, int],
                    attempts: Mapping[str, int] | None = None) -> Any:
    """One Ray Tune search algorithm over every group: each group keeps its own searcher and budget;
    suggestions rotate over the groups with budget left, results go back to their own searcher.

    ``budgets``: the scored trials each group still needs; ``attempts``: the trials it may still
    start (default: its budget). A trial that ends without a score (``kind`` failed, or a Ray
    error) gives its group one more trial while attempts are left, and its searcher is told it
    failed; a diverged trial is scored (the worst value).

    A group gets its next point only when its previous trial has finished, so its searcher has
    seen every earlier result of the group, in order: the points, and with them the tuned rows,
    are the same on every rerun. (Suggesting while a trial runs would let the finishing order of
    concurrent trials, i.e. timing, decide what the searcher knows.) Concurrency comes from the
    groups running side by side."""
    from ray.tune.search import Searcher

    class GroupedSearch(Searcher):
        def __init__(self) -> None:
            super().__init__(metric=OBJECTIVE_KEY, mode="min")
            self.left = dict(budgets)
            self.attempts = {name: (attempts or budgets)[name] for name in budgets}
            self.group_of: dict[str, str] = {}
            self.running: set[str] = set()
            self.turn = 0

        def set_search_properties(self, metric: Any, mode: Any, config: Any, **spec: Any) -> bool:
            return True  # every group's searcher was built with its own space, metric and mode

        def open(self, name: str) -> bool:
            return self.left[name] > 0 and self.attempts[name] > 0

        def suggest(self, trial_id: str) -> dict | None:
            if not self.running and not any(self.open(name) for name in searchers):
                return Searcher.FINISHED
            names = [name for name in searchers if self.open(name) and name not in self.running]
            for offset in range(len(names)):
                name = names[(self.turn + offset) % len(names)]
                config = searchers[name].suggest(trial_id)
                if config is None or config == Searcher.FINISHED:
                    continue
                self.turn += offset + 1
                self.left[name] -= 1
                self.attempts[name] -= 1
                self.group_of[trial_id] = name
                self.running.add(name)
                return {**config, GROUP_KEY: name}
            return None

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if trial_id in self.group_of:
                searchers[self.group_of[trial_id]].on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if trial_id in self.group_of:
                name = self.group_of[trial_id]
                unscored = error or (result or {}).get("kind") not in SCORED_KINDS
                searchers[name].on_trial_complete(trial_id, result=result, error=unscored)
                if unscored:
                    self.left[name] += 1  # not a score: the group gets another trial (attempts allowing)
                self.running.discard(name)

    return GroupedSearch()


def run_tuning(spec: SweepSpec, *, runner: Any = None, quiet: bool = True, progress: bool = False) -> list[GroupResult]:
    """:func:`run_tunings` of one sweep; raises its IncompleteError."""
    (result,) = run_tunings([spec], runner=runner, quiet=quiet, progress=progress)
    if isinstance(result, IncompleteError):
        raise result
    return result


@dataclass
class _SweepTuning:
    """One tuned sweep's state before its Tune run: groups, search spaces, what is left to spend."""

    spec: SweepSpec
    client: Any
    experiment_id: str
    groups: dict[str, Group]
    spaces: dict[str, Any]
    budgets: dict[str, int]  # group id -> scored trials still needed (groups with work left)
    attempts: dict[str, int]  # group id -> trials it may still start
    searchers: dict[str, Any]
    free: dict[str, list[int]]  # group id -> budget indices not held by a spent run


def _sweep_tuning(spec: SweepSpec) -> _SweepTuning:
    """Read what a sweep's groups have spent (deleting faulted runs) and build the searchers of the
    groups with budget left."""
    import methods

    settings = spec.tune
    assert settings is not None
    client = tracking.make_client(spec.tracking.uri)
    experiment_id = tracking.get_or_create_experiment(client, spec.name + TUNING_SUFFIX)
    groups = {group.group_id: group for group in groups_of(spec)}
    spaces = {name: search_space(methods.get(group.setting.method).tunables, settings) for name, group in groups.items()}
    before = _runs_by_group(client, experiment_id)
    spent = {name: _spent(client, before.get(name, [])) for name in groups}
    before = _runs_by_group(client, experiment_id)  # without the runs _spent deleted
    budgets = {name: max(0, settings.budget - spent[name][1]) for name in groups}
    attempts = {name: max(0, ATTEMPTS_PER_TRIAL * settings.budget - spent[name][0]) for name in groups}
    todo = [name for name in groups if budgets[name] > 0 and attempts[name] > 0]
    kept = {name: {run.data.tags.get("trial") for run in before.get(name, [])} for name in todo}
    return _SweepTuning(
        spec=spec, client=client, experiment_id=experiment_id, groups=groups, spaces=spaces,
        budgets={name: budgets[name] for name in todo}, attempts={name: attempts[name] for name in todo},
        searchers={name: _group_searcher(spec, groups[name], spaces[name], before.get(name, [])) for name in todo},
        free={name: [index for index in range(ATTEMPTS_PER_TRIAL * settings.budget)
                     if tuning_trial_id(groups[name].setting, settings, index) not in kept[name]] for name in todo},
    )


def run_tunings(specs: Sequence[SweepSpec], *, runner: Any = None, quiet: bool = True,
                progress: bool = False) -> list[list[GroupResult] | IncompleteError]:
    """Spend what is left of every group's budget, for every tuned sweep of ``specs`` (same ``ray:``
    settings), in ONE Ray Tune run (Ray connected; its workers reused across sweeps), then read each
    sweep's results from MLflow. Each group has its own Optuna searcher (keyed by ``grid_key(sweep,
    group id)``), each tuning run is recorded in its own sweep's ``<sweep>-tuning`` experiment; no
    trial is stopped early.

    Per sweep, in order: its results, or the IncompleteError saying that a group has not scored its
    budget at the end (the run was interrupted, or its attempts ran out on errors); ``progress``: a
    tqdm line of the tuning trials."""
    from ray import tune

    if len({spec.name for spec in specs}) != len(specs):
        raise ValueError("specs: two sweeps of the same name")
    plans = [_sweep_tuning(spec) for spec in specs]
    keyed = {grid_key(plan.spec.name, name): (plan, name) for plan in plans for name in plan.budgets}
    if keyed:
        bar = Progress(f"{specs[0].name if len(specs) == 1 else f'{len(specs)} sweeps'} tuning",
                       sum(plan.budgets[name] for plan, name in keyed.values()), enabled=progress)
        git = tracking.git_state(paths.REPO_ROOT)
        recorder = SweepsRecorder({plan.spec.name: _TuningRecorder(plan.client, plan.experiment_id, plan.spec,
                                                                   plan.groups, plan.free, git, bar)
                                   for plan in plans if plan.budgets}, key=GROUP_KEY)
        ray_settings = specs[0].ray
        storage = Path(ray_settings.storage_path or Path.home() / "ray_results" / "vqbench").expanduser().resolve()
        plan_ = cluster.plan_resources(ray_settings.cpus_per_trial, ray_settings.gpus_per_trial, cluster.alive_nodes())
        resources = plan_.by_key(list(keyed))  # a group's trials all run in one pool
        scoring = {key: (plan.spec.tune.metric, plan.spec.tune.mode) for key, (plan, _) in keyed.items()}
        attempts = {key: plan.attempts[name] for key, (plan, name) in keyed.items()}
        label = specs[0].name if len(specs) == 1 else f"{len(specs)}-sweeps"
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(
                _tuning_trial, settings={key: plan.groups[name].setting.to_dict() for key, (plan, name) in keyed.items()},
                runner=runner, scoring=scoring, gpus_scheduled=plan_.gpus > 0),
                lambda point: resources[point[GROUP_KEY]]),
            tune_config=tune.TuneConfig(
                search_alg=_grouped_search({key: plan.searchers[name] for key, (plan, name) in keyed.items()},
                                           {key: plan.budgets[name] for key, (plan, name) in keyed.items()},
                                           attempts),
                num_samples=sum(attempts.values()),
                max_concurrent_trials=ray_settings.max_concurrent, reuse_actors=True),
            run_config=tune.RunConfig(name=f"{label}-tuning-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str(storage), callbacks=[tune_callback(recorder)],
                                      verbose=0 if quiet else 1, failure_config=tune.FailureConfig(max_failures=0)),
            param_space={},
        )
        try:
            with kept_interrupt_handler():
                tuner.fit()
        finally:
            recorder.close_open_runs()
    out: list[list[GroupResult] | IncompleteError] = []
    for plan in plans:
        after = _runs_by_group(plan.client, plan.experiment_id)
        try:
            _check_spent(plan.spec, plan.groups, after)
        except IncompleteError as err:
            out.append(err)
            continue
        out.append([group_result(plan.spec, group, plan.spaces[name], after.get(name, []))
                    for name, group in plan.groups.items()])
    return out


def group_result(spec: SweepSpec, group: Group, space: Mapping[str, Any], runs: Sequence[Any]) -> GroupResult:
    """The recorded tuning runs of a group (``runs``) summarised: best point, spend, robustness."""
    settings = spec.tune
    assert settings is not None
    sign = 1.0 if settings.mode == "min" else -1.0
    scored = _scored(runs, settings.metric)
    default = default_point(group.setting, space)
    # the default wins a tie: a point no better than the default on validation is no reason to move
    best_run = min(scored, key=lambda run: (sign * run.data.metrics[settings.metric],
                                            not same_point(_point_of(run, space), default))) if scored else None
    defaults = [run for run in scored if same_point(_point_of(run, space), default)]
    best = _point_of(best_run, space) if best_run is not None else None
    robust = sum(run.data.metrics.get("utilization", 0.0) >= ROBUST_UTILIZATION for run in runs)
    return GroupResult(
        group=group,
        best=best,
        best_objective=best_run.data.metrics[settings.metric] if best_run is not None else math.nan,
        trials=len(runs),
        train_seconds=float(sum(run.data.metrics.get("train_seconds", 0.0) for run in runs)),
        robust_share=robust / settings.budget,
        scored=len(_counted(runs)),
        best_is_default=same_point(best, default),
        default_objective=defaults[0].data.metrics[settings.metric] if defaults else math.nan,
    )


def tuning_table(spec: SweepSpec, results: Sequence[GroupResult], trials_table: Any) -> Any:
    """One row per (method, setting): default vs tuned mean of the metric over the seeds (test split),
    the chosen point, the budget spent and the robustness share."""
    import pandas as pd

    assert spec.tune is not None
    metric = spec.tune.metric
    by_trial = trials_table.set_index("trial") if len(trials_table) else None

    def mean_of(trials: Sequence[Trial]) -> float:
        values = [by_trial.at[t.trial_id, metric] for t in trials
                  if by_trial is not None and t.trial_id in by_trial.index and metric in by_trial.columns
                  and by_trial.at[t.trial_id, "status"] == tracking.STATUS_FINISHED]
        return float(sum(values) / len(values)) if values else math.nan

    rows = []
    for result in results:
        tuned = [t for t in tuned_trials([result])]
        setting = {k: v for k, v in result.group.trials[0].point if k not in ("seed", "method")}
        rows.append({
            "sweep": spec.name, "method": result.group.setting.method, "setting": result.group.group_id,
            **{f"setting.{k}": v for k, v in setting.items()},
            "metric": metric, "mode": spec.tune.mode,
            "default": mean_of(result.group.trials), "tuned": mean_of(tuned),
            "validation_best": result.best_objective, "validation_default": result.default_objective,
            "best_is_default": result.best_is_default,
            "sampler": sampler_name(spec.tune.budget),
            **{f"chosen.{k}": v for k, v in (result.best or {}).items()},
            "budget": spec.tune.budget, "tuning_trials": result.trials, "scored_trials": result.scored,
            "tuning_train_seconds": result.train_seconds, "robust_share": result.robust_share,
            "default_trials": " ".join(t.trial_id for t in result.group.trials),
            "tuned_trials": " ".join(t.trial_id for t in tuned),
        })
    return pd.DataFrame(rows)


def recorded_results(spec: SweepSpec) -> list[GroupResult]:
    """The tuning results of ``spec`` as recorded in MLflow (nothing runs)."""
    import methods

    client = tracking.make_client(spec.tracking.uri)
    experiment_id = tracking.get_or_create_experiment(client, spec.name + TUNING_SUFFIX)
    assert spec.tune is not None
    runs = _runs_by_group(client, experiment_id)
    return [group_result(spec, group, search_space(methods.get(group.setting.method).tunables, spec.tune),
                         runs.get(group.group_id, [])) for group in groups_of(spec)]


def with_tuned_trials(spec: SweepSpec, results: Sequence[GroupResult]) -> SweepSpec:
    """``spec`` with the tuned trials appended to its (default) trials."""
    known = {trial.trial_id for trial in spec.trials}
    extra = [trial for trial in tuned_trials(results) if trial.trial_id not in known]
    return dataclasses.replace(spec, trials=(*spec.trials, *extra))


def write_tuning_table(spec: SweepSpec, results: Sequence[GroupResult], trials_table: Any) -> Path:
    """``<results_dir>/<sweep>/tuning.csv`` (one row per method and setting) and
    ``tuning_trials.csv`` (every tuning trial with its point and validation record)."""
    path = spec.table_path.parent / TUNING_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tuning_table(spec, results, trials_table).to_csv(path, index=False)
    tracking.write_table(tracking.export_table(spec.tracking.uri, spec.name + TUNING_SUFFIX),
                         path.parent / TUNING_TRIALS_FILE)
    return path
