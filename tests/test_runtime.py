"""benchmark.runtime: the OpenMP settings every process gets before torch and faiss load."""
from __future__ import annotations

import subprocess
import sys

import pytest

from benchmark import paths, runtime
from benchmark.pipeline.cluster import runtime_env


def test_configure_sets_the_defaults_and_keeps_a_users_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert runtime.configure() == {"OMP_WAIT_POLICY": "passive"}
    assert runtime.environment_tags() == {"env.OMP_WAIT_POLICY": "passive"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    assert runtime.configure() == {"OMP_WAIT_POLICY": "active"}


def test_ray_workers_get_the_settings_in_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    env = runtime_env()
    assert env["env_vars"]["OMP_WAIT_POLICY"] == "active" and str(paths.REPO_ROOT / "benchmark") in env["py_modules"]


def test_the_command_line_sets_them_before_torch_loads() -> None:
    """``python -m benchmark`` applies the settings before it imports a command (which loads torch)."""
    code = ("import os, sys, benchmark.__main__ as m; m.COMMANDS['probe'] = 'benchmark.runtime'; "
            "m.runtime.main = lambda argv: print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules); "
            "m.main(['probe'])")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(paths.REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["passive", "False"]


def test_the_openmp_report_compares_each_policy_to_the_first() -> None:
    from benchmark.perf import openmp

    step, ours, faiss = "step vanilla K=8", "search ours N=4096 K=1024 d=8", "search faiss N=4096 K=1024 d=8"
    runs = [{"policy": policy, "concurrency": 1, "round": r, "cells": {step: base * (1 + r), ours: base, faiss: 2 * base}}
            for r in range(2) for policy, base in (("default", 0.04), ("passive", 0.01))]
    environment = {"time": "t", "commit": "c", "cpu_count": 2, "machine": "x86_64", "load_start": [0], "load_end": [0]}
    text = openmp.render({"runs": runs, "policies": ["default", "passive"], "concurrencies": [1], "rounds": 2,
                          "repeats": 5, "argv": [], "environment": environment})
    assert f"| {step} | 60.0 ms | 15.0 ms | 0.25x |" in text  # medians over rounds, then the ratio
    assert "| 4,096 | 1,024 | 8 | 0.50x | 0.50x |" in text  # ours / faiss within each policy
    assert "`python -m benchmark openmp` at t (commit c)" in text
