"""benchmark.pipeline.tracking: URI resolution, trial runs in MLflow, the tidy export (no Ray here)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from benchmark import paths
from benchmark.pipeline import tracking
from benchmark.experiments.config import RunConfig

GIT = tracking.GitState(commit="abc123", dirty=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, object]:
    """One SQLite store for the module (creating its schema takes seconds)."""
    uri = tracking.resolve_tracking_uri("mlflow.db", tmp_path_factory.mktemp("store"))
    return uri, tracking.make_client(uri)


def test_resolve_tracking_uri_makes_sqlite_paths_absolute(tmp_path: Path) -> None:
    assert tracking.resolve_tracking_uri("mlflow.db", tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.resolve_tracking_uri("sub/m.db", tmp_path) == f"sqlite:///{tmp_path}/sub/m.db"
    assert tracking.resolve_tracking_uri("sqlite:///rel.db", tmp_path) == f"sqlite:///{tmp_path}/rel.db"
    assert tracking.resolve_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert tracking.resolve_tracking_uri("http://host:5000", tmp_path) == "http://host:5000"
    assert tracking.resolve_tracking_uri("mlflow.db", tmp_path).startswith("sqlite:////")
    with pytest.raises(ValueError, match="tracking.uri"):
        tracking.resolve_tracking_uri("", tmp_path)


def test_git_state_reads_this_repo() -> None:
    state = tracking.git_state(paths.REPO_ROOT)
    assert len(state.commit) == 40 and all(c in "0123456789abcdef" for c in state.commit)
    assert isinstance(state.dirty, bool)


def test_git_state_outside_git(tmp_path: Path) -> None:
    assert tracking.git_state(tmp_path) == tracking.GitState(commit="unknown", dirty=True)


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("codebook_size", "1024", 1024),
        ("model_lr", "0.001", 0.001),
        ("model_lr", "1", 1.0),
        ("method", "vanilla", "vanilla"),
        ("device", "123", "123"),  # a str field stays a string
        ("method_options.gamma", "0.5", 0.5),
        ("method_options.queue_size", "65536", 65536),
        ("method_options.normalize", "True", True),
        ("method_options.seed", "None", None),
        ("dataset_options.name", "abc", "abc"),
        ("model_options.channels", "[1, 2]", "[1, 2]"),  # containers stay strings
    ],
)
def test_restore_param(key: str, text: str, expected: object) -> None:
    value = tracking.restore_param(key, text)
    assert value == expected and type(value) is type(expected)


def test_log_trial_and_export_round_trip(store: tuple[str, object]) -> None:
    uri, client = store
    experiment_id = tracking.get_or_create_experiment(client, "roundtrip")
    assert tracking.get_or_create_experiment(client, "roundtrip") == experiment_id
    good = RunConfig(method="wasserstein", codebook_size=16, dim=2, steps=4, log_every=2,
                     method_options={"gamma": 0.5, "normalize": True}, dataset_options={"mean": 4.0})
    bad = good.replace(seed=1)
    run_good = tracking.log_trial(
        client, experiment_id, sweep="roundtrip", trial_id="t-good", config=good, git=GIT,
        status=tracking.STATUS_FINISHED, metrics={"quantization_error": 0.25, "utilization": 1.0, "note": "x"},
        steps=[(2, {"loss": 2.0}), (4, {"loss": 1.0})],
    )
    tracking.log_trial(
        client, experiment_id, sweep="roundtrip", trial_id="t-bad", config=bad, git=GIT,
        status=tracking.STATUS_FAILED, error="DivergedError: step 3: training loss is nan",
    )
    table = tracking.export_table(uri, "roundtrip")
    assert list(table["trial"]) == ["t-bad", "t-good"]
    assert list(table.columns[:len(tracking.ID_COLUMNS)]) == list(tracking.ID_COLUMNS)
    flat = good.flat_params()
    assert set(flat) <= set(table.columns)
    row = table.set_index("trial").loc["t-good"]
    assert row["run_id"] == run_good and row["status"] == "finished" and row["git_commit"] == "abc123"
    for key, value in flat.items():
        assert row[key] == value, key
    assert row["quantization_error"] == 0.25 and row["utilization"] == 1.0
    assert "note" not in table.columns and "train/loss" not in table.columns  # no strings, no curves
    failed = table.set_index("trial").loc["t-bad"]
    assert failed["status"] == "failed" and failed["error"].startswith("DivergedError")
    assert math.isnan(failed["quantization_error"])
    history = client.get_metric_history(run_good, "train/loss")
    assert [(m.step, m.value) for m in history] == [(2, 2.0), (4, 1.0)]
    run = client.get_run(run_good)
    assert run.info.status == "FINISHED" and run.data.tags["sweep"] == "roundtrip"
    assert run.data.tags["env.OMP_WAIT_POLICY"] == os.environ["OMP_WAIT_POLICY"]  # set by tests/conftest.py


def test_export_prefers_the_finished_run_of_a_retried_trial(store: tuple[str, object]) -> None:
    uri, client = store
    experiment_id = tracking.get_or_create_experiment(client, "retried")
    config = RunConfig(codebook_size=16, dim=2)
    kwargs = dict(sweep="retried", trial_id="t", config=config, git=GIT)
    finished = tracking.log_trial(client, experiment_id, status="finished", metrics={"e": 1.0}, **kwargs)
    tracking.log_trial(client, experiment_id, status="failed", error="later failure", **kwargs)
    table = tracking.export_table(uri, "retried")
    assert len(table) == 1 and table["run_id"].iloc[0] == finished


def test_export_unknown_sweep_and_bad_status(store: tuple[str, object]) -> None:
    uri, client = store
    with pytest.raises(ValueError, match="no MLflow experiment"):
        tracking.export_table(uri, "never-ran")
    experiment_id = tracking.get_or_create_experiment(client, "status")
    run_id = tracking.start_trial_run(client, experiment_id, sweep="status", trial_id="t",
                                      config=RunConfig(), git=GIT)
    with pytest.raises(ValueError, match="status"):
        tracking.finish_trial_run(client, run_id, status="done")


def test_write_table_creates_folders(tmp_path: Path) -> None:
    import pandas as pd

    path = tracking.write_table(pd.DataFrame({"a": [1]}), tmp_path / "x" / "y" / "trials.csv")
    assert path.is_absolute() and path.read_text().splitlines() == ["a", "1"]


def test_held_back_step_curves_go_out_with_the_final_record(store: tuple[str, object]) -> None:
    """A recorder holds a trial's curve points and worker tags back (each write is a transaction of
    the store) and writes them in the final batch, with the timestamps of their reports."""
    from benchmark.pipeline.recorder import HeldBack

    _, client = store
    experiment = tracking.get_or_create_experiment(client, "held")
    config = RunConfig(steps=20)
    run_id = tracking.start_trial_run(client, experiment, sweep="held", trial_id="t0", config=config, git=GIT,
                                      tags={"group": "g0"})
    held = HeldBack(client, hold_seconds=3600)
    held.add(run_id, metrics=tracking.step_metric_entities(10, {"loss": 2.0}), tags={"node": "n1"})
    held.add(run_id, metrics=tracking.step_metric_entities(20, {"loss": 1.0}))
    assert client.get_metric_history(run_id, "train/loss") == []  # nothing written yet
    stamp = client.get_run(run_id).data  # the run exists with its params and creation tags
    assert stamp.tags["group"] == "g0" and stamp.params["steps"] == "20"
    metrics, tags = held.take(run_id)
    tracking.finish_trial_run(client, run_id, status=tracking.STATUS_FINISHED, metrics={"quantization_error": 0.5},
                              final_step=20, tags=tags, pending=metrics)
    history = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(10, 2.0), (20, 1.0)]
    run = client.get_run(run_id)
    assert run.data.tags["node"] == "n1" and run.data.tags["status"] == "finished"
    assert run.data.metrics["quantization_error"] == 0.5 and run.info.status == "FINISHED"
    assert held.take(run_id) == ([], {})


def test_held_back_writes_once_the_oldest_has_waited(store: tuple[str, object]) -> None:
    from benchmark.pipeline.recorder import HeldBack

    _, client = store
    experiment = tracking.get_or_create_experiment(client, "held-now")
    run_id = tracking.start_trial_run(client, experiment, sweep="held-now", trial_id="t0", config=RunConfig(), git=GIT)
    held = HeldBack(client, hold_seconds=0.0)
    held.add(run_id, metrics=tracking.step_metric_entities(5, {"loss": 3.0}), tags={"node": "n1"})
    assert [m.value for m in client.get_metric_history(run_id, "train/loss")] == [3.0]
    assert client.get_run(run_id).data.tags["node"] == "n1"
    assert held.take(run_id) == ([], {})


def test_write_batch_splits_at_mlflow_limits(store: tuple[str, object]) -> None:
    _, client = store
    experiment = tracking.get_or_create_experiment(client, "batch")
    run_id = tracking.start_trial_run(client, experiment, sweep="batch", trial_id="t0", config=RunConfig(), git=GIT)
    metrics = [m for step in range(1, 1101) for m in tracking.step_metric_entities(step, {"loss": float(step)})]
    tracking.write_batch(client, run_id, metrics=metrics, tags={f"tag{i}": i for i in range(150)})
    assert len(client.get_metric_history(run_id, "train/loss")) == 1100
    assert client.get_run(run_id).data.tags["tag149"] == "149"
