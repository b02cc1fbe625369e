"""The driver-side MLflow recorder: Tune callbacks in, one MLflow run per trial out."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

from benchmark.pipeline import cluster, tracking
from benchmark.pipeline.spec import SweepSpec

# Keys of the results a trial reports to Tune (see benchmark.pipeline.sweep._run_trial).
KIND_KEY = "vqbench_kind"  # "step" | "final" | "failed"
STEP_KEY = "vqbench_step"
OBJECTIVE_KEY = "vqbench_objective"  # what ASHA minimises (present only with early stopping)
TAGS_KEY = "vqbench_tags"  # with a trial's first report: tracking.worker_tags, where it runs
ARTIFACTS_KEY = "vqbench_artifacts"  # final report: {relative path: bytes} of the trial's files


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[str]]:
    """In a trial's process: collect the messages of the RunWarnings raised inside (each once, in
    order) into the yielded list, for the trial's ``warning`` tag; other warnings are shown as usual."""
    from benchmark.experiments.training import RunWarning

    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RunWarning)
        try:
            yield messages
        finally:
            for warning in caught:
                if issubclass(warning.category, RunWarning):
                    if str(warning.message) not in messages:
                        messages.append(str(warning.message))
                else:
                    warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


class IncompleteError(RuntimeError):
    """A stage did not do all it had to (interrupted, or work failed with an error): what it wrote
    is not its output, and the command exits non-zero so that DVC records nothing.
    ``interrupted``: a stop signal (Ctrl-C, SIGTERM) cut it short, so nothing after it should start."""

    def __init__(self, message: str, *, interrupted: bool = False) -> None:
        super().__init__(message)
        self.interrupted = interrupted


TRIAL_KEY = "trial_id"  # the one key of a grid trial's Tune config: grid_key(sweep, trial id)


def grid_key(sweep: str, trial_id: str) -> str:
    """A trial's key in a grid that may hold the trials of several sweeps (a sweep name has no "/")."""
    return f"{sweep}/{trial_id}"


def split_grid_key(key: str) -> tuple[str, str]:
    """(sweep, trial id) of :func:`grid_key`."""
    sweep, _, trial_id = key.partition("/")
    return sweep, trial_id


@contextlib.contextmanager
def kept_interrupt_handler() -> Iterator[None]:
    """Around ``tuner.fit()``: the SIGINT handler of before afterwards. Tune installs its own for the
    run and leaves it behind when no stop signal came; a later Ctrl-C (or SIGTERM, which starts from
    the SIGINT handler) would then only set the flag of a finished run and interrupt nothing."""
    import signal

    before = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if before is not None:
            signal.signal(signal.SIGINT, before)


@contextlib.contextmanager
def tune_output(quiet: bool) -> Iterator[None]:
    """Around ``tuner.fit()``: with ``quiet``, no Ray Tune status box or results path (Tune's
    console engine ignores ``verbose=0`` for its banner unless the legacy engine is selected, and
    reads the variable during ``fit()`` only) and no Optuna "new study created" lines."""
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    optuna_logger = logging.getLogger("optuna")
    optuna_level = optuna_logger.level
    if quiet:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        with contextlib.suppress(ImportError):
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna_logger.setLevel(optuna_level)
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


class Progress:
    """One progress line per stage on stderr (tqdm): trials done / total, how many failed, ETA."""

    def __init__(self, label: str, total: int, *, enabled: bool = True) -> None:
        from tqdm import tqdm

        self.failed = 0
        self._bar = tqdm(total=total, desc=label, unit="trial", file=sys.stderr, dynamic_ncols=True,
                         disable=not enabled or total <= 0, postfix="0 failed")

    def done(self, *, failed: bool) -> None:
        """One trial ended (``failed``: with an error, a divergence or an interruption)."""
        self.failed += bool(failed)
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self.failed} failed", refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __getstate__(self) -> dict[str, Any]:
        """Ray Tune pickles its callbacks with the experiment state: a copy draws no bar."""
        return {**self.__dict__, "_bar": None}


