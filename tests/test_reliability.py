"""Reliability of runs and sweeps: bad settings fail at parse time naming the key, a failing run
reports its own error, interrupted or concurrent sweeps never pass for complete ones, and every
command answers a bad input with one line naming the file or key (no traceback)."""
from __future__ import annotations

import contextlib
import copy
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmark.experiments.checks import check_against_registries
from benchmark.experiments.config import ConfigError, RunConfig
from benchmark.experiments.train import DivergedError, run_experiment
from benchmark.experiments.training import Trainer
from benchmark.pipeline import spec as sweep_spec
from benchmark.paths import REPO_ROOT

TINY = dict(codebook_size=16, dim=2, steps=4, batch_size=64, eval_size=256, log_every=2, device="cpu")


def _cli(*args: str, cwd: Path = REPO_ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _sweep_cli(capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """``python -m benchmark sweep ARGS`` in this process (a subprocess spends seconds on imports)."""
    from benchmark.pipeline import sweep

    status = sweep.main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, captured.out, captured.err)


def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit status 2, no traceback, one ``error:`` line containing every needle."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


# ------------------------------------------------------------------------------ a run's own error
def test_a_run_failing_at_step_1_reports_its_own_error() -> None:
    """Features of mean 1e20 overflow the loss at the first step: the divergence, not ZeroDivisionError."""
    config = RunConfig(dataset_options={"mean": 1e20}, codebook_size=32, dim=4, steps=20, batch_size=256,
                       eval_size=1024, device="cpu")
    with pytest.raises(DivergedError, match="step 1: training loss is inf"):
        run_experiment(config)


def test_trainer_close_before_any_step_does_not_raise() -> None:
    import torch

    quantizer = torch.nn.Linear(1, 1)
    trainer = Trainer(RunConfig(**TINY), quantizer, None, None, progress=False)
    trainer.close()
    assert math.isnan(trainer.final_loss)


def test_cli_run_reports_the_divergence(capsys: pytest.CaptureFixture) -> None:
    from benchmark.experiments import run

    status = run.main(["--dataset-option", "mean=1e20", "--codebook-size", "32", "--dim", "4", "--steps", "20",
                       "--batch-size", "256", "--eval-size", "1024", "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 3 and "error: run diverged: step 1: training loss is inf" in err, err


# ------------------------------------------------------------------------------ RunConfig
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"device": "tpu"}, r"device: must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'tpu'"),
        ({"device": "cuda:x"}, r"device: must be"),
        ({"device": ""}, r"device: must be"),
        ({"codebook_lr": math.inf}, r"codebook_lr: must be a finite number >= 0, got inf"),
        ({"model_lr": math.nan}, r"model_lr: must be a finite number >= 0"),
        ({"grad_clip": -math.inf}, r"grad_clip: must be a finite number >= 0"),
        ({"momentum": "abc"}, r"momentum: must be a number in \[0, 1\), got 'abc'"),
        ({"adam_beta2": 1.0}, r"adam_beta2: must be a number in \[0, 1\)"),
        ({"eval_size": 8}, r"eval_size: must be >= codebook_size = 16 for the fit experiment"),
        ({"model_options": {"hidden": 8}}, r"model_options: only used by the image experiments"),
        ({"seed": 1.5}, r"seed: must be an integer"),
        ({"experiment": "train"}, r"experiment: unknown experiment 'train'"),
    ],
)
def test_run_config_rejects(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({**TINY, **changes})


def test_run_config_accepts_every_device_form() -> None:
    for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"):
        assert RunConfig(**{**TINY, "device": device}).device == device


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset": "digits"}, r"dataset: the fit experiment needs a feature distribution, 'digits' is 'images'"),
        ({"experiment": "vqvae", "dataset": "gaussian", "batch_size": 8},
         r"dataset: the vqvae experiment needs an image dataset, 'gaussian' is 'features'"),
        ({"dataset_options": {"dim": 3}}, r"dataset_options.dim: 3 differs from dim = 2"),
        ({"method": "fsq", "method_options": {"levels": [2, 2]}},
         r"method_options.levels: prod\(levels\) = 4 for levels \(2, 2\) must equal codebook_size = 16"),
        ({"method": "fsq", "method_options": {"levels": [2, 2, 4]}},
         r"method_options.levels: needs one entry per dimension"),
        ({"method": "lfq"}, r"codebook_size: must equal 2\^dim = 4 .*got 16 \(method 'lfq'\)"),
        ({"method": "bsq", "dim": 3, "codebook_size": 4}, r"codebook_size: must equal 2\^dim = 8"),
        ({"method": "vanilla", "method_options": {"gama": 1}}, r"method_options.gama: unknown option"),
        ({"dataset_options": {"colour": 1}}, r"dataset_options.colour: unknown option"),
        ({"experiment": "vqvae", "dataset": "digits", "batch_size": 100_000},
         r"batch_size: 100000 exceeds the \d+ training images of 'digits'"),
        ({"experiment": "vqvae", "dataset": "digits", "batch_size": 8, "model_options": {"hiden": 8}},
         r"model_options.hiden: unknown model option"),
        ({"dataset": "gausian"}, r"unknown dataset 'gausian'"),
    ],
)
def test_registry_checks_reject(changes: dict[str, Any], message: str) -> None:
    config = RunConfig.from_dict({**TINY, **changes})
    with pytest.raises(ConfigError, match=message):
        check_against_registries(config)
    with pytest.raises(ValueError, match=message):  # run_experiment checks first, before training
        run_experiment(config)


