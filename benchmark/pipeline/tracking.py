"""MLflow tracking for sweeps: one experiment per sweep, one run per trial, a tidy export.

Everything here talks to MLflow through an explicit :class:`mlflow.tracking.MlflowClient`
built from a tracking URI (no ``mlflow.set_tracking_uri`` global state), and is called from
the sweep *driver* only: trials never write to the SQLite store themselves, so concurrent
trials cannot race on it (see ``benchmark/pipeline/sweep.py``).

Layout of one trial's run:

- run name: method, setting, seed (:func:`make_run_name`); tag ``trial`` = the trial id (a
  deterministic hash of the trial's ``RunConfig`` and code);
- params: every ``RunConfig.flat_params()`` key (options as dotted keys, values as strings);
- tags: ``sweep``, ``trial``, ``status`` (``running`` -> ``finished`` | ``failed`` | ``stopped``),
  ``error`` (failed only), ``git_commit``, ``git_dirty`` (``true``/``false``, ``dvc.lock`` aside),
  ``env.<NAME>`` for each process setting of :mod:`benchmark.runtime` (``env.OMP_WAIT_POLICY``),
  :func:`identity_tags` (``method``, ``experiment``, ``dataset``, ``code_fingerprint``, ``plugins``)
  and where the trial actually ran (:func:`worker_tags`, ``benchmark.pipeline.cluster.environment``:
  ``device``, ``node_id``, ``hostname``, ``torch``, ``cuda``, ``cuda_driver``, ...), and ``warning``
  (what limits its numbers, e.g. a test split smaller than K; exported as the ``warning`` column);
- metrics: the final result record under its own keys (``quantization_error``, ...), and the
  per-step curves under ``train/<name>`` with ``step`` = the training step.

``export_table`` rebuilds the tidy one-row-per-trial table from the store alone, so it can be
regenerated without rerunning anything.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence, TypedDict, Unpack

from benchmark import runtime
from benchmark.experiments.config import RunConfig

if TYPE_CHECKING:  # mlflow / pandas are imported lazily: they are slow to import
    import pandas
    from mlflow.entities import Metric, Run
    from mlflow.tracking import MlflowClient

STATUS_RUNNING = "running"
STATUS_FINISHED = "finished"
STATUS_FAILED = "failed"
STATUS_STOPPED = "stopped"  # stopped early by the ASHA scheduler (only with ray.early_stopping)
DONE_STATUSES = (STATUS_FINISHED, STATUS_STOPPED)  # a resumed sweep does not rerun these
DIVERGED_ERROR = "DivergedError"  # error prefix of a trial whose loss turned NaN/inf: a result, not a fault
INTERRUPTED_ERROR = "Interrupted"  # error prefix of a trial cut off by Ctrl-C / SIGTERM: to be rerun

STEP_METRIC_PREFIX = "train/"
ID_COLUMNS = ("sweep", "trial", "run_id", "status", "error", "git_commit", "git_dirty", "warning")
WARNING_TAG = "warning"  # what limits a trial's numbers (benchmark.experiments.training.RunWarning), " | "-joined
MAX_TAG_CHARS = 5000  # MLflow caps tag values at 8000 characters; keep errors readable
_MLFLOW_MAX_PARAMS_PER_BATCH = 100
_MLFLOW_MAX_METRICS_PER_BATCH = 1000
_MLFLOW_MAX_TAGS_PER_BATCH = 100
_MLFLOW_MAX_ENTITIES_PER_BATCH = 1000


@dataclass(frozen=True)
class GitState:
    """The commit the sweep driver runs from, and whether the work tree had local changes."""

    commit: str
    dirty: bool


def resolve_tracking_uri(uri: str, base_dir: str | Path) -> str:
    """Absolute MLflow tracking URI for ``uri`` as written in params.yaml.

    A bare path (``mlflow.db``) or a relative ``sqlite:///mlflow.db`` becomes
    ``sqlite:////<abs base_dir>/mlflow.db`` (Ray trials and DVC run in other working
    directories, so a relative path would point elsewhere). Absolute ``sqlite:////...`` and
    server URIs (``http://``, ``postgresql://`` ...) are returned unchanged.
    """
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"tracking.uri: must be a non-empty string, got {uri!r}")
    base = Path(base_dir).expanduser().resolve()
    if uri.startswith("sqlite:///"):
        db_path = uri[len("sqlite:///"):]
        if db_path.startswith("/"):
            return uri
        return f"sqlite:///{(base / db_path).resolve()}"
    if "://" in uri:
        return uri
    return f"sqlite:///{(base / Path(uri).expanduser()).resolve()}"


GIT_STATE_IGNORED = ("dvc.lock",)  # rewritten by `dvc repro` itself while the sweeps run


def is_fault(status: str | None, error: str | None) -> bool:
    """A run that failed for a reason other than its own divergence: an exception, a missing plugin,
    an interruption. A sweep with such a trial is not complete (its stage exits non-zero)."""
    return status == STATUS_FAILED and not str(error or "").startswith(DIVERGED_ERROR)


def is_interrupted(status: str | None, error: str | None) -> bool:
    """A run cut off by an interruption of the sweep (Ctrl-C, SIGTERM): not a result, rerun on resume."""
    return status == STATUS_FAILED and str(error or "").startswith(INTERRUPTED_ERROR)


def git_state(repo_dir: str | Path) -> GitState:
    """``git rev-parse HEAD`` and ``git status --porcelain`` of ``repo_dir`` ("unknown" outside git)."""
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo_dir, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        # untracked (not ignored) files count: they may be code; what DVC itself writes does not
        dirty = bool(git("status", "--porcelain", "--", ".", *(f":(exclude){p}" for p in GIT_STATE_IGNORED)))
    except (OSError, subprocess.SubprocessError):
        return GitState(commit="unknown", dirty=True)
    return GitState(commit=commit, dirty=dirty)


class StoreError(RuntimeError):
    """The tracking store or the results folder cannot be used; the message names the file."""


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for a server URI)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///"):])


def check_store(tracking_uri: str) -> None:
    """Raise StoreError naming the file when an existing SQLite store is not a sound database.

    SQLite's own ``PRAGMA quick_check`` (a truncated or overwritten file fails it); a missing file
    is fine (MLflow creates it).
    """
    path = sqlite_path(tracking_uri)
    if path is None or not path.exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
            half_made = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '\\_alembic\\_tmp\\_%' ESCAPE '\\'"
            ).fetchall()
    except sqlite3.DatabaseError as err:
        verdict, half_made = str(err), []
    if verdict != "ok":
        raise StoreError(f"{path}: the MLflow store is not a usable SQLite database ({verdict}); "
                         f"restore it from a backup or move it away to start a new store")
    if half_made:
        raise StoreError(f"{path}: the MLflow store was left half-migrated (table {half_made[0][0]}: its creation or "
                         f"an upgrade was cut off, e.g. by a full disk); restore it from a backup, or move it away "
                         f"(mv {path} {path}.broken) to start a new store")


def make_client(tracking_uri: str) -> "MlflowClient":
    """An MLflow client bound to ``tracking_uri`` (creates the SQLite file and schema if needed,
    atomically: :func:`create_store`).

    A damaged SQLite file raises StoreError naming it (:func:`check_store`).
    """
    from mlflow.tracking import MlflowClient

    check_store(tracking_uri)
    path = sqlite_path(tracking_uri)
    if path is not None and not path.exists():
        create_store(path)
    return MlflowClient(tracking_uri=tracking_uri)


def create_store(path: Path) -> None:
    """Create an empty MLflow SQLite store at ``path`` all at once: the schema is built (MLflow's
    migrations) in a temporary file beside it, which then replaces ``path`` (``os.replace``, atomic).
    A full disk or a kill part-way leaves no half-migrated store behind, only the temporary file,
    removed on failure. Raises StoreError saying what to do."""
    from mlflow.tracking import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.creating-{os.getpid()}-{time.monotonic_ns()}")
    try:
        MlflowClient(tracking_uri=f"sqlite:///{temporary}").search_experiments(max_results=1)
        os.replace(temporary, path)
    except Exception as err:  # noqa: BLE001 - any failure leaves no store, and one line saying why
        raise StoreError(f"{path}: cannot create the MLflow store ({storage_problem(err) or err}); nothing was "
                         f"written there: fix the cause (free disk space) and rerun") from None
    finally:
        for leftover in (temporary, temporary.with_name(temporary.name + "-journal")):
            with contextlib.suppress(OSError):
                leftover.unlink()


STORAGE_FULL = ("database or disk is full", "no space left on device", "disk quota exceeded")


def storage_problem(err: BaseException) -> str | None:
    """"no space left on device" (and the like) when ``err`` or an exception it was raised from is a
    full disk (OSError ENOSPC / EDQUOT, SQLite's "database or disk is full", wrapped by SQLAlchemy
    or MLflow), else None."""
    import errno

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return "no space left on device"
        text = str(err).lower()
        for phrase in STORAGE_FULL:
            if phrase in text:
                return phrase
        err = err.__cause__ or err.__context__
    return None


LOCK_SUFFIX = ".lock"  # <store>.lock beside the SQLite file; <store>.lock.json says who holds it


def _holder(info_path: Path) -> str:
    try:
        info = json.loads(info_path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {info['pid']} on {info['host']} since {since} ({info.get('command', '?')})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (holder unknown)"


@contextlib.contextmanager
def store_lock(tracking_uri: str, *, timeout: float | None = None, say: Any = None) -> Iterator[None]:
    """Hold the writer lock of a SQLite store: ``<store>.lock`` beside the file (``filelock``).

    One writer per store at a time: two sweeps on one store would otherwise run (and record) the
    same pending trials twice, and two processes creating a fresh store race in MLflow's schema
    migration. The holder writes its pid, host, start time and command to ``<store>.lock.json``.
    ``timeout``: None waits as long as it takes (saying once, through ``say``, who holds it);
    a number of seconds (0: do not wait) raises StoreError naming the holder when it runs out.
    Server stores (``http://...``) handle their own concurrency: nothing is locked.
    """
    from filelock import FileLock, Timeout

    path = sqlite_path(tracking_uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + LOCK_SUFFIX)
    info_path = path.with_name(path.name + LOCK_SUFFIX + ".json")
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _holder(info_path)
        if timeout is not None and timeout <= 0:
            raise StoreError(f"{path}: the store is locked by {holder}; wait for it to finish "
                             f"(or remove {lock_path} if that process is gone)") from None
        (say or (lambda text: print(text, file=sys.stderr, flush=True)))(
            f"waiting for the lock on {path}, held by {holder}")
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise StoreError(f"{path}: still locked after {timeout:g} s by {_holder(info_path)}") from None
    try:
        info_path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                                         "command": " ".join(sys.argv)[:200]}))
        yield
    finally:
        with contextlib.suppress(OSError):
            info_path.unlink()
        lock.release()


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` and write a probe file in it; StoreError naming the folder if that fails.

    Called before training, so that a read-only results folder is found before the work is done.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise StoreError(f"{folder}: results folder is not writable ({err.strerror or err})") from None
    return folder


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite store live beside it (``<db dir>/mlartifacts/``), not in the working
    directory of whichever process created the experiment; servers choose their own (None)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()


def get_or_create_experiment(client: "MlflowClient", name: str) -> str:
    """Id of the experiment ``name``, created (or restored from deleted) if necessary."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri))
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def param_strings(config: RunConfig) -> dict[str, str]:
    """``config.flat_params()`` as the strings MLflow stores."""
    return {key: str(value) for key, value in config.flat_params().items()}


class TrialIdentity(TypedDict):
    """What names a trial's run: its sweep, its id, its config and the code's git state."""

    sweep: str
    trial_id: str
    config: RunConfig
    git: GitState


def make_run_name(config: RunConfig, point: Iterable[tuple[str, Any]] = ()) -> str:
    """A run name to read in the MLflow UI: method, the grid values of the setting, seed
    (``wasserstein codebook_size=1024 seed=0``); the trial id stays in the tag ``trial``."""
    setting = [f"{key}={value}" for key, value in point if key not in ("method", "seed")]
    return " ".join([config.method, *setting, f"seed={config.seed}"])


def identity_tags(config: RunConfig) -> dict[str, str]:
    """Tags of what a trial runs, known to the driver: method, experiment, dataset, the code's
    fingerprint (:func:`benchmark.pipeline.code.fingerprint`) and the plugin distributions
    (``name==version``) whose code it runs."""
    from benchmark.pipeline import code

    _, distributions = code.config_code(config)
    return {
        "method": config.method,
        "experiment": config.experiment,
        "dataset": config.dataset,
        "code_fingerprint": code.fingerprint(config)[:16],
        "plugins": " ".join(distributions) or "none",
    }


def worker_tags(config: RunConfig) -> dict[str, str]:
    """Tags of where a trial ran, computed IN the process that runs it (a Ray worker) and recorded
    with its first result: the device it actually used (``device: auto`` resolved), its node and the
    library and driver versions there (``benchmark.pipeline.cluster.environment``). The one place to
    add facts of the worker's environment."""
    from benchmark.experiments.training import resolve_device
    from benchmark.pipeline.cluster import environment

    try:
        device = resolve_device(config.device)
    except ValueError as err:
        return {**environment("cpu"), "device": f"unavailable ({err})"}
    return environment(device)


def start_trial_run(
    client: "MlflowClient",
    experiment_id: str,
    *,
    sweep: str,
    trial_id: str,
    config: RunConfig,
    git: GitState,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Create the run of one trial (status ``running``) with all its params; returns the run id.

    ``run_name``: what the MLflow UI lists (default: :func:`run_name` of the config alone); ``tags``:
    more tags of the run."""
    tags = {
        **(tags or {}),
        "sweep": sweep,
        "trial": trial_id,
        "status": STATUS_RUNNING,
        "git_commit": git.commit,
        "git_dirty": str(git.dirty).lower(),
        **identity_tags(config),
        **runtime.environment_tags(),
    }
    run = client.create_run(experiment_id, run_name=run_name or make_run_name(config), tags=tags)
    run_id = run.info.run_id
    from mlflow.entities import Param

    params = [Param(key, value) for key, value in param_strings(config).items()]
    for start in range(0, len(params), _MLFLOW_MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=params[start:start + _MLFLOW_MAX_PARAMS_PER_BATCH])
    return run_id


def _numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``metrics`` that are numbers (bools and strings are not metrics)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[str(key)] = float(value)
    return out


def metric_entities(metrics: Mapping[str, Any], *, step: int = 0, prefix: str = "") -> list["Metric"]:
    """MLflow metric entities of the numeric entries of ``metrics`` (keys prefixed by ``prefix``) at
    ``step``, stamped now."""
    import time

    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    return [Metric(prefix + key, value, stamp, int(step)) for key, value in _numeric_metrics(metrics).items()]


def step_metric_entities(step: int, metrics: Mapping[str, Any]) -> list["Metric"]:
    """One point of the per-step curves: ``train/<name>`` at ``step``."""
    return metric_entities(metrics, step=int(step), prefix=STEP_METRIC_PREFIX)


def write_batch(
    client: "MlflowClient", run_id: str, *, metrics: Sequence["Metric"] = (), tags: Mapping[str, Any] | None = None
) -> None:
    """Metrics and tags (values as strings, cut to :data:`MAX_TAG_CHARS`) in as few ``log_batch``
    calls as MLflow's per-call limits allow: each call is one transaction of the store."""
    from mlflow.entities import RunTag

    run_tags = [RunTag(str(key), str(value)[:MAX_TAG_CHARS]) for key, value in (tags or {}).items()]
    metrics = list(metrics)
    while metrics or run_tags:
        tag_part, run_tags = run_tags[:_MLFLOW_MAX_TAGS_PER_BATCH], run_tags[_MLFLOW_MAX_TAGS_PER_BATCH:]
        room = _MLFLOW_MAX_ENTITIES_PER_BATCH - len(tag_part)
        metric_part, metrics = metrics[:min(room, _MLFLOW_MAX_METRICS_PER_BATCH)], metrics[room:]
        client.log_batch(run_id, metrics=metric_part, tags=tag_part)


def finish_trial_run(
    client: "MlflowClient",
    run_id: str,
    *,
    status: str,
    metrics: Mapping[str, Any] | None = None,
    error: str | None = None,
    final_step: int = 0,
    tags: Mapping[str, Any] | None = None,
    pending: Sequence["Metric"] = (),
) -> None:
    """Record the end of a trial: final metrics, ``status`` tag (and ``error``, and the worker's
    :func:`worker_tags` when given), run terminated. ``pending``: metric entities not yet written
    (the step curves a recorder holds back), written in the same batch."""
    if status not in (STATUS_FINISHED, STATUS_FAILED, STATUS_STOPPED):
        raise ValueError(f"status: must be finished, failed or stopped, got {status!r}")
    final_tags = {str(key): value for key, value in (tags or {}).items()}
    if error:
        final_tags["error"] = error
    final_tags["status"] = status
    write_batch(client, run_id, metrics=[*pending, *metric_entities(metrics or {}, step=final_step)], tags=final_tags)
    mlflow_status = {STATUS_FINISHED: "FINISHED", STATUS_FAILED: "FAILED", STATUS_STOPPED: "KILLED"}[status]
    client.set_terminated(run_id, status=mlflow_status)


def log_trial(
    client: "MlflowClient",
    experiment_id: str,
    *,
    status: str,
    metrics: Mapping[str, Any] | None = None,
    error: str | None = None,
    steps: Iterable[tuple[int, Mapping[str, Any]]] = (),
    **trial: Unpack[TrialIdentity],
) -> str:
    """Log one complete trial in one go (params, per-step curves, final record); returns the run id."""
    run_id = start_trial_run(client, experiment_id, **trial)
    curves = [metric for step, step_metrics in steps for metric in step_metric_entities(step, step_metrics)]
    finish_trial_run(client, run_id, status=status, metrics=metrics, error=error, final_step=trial["config"].steps,
                     pending=curves)
    return run_id


def search_sweep_runs(client: "MlflowClient", experiment_id: str) -> list["Run"]:
    """All active runs of a sweep's experiment, oldest first."""
    runs: list[Run] = []
    page_token = None
    while True:
        page = client.search_runs(
            [experiment_id], max_results=1000, order_by=["attributes.start_time ASC"], page_token=page_token
        )
        runs.extend(page)
        page_token = page.token
        if not page_token:
            return runs


def latest_runs_by_trial(runs: Iterable["Run"]) -> dict[str, "Run"]:
    """``{trial id: run}`` keeping, per trial, a done run over others, then the newest."""
    best: dict[str, Run] = {}

    def rank(run: "Run") -> tuple[bool, int]:
        return run.data.tags.get("status") in DONE_STATUSES, run.info.start_time or 0

    for run in runs:
        trial_id = run.data.tags.get("trial")
        if trial_id is None:
            continue
        if trial_id not in best or rank(run) >= rank(best[trial_id]):
            best[trial_id] = run
    return best


_RUN_CONFIG_TYPES = typing.get_type_hints(RunConfig)


def restore_param(key: str, value: str | None) -> Any:
    """Inverse of ``str()`` on a flat param: MLflow hands every param back as a string.

    RunConfig fields get their declared type (``codebook_size`` -> int, ``lr`` -> float,
    ``method`` stays a string); option values (``method_options.gamma``) are read as Python
    literals (``"0.5"`` -> 0.5, ``"True"`` -> True, ``"None"`` -> None), else kept as strings.
    """
    if value is None:
        return None
    declared = _RUN_CONFIG_TYPES.get(key)
    if declared is str:
        return value
    if declared is int:
        try:
            return int(value)
        except ValueError:
            return value
    if declared is float:
        try:
            return float(value)
        except ValueError:
            return value
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value
    if isinstance(parsed, (int, float, bool, type(None))):
        return parsed
    return value  # containers stay strings: a table cell holds a scalar


def _param_column_order(keys: Iterable[str]) -> list[str]:
    """RunConfig field order first (options expanded alphabetically), then anything else."""
    keys = set(keys)
    ordered: list[str] = []
    for field in dataclasses.fields(RunConfig):
        if field.name in keys:
            ordered.append(field.name)
        ordered.extend(sorted(k for k in keys if k.startswith(field.name + ".")))
    ordered.extend(sorted(keys - set(ordered)))
    return ordered


def export_table(tracking_uri: str, sweep: str) -> "pandas.DataFrame":
    """The tidy table of a sweep, rebuilt from the MLflow store: one row per trial.

    Columns: ``sweep, trial, run_id, status, error, git_commit, git_dirty``, every flat param
    (types restored, see :func:`restore_param`), every final metric (not the ``train/`` curves).
    When a trial has several runs (a failed attempt, then a retry), the finished one wins.
    Rows are sorted by trial id so the table is stable across reruns.
    """
    import pandas as pd

    store = sqlite_path(tracking_uri)
    if store is not None and not store.exists():  # do not create an empty store just to read it
        raise ValueError(f"sweep {sweep!r}: no MLflow store at {store} (the sweep has never run there; "
                         f"run it first)")
    client = make_client(tracking_uri)
    experiment = client.get_experiment_by_name(sweep)
    if experiment is None:
        raise ValueError(f"sweep {sweep!r}: no MLflow experiment of that name in {tracking_uri} "
                         f"(the sweep has never run there; run it first)")
    runs = latest_runs_by_trial(search_sweep_runs(client, experiment.experiment_id))
    rows: list[dict[str, Any]] = []
    param_keys: set[str] = set()
    metric_keys: list[str] = []
    for trial_id in sorted(runs):
        run = runs[trial_id]
        tags = run.data.tags
        params = {key: restore_param(key, value) for key, value in run.data.params.items()}
        metrics = {
            key: value for key, value in run.data.metrics.items() if not key.startswith(STEP_METRIC_PREFIX)
        }
        param_keys.update(params)
        metric_keys.extend(key for key in metrics if key not in metric_keys)
        rows.append({
            "sweep": tags.get("sweep", sweep),
            "trial": trial_id,
            "run_id": run.info.run_id,
            "status": tags.get("status", STATUS_RUNNING),
            "error": tags.get("error", ""),
            "git_commit": tags.get("git_commit", ""),
            "git_dirty": tags.get("git_dirty", "") == "true",
            "warning": tags.get(WARNING_TAG, ""),
            **params,
            **metrics,
        })
    columns = [*ID_COLUMNS, *_param_column_order(param_keys), *metric_keys]
    return pd.DataFrame(rows, columns=columns)


def restore_artifacts(tracking_uri: str, table: "pandas.DataFrame", artifacts_root: str | Path) -> int:
    """Download the logged artifacts of every finished trial of ``table`` whose folder
    ``<artifacts_root>/<trial>`` is missing (DVC clears a stage's outputs before it reruns it; the
    MLflow run is the record). Returns how many trials were restored."""
    root = Path(artifacts_root)
    missing = [(row.trial, row.run_id) for row in table.itertuples()
               if row.status == STATUS_FINISHED and not (root / str(row.trial)).is_dir()]
    if not missing:
        return 0
    client = make_client(tracking_uri)
    restored = 0
    for trial, run_id in missing:
        if not client.list_artifacts(run_id):
            continue
        target = root / str(trial)
        target.mkdir(parents=True, exist_ok=True)
        client.download_artifacts(run_id, "", str(target))
        restored += 1
    return restored


def write_table(table: "pandas.DataFrame", path: str | Path) -> Path:
    """Write ``table`` as CSV to ``path`` (parent folders created); returns the absolute path."""
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path
