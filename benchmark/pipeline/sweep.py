"""Running a sweep: every pending trial through Ray Tune, recorded in MLflow, exported as a table.

Usage::

    python -m benchmark sweep --params params.yaml --sweep NAME [--address ADDR] [--max-concurrent N]
    python -m benchmark sweep --params params.yaml --all   # every sweep: one process, one Ray session
    python -m benchmark sweep --params params.yaml --sweep NAME --export-only   # rebuild the table

or from Python: ``run_sweep(load_sweep("params.yaml", "NAME"))``. The params.yaml schema is in
:mod:`benchmark.pipeline.spec`.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from benchmark import paths
from benchmark.experiments.config import ConfigError, RunConfig
from benchmark.pipeline import cluster, tracking
from benchmark.pipeline.recorder import (ARTIFACTS_KEY, TAGS_KEY, KIND_KEY, OBJECTIVE_KEY, STEP_KEY, TRIAL_KEY,
                                         IncompleteError, MlflowRecorder, Progress, SweepsRecorder, grid_key,
                                         kept_interrupt_handler, recorded_warnings, tune_callback, tune_output)
from benchmark.pipeline.spec import RaySettings, SweepSpec, Trial, load_sweep

if TYPE_CHECKING:
    import pandas

Runner = Callable[..., Mapping[str, float]]
"""``runner(config: RunConfig, *, on_step) -> {metric: value}`` (benchmark.experiments.train.run_experiment)."""

# --------------------------------------------------------------------------------------------
# Running


def _default_runner() -> Runner:
    from benchmark.experiments.train import run_experiment

    return run_experiment


def _run_trial(
    param: Mapping[str, Any],
    *,
    configs: Mapping[str, Mapping[str, Any]],
    runner: Runner | None,
    objective: str | None,
    gpus_scheduled: bool = False,
) -> None:
    """Tune function-trainable: run one trial, report every step and the outcome to the driver.

    Exceptions from the runner never escape: they are reported as a ``failed`` result so the
    driver records the reason and Tune does not treat the trial as crashed (no retry noise).
    The first report carries where the trial runs (:func:`tracking.worker_tags`); the final one
    its artifacts, written to a folder of this node and sent back as bytes (``ARTIFACTS_KEY``), so
    they reach the driver's store on a cluster without a shared filesystem.
    ``gpus_scheduled``: Ray hands out GPUs in this sweep, so an ``auto`` trial given none runs on the CPU.
    """
    from ray import tune

    config = cluster.placed_config(RunConfig.from_dict(configs[param[TRIAL_KEY]]), gpus_scheduled)
    run = runner if runner is not None else _default_runner()
    last_objective = math.inf
    first: dict[str, Any] = {TAGS_KEY: tracking.worker_tags(config)}

    def on_step(step: int, metrics: Mapping[str, float]) -> None:
        nonlocal last_objective
        result: dict[str, Any] = {KIND_KEY: "step", STEP_KEY: int(step), "metrics": _as_floats(metrics)}
        if objective is not None:
            if objective not in metrics:
                raise ConfigError(f"ray.early_stopping_metric: {objective!r} is not a per-step metric; "
                                  f"reported: {sorted(metrics)}")
            last_objective = float(metrics[objective])
            result[OBJECTIVE_KEY] = last_objective
        tune.report({**first, **result})
        first.clear()

    with tempfile.TemporaryDirectory(prefix="vqbench-artifacts-") as artifacts, recorded_warnings() as noted:
        try:
            final = run(config, on_step=on_step, artifacts_dir=artifacts)
        except Exception as err:  # noqa: BLE001 - any failure is recorded, the sweep goes on
            result = {KIND_KEY: "failed", "error": f"{type(err).__name__}: {err}"}
        else:
            result = {KIND_KEY: "final", "metrics": _as_floats(final),
                      ARTIFACTS_KEY: cluster.read_artifacts(artifacts)}
    if noted:  # what limits the trial's numbers (benchmark.experiments.training.RunWarning)
        result[TAGS_KEY] = {**first.get(TAGS_KEY, {}), tracking.WARNING_TAG: " | ".join(noted)}
    if objective is not None:
        result[OBJECTIVE_KEY] = last_objective if result[KIND_KEY] == "final" else math.inf
    tune.report({**first, **result})


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
        "runtime_env": cluster.runtime_env(),
        "log_to_driver": not quiet,
        "logging_level": logging.ERROR if quiet else logging.INFO,
    }
    if address:
        ray.init(address=address, **common)
    else:
        # "local": a new instance, never a cluster another process left running on this machine
        ray.init(address="local", num_cpus=settings.num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 **common)
        _local_instance.add(ray.get_runtime_context().get_node_id())
    return True


_local_instance: set[str] = set()  # the node of the Ray instance start_ray started in this process


def _needs_preflight() -> bool:
    """Whether a node may differ from this process: not when the only node is the local instance
    :func:`start_ray` started (its workers run this interpreter, in this environment)."""
    return {node["NodeID"] for node in cluster.alive_nodes()} - _local_instance != set()


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
    interrupted: int = 0  # trials this call started that were cut off (failed "Interrupted: ...")
    errors: int = 0  # failed trials of this call whose error is not their own divergence (nor an interruption)
    first_error: str = ""  # the error of one of them

    def summary(self) -> str:
        stopped = f", {self.stopped} stopped early" if self.stopped else ""
        not_run = f", {self.not_run} not run (interrupted)" if self.not_run else ""
        diverged = self.failed - self.errors - self.interrupted
        why = f" ({self.errors} errors, {diverged} diverged)" if self.failed and self.errors else ""
        return (f"sweep {self.name}: {self.finished} finished, {self.failed} failed{why}{stopped}{not_run} "
                f"({self.skipped} already done, not rerun) -> {self.table_path}")

    @property
    def complete(self) -> bool:
        """Every trial of the spec ran to its end in this call or an earlier one (none cut off)."""
        return self.not_run == 0 and self.interrupted == 0

    @property
    def all_failed(self) -> bool:
        """No trial of the spec is done (finished or stopped), now or from an earlier call."""
        return self.finished + self.stopped + self.skipped == 0

    def exit_status(self) -> int:
        """The CLI's exit status: 0, :data:`EXIT_INCOMPLETE`, :data:`EXIT_ALL_FAILED` or
        :data:`EXIT_TRIAL_ERRORS` (a diverged trial is a result; any other failure is not)."""
        if not self.complete:
            return EXIT_INCOMPLETE
        if self.all_failed:
            return EXIT_ALL_FAILED
        return EXIT_TRIAL_ERRORS if self.errors else 0

    def problem(self) -> str:
        """One line saying why the exit status is not 0 ("" when it is)."""
        if not self.complete:
            return (f"sweep {self.name} is incomplete: {self.not_run} trials not run, {self.interrupted} "
                    f"interrupted; the table lists what ran, but the stage fails so DVC records nothing. "
                    f"Rerun the sweep to resume (finished trials are not rerun)")
        if self.all_failed:
            return f"sweep {self.name}: every trial failed; see the error column of {self.table_path}"
        if self.errors:
            return (f"sweep {self.name}: {self.errors} trials failed with an error (e.g. {self.first_error[:200]}); "
                    f"the stage fails so DVC records nothing. Fix the cause and rerun the sweep: only the "
                    f"failed trials run again")
        return ""


EXIT_INCOMPLETE = 3  # interrupted (Ctrl-C, SIGTERM) or trials never started: the table is not the stage's output
EXIT_ALL_FAILED = 4  # the sweep ran, but no trial finished
EXIT_TRIAL_ERRORS = 5  # trials failed with an error other than their own divergence (a missing plugin, a bug)
EXIT_INTERRUPTED = 130  # KeyboardInterrupt reached the CLI (128 + SIGINT)


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
    lock_timeout: float | None = None,
    progress: bool = False,
) -> SweepOutcome:
    """Run every pending trial of ``spec`` through Ray Tune, record it in MLflow, export the table.

    ``runner`` (default ``benchmark.experiments.train.run_experiment``, imported in the workers) must be
    picklable by cloudpickle. Ray is started (and shut down afterwards) unless already
    initialised; see :func:`start_ray` for the address order. ``max_concurrent`` overrides
    ``ray.max_concurrent``.

    One sweep writes a store at a time (:func:`benchmark.pipeline.tracking.store_lock`):
    ``lock_timeout`` None waits for another writer, 0 refuses at once (StoreError naming the
    holder). The results folder is checked writable before anything trains. ``progress``: one
    tqdm line per stage on stderr (tuning trials, then trials: done / total, failed, ETA).

    Raises :class:`benchmark.pipeline.recorder.IncompleteError` when the tuning stage did not spend
    every budget (interrupted, or tuning trials failed with an error): the trials do not run on
    partly tuned points.
    """
    tracking.check_writable(spec.table_path.parent)  # before training, not after it
    with tracking.store_lock(spec.tracking.uri, timeout=lock_timeout):
        return _run_locked(spec, runner, address, max_concurrent, quiet, progress)


def _run_locked(spec: SweepSpec, runner: Runner | None, address: str | None, max_concurrent: int | None,
                quiet: bool, progress: bool = False) -> SweepOutcome:
    """:func:`run_sweep` once this process holds the store's lock."""
    (result,) = _run_many([spec], runner, address, max_concurrent, quiet, progress)
    if result.error is not None:
        raise result.error
    assert result.outcome is not None
    return result.outcome


