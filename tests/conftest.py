"""Shared test set-up: the process settings of ``python -m benchmark`` (benchmark.runtime), applied
before any test module imports torch or faiss, so tests run the way the product does; one local Ray
shared by every test module that needs it. (The repository root is ``benchmark.paths.REPO_ROOT``.)"""
from __future__ import annotations

from typing import Iterator

import pytest

from benchmark import runtime

runtime.configure()


@pytest.fixture(scope="session")
def _ray_session() -> Iterator[None]:
    """Shuts down, at the end of the session, the local Ray that :func:`ray_cluster` started."""
    yield
    import ray

    ray.shutdown()  # a no-op when none is up


@pytest.fixture(scope="module")
def ray_cluster(_ray_session: None) -> Iterator[None]:
    """A local 2-CPU Ray without GPUs (run_sweep then neither starts nor stops one), started by the
    first module that asks for it and kept for the next ones: a start costs seconds to tens of
    seconds on a busy machine. A module that needs Ray down (its own cluster) shuts it down; the
    next module asking for it starts it again."""
    import ray

    from benchmark.pipeline import spec, sweep

    sweep.start_ray(spec.RaySettings(num_cpus=2))  # a no-op while the shared one is up
    assert ray.cluster_resources().get("GPU", 0) == 0
    yield
