"""Sweeps on a Ray cluster whose nodes share no filesystem: shipped code, a preflight, placement.

Three things make a sweep independent of the driver's paths:

- **Code.** :func:`runtime_env` ships the repository's packages (:data:`code.LOCAL_PACKAGES`) and
  every plugin distribution the driver's registries loaded (its top-level packages *and* its
  ``.dist-info`` folder, so the entry points register on the worker as they do on the driver)
  through Ray's ``runtime_env`` ``py_modules``: Ray uploads them once per content hash and puts
  them first on every worker's ``PYTHONPATH``. A worker needs the pinned third-party packages
  (``requirements-lock.txt``), not the checkout.
- **A preflight.** :func:`preflight` runs :func:`node_report` on every alive node (a zero-CPU
  task pinned to it) before any trial starts and compares the method and dataset registries
  (names, plugin distributions and versions) and the torch version with the driver's. Anything
  missing or different fails the sweep with one :class:`PreflightError` naming each node
  (id, address, host) and what it lacks, e.g. the plugin's own import error.
- **Placement.** :func:`plan_resources` sizes the trials from the nodes: a trial on a node with
  GPUs asks for ``gpus_per_trial`` of one (0.25: four trials share a GPU); nodes without GPUs
  run trials on their CPUs. With both kinds of node, trials are divided between the two pools in
  proportion to the number of trials each can hold at once.

Artifacts travel back with the trial's final result (``recorder.ARTIFACTS_KEY``); the driver writes
them into its results folder and logs them to its MLflow store. :func:`environment` is what a
trial records about where it actually ran (node, device, torch, CUDA and driver versions).
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import math
import platform
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from benchmark import paths, runtime
from benchmark.experiments.config import ConfigError, RunConfig
from benchmark.pipeline.code import LOCAL_PACKAGES

PREFLIGHT_TIMEOUT_S = 300.0  # a node's answer, including unpacking the shipped code there
REGISTRY_KINDS = ("method", "dataset")
BUILT_IN = "built-in"


class PreflightError(RuntimeError):
    """A node cannot run the sweep's code as the driver does; the message names each node and why."""


# --------------------------------------------------------------------------------------------
# Shipping the code


def _registries() -> dict[str, Any]:
    import datasets
    import methods

    return {"method": methods, "dataset": datasets}


def _top_level_path(module: str) -> Path:
    """The package folder (or the single file) of ``module``'s top-level package."""
    top = importlib.import_module(module.split(".")[0])
    locations = getattr(top, "__path__", None)
    return Path(list(locations)[0] if locations else str(top.__file__)).resolve()


def plugin_distributions() -> dict[str, list[Path]]:
    """``{"name==version": [its top-level package folders, its .dist-info folder]}`` of every
    plugin distribution the driver's registries loaded."""
    found: dict[str, set[Path]] = {}
    for registry in _registries().values():
        for name in registry.available():
            spec = registry.get(name)
            if not spec.distribution:
                continue
            folders = found.setdefault(spec.distribution, set())
            folders.add(_top_level_path(spec.module))
            dist_info = getattr(importlib.metadata.distribution(spec.distribution.split("==")[0]), "_path", None)
            if dist_info is not None and Path(dist_info).is_dir():
                folders.add(Path(dist_info).resolve())
    return {dist: sorted(folders) for dist, folders in sorted(found.items())}


def runtime_env() -> dict[str, Any]:
    """Ray ``runtime_env`` of a sweep: the repository's packages and the driver's plugins as
    ``py_modules`` (no path of the driver's machine is needed on a worker), where the driver's
    node keeps the memoised k-means references and networks (:data:`paths.DATA_ROOT_ENV`; a node
    without that folder keeps its own), and the OpenMP settings of :mod:`benchmark.runtime`, in
    place before a worker loads torch or faiss."""
    modules = []
    for name in LOCAL_PACKAGES:
        package = paths.REPO_ROOT / name
        modules.append(str(package if package.is_dir() else package.with_suffix(".py")))
    for folders in plugin_distributions().values():
        modules.extend(str(folder) for folder in folders)
    return {"py_modules": modules, "env_vars": {paths.DATA_ROOT_ENV: str(paths.DATA_ROOT), **runtime.configure()}}