@dataclass(frozen=True)
class SweepsResult:
    """What :func:`run_sweeps` did with one sweep: its outcome, or the error that stopped it
    (an :class:`IncompleteError` of its tuning stage), or ``up_to_date`` (its table was kept)."""

    name: str
    outcome: SweepOutcome | None = None
    error: Exception | None = None
    up_to_date: bool = False

    def exit_status(self) -> int:
        if self.error is not None:
            return EXIT_INCOMPLETE
        return self.outcome.exit_status() if self.outcome is not None else 0

    def line(self) -> str:
        """The one line the CLI prints for this sweep (``error:`` first when it failed)."""
        if self.error is not None:
            return f"error: sweep {self.name}: {self.error}"
        if self.outcome is None:
            return f"sweep {self.name}: up to date (inputs unchanged since its table was written), not rerun"
        problem = self.outcome.problem()
        return f"error: {problem}" if problem else self.outcome.summary()


STAMP_FILE = "inputs.json"  # results/<sweep>/inputs.json: the inputs its table was made from


def inputs_stamp(spec: SweepSpec, prepared: Path | None) -> dict[str, Any]:
    """What a sweep's table is a function of, given a complete run: its trials (ids hash the config and
    the code each trial runs), its tuning settings, the files of its ``data/prepared/<sweep>`` folder
    and the code of the sweep stage itself (this module and what it imports, hashed without comments).

    :func:`run_sweeps` with ``skip_up_to_date`` writes it beside the table after the sweep exited 0 and
    skips a sweep whose stamp is unchanged: the table restored by ``dvc pull`` is kept even when the
    MLflow store is not there, and only the sweeps whose inputs changed run (and retrain)."""
    import hashlib

    files = sorted(path for path in prepared.rglob("*") if path.is_file()) if prepared and prepared.is_dir() else []
    return {
        "trials": [trial.trial_id for trial in spec.trials],
        "tune": dataclasses.asdict(spec.tune) if spec.tune is not None else None,
        "prepared": {path.relative_to(prepared).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
                     for path in files} if prepared else {},
        "code": _stage_code(),
    }