def _params(sweep: dict[str, Any]) -> dict[str, Any]:
    return {"base": dict(TINY), "sweeps": {"s": sweep}}


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"base": {"device": "tpu"}, "grid": {"seed": [0]}}, r"sweeps.s.base.device: must be"),
        ({"grid": {"codebook_lr": [1.0, float("inf")]}}, r"sweeps.s.grid.codebook_lr: must be a finite number"),
        ({"base": {"momentum": "abc"}, "grid": {"seed": [0]}}, r"sweeps.s.base.momentum: must be a number in"),
        ({"grid": {"eval_size": [8]}}, r"sweeps.s.grid.eval_size: must be >= codebook_size"),
        ({"base": {"dataset": "digits"}, "grid": {"seed": [0]}},
         r"sweeps.s.base.dataset: the fit experiment needs a feature distribution"),
        ({"base": {"experiment": "vqvae", "batch_size": 8}, "grid": {"seed": [0]}},
         r"^dataset: the vqvae experiment needs an image dataset"),  # the default dataset: a bare key
        ({"base": {"model_options": {"hidden": 8}}, "grid": {"seed": [0]}},
         r"sweeps.s.base.model_options: only used by the image experiments"),
        ({"base": {"experiment": "vqvae", "dataset": "digits", "batch_size": 8},
          "grid": {"model_options.hiden": [8]}}, r"sweeps.s.grid.model_options.hiden: unknown model option"),
        ({"base": {"dataset_options": {"dim": 3}}, "grid": {"seed": [0]}},
         r"sweeps.s.base.dataset_options.dim: 3 differs from dim = 2"),
        ({"grid": {"method": ["vanilla", "lfq"]}}, r"base.codebook_size: must equal 2\^dim .*trial method='lfq'"),
        ({"grid": {"method": ["fsq"]}, "method_options": {"fsq": {"levels": [4, 4, 4]}}},
         r"sweeps.s.method_options.fsq.levels: needs one entry per dimension"),
        ({"base": {"experiment": "vqvae", "dataset": "digits"}, "grid": {"batch_size": [8, 100_000]}},
         r"sweeps.s.grid.batch_size: 100000 exceeds the \d+ training images of 'digits'"),
        ({"grid": {"seed": [0]}, "tune": {"metric": "error_vs_kmean"}},
         r"sweeps.s.tune.metric: 'error_vs_kmean' is not a metric to tune on.*Did you mean 'error_vs_kmeans'"),
        ({"grid": {"seed": [0]}, "tune": {"metric": "psnr", "mode": "max"}},
         r"sweeps.s.tune.metric: 'psnr' is not a metric to tune on"),
        ({"grid": {"seed": [0]}, "tune": {"metric": "utilization", "mode": "min"}},
         r"sweeps.s.tune.mode: utilization is better when maximised, got mode 'min'"),
        ({"grid": {"seed": [0]}, "tune": {"budget": 10**6}}, r"sweeps.s.tune.budget: must be >= 1 and <= 1000"),
        ({"grid": {"seed": [0, 1]}, "tune": {"budget": 8}, "max_trials": 5},
         r"sweeps.s.max_trials: 2 trials \+ 1 x 8 tuning trials \+ 2 tuned reruns = 12, more than max_trials=5"),
        ({"grid": {"seed": [0]}, "cases": [{"when": {"codebook_size": 1000}, "set": {"codebook_lr": 2.0}}]},
         r"sweeps.s.cases\[0\].when: matches no trial of the sweep .*codebook_size in \['16'\]"),
        ({"grid": {"method": ["vanilla", "wasserstein"]},
          "cases": [{"when": {"method": "wassertein"}, "set": {"codebook_lr": 2.0}}]},
         r"sweeps.s.cases\[0\].when.method: unknown method 'wassertein'. Did you mean 'wasserstein'"),
    ],
)
def test_sweep_spec_rejects_at_parse_time(sweep: dict[str, Any], message: str) -> None:
    """Found by parse_sweep against the live registries, before Ray or MLflow start."""
    with pytest.raises(ConfigError, match=message):
        sweep_spec.parse_sweep(copy.deepcopy(_params(sweep)), "s", base_dir="/tmp")