# --------------------------------------------------------------------------------------------
# What a node has, and the preflight


def expected_registries() -> dict[str, dict[str, str]]:
    """``{kind: {name: "name==version" of its plugin, or "built-in"}}`` of the driver, for the
    entries a worker can have: built-ins and plugins (a class registered in-process by a script
    or a test lives only in that process)."""
    expected: dict[str, dict[str, str]] = {}
    for kind, registry in _registries().items():
        entries = expected.setdefault(kind, {})
        for name in registry.available():
            spec = registry.get(name)
            if spec.distribution:
                entries[name] = spec.distribution
            elif spec.module.split(".")[0] in LOCAL_PACKAGES:
                entries[name] = BUILT_IN
    return expected


def _public_version(version: str) -> str:
    """``2.13.0+cu128`` -> ``2.13.0``: the build tag (CPU / CUDA wheel) is no difference of code."""
    return version.split("+")[0]


def nvidia_driver_version() -> str:
    """The NVIDIA kernel driver's version on this machine, "none" without one."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        text = ""
    for word in text.split():
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "none"
    return out[0] if out else "none"


def _ray_node() -> dict[str, str]:
    """This process's Ray node (id and address) when it runs inside Ray, else empty."""
    try:
        import ray

        if not ray.is_initialized():
            return {}
        return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}
    except Exception:  # noqa: BLE001 - a record of where we ran must never fail the run
        return {}


def environment(device: Any) -> dict[str, str]:
    """Where a run actually ran, as MLflow tags: ``device`` (the resolved one, ``cuda:0`` / ``cpu``),
    ``device_name`` (the GPU's), ``node_id``, ``node_ip``, ``hostname``, ``ray_gpu_ids`` (the GPUs Ray
    assigned, "none"), ``python``, ``torch``, ``cuda`` (torch's CUDA build, "none"),
    ``cuda_driver`` (the NVIDIA driver, "none") and ``code_root`` (the folder vqbench was imported
    from: the checkout, or the copy Ray shipped to the node)."""
    import torch

    device = torch.device(device)
    tags = {"device": str(device), "device_name": platform.machine() or "cpu"}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        tags["device"] = f"cuda:{index}"
        tags["device_name"] = torch.cuda.get_device_name(index)
    tags.update({"node_id": "", "node_ip": "", **_ray_node(), "hostname": socket.gethostname()})
    gpu_ids: list[Any] = []
    if tags["node_id"]:
        import ray

        gpu_ids = list(ray.get_gpu_ids())
    tags["ray_gpu_ids"] = ",".join(str(gpu) for gpu in gpu_ids) or "none"
    tags.update({"python": platform.python_version(), "torch": torch.__version__,
                 "cuda": torch.version.cuda or "none", "cuda_driver": nvidia_driver_version(),
                 "code_root": str(paths.REPO_ROOT)})
    return tags


def node_report(expected: Mapping[str, Mapping[str, str]], torch_version: str) -> dict[str, Any]:
    """Run on a node: what of the driver's registries ``expected`` (see :func:`expected_registries`)
    this node lacks or has at another version, and its versions. ``{"problems": [...], "environment":
    {...}}``; each problem one line, the registry's own error when a name is missing (a plugin's
    import error says which of its dependencies is absent)."""
    import torch

    registries = _registries()
    problems: list[str] = []
    for kind, entries in expected.items():
        registry = registries[kind]
        for name, origin in sorted(entries.items()):
            try:
                spec = registry.get(name)
            except ValueError as err:
                problems.append(f"{kind} {name!r} ({origin}) is missing: {err}")
                continue
            have = spec.distribution or BUILT_IN
            if have != origin:
                problems.append(f"{kind} {name!r} is {have} here, {origin} on the driver")
    if _public_version(torch.__version__) != _public_version(torch_version):
        problems.append(f"torch {torch.__version__} here, {torch_version} on the driver")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"problems": problems, "environment": environment(device)}