@functools.lru_cache(maxsize=1)
def _stage_code() -> dict[str, str]:
    """The sweep stage's own code (this module and what it imports, hashed without comments): the
    same for every sweep of a run, so parsed once per process (0.7 s), not once per sweep."""
    from benchmark.pipeline import code

    return {path.relative_to(paths.REPO_ROOT).as_posix(): code.file_digest(path)
            for path in code.closure([Path(__file__).resolve()])}


def _stamp_path(spec: SweepSpec) -> Path:
    return spec.table_path.parent / STAMP_FILE


def _is_up_to_date(spec: SweepSpec, stamp: Mapping[str, Any]) -> bool:
    """The sweep's table and its stamp exist and the stamp equals ``stamp``."""
    path = _stamp_path(spec)
    if not path.is_file() or not spec.table_path.is_file():
        return False
    try:
        return json.loads(path.read_text()) == json.loads(json.dumps(stamp, sort_keys=True, default=repr))
    except (OSError, ValueError):
        return False


def run_sweeps(
    specs: Sequence[SweepSpec],
    *,
    runner: Runner | None = None,
    address: str | None = None,
    max_concurrent: int | None = None,
    quiet: bool = True,
    lock_timeout: float | None = None,
    progress: bool = False,
    prepared_root: Path | None = None,
    skip_up_to_date: bool = False,
) -> list[SweepsResult]:
    """Run several sweeps (every sweep of a params file: the ``sweeps`` stage) in ONE Ray session:
    every tuning stage first (all in one Tune run), then the pending trials of all sweeps as
    ONE Ray Tune grid (one per sweep with ``ray.early_stopping``, whose ASHA ranks a sweep's trials
    among themselves), each trial recorded in its own sweep's MLflow experiment. The Ray workers
    (``reuse_actors``) thus start once per grid, not once per sweep.

    A sweep whose tuning stage is incomplete (:class:`IncompleteError`) is reported and left out;
    the others go on. After an interruption nothing new starts. Every other sweep's table is written.
    ``skip_up_to_date``: a sweep whose :func:`inputs_stamp` (``prepared_root / <sweep>``) equals
    the one beside its table is not run at all; the stamp is written after a sweep exited 0.
    Store lock, writable checks and errors as :func:`run_sweep`."""
    if len({spec.name for spec in specs}) != len(specs):
        raise ValueError("specs: two sweeps of the same name")
    if len({spec.tracking.uri for spec in specs}) > 1:
        raise ValueError("specs: every sweep must use the same tracking.uri (one store, one lock)")
    if not specs:
        return []
    for spec in specs:
        tracking.check_writable(spec.table_path.parent)
    with tracking.store_lock(specs[0].tracking.uri, timeout=lock_timeout):
        return _run_many(specs, runner, address, max_concurrent, quiet, progress, prepared_root, skip_up_to_date)