HOLD_SECONDS = 30.0
"""How long a recorder may hold a run's step curves back before writing them (see :class:`HeldBack`)."""


class HeldBack:
    """Per MLflow run, the step curves and tags a driver-side recorder has not written yet.

    Every write is a transaction of the SQLite store, and the driver shares the cores with the trials:
    a trial's curve points and its worker's tags wait and go out with its final record in one batch
    (:func:`tracking.finish_trial_run`), or once the oldest has waited ``hold_seconds``, so a long
    trial's curves still show while it runs. Metric timestamps are those of the reports."""

    def __init__(self, client: Any, hold_seconds: float = HOLD_SECONDS) -> None:
        self._client = client
        self._hold_seconds = hold_seconds
        self._metrics: dict[str, list[Any]] = {}
        self._tags: dict[str, dict[str, Any]] = {}
        self._since: dict[str, float] = {}

    def add(self, run_id: str, *, metrics: Sequence[Any] = (), tags: Mapping[str, Any] | None = None) -> None:
        """Hold ``metrics`` (MLflow entities) and ``tags`` of ``run_id``; write all it holds when due."""
        import time

        self._metrics.setdefault(run_id, []).extend(metrics)
        self._tags.setdefault(run_id, {}).update(tags or {})
        since = self._since.setdefault(run_id, time.monotonic())
        if time.monotonic() - since >= self._hold_seconds:
            held_metrics, held_tags = self.take(run_id)
            tracking.write_batch(self._client, run_id, metrics=held_metrics, tags=held_tags)

    def take(self, run_id: str) -> tuple[list[Any], dict[str, Any]]:
        """What is held for ``run_id`` (metrics, tags), no longer held."""
        self._since.pop(run_id, None)
        return self._metrics.pop(run_id, []), self._tags.pop(run_id, {})

    def finish(self, run_id: str, *, status: str, tags: Mapping[str, Any] | None = None, **record: Any) -> None:
        """:func:`tracking.finish_trial_run` of ``run_id`` (``record``: its metrics, error, final step),
        what is held for the run written in the same batch (``tags`` win over held ones)."""
        held_metrics, held_tags = self.take(run_id)
        tracking.finish_trial_run(self._client, run_id, status=status, tags={**held_tags, **(tags or {})},
                                  pending=held_metrics, **record)


