"""A sweep on a two-node Ray cluster on this machine (loopback only), nodes started without the
repository on their path: shipped code, GPU packing and CPU nodes, artifacts in the driver's
store, the per-node preflight, and what each MLflow run records about where it ran."""
from __future__ import annotations

import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import ray.cloudpickle as cloudpickle

from benchmark.experiments.config import RunConfig
from benchmark.pipeline import cluster, sweep, tracking
from benchmark.pipeline import spec as sweep_spec

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAD_GPUS = 2  # fake GPUs: Ray schedules them; torch (CPU) has none, so trials train on the CPU
TRIALS = 5  # 4 fill one GPU (gpus_per_trial 0.25), 1 runs on the node without GPUs

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the runner below travels by value


def probe_runner(config: RunConfig, *, on_step: Callable | None = None, artifacts_dir: str | None = None,
                 barrier: str = "", **_: Any) -> dict[str, float]:
    """Stands in for run_experiment: waits until every trial of the sweep runs at once (so that
    the GPU packing is observed, not inferred), writes an artifact naming its node."""
    import ray

    Path(barrier, str(config.seed)).touch()
    deadline = time.monotonic() + 120
    while len(list(Path(barrier).iterdir())) < TRIALS and time.monotonic() < deadline:
        time.sleep(0.05)
    on_step(config.steps, {"loss": 1.0})
    node = ray.get_runtime_context().get_node_id()
    Path(artifacts_dir, "where.txt").write_text(f"{node} {config.device} {ray.get_gpu_ids()}")
    return {"quantization_error": float(config.seed),
            "concurrent": float(len(list(Path(barrier).iterdir())))}


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Any]:
    """A head with 2 CPUs and 2 (fake) GPUs and a node with 1 CPU, each started from its own empty
    folder without the repository on its path, in a Ray temp dir of their own (other Ray users of
    this machine never find this cluster). ``head_site``: a folder only the head's Python path has
    (packages "installed" on the head alone)."""
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the local Ray other modules share, if up: the sweeps here must connect to this cluster
    base = Path(tempfile.mkdtemp(prefix="vqc"))  # short: Ray's socket paths live under it
    with pytest.MonkeyPatch.context() as patch:
        # loopback only: Ray otherwise rewrites 127.0.0.1 to this machine's network address
        patch.setenv(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0")
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        patch.setenv("RAY_TMPDIR", str(base))
        patch.delenv("RAY_ADDRESS", raising=False)
        common = {"node_ip_address": "127.0.0.1", "include_dashboard": False, "object_store_memory": 80 << 20}
        for folder in ("head", "head_site", "other"):
            (base / folder).mkdir()
        patch.chdir(base / "head")
        patch.setenv("PYTHONPATH", str(base / "head_site"))
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": HEAD_GPUS, **common})
        patch.chdir(base / "other")
        patch.delenv("PYTHONPATH")
        nodes.add_node(num_cpus=1, num_gpus=0, **common)
        nodes.head_site = base / "head_site"
        nodes.wait_for_nodes()
        try:
            yield nodes
        finally:
            nodes.shutdown()
            shutil.rmtree(base, ignore_errors=True)


def _spec(tmp_path: Path, name: str) -> sweep_spec.SweepSpec:
    params = {
        "tracking": {"uri": "mlflow.db", "results_dir": "results"},
        "ray": {"cpus_per_trial": 0.5, "gpus_per_trial": 0.25, "storage_path": "ray"},
        "base": {"codebook_size": 16, "dim": 2, "steps": 2, "log_every": 2},
        "sweeps": {name: {"grid": {"method": ["vanilla"], "seed": list(range(TRIALS))}}},
    }
    return sweep_spec.parse_sweep(params, name, base_dir=tmp_path)


def test_a_sweep_runs_on_both_nodes_from_shipped_code(two_nodes: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    (tmp_path / "barrier").mkdir()
    monkeypatch.chdir(tmp_path)  # the driver's folder is put on the workers' path: not the checkout
    spec = _spec(tmp_path, "two_nodes")
    outcome = sweep.run_sweep(spec, address=two_nodes.address,
                              runner=functools.partial(probe_runner, barrier=str(tmp_path / "barrier")))
    assert (outcome.finished, outcome.failed) == (TRIALS, 0)
    assert (outcome.table["concurrent"] == TRIALS).all()  # every trial ran at once

    client = tracking.make_client(spec.tracking.uri)
    tags = [client.get_run(run_id).data.tags for run_id in outcome.table["run_id"]]
    head = two_nodes.head_node.node_id
    on_head = [t for t in tags if t["node_id"] == head]
    elsewhere = [t for t in tags if t["node_id"] != head]
    # 4 trials share one (fake) GPU on the head, 1 runs on the CPU of the node without GPUs
    assert len(on_head) == 4 and len({t["ray_gpu_ids"] for t in on_head}) == 1
    assert on_head[0]["ray_gpu_ids"] in {str(i) for i in range(HEAD_GPUS)}
    assert len(elsewhere) == 1 and all(t["ray_gpu_ids"] == "none" for t in elsewhere)
    for t in tags:  # the actual device and versions, and code from Ray's copy, never the checkout
        assert t["device"] == "cpu" and t["torch"].startswith("2.") and t["cuda_driver"]
        assert t["node_ip"] == "127.0.0.1" and t["hostname"]
        assert not t["code_root"].startswith(str(REPO_ROOT)) and "runtime_resources" in t["code_root"]
    # artifacts written on the nodes reached the driver's results folder and its MLflow store
    for trial, run_id in zip(outcome.table["trial"], outcome.table["run_id"]):
        node = client.get_run(run_id).data.tags["node_id"]
        where = spec.artifacts_root / trial / "where.txt"
        assert where.read_text().startswith(node)
        assert [a.path for a in client.list_artifacts(run_id)] == ["where.txt"]


def _plugin(site: Path, dep: Path) -> None:
    """A plugin distribution in ``site`` registering method ``fake_vq``, whose module imports
    ``fakevq_dep``, a dependency written to ``dep``."""
    (site / "fakevq_plugin").mkdir(parents=True)
    (site / "fakevq_plugin" / "__init__.py").write_text(textwrap.dedent("""
        import fakevq_dep  # noqa: F401  the plugin's own dependency
        from methods.vanilla import VanillaVQ


        class FakeVQ(VanillaVQ):
            pass
    """))
    info = site / "fakevq_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakevq-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[vqbench.methods]\nfake_vq = fakevq_plugin:FakeVQ\n")
    (dep / "fakevq_dep.py").write_text("")


def test_a_node_missing_a_plugin_fails_the_sweep_before_any_trial(two_nodes: Any, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import methods

    site = tmp_path / "site"
    _plugin(site, two_nodes.head_site)  # the dependency is "installed" on the head (and the driver) only
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(two_nodes.head_site))
    monkeypatch.syspath_prepend(str(site))
    methods.reload_entry_points()
    try:
        assert methods.get("fake_vq").distribution == "fakevq-plugin==1.0"
        spec = _spec(tmp_path, "missing_plugin")
        with pytest.raises(cluster.PreflightError) as caught:
            sweep.run_sweep(spec, address=two_nodes.address, runner=probe_runner)
    finally:
        monkeypatch.undo()
        methods.reload_entry_points()
    message = str(caught.value)
    other = next(node for node in two_nodes.list_all_nodes() if node is not two_nodes.head_node)
    assert other.node_id in message and two_nodes.head_node.node_id not in message
    assert "method 'fake_vq' (fakevq-plugin==1.0) is missing" in message and "fakevq_dep" in message
    client = tracking.make_client(spec.tracking.uri)
    experiment = client.get_experiment_by_name("missing_plugin")
    assert experiment is None or not tracking.search_sweep_runs(client, experiment.experiment_id)


def test_selftest_says_when_there_is_no_gpu(capsys: pytest.CaptureFixture) -> None:
    import torch

    from benchmark.perf import selftest

    if torch.cuda.is_available():  # a GPU machine: the search against torch's reference, on it
        assert selftest.main(["--device", "cuda", "--checks", "search"]) == 0
        assert "| search | pass |" in capsys.readouterr().out
    else:
        assert selftest.main(["--device", "cuda"]) == 0
        assert capsys.readouterr().out.startswith("selftest: no CUDA device on this machine")
    with pytest.raises(SystemExit):
        selftest.main(["--checks", "nope"])
