"""Reliability of runs and sweeps: bad settings fail at parse time naming the key, a failing run
reports its own error, interrupted or concurrent sweeps never pass for complete ones, and every
command answers a bad input with one line naming the file or key (no traceback)."""
from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmark.experiments.config import ConfigError, RunConfig, check_against_registries
from benchmark.experiments.train import DivergedError, run_experiment
from benchmark.experiments.training import Trainer
from benchmark.pipeline import spec as sweep_spec

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(codebook_size=16, dim=2, steps=4, batch_size=64, eval_size=256, log_every=2, device="cpu")


def _cli(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


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


def test_cli_run_reports_the_divergence() -> None:
    result = _cli("run", "--dataset-option", "mean=1e20", "--codebook-size", "32", "--dim", "4", "--steps", "20",
                  "--batch-size", "256", "--eval-size", "1024", "--device", "cpu")
    assert result.returncode == 3 and "ZeroDivisionError" not in result.stderr, result.stderr
    assert "step 1: training loss is inf" in result.stderr


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
        ({"model_options": {"hidden": 8}}, r"model_options: only used by the vqvae experiment"),
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
         r"codebook_size: must equal prod\(levels\) = 4 .* got 16 \(method 'fsq'\)"),
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
         r"sweeps.s.base.model_options: only used by the vqvae experiment"),
        ({"base": {"experiment": "vqvae", "dataset": "digits", "batch_size": 8},
          "grid": {"model_options.hiden": [8]}}, r"sweeps.s.grid.model_options.hiden: unknown model option"),
        ({"base": {"dataset_options": {"dim": 3}}, "grid": {"seed": [0]}},
         r"sweeps.s.base.dataset_options.dim: 3 differs from dim = 2"),
        ({"grid": {"method": ["vanilla", "lfq"]}}, r"base.codebook_size: must equal 2\^dim .*trial method='lfq'"),
        ({"grid": {"method": ["fsq"]}, "method_options": {"fsq": {"levels": [4, 4, 4]}}},
         r"sweeps.s.method_options.fsq.levels: needs one entry per dimension"),
        ({"base": {"experiment": "vqvae", "dataset": "digits"}, "grid": {"batch_size": [8, 100_000]}},
         r"sweeps.s.grid.batch_size: 100000 exceeds the \d+ training images of 'digits'"),
    ],
)
def test_sweep_spec_rejects_at_parse_time(sweep: dict[str, Any], message: str) -> None:
    """Found by parse_sweep against the live registries, before Ray or MLflow start."""
    with pytest.raises(ConfigError, match=message):
        sweep_spec.parse_sweep(copy.deepcopy(_params(sweep)), "s", base_dir="/tmp")