@dataclass
class _Pending:
    """One sweep between its tuning stage and its export."""

    spec: SweepSpec
    tuning_results: Any = None
    todo: list[Trial] = field(default_factory=list)
    experiment_id: str = ""
    stale: dict[str, list[str]] = field(default_factory=dict)
    stamp: dict[str, Any] | None = None


def _run_many(specs: Sequence[SweepSpec], runner: Runner | None, address: str | None, max_concurrent: int | None,
              quiet: bool, progress: bool = False, prepared_root: Path | None = None,
              skip_up_to_date: bool = False) -> list[SweepsResult]:
    """:func:`run_sweeps` (and :func:`run_sweep`) once this process holds the store's lock."""
    # MLflow is the record: Tune's own CSV / JSON / TensorBoard logs per trial would only cost time.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    results: dict[str, SweepsResult] = {}
    pending: list[_Pending] = []
    with contextlib.ExitStack() as ray_session:  # Ray starts at most once, only when something runs

        def connect() -> None:
            previous = signal.getsignal(signal.SIGTERM)
            if start_ray(specs[0].ray, address=address, quiet=quiet):
                ray_session.callback(_shutdown_ray)
            if previous is _terminate_as_interrupt:  # ray.init replaces it with a handler that aborts the driver
                signal.signal(signal.SIGTERM, previous)
            if not checked and _needs_preflight():  # every node can run the sweep's code, before any trial
                cluster.preflight()
            checked.append(True)

        checked: list[bool] = []
        client = tracking.make_client(specs[0].tracking.uri)
        interrupted = False
        for spec in specs:
            stamp = None
            if skip_up_to_date:
                stamp = inputs_stamp(spec, prepared_root / spec.name if prepared_root is not None else None)
                if _is_up_to_date(spec, stamp):
                    results[spec.name] = SweepsResult(spec.name, up_to_date=True)
                    continue
                _stamp_path(spec).unlink(missing_ok=True)  # written again only when this run completes
            pending.append(_Pending(spec=spec, stamp=stamp))
        tuned = [item for item in pending if item.spec.tune is not None]
        if tuned:  # the tuning stages first (one Tune run): their best points define the tuned trials
            from benchmark.pipeline import tuning

            connect()
            with tune_output(quiet):  # Optuna's searchers are made (and say so) before fit()
                tuned_results = tuning.run_tunings([item.spec for item in tuned], runner=runner, quiet=quiet,
                                                   progress=progress)
            for item, tuning_results in zip(tuned, tuned_results):
                if isinstance(tuning_results, IncompleteError):
                    results[item.spec.name] = SweepsResult(item.spec.name, error=tuning_results)
                    interrupted = interrupted or tuning_results.interrupted
                    pending.remove(item)
                    continue
                item.tuning_results = tuning_results
                item.spec = tuning.with_tuned_trials(item.spec, tuning_results)
        for item in pending:
            item.experiment_id = tracking.get_or_create_experiment(client, item.spec.name)
            item.todo, item.stale = _todo_and_stale(item.spec, client, item.experiment_id)
        grids = [pending] if not specs[0].ray.early_stopping else [[item] for item in pending]
        for grid in grids:
            if interrupted or not any(item.todo for item in grid):
                continue
            connect()
            _run_trials_in_tune(grid, client, runner, max_concurrent, quiet, progress)
            interrupted = interrupted or any(_cut_off(client, item) for item in grid)

    for item in pending:
        spec = item.spec
        table = tracking.export_table(spec.tracking.uri, spec.name)
        path = tracking.write_table(table, spec.table_path)
        tracking.restore_artifacts(spec.tracking.uri, table, spec.artifacts_root)
        if item.tuning_results is not None:
            from benchmark.pipeline import tuning

            tuning.write_tuning_table(spec, item.tuning_results, table)
        outcome = _outcome(spec, item.todo, table, path)
        if item.stamp is not None and outcome.exit_status() == 0:
            _stamp_path(spec).write_text(json.dumps(item.stamp, indent=1, sort_keys=True, default=repr) + "\n")
        results[spec.name] = SweepsResult(spec.name, outcome=outcome)
    return [results[spec.name] for spec in specs]


