"""Sweeps against a real MLflow tracking server (``mlflow server``, SQLite backend,
``--serve-artifacts``) on 127.0.0.1: recorded, exported with their artifacts, reported; and two
sweeps run at once by two driver processes, nothing duplicated or lost."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from benchmark.pipeline import spec as sweep_spec
from benchmark.pipeline import sweep, tracking
from benchmark.report import build

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_START_S = 120  # mlflow server's imports and schema creation, on a busy machine


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One ``mlflow server`` for the module: its URI and the folder its artifacts are stored in."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    artifacts = root / "artifacts"
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--serve-artifacts",
         "--artifacts-destination", str(artifacts)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield {"uri": uri, "artifacts": artifacts}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def ray_address(ray_cluster: None) -> str:
    """The shared local Ray's address; the drivers of the concurrency test join it."""
    import ray

    return ray.get_runtime_context().gcs_address


def _params(uri: str, names: list[str]) -> dict[str, Any]:
    return {
        "tracking": {"uri": uri, "results_dir": "results"},
        "ray": {"storage_path": "ray"},
        "base": {"experiment": "fit", "dataset": "gaussian", "codebook_size": 16, "dim": 2, "steps": 4,
                 "batch_size": 64, "eval_size": 256, "log_every": 2, "device": "cpu"},
        "sweeps": {name: {"grid": {"method": ["vanilla", "ema"], "seed": [index]}} for index, name in enumerate(names)},
    }


def _check_recorded(uri: str, name: str, spec: sweep_spec.SweepSpec) -> None:
    """Exactly one finished run per trial, each with its final record, its curve and its artifacts
    in the server's store."""
    client = tracking.make_client(uri)
    experiment = client.get_experiment_by_name(name)
    runs = tracking.search_sweep_runs(client, experiment.experiment_id)
    assert sorted(run.data.tags["trial"] for run in runs) == sorted(trial.trial_id for trial in spec.trials)
    for run in runs:
        assert run.data.tags["status"] == "finished" and run.info.status == "FINISHED"
        assert "quantization_error" in run.data.metrics and run.data.tags["device"] == "cpu"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [2, 4]
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"codebook.npy", "code_counts.npy"}


def test_a_sweep_against_the_server_is_exported_and_reported(server: dict[str, Any], ray_address: str,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_params(server["uri"], ["served"])))
    spec = sweep_spec.load_sweep(path, "served")
    outcome = sweep.run_sweep(spec)
    assert (outcome.finished, outcome.failed) == (2, 0)
    _check_recorded(server["uri"], "served", spec)
    stored = sorted(p.name for p in server["artifacts"].rglob("*.npy"))
    assert stored.count("codebook.npy") >= 2  # in the server's artifact store, not beside the driver
    # the results folder is rebuilt from the server alone: table and artifacts
    shutil.rmtree(tmp_path / "results")
    assert sweep.main(["--params", str(path), "--sweep", "served", "--export-only"]) == 0
    for trial in spec.trials:
        assert (spec.artifacts_root / trial.trial_id / "codebook.npy").is_file()
    assert build.main(["--params", str(path), "--export", "--no-figures", "--out", str(tmp_path / "reports")]) == 0
    report = (tmp_path / "reports" / "ablation.md").read_text()
    assert "served" in report and "vanilla" in report and "ema" in report


def test_two_sweeps_at_once_against_the_server(server: dict[str, Any], ray_address: str, tmp_path: Path) -> None:
    names = ["left", "right"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_params(server["uri"], names)))
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    drivers = [subprocess.Popen([sys.executable, "-m", "benchmark", "sweep", "--params", str(path), "--sweep", name,
                                 "--address", ray_address], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for name in names]
    outputs = [driver.communicate(timeout=600)[0] for driver in drivers]
    assert [driver.returncode for driver in drivers] == [0, 0], outputs
    for name in names:
        _check_recorded(server["uri"], name, sweep_spec.load_sweep(path, name))