def test_a_case_for_a_method_the_sweep_does_not_run_may_match_nothing() -> None:
    """Shared per-method settings (a YAML-merged profile) are not typos."""
    sweep = {"grid": {"seed": [0]}, "cases": [{"when": {"method": "simvq"}, "set": {"codebook_lr": 2.0}}]}
    assert len(sweep_spec.parse_sweep(_params(sweep), "s", base_dir="/tmp").trials) == 1


@pytest.mark.parametrize("name", ["../../../../OUTSIDE", "", "a/b", ".hidden", "x" * 101, "a b"])
def test_sweep_names_are_safe_folder_names(name: str, tmp_path: Path) -> None:
    """A sweep name becomes data/prepared/NAME and results/NAME: nothing may escape or nest."""
    from benchmark.pipeline import prepare

    params = {"base": dict(TINY), "sweeps": {name: {"grid": {"seed": [0]}}}}
    with pytest.raises(ConfigError, match=r"a sweep name names folders; use letters, digits"):
        sweep_spec.parse_sweep(params, name, base_dir=tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"a sweep name names folders"):
        prepare.prepare(tmp_path / "params.yaml", name, out_root=tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"sweeps:\n  s: {grid: {seed: [0]}}\n  s: {grid: {seed: [1]}}\n", r"duplicate key 's' \(YAML would keep"),
        (b"base: {steps: 4, steps: 8}\nsweeps: {s: {grid: {seed: [0]}}}\n", r"duplicate key 'steps'"),
        ("sweeps: {s: {grid: {seed: [0]}}}  # caf\u00e9\n".encode("latin-1"), r"not UTF-8 text \(byte 39"),
    ],
)
def test_params_files_with_duplicate_keys_or_not_utf8_are_one_line_errors(
        data: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=message):
        sweep_spec.load_params(path)
    _one_line_error(_sweep_cli(capsys, "--params", str(path), "--sweep", "s"), str(path))


def test_yaml_merge_keys_may_still_be_overridden() -> None:
    text = "a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  x: 3\n"
    assert yaml.load(text, Loader=sweep_spec._UniqueKeyLoader) == {"a": {"x": 1, "y": 2}, "b": {"x": 3, "y": 2}}


# ------------------------------------------------------------------------------ sweep exit status
def _outcome(**counts: int):
    import pandas as pd

    from benchmark.pipeline.sweep import SweepOutcome

    values = dict(name="s", finished=0, failed=0, stopped=0, skipped=0, not_run=0, interrupted=0)
    values.update(counts)
    return SweepOutcome(table_path=Path("/tmp/results/s/trials.csv"), table=pd.DataFrame(), **values)


@pytest.mark.parametrize(
    ("counts", "status", "problem"),
    [
        ({"finished": 6, "failed": 1}, 0, ""),
        ({"failed": 2, "skipped": 3}, 0, ""),  # earlier calls finished the rest
        ({"stopped": 2, "finished": 1}, 0, ""),
        ({"finished": 6, "failed": 1, "not_run": 6}, 3, "incomplete: 6 trials not run, 0 interrupted"),
        ({"finished": 6, "failed": 1, "interrupted": 1}, 3, "incomplete: 0 trials not run, 1 interrupted"),
        ({"failed": 4}, 4, "every trial failed"),
        ({"finished": 6, "failed": 1, "errors": 1}, 5, "1 trials failed with an error"),  # e.g. a missing plugin
    ],
)
def test_sweep_exit_status(counts: dict[str, int], status: int, problem: str) -> None:
    outcome = _outcome(**counts)
    assert outcome.exit_status() == status
    assert problem in outcome.problem() and bool(outcome.problem()) == bool(status)


@pytest.mark.parametrize(("counts", "status"), [({"finished": 6, "failed": 1, "not_run": 6}, 3), ({"failed": 3}, 4)])
def test_sweep_cli_exits_non_zero_when_incomplete_or_all_failed(
    counts: dict[str, int], status: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """What `dvc repro` sees: a non-zero status, so it neither locks nor reports a partial sweep."""
    from benchmark.pipeline import sweep

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params({"grid": {"seed": [0]}})))
    monkeypatch.setattr(sweep, "run_sweep", lambda spec, **kwargs: _outcome(**counts))
    assert sweep.main(["--params", str(params), "--sweep", "s"]) == status
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: sweep s")