def _cut_off(client: Any, item: _Pending) -> bool:
    """Whether the grid stopped before ``item``'s trials all ended (a stop signal): some are still pending
    without having failed or finished in this run."""
    if not item.todo:
        return False
    runs = tracking.latest_runs_by_trial(tracking.search_sweep_runs(client, item.experiment_id))
    waiting = pending_trials(item.spec, runs)
    return any(trial.trial_id not in runs or tracking.is_interrupted(runs[trial.trial_id].data.tags.get("status"),
                                                                     runs[trial.trial_id].data.tags.get("error"))
               for trial in waiting)


def _todo_and_stale(spec: SweepSpec, client: Any,
                    experiment_id: str) -> tuple[list[Trial], dict[str, list[str]]]:
    """The trials still to run, and per such trial the ids of its earlier (unfinished) runs."""
    all_runs = tracking.search_sweep_runs(client, experiment_id)
    runs_by_trial = tracking.latest_runs_by_trial(all_runs)
    todo = pending_trials(spec, runs_by_trial)
    todo_ids = {trial.trial_id for trial in todo}
    stale: dict[str, list[str]] = {}
    for run in all_runs:
        trial_id = run.data.tags.get("trial")
        if trial_id in todo_ids:
            stale.setdefault(trial_id, []).append(run.info.run_id)
    return todo, stale


def _outcome(spec: SweepSpec, todo: Sequence[Trial], table: Any, path: Path) -> SweepOutcome:
    """What became of the trials this run took on, from the exported table."""
    statuses = table.set_index("trial")["status"].to_dict() if len(table) else {}
    ran = [statuses.get(trial.trial_id) for trial in todo]
    errors = table.set_index("trial")["error"].to_dict() if len(table) else {}
    interrupted = sum(1 for trial in todo if tracking.is_interrupted(statuses.get(trial.trial_id),
                                                                      errors.get(trial.trial_id)))
    faults = [str(errors.get(trial.trial_id)) for trial in todo
              if tracking.is_fault(statuses.get(trial.trial_id), errors.get(trial.trial_id))
              and not tracking.is_interrupted(statuses.get(trial.trial_id), errors.get(trial.trial_id))]
    return SweepOutcome(
        name=spec.name,
        finished=ran.count(tracking.STATUS_FINISHED),
        failed=ran.count(tracking.STATUS_FAILED) + ran.count(tracking.STATUS_RUNNING),
        stopped=ran.count(tracking.STATUS_STOPPED),
        skipped=len(spec.trials) - len(todo),
        not_run=ran.count(None),
        table_path=path,
        table=table,
        interrupted=interrupted,
        errors=len(faults),
        first_error=faults[0] if faults else "",
    )


def _shutdown_ray() -> None:
    import ray

    ray.shutdown()
    _local_instance.clear()