def describe_node(node: Mapping[str, Any]) -> str:
    """``node <id> at <address> (<host>)`` for messages, from an entry of ``ray.nodes()``."""
    return (f"node {node.get('NodeID', '?')} at {node.get('NodeManagerAddress', '?')} "
            f"({node.get('NodeManagerHostname', '?')})")


def alive_nodes() -> list[dict[str, Any]]:
    """The alive nodes of the connected Ray cluster (``ray.nodes()`` entries)."""
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def preflight(timeout: float = PREFLIGHT_TIMEOUT_S) -> dict[str, dict[str, Any]]:
    """Check every alive node against the driver before any trial starts (Ray connected).

    Returns ``{node id: node_report}``; raises :class:`PreflightError` listing every node that
    lacks a registry entry, has another plugin or torch version, cannot import the shipped code
    or does not answer within ``timeout`` seconds.
    """
    import ray
    import torch
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    expected = expected_registries()
    probe = ray.remote(num_cpus=0, max_retries=0)(node_report)
    nodes = alive_nodes()
    pending = {
        node["NodeID"]: probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote(expected, torch.__version__)
        for node in nodes
    }
    reports: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for node in nodes:
        try:
            report = ray.get(pending[node["NodeID"]], timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            failures.append(f"{describe_node(node)}: no answer within {timeout:g} s")
            continue
        except ray.exceptions.RayError as err:  # the shipped code does not import there, ...
            last = str(err).strip().splitlines()
            failures.append(f"{describe_node(node)}: cannot run vqbench's code: {last[-1] if last else err}")
            continue
        reports[node["NodeID"]] = report
        failures.extend(f"{describe_node(node)}: {problem}" for problem in report["problems"])
    if failures:
        raise PreflightError(
            "preflight: the sweep cannot run on every node of the Ray cluster, so no trial was started:\n  "
            + "\n  ".join(failures)
            + "\nInstall the same pinned packages (requirements-lock.txt) and plugins on every node.")
    return reports


# --------------------------------------------------------------------------------------------
# Placement


@dataclass(frozen=True)
class ResourcePlan:
    """What each trial asks Ray for: on GPU nodes ``cpus`` and ``gpus`` (a share of one GPU), on
    nodes without GPUs ``cpus`` alone; ``gpu_slots`` / ``cpu_slots``: trials each pool holds at once;
    ``gpu_nodes``: the ids of the nodes with GPUs, which trials of the CPU pool keep off (they would
    take the CPUs the GPU trials need there)."""

    cpus: float
    gpus: float
    gpu_slots: int
    cpu_slots: int
    gpu_nodes: tuple[str, ...] = ()

    def on_gpu(self, index: int) -> bool:
        """Whether the ``index``-th trial goes to the GPU pool: the pools take trials in turn, in
        proportion to their slots, the GPU pool first (the ``index + 1``-th trial brings the GPU
        pool's count to ``ceil((index + 1) * gpu_slots / all slots)``); all of them when the other
        pool is empty."""
        total = self.gpu_slots + self.cpu_slots
        if self.gpus <= 0 or self.gpu_slots == 0:
            return False
        return -(-(index + 1) * self.gpu_slots // total) > -(-index * self.gpu_slots // total)

    def resources(self, index: int) -> dict[str, float]:
        """The resources of the ``index``-th trial."""
        return {"cpu": self.cpus, "gpu": self.gpus if self.on_gpu(index) else 0.0}

    def request(self, index: int) -> Any:
        """Ray Tune's request (a placement group factory) for the ``index``-th trial."""
        from ray import tune

        bundle = {"CPU": self.cpus}
        if self.on_gpu(index):
            return tune.PlacementGroupFactory([{**bundle, "GPU": self.gpus}])
        if self.gpus > 0 and self.gpu_nodes:  # label every node has: its id
            avoid = {"ray.io/node-id": f"!in({','.join(self.gpu_nodes)})"}
            return tune.PlacementGroupFactory([bundle], bundle_label_selector=[avoid])
        return tune.PlacementGroupFactory([bundle])

    def by_key(self, keys: Sequence[str]) -> dict[str, Any]:
        """:meth:`request` per key (a trial id, a tuning group), the keys taken in order.

        The keys share one request object per pool: Tune unpickles the trainable, and this mapping
        with it, each time it looks a trial's trainable up (many times per trial), and a pickle
        holds a shared object once (a request per key made that O(trials) per lookup)."""
        requests: dict[bool, Any] = {}
        out = {}
        for index, key in enumerate(keys):
            on_gpu = self.on_gpu(index)
            if on_gpu not in requests:
                requests[on_gpu] = self.request(index)
            out[key] = requests[on_gpu]
        return out


def plan_resources(cpus_per_trial: float, gpus_per_trial: float, nodes: Sequence[Mapping[str, Any]]) -> ResourcePlan:
    """Size the trials (``ray.cpus_per_trial``, ``ray.gpus_per_trial``) from the nodes' ``Resources``
    (``ray.nodes()`` entries).

    Raises ConfigError when no node could ever hold one trial (its CPUs, or its GPUs, too few).
    """
    cpus, gpus = float(cpus_per_trial), float(gpus_per_trial)
    gpu_slots = cpu_slots = 0
    most_cpus = most_gpus = 0.0
    gpu_nodes = []
    for node in nodes:
        have = node.get("Resources", {})
        node_cpus, node_gpus = float(have.get("CPU", 0)), float(have.get("GPU", 0))
        most_cpus, most_gpus = max(most_cpus, node_cpus), max(most_gpus, node_gpus)
        by_cpu = math.floor(node_cpus / cpus + 1e-9)
        if node_gpus > 0 and gpus > 0:
            gpu_slots += min(by_cpu, math.floor(node_gpus / gpus + 1e-9))
            gpu_nodes.append(str(node.get("NodeID", "")))
        else:
            cpu_slots += by_cpu
    if gpu_slots + cpu_slots == 0:
        if cpus > most_cpus:
            raise ConfigError(f"ray.cpus_per_trial: {cpus_per_trial} exceeds the CPUs of every node "
                              f"(at most {most_cpus:g}); trials would never start")
        raise ConfigError(f"ray.gpus_per_trial: {gpus_per_trial} exceeds the GPUs of every node "
                          f"(at most {most_gpus:g}); trials would never start")
    return ResourcePlan(cpus=cpus, gpus=gpus if gpu_slots else 0.0, gpu_slots=gpu_slots, cpu_slots=cpu_slots,
                        gpu_nodes=tuple(gpu_nodes) if gpu_slots else ())


def placed_config(config: RunConfig, gpus_scheduled: bool) -> RunConfig:
    """The config a trial runs, on the node Ray placed it: with ``device: auto`` while Ray hands
    out GPUs (``gpus_scheduled``), a trial given no GPU runs on the CPU rather than on a GPU of its
    node that another trial holds. Anything else is run as configured."""
    if config.device != "auto" or not gpus_scheduled:
        return config
    import ray

    if ray.is_initialized() and not ray.get_gpu_ids():
        return dataclasses.replace(config, device="cpu")
    return config


# --------------------------------------------------------------------------------------------
# Artifacts


def read_artifacts(folder: str | Path) -> dict[str, bytes]:
    """Every file under ``folder`` as ``{relative posix path: bytes}`` (what a trial sends back)."""
    root = Path(folder)
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


def write_artifacts(files: Mapping[str, bytes], folder: str | Path) -> Path:
    """Write :func:`read_artifacts`' ``files`` into ``folder`` (emptied first); refuses paths that
    would leave it."""
    root = Path(folder).resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for name, data in files.items():
        target = (root / name).resolve()
        if root not in target.parents:
            raise ValueError(f"artifact {name!r}: a path outside the trial's folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root
