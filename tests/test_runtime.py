"""benchmark.runtime: the OpenMP settings every process gets before torch and faiss load."""
from __future__ import annotations

import subprocess
import sys

import pytest

from benchmark import paths, runtime
from benchmark.pipeline.sweep import ray_runtime_env


def test_configure_sets_the_defaults_and_keeps_a_users_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert runtime.configure() == {"OMP_WAIT_POLICY": "passive"}
    assert runtime.environment_tags() == {"env.OMP_WAIT_POLICY": "passive"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    assert runtime.configure() == {"OMP_WAIT_POLICY": "active"}


def test_ray_workers_get_the_settings_in_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    env_vars = ray_runtime_env()["env_vars"]
    assert env_vars["OMP_WAIT_POLICY"] == "active" and str(paths.REPO_ROOT) in env_vars["PYTHONPATH"]


def test_the_command_line_sets_them_before_torch_loads() -> None:
    """``python -m benchmark`` applies the settings before it imports a command (which loads torch)."""
    code = ("import os, sys, benchmark.__main__ as m; m.COMMANDS['probe'] = 'benchmark.runtime'; "
            "m.runtime.main = lambda argv: print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules); "
            "m.main(['probe'])")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(paths.REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["passive", "False"]