def longest_first(grid: Sequence[_Pending]) -> list[tuple[_Pending, Trial]]:
    """The pending trials of ``grid`` in launch order: those that train a network (every experiment
    but ``fit``, 5-20x a fit trial) first, so the short fit trials fill the workers at the end instead
    of one long trial running alone on one of them. Stable: sweep and grid order otherwise kept."""
    trials = [(item, trial) for item in grid for trial in item.todo]
    return sorted(trials, key=lambda pair: pair[1].config.experiment == "fit")


def _run_trials_in_tune(grid: Sequence[_Pending], client: Any, runner: Runner | None, max_concurrent: int | None,
                        quiet: bool, show_progress: bool = False) -> None:
    """Run the pending trials of ``grid`` (one or more sweeps, same ``ray:`` settings) as ONE Ray Tune
    grid (Ray already connected), every event recorded in its own sweep's MLflow experiment."""
    from ray import tune

    ray_settings = grid[0].spec.ray
    keys = [grid_key(item.spec.name, trial.trial_id) for item, trial in longest_first(grid)]
    configs = {grid_key(item.spec.name, trial.trial_id): trial.config.to_dict() for item in grid for trial in item.todo}
    plan = cluster.plan_resources(ray_settings.cpus_per_trial, ray_settings.gpus_per_trial, cluster.alive_nodes())
    resources = plan.by_key(keys)
    objective = ray_settings.early_stopping_metric if ray_settings.early_stopping else None
    trainable = tune.with_resources(
        tune.with_parameters(_run_trial, configs=configs, runner=runner, objective=objective,
                             gpus_scheduled=plan.gpus > 0),
        lambda param: resources[param[TRIAL_KEY]],
    )
    scheduler = _asha_scheduler([trial for item in grid for trial in item.todo]) if objective is not None else None
    label = grid[0].spec.name if len(grid) == 1 else f"{len(grid)} sweeps"
    progress = Progress(f"{label} trials", len(keys), enabled=show_progress)
    git = tracking.git_state(paths.REPO_ROOT)
    recorder = SweepsRecorder({item.spec.name: MlflowRecorder(client, item.experiment_id, item.spec, git, item.stale,
                                                              progress) for item in grid})
    storage = Path(ray_settings.storage_path or Path.home() / "ray_results" / "vqbench").expanduser().resolve()
    tuner = tune.Tuner(
        trainable,
        param_space={TRIAL_KEY: tune.grid_search(keys)},
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            max_concurrent_trials=max_concurrent or ray_settings.max_concurrent,
            reuse_actors=True,  # a trial is a pure function of its config: skip a process start each
        ),
        run_config=tune.RunConfig(
            name=f"{label.replace(' ', '-')}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(storage),
            callbacks=[tune_callback(recorder)],
            verbose=0 if quiet else 1,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    _fit(tuner, recorder, quiet)


def _asha_scheduler(todo: Sequence[Trial]) -> Any:
    """ASHA over the trials' steps (early stopping), rungs from a quarter of the longest run."""
    from ray.tune.schedulers import ASHAScheduler

    max_steps = max(trial.config.steps for trial in todo)
    # max_t one past the last step: ASHA stops any trial reaching max_t, which would cut off
    # the final evaluation of every trial that trains to the end.
    return ASHAScheduler(time_attr=STEP_KEY, metric=OBJECTIVE_KEY, mode="min", max_t=max_steps + 1,
                         grace_period=max(1, max_steps // 4), reduction_factor=3)


def _fit(tuner: Any, recorder: MlflowRecorder | SweepsRecorder, quiet: bool) -> None:
    """``tuner.fit()``, Tune's banner silenced when ``quiet``; every run left open is failed after."""
    with tune_output(quiet):
        try:
            with kept_interrupt_handler():
                tuner.fit()
        finally:
            recorder.close_open_runs()


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmark sweep``: run (or only export) one sweep, or every sweep (``--all``);
    0 when every trial finished. With ``--all`` every sweep runs even when another fails, one line
    each; the exit status is the first failing sweep's, and every failing sweep is named."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.verbose:
        import mlflow  # noqa: F401  (mlflow sets its loggers' level on import: import, then quieten)

        for noisy in ("mlflow", "alembic", "ray"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        parser.error("--max-concurrent must be >= 1")
    try:
        if args.all:
            from benchmark.pipeline.spec import load_params, sweep_names

            specs = [load_sweep(args.params, name) for name in sweep_names(load_params(args.params))]
        else:
            specs = [load_sweep(args.params, args.sweep)]
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    label = f"sweep {specs[0].name}" if not args.all else f"sweeps of {args.params}"
    previous_sigterm = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    # Ctrl-C starts from Python's own handler: one a finished Tune run left behind would only set its flag.
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if args.export_only:
            return max(_export_only(spec, args.lock_timeout) for spec in specs)
        if args.all:
            results = run_sweeps(specs, address=args.address, max_concurrent=args.max_concurrent,
                                 quiet=not args.verbose, lock_timeout=args.lock_timeout, progress=True,
                                 prepared_root=Path(args.params).resolve().parent / paths.PREPARED_DIR,
                                 skip_up_to_date=True)
        else:
            outcome = run_sweep(specs[0], address=args.address, max_concurrent=args.max_concurrent,
                                quiet=not args.verbose, lock_timeout=args.lock_timeout, progress=True)
    except (tracking.StoreError, cluster.PreflightError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except IncompleteError as err:
        print(f"error: {label}: {err}", file=sys.stderr)
        return EXIT_INCOMPLETE
    except Exception as err:  # a full disk surfaces from sqlite, SQLAlchemy, MLflow, pandas or Ray
        problem = tracking.storage_problem(err)
        if problem is None:
            raise
        where = tracking.sqlite_path(specs[0].tracking.uri) or specs[0].tracking.uri
        folders = " or ".join(str(spec.table_path.parent) for spec in specs[:3]) + (" ..." if len(specs) > 3 else "")
        print(f"error: {label}: {problem} while writing {where} or {folders} "
              f"({type(err).__name__}); finished trials are kept: free space and rerun the sweep to resume",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: {label} interrupted; the stage fails so DVC records nothing. "
              f"Rerun the sweep to resume (finished trials are not rerun)", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        signal.signal(signal.SIGINT, previous_sigint)
    if not args.all:
        results = [SweepsResult(outcome.name, outcome=outcome)]
    for result in results:
        line = result.line()
        if result.outcome is not None and result.exit_status():
            print(result.outcome.summary())
        print(line, file=sys.stderr if line.startswith("error:") else sys.stdout)
    failing = [result for result in results if result.exit_status()]
    if failing and args.all:
        print(f"error: {len(failing)} of {len(results)} sweeps failed: {', '.join(r.name for r in failing)}; "
              f"the stage fails so DVC records nothing. Rerun to resume (finished trials are not rerun)",
              file=sys.stderr)
    return failing[0].exit_status() if failing else 0


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (``kill``, a job scheduler, a closing terminal) handled as Ctrl-C: Ray Tune stops
    the trials, the recorder fails the runs left open, the store lock is released."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def _export_only(spec: SweepSpec, lock_timeout: float | None) -> int:
    """``--export-only``: the table (and the tuning table) rebuilt from MLflow, nothing run."""
    tracking.check_writable(spec.table_path.parent)
    with tracking.store_lock(spec.tracking.uri, timeout=lock_timeout):
        table = tracking.export_table(spec.tracking.uri, spec.name)
        tracking.restore_artifacts(spec.tracking.uri, table, spec.artifacts_root)
    path = tracking.write_table(table, spec.table_path)
    if spec.tune is not None:
        from benchmark.pipeline import tuning

        results = tuning.recorded_results(spec)
        tuning.write_tuning_table(tuning.with_tuned_trials(spec, results), results, table)
    print(f"sweep {spec.name}: exported {len(table)} trials -> {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmark sweep``."""
    parser = argparse.ArgumentParser(prog="python -m benchmark sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--sweep", help="name of the sweep under `sweeps:`")
    which.add_argument("--all", action="store_true",
                       help="every sweep of the params file in one process and one Ray session (the "
                            "`sweeps` stage); a sweep whose inputs did not change since its table was "
                            "written is skipped")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: params, "
                        "then $RAY_ADDRESS, then a local Ray)")
    parser.add_argument("--max-concurrent", type=int, default=None, help="at most N trials at once")
    parser.add_argument("--export-only", action="store_true", help="only rebuild the table from MLflow")
    parser.add_argument("--verbose", action="store_true", help="show Ray / Tune output")
    parser.add_argument("--lock-timeout", type=float, default=None, metavar="SECONDS",
                        help="wait at most this long for another sweep writing the same store "
                             "(default: as long as it takes; 0: refuse at once)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