def test_sweep_cli_second_ctrl_c_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    from benchmark.pipeline import sweep

    def interrupted(spec: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params({"grid": {"seed": [0]}})))
    monkeypatch.setattr(sweep, "run_sweep", interrupted)
    assert sweep.main(["--params", str(params), "--sweep", "s"]) == 130
    assert "sweep s interrupted" in capsys.readouterr().err


# ------------------------------------------------------------------------------ one writer per store
HOLD_LOCK = """
import sys, time
from benchmark.pipeline import tracking
with tracking.store_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""

CREATE_STORE = """
import sys
from benchmark.pipeline import tracking
with tracking.store_lock(sys.argv[1]):
    client = tracking.make_client(sys.argv[1])
    tracking.get_or_create_experiment(client, "s")
print("ok")
"""


def _python(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_second_sweep_on_a_locked_store_is_refused_naming_the_holder(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    import socket

    store = tmp_path / "mlflow.db"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params({"grid": {"seed": [0]}})))
    holder = _python(HOLD_LOCK, f"sqlite:///{store}", "60")
    try:
        assert holder.stdout.readline().strip() == "held"
        result = _sweep_cli(capsys, "--params", str(params), "--sweep", "s", "--lock-timeout", "0")
        _one_line_error(result, str(store), f"pid {holder.pid} on {socket.gethostname()} since ")
        result = _sweep_cli(capsys, "--params", str(params), "--sweep", "s", "--lock-timeout", "0.5")
        assert result.returncode == 2 and "waiting for the lock" in result.stderr
        assert "still locked after 0.5 s by pid" in result.stderr
    finally:
        holder.kill()
        holder.wait()


def test_two_processes_creating_a_fresh_store_take_turns(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [_python(CREATE_STORE, uri) for _ in range(2)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    assert sum("waiting for the lock" in err for _, err in outputs) <= 1
    from benchmark.pipeline import tracking

    client = tracking.make_client(uri)
    assert client.get_experiment_by_name("s") is not None


def test_the_lock_is_free_again_after_its_holder_is_killed(tmp_path: Path) -> None:
    from benchmark.pipeline import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    holder = _python(HOLD_LOCK, uri, "60")
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with tracking.store_lock(uri, timeout=0):
        pass


# ------------------------------------------------------------------------------ one-line errors
def test_export_only_of_a_sweep_never_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params({"grid": {"seed": [0]}})))
    result = _sweep_cli(capsys, "--params", str(params), "--sweep", "s", "--export-only")
    _one_line_error(result, "sweep 's': no MLflow store at", str(tmp_path / "mlflow.db"), "run it first")
    assert not (tmp_path / "mlflow.db").exists()


def test_a_truncated_store_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import sqlite3

    from benchmark.pipeline import tracking

    with sqlite3.connect(tmp_path / "mlflow.db") as db:  # any SQLite store of a few pages
        db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO runs (name) VALUES (?)", [("x" * 200,)] * 200)
    db.close()
    data = (tmp_path / "mlflow.db").read_bytes()
    (tmp_path / "mlflow.db").write_bytes(data[: len(data) // 3])
    with pytest.raises(tracking.StoreError, match=r"mlflow.db: the MLflow store is not a usable SQLite database"):
        tracking.make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params({"grid": {"seed": [0]}})))
    result = _sweep_cli(capsys, "--params", str(params), "--sweep", "s", "--export-only")
    _one_line_error(result, str(tmp_path / "mlflow.db"), "not a usable SQLite database")


def test_a_store_that_is_not_sqlite_is_named(tmp_path: Path) -> None:
    from benchmark.pipeline import tracking

    (tmp_path / "mlflow.db").write_text("not a database\n" * 200)
    with pytest.raises(tracking.StoreError, match=r"mlflow.db: .*not a database"):
        tracking.make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_an_unwritable_results_folder_is_found_before_training(tmp_path: Path) -> None:
    """A results folder that cannot be created or written fails before Ray or any trial starts."""
    from benchmark.pipeline import sweep, tracking

    (tmp_path / "results").write_text("a file where the folder should be")
    params = _params({"grid": {"seed": [0]}})
    params["tracking"] = {"results_dir": "results/inner"}
    spec = sweep_spec.parse_sweep(params, "s", base_dir=tmp_path)
    with pytest.raises(tracking.StoreError, match=r"results/inner/s: results folder is not writable"):
        sweep.run_sweep(spec, runner=lambda *a, **k: pytest.fail("trained before checking the folder"))
    assert not (tmp_path / "mlflow.db").exists()


# ------------------------------------------------------------------------------ data readiness
def test_prepare_check_data_prints_the_report_and_fails_when_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import datasets
    from benchmark.pipeline import prepare
    from datasets import cifar10, svhn
    from tests.test_datasets import make_cifar, make_svhn, md5

    assert prepare.main(["--check-data", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.strip() == str(datasets.check_data(tmp_path)).strip() and "cifar10: NOT READY" in out
    cifar_files, svhn_files = make_cifar(tmp_path), make_svhn(tmp_path)
    monkeypatch.setattr(cifar10, "MD5", {name: md5(data) for name, data in cifar_files.items()})
    monkeypatch.setattr(svhn, "MD5", {name: md5(data) for name, data in svhn_files.items()})
    assert prepare.main(["--check-data", str(tmp_path)]) == 0
    assert "all datasets ready" in capsys.readouterr().out


def test_prepare_without_sweep_or_check_data_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    from benchmark.pipeline import prepare

    with pytest.raises(SystemExit) as exit_info:
        prepare.main([])
    assert exit_info.value.code == 2 and "--sweep NAME or --all is required" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the report
def _report_workspace(tmp_path: Path) -> tuple[Path, list[Any]]:
    """A runnable 4-trial spec whose table holds 1 finished, 1 stale running, 1 interrupted trial."""
    import pandas as pd

    params = {**_params({"grid": {"seed": [0, 1, 2, 3]}}), "tracking": {"results_dir": "results"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    trials = list(sweep_spec.load_sweep(tmp_path / "params.yaml", "s").trials)
    rows = []
    for trial, (status, error) in zip(trials, [("finished", ""), ("running", ""),
                                              ("failed", "Interrupted: the sweep stopped before this trial finished")]):
        rows.append({"sweep": "s", "trial": trial.trial_id, "run_id": "r", "status": status, "error": error,
                     "git_commit": "0" * 40, "git_dirty": False, **trial.config.flat_params(),
                     **({"quantization_error": 1.0, "utilization": 1.0} if status == "finished" else {})})
    (tmp_path / "results" / "s").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(tmp_path / "results" / "s" / "trials.csv", index=False)
    return tmp_path, trials


def test_report_shows_stale_interrupted_and_not_run_trials(tmp_path: Path) -> None:
    from benchmark.report import build as report

    workspace, trials = _report_workspace(tmp_path)
    params = report.load_params(workspace / "params.yaml")
    config = report.report_config(params, workspace / "params.yaml")
    config.figures = False
    text = report.build_report(config, params).read_text()
    section = text.split("(`s`)", 1)[1].split("\n## ", 1)[0]
    assert "Trials: 4 (0 failed, 2 interrupted, 1 not run)." in section
    assert "running (no error recorded)" not in text and "(no error recorded)" not in text
    assert "| interrupted | the sweep driver stopped (killed?) while this trial ran" in section
    assert "| interrupted | Interrupted: the sweep stopped before this trial finished" in section
    assert f"| {trials[3].trial_id} " in section and "| not run | never started" in section
    assert "Incomplete sweeps (rerun them to resume" in text and "`s` (1 trials not run, 2 interrupted)" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot read params file"),
        ("sweeps: {s: [\n", "malformed YAML"),
        ("- 1\n", "top level must be a mapping, got list"),
        ("tracking: 3\nsweeps: {}\n", "params.yaml: "),
    ],
)
def test_report_bad_params_file_is_one_line(text: str | None, message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    from benchmark.report import build as report

    path = tmp_path / "params.yaml"
    if text is not None:
        path.write_text(text)
    status = report.main(["--params", str(path), "--out", str(tmp_path / "out"), "--no-figures"])
    result = subprocess.CompletedProcess([], status, "", capsys.readouterr().err)
    _one_line_error(result, str(path), message)


# ------------------------------------------------------------------------------ faults, not results
def test_a_trial_failing_with_an_error_fails_the_stage_a_diverged_one_does_not() -> None:
    """A diverged trial is a result of its config; "unknown method 'pq'" on a worker is a fault."""
    import pandas as pd

    from benchmark.pipeline import sweep

    spec = sweep_spec.parse_sweep(_params({"grid": {"seed": [0, 1, 2]}}), "s", base_dir="/tmp")
    errors = ["", "DivergedError: step 4: training loss is nan", "ValueError: unknown method 'pq'"]
    table = pd.DataFrame({"trial": [t.trial_id for t in spec.trials], "error": errors,
                          "status": ["finished", "failed", "failed"]})
    outcome = sweep._outcome(spec, spec.trials, table, Path("/tmp/t.csv"))
    assert (outcome.finished, outcome.failed, outcome.errors) == (1, 2, 1)
    assert outcome.exit_status() == sweep.EXIT_TRIAL_ERRORS
    assert "unknown method 'pq'" in outcome.problem() and "(1 errors, 1 diverged)" in outcome.summary()
    diverged_only = table.assign(error=errors[:2] + [errors[1]])
    assert sweep._outcome(spec, spec.trials, diverged_only, Path("/tmp/t.csv")).exit_status() == 0


def _tuning_run(status: str, error: str = "", mlflow_status: str = "FINISHED", run_id: str = "r") -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(data=SimpleNamespace(tags={"status": status, "error": error}, metrics={}),
                           info=SimpleNamespace(status=mlflow_status, run_id=run_id))


def test_interrupted_or_errored_tuning_trials_are_not_spent_and_the_stage_is_incomplete() -> None:
    """5 and 3 of a budget of 8 after a Ctrl-C: the rerun runs the missing 3 and 5, never claims 8 of 8."""
    from benchmark.pipeline import recorder, tuning

    spec = sweep_spec.parse_sweep(
        _params({"grid": {"method": ["vanilla"], "seed": [0]}, "tune": {"budget": 4}}), "s", base_dir="/tmp")
    group = tuning.groups_of(spec)[0]
    runs = [_tuning_run("finished", run_id="a"), _tuning_run("failed", "DivergedError: step 2", run_id="b"),
            _tuning_run("failed", "Interrupted: the tuning stopped", "FAILED", run_id="c"),
            _tuning_run("failed", "PluginError: unknown method 'pq'", "FAILED", run_id="d"),
            _tuning_run("running", mlflow_status="RUNNING", run_id="e")]
    with pytest.raises(recorder.IncompleteError, match=r"1 tuning trials failed with an error .*unknown method "
                                                       r"'pq'.*vanilla 2/4"):
        tuning._check_spent(spec, {group.group_id: group}, {group.group_id: runs})
    deleted: list[str] = []
    client = type("Client", (), {"delete_run": lambda self, run_id: deleted.append(run_id)})()
    assert tuning._spent(client, runs) == (2, 2) and deleted == ["c", "d", "e"]  # faults are not attempts
    tuning._check_spent(spec, {group.group_id: group}, {group.group_id: runs[:2] * 2})  # 4 of 4: complete


def test_the_sweep_cli_exits_3_when_the_tuning_is_incomplete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    from benchmark.pipeline import recorder, sweep

    def incomplete(spec: Any, **kwargs: Any) -> None:
        raise recorder.IncompleteError("tuning incomplete (interrupted)")

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params({"grid": {"seed": [0]}})))
    monkeypatch.setattr(sweep, "run_sweep", incomplete)
    assert sweep.main(["--params", str(params), "--sweep", "s"]) == sweep.EXIT_INCOMPLETE
    assert "error: sweep s: tuning incomplete (interrupted)" in capsys.readouterr().err


def test_sigterm_is_an_interruption_the_lock_is_released(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    """``kill PID`` of a sweep: exit 130 through the Ctrl-C path (runs closed, lock released), not death."""
    import signal
    import time

    from benchmark.pipeline import sweep, tracking

    def terminated(*args: Any, **kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        pytest.fail("SIGTERM did not interrupt the sweep")

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params({"grid": {"seed": [0]}})))
    monkeypatch.setattr(sweep, "_run_locked", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert sweep.main(["--params", str(params), "--sweep", "s"]) == sweep.EXIT_INTERRUPTED
    assert "sweep s interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before
    assert not (tmp_path / "mlflow.db.lock.json").exists()
    with tracking.store_lock(f"sqlite:///{tmp_path / 'mlflow.db'}", timeout=0):
        pass


def flaky_runner(config: RunConfig, *, on_step: Any = None, evaluation_split: str = "test",
                 artifacts_dir: str | None = None, call_dir: str = "", broken: str = "") -> dict[str, float]:
    """Stands in for run_experiment; while the file ``broken`` exists, every tuning call after the first
    raises as a worker lacking a plugin would. Every call leaves a file in ``call_dir``."""
    import uuid

    calls = Path(call_dir)
    (calls / f"{evaluation_split}-{uuid.uuid4().hex}").write_text("")
    if evaluation_split == "validation" and Path(broken).exists() and len(list(calls.glob("validation-*"))) >= 2:
        raise ValueError("unknown method 'pq'")
    for step in range(config.log_every, config.steps + 1, config.log_every):
        if on_step is not None:
            on_step(step, {"loss": 1.0 / step})
    return {"error_vs_kmeans": abs(math.log10(config.codebook_lr)), "utilization": 1.0, "train_seconds": 0.01}


def test_a_partly_failed_tuning_stops_the_sweep_and_the_rerun_runs_exactly_the_missing_trials(
        ray_cluster: None, tmp_path: Path) -> None:
    import functools

    import ray.cloudpickle as cloudpickle

    from benchmark.pipeline import recorder, sweep, tracking, tuning

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    params = _params({"grid": {"method": ["vanilla"], "seed": [0]}, "tune": {"budget": 2}})
    params["ray"] = {"num_cpus": 1, "max_concurrent": 1, "storage_path": str(tmp_path / "ray")}
    spec = sweep_spec.parse_sweep(params, "s", base_dir=tmp_path)
    calls, broken = tmp_path / "calls", tmp_path / "broken"
    calls.mkdir()
    broken.write_text("")
    runner = functools.partial(flaky_runner, call_dir=str(calls), broken=str(broken))
    with pytest.raises(recorder.IncompleteError, match=r"3 tuning trials failed .*unknown method 'pq'.*1/2"):
        sweep.run_sweep(spec, runner=runner)
    assert not list(calls.glob("test-*"))  # no trial ran on a partly tuned point
    broken.unlink()
    outcome = sweep.run_sweep(spec, runner=runner)
    assert len(list(calls.glob("validation-*"))) == 5  # 1 + 3 failed attempts, then exactly the missing one
    assert outcome.exit_status() == 0 and outcome.finished in (1, 2)  # the default (and the tuned point unless it is the default)
    client = tracking.make_client(spec.tracking.uri)
    runs = tracking.search_sweep_runs(client, client.get_experiment_by_name("s-tuning").experiment_id)
    group = tuning.groups_of(spec)[0]
    assert sorted(run.data.tags["trial"] for run in runs) == sorted(
        tuning.tuning_trial_id(group.setting, spec.tune, index) for index in range(2))
    assert sorted(run.info.run_name.rsplit(" ", 2)[1:] for run in runs) == [["tuning", "1"], ["tuning", "2"]]

    run = client.get_run(outcome.table.set_index("seed").iloc[0]["run_id"])  # what tells runs apart
    tags = run.data.tags
    assert run.info.run_name in ("vanilla seed=0", "vanilla tuned=True seed=0")
    assert tags["device"] == "cpu" and len(tags["code_fingerprint"]) == 16 and tags["plugins"] == "none"
    assert (tags["method"], tags["dataset"]) == ("vanilla", "gaussian")


# ------------------------------------------------------------------------------ a full disk
def _disk_full() -> Exception:
    import sqlite3

    import sqlalchemy

    return sqlalchemy.exc.OperationalError("INSERT INTO experiments ...", {}, sqlite3.OperationalError(
        "database or disk is full"))


def test_a_store_whose_creation_is_cut_off_leaves_nothing_and_the_rerun_creates_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk during MLflow's migrations used to leave `_alembic_tmp_experiments` for good."""
    import mlflow.store.db.utils as db_utils

    from benchmark.pipeline import tracking

    def cut_off(engine: Any) -> None:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)")
        raise _disk_full()

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr(db_utils, "_initialize_tables", cut_off)
    with pytest.raises(tracking.StoreError, match=r"mlflow.db: cannot create the MLflow store \(database or disk "
                                                  r"is full\); nothing was written there: fix the cause"):
        tracking.make_client(uri)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert tracking.get_or_create_experiment(tracking.make_client(uri), "s")