class MlflowRecorder:
    """Driver-side MLflow writer fed by Tune callbacks: the only writer of the SQLite store."""

    def __init__(self, client: Any, experiment_id: str, spec: SweepSpec, git: tracking.GitState,
                 stale_runs: Mapping[str, Sequence[str]], progress: Progress | None = None) -> None:
        self._client = client
        self._experiment_id = experiment_id
        self._spec = spec
        self._git = git
        self._progress = progress
        self._configs = {trial.trial_id: trial.config for trial in spec.trials}
        self._points = {trial.trial_id: trial.point for trial in spec.trials}
        self._stale_runs = dict(stale_runs)
        self._run_ids: dict[str, str] = {}  # Tune trial id -> MLflow run id
        self._closed: set[str] = set()
        self._held = HeldBack(client)

    def run_id(self, tune_trial: Any) -> str:
        """MLflow run of a Tune trial, created on first use (replacing stale runs of the trial)."""
        key = tune_trial.trial_id
        if key not in self._run_ids:
            trial_id = split_grid_key(tune_trial.config[TRIAL_KEY])[1]
            for stale in self._stale_runs.pop(trial_id, ()):
                self._client.delete_run(stale)
            self._run_ids[key] = tracking.start_trial_run(
                self._client, self._experiment_id, sweep=self._spec.name, trial_id=trial_id,
                config=self._configs[trial_id], git=self._git,
                run_name=tracking.make_run_name(self._configs[trial_id], self._points[trial_id]),
            )
        return self._run_ids[key]

    def on_start(self, tune_trial: Any) -> None:
        self.run_id(tune_trial)

    def on_result(self, tune_trial: Any, result: dict[str, Any]) -> None:
        """Record one report. The artifacts are taken out of ``result`` (Tune keeps a trial's last
        result in memory and in its experiment state, which should not hold files)."""
        kind = result.get(KIND_KEY)
        run_id = self.run_id(tune_trial)
        files = result.pop(ARTIFACTS_KEY, None)
        if kind == "step":
            self._held.add(run_id, metrics=tracking.step_metric_entities(result[STEP_KEY], result.get("metrics", {})),
                           tags=result.get(TAGS_KEY))
        elif kind in ("final", "failed"):
            trial_id = split_grid_key(tune_trial.config[TRIAL_KEY])[1]
            config = self._configs[trial_id]
            if kind == "final" and files:  # into the driver's results folder, then its MLflow store
                artifacts = cluster.write_artifacts(files, self._spec.artifacts_root / trial_id)
                self._client.log_artifacts(run_id, str(artifacts))
            status = tracking.STATUS_FINISHED if kind == "final" else tracking.STATUS_FAILED
            self._close(tune_trial, status, metrics=result.get("metrics"), error=result.get("error"),
                        final_step=config.steps, tags=result.get(TAGS_KEY))

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
                self._held.finish(run_id, status=tracking.STATUS_FAILED,
                                  error="Interrupted: the sweep stopped before this trial finished")
                self._closed.add(key)
        if self._progress is not None:
            self._progress.close()

    def _close(self, tune_trial: Any, status: str, *, metrics: Mapping[str, Any] | None = None,
               error: str | None = None, final_step: int = 0, tags: Mapping[str, Any] | None = None) -> None:
        self._held.finish(self.run_id(tune_trial), status=status, metrics=metrics, error=error, final_step=final_step,
                          tags=tags)
        self._closed.add(tune_trial.trial_id)
        if self._progress is not None:
            self._progress.done(failed=status == tracking.STATUS_FAILED)


class SweepsRecorder:
    """Driver-side: the trials of one Tune run over several sweeps, each event passed to its own
    sweep's recorder (``recorders``: sweep name -> recorder); the trial's config at ``key`` is a
    :func:`grid_key` naming the sweep (the grid's trial key, a tuning trial's group)."""

    def __init__(self, recorders: Mapping[str, Any], key: str = TRIAL_KEY) -> None:
        self._recorders = dict(recorders)
        self._key = key

    def _of(self, tune_trial: Any) -> Any:
        return self._recorders[split_grid_key(tune_trial.config[self._key])[0]]

    def on_start(self, tune_trial: Any) -> None:
        self._of(tune_trial).on_start(tune_trial)

    def on_result(self, tune_trial: Any, result: dict[str, Any]) -> None:
        self._of(tune_trial).on_result(tune_trial, result)

    def on_complete(self, tune_trial: Any) -> None:
        self._of(tune_trial).on_complete(tune_trial)

    def on_error(self, tune_trial: Any) -> None:
        self._of(tune_trial).on_error(tune_trial)

    def close_open_runs(self) -> None:
        for recorder in self._recorders.values():
            recorder.close_open_runs()


class TrialEvents(Protocol):
    """What a driver-side recorder answers: Tune's trial start, result, completion and error."""

    def on_start(self, tune_trial: Any) -> None: ...

    def on_result(self, tune_trial: Any, result: dict[str, Any]) -> None: ...

    def on_complete(self, tune_trial: Any) -> None: ...

    def on_error(self, tune_trial: Any) -> None: ...


def tune_callback(recorder: TrialEvents) -> Any:
    """A ray.tune Callback forwarding trial events to ``recorder`` (runs in the driver)."""
    from ray import tune

    class RecorderCallback(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            recorder.on_start(trial)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            recorder.on_result(trial, result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            recorder.on_complete(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            recorder.on_error(trial)

    return RecorderCallback()
