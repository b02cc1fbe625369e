"""Shared test set-up: the process settings of ``python -m benchmark`` (benchmark.runtime), applied
before any test module imports torch or faiss, so tests run the way the product does; one local Ray
per test module that needs it. (The repository root is ``benchmark.paths.REPO_ROOT``.)"""
from __future__ import annotations

from typing import Iterator

import pytest

from benchmark import runtime

runtime.configure()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One local 2-CPU Ray for the module, without GPUs (run_sweep then neither starts nor stops one)."""
    import ray

    from benchmark.pipeline import spec, sweep

    started = sweep.start_ray(spec.RaySettings(num_cpus=2))
    assert ray.cluster_resources().get("GPU", 0) == 0
    yield
    if started:
        ray.shutdown()