def test_a_half_migrated_store_says_what_to_do(tmp_path: Path) -> None:
    import sqlite3

    from benchmark.pipeline import tracking

    with contextlib.closing(sqlite3.connect(tmp_path / "mlflow.db")) as db:
        db.execute("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)")
        db.commit()
    with pytest.raises(tracking.StoreError, match=r"left half-migrated \(table _alembic_tmp_experiments.*mv "):
        tracking.make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), _disk_full()])
def test_a_full_disk_during_a_sweep_is_one_line(error: Exception, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    from benchmark.pipeline import sweep

    def full(spec: Any, **kwargs: Any) -> None:
        try:
            raise error
        except Exception as cause:
            raise RuntimeError("MlflowException: (sqlite3.OperationalError) ...") from cause

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params({"grid": {"seed": [0]}})))
    monkeypatch.setattr(sweep, "run_sweep", full)
    _one_line_error(_sweep_cli(capsys, "--params", str(params), "--sweep", "s"), "sweep s: ", str(tmp_path / "mlflow.db"),
                    "free space and rerun the sweep to resume")


# ------------------------------------------------------------------------------ your own sweep, reported alone
def test_report_of_one_sweep_leaves_the_full_report_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    """`report --sweep NAME` used to be impossible; a bare `report` marks the others "Not run" and
    deletes the committed figures."""
    from benchmark.pipeline import sweep
    from benchmark.report import build as report

    workspace, trials = _report_workspace(tmp_path)
    out = workspace / "reports"
    (out / "figures").mkdir(parents=True)
    committed = {out / "ablation.md": "the full report", out / "figures" / "k_sweep.png": "a figure",
                 out / "metrics.json": "{}"}
    for path, text in committed.items():
        path.write_text(text)
    ran: list[list[str]] = []
    monkeypatch.setattr(sweep, "main", lambda argv: ran.append(argv) or 0)
    params = str(workspace / "params.yaml")
    assert report.main(["--params", params, "--out", str(out), "--sweep", "s", "--run", "--no-figures"]) == 0
    assert ran == [["--params", params, "--sweep", "s"]]
    text = (out / "sweeps" / "s.md").read_text()
    assert text.startswith("# vqbench report: sweep `s`") and "(`s`)" in text
    assert "Trials: 4 (0 failed, 2 interrupted, 1 not run)." in text and "## Paper vs ours" not in text
    assert all(path.read_text() == body for path, body in committed.items())
    assert capsys.readouterr().out.strip() == f"wrote {os.path.relpath(out / 'sweeps' / 's.md')}"
    for name, message in (("nope", "--sweep nope: not a sweep of"), ("../x", "a sweep name names folders")):
        status = report.main(["--params", params, "--out", str(out), "--sweep", name, "--no-figures"])
        _one_line_error(subprocess.CompletedProcess([], status, "", capsys.readouterr().err), message)


# ------------------------------------------------------------------------------ a split smaller than K
def test_a_test_split_smaller_than_k_is_a_warning_in_the_record_and_the_report(tmp_path: Path) -> None:
    """180 test rows at K 256 cap U at 70%: every method reads as collapsing, and nothing said why."""
    import numpy as np

    from benchmark.experiments.training import RunWarning
    from benchmark.pipeline import recorder, tracking
    from benchmark.report import build as report

    np.save(tmp_path / "latents.npy", np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32))
    config = RunConfig.from_dict({**TINY, "dataset": "features_file", "eval_size": 64,
                                  "dataset_options": {"path": str(tmp_path / "latents.npy"), "test_fraction": 0.25}})
    with recorder.recorded_warnings() as noted:
        run_experiment(config)
    assert noted == ["the test split holds 10 vectors, fewer than K = 16: utilization is at most 62% whatever "
                     "the method (give the split more rows, or use a smaller K)"]
    with pytest.warns(RunWarning, match="the test split holds 10 vectors"):  # `python -m benchmark run` shows it
        run_experiment(config)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.make_client(uri)
    run_id = tracking.start_trial_run(client, tracking.get_or_create_experiment(client, "s"), sweep="s", trial_id="t",
                                      config=config, git=tracking.GitState("0" * 40, False))
    tracking.finish_trial_run(client, run_id, status="finished", metrics={"utilization": 0.6},
                              tags={tracking.WARNING_TAG: noted[0], "device": "cpu"})
    table = tracking.export_table(uri, "s")
    assert table["warning"].tolist() == noted
    assert report._warning_lines(table) == ["", f"**Warning** (1 trials): {noted[0]}."]


# ------------------------------------------------------------------------------ progress, quiet by default
def test_progress_line_counts_done_failed_and_survives_tunes_pickling(capsys: pytest.CaptureFixture) -> None:
    import pickle

    from benchmark.pipeline.recorder import Progress

    progress = Progress("s trials", 3)
    progress.done(failed=False)
    progress.done(failed=True)
    assert pickle.loads(pickle.dumps(progress))._bar is None  # Tune pickles its callbacks
    progress.close()
    err = capsys.readouterr().err
    assert "s trials" in err and "2/3" in err and "1 failed" in err
    Progress("quiet", 3, enabled=False).done(failed=True)
    assert capsys.readouterr().err == ""


def test_tune_output_quiets_optuna_and_the_tune_banner_only_while_it_runs() -> None:
    import logging

    import optuna

    from benchmark.pipeline.recorder import tune_output

    optuna.logging.set_verbosity(optuna.logging.INFO)
    before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    with tune_output(quiet=True):
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
        assert logging.getLogger("optuna").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("optuna").level == logging.INFO and os.environ.get("RAY_AIR_NEW_OUTPUT") == before
    with tune_output(quiet=False):  # --verbose: everything as the libraries print it
        assert logging.getLogger("optuna").level == logging.INFO
