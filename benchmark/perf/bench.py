"""Performance of the hot paths, measured side by side in one run on the current device.

    python -m benchmark perf [--quick] [--out reports/] [--device cpu|cuda]

Writes ``<out>/perf.md`` (tables) and ``<out>/perf.json`` (every measurement and the environment):

1. nearest-code search, N features against K codes in d dims: ours (``methods.nearest_code``),
   faiss ``IndexFlatL2`` (k = 1; index built outside the timing), the chunked torch path
   (``methods.nearest_code_torch``), ``torch.cdist`` + argmin (skipped when the N x K matrix would
   exceed ``--cdist-cap-gb``), vector-quantize-pytorch ``VectorQuantize`` eval forward with its
   defaults (EMA decay 0.8, rotation trick on; skipped when a call is predicted, from the previous K,
   to take over ``--max-call-seconds`` or to need over half the available memory);
2. peak extra memory of our search at two N (it must not grow with N beyond the N indices), and
   the search at training-batch sizes (256 to 8,192 rows) against faiss' default settings;
3. one full training step (forward, backward, SGD step) of every registered method (the
   vector-quantize-pytorch adapters ``vqp_*`` included) at each K and at K = 2^d (where LFQ and BSQ
   apply), with the ratio to vanilla and, for each method with a peer adapter (``PEER_PAIRS``),
   ours / peer;
4. exact-OT and sliced-Wasserstein loss (forward + backward) against the sample size, and the
   Sinkhorn assignment (``methods.sinkhorn.sinkhorn_assignment``) against POT's ``ot.sinkhorn``
   (standard and log-domain solvers) at the same iterations, costs and argmax included on POT's side.

``--merge`` keeps an existing perf.json and replaces the re-run sections whole (rows and sizes).

Timing: median of ``repeats`` calls after warm-up (CUDA synchronised around each call). Calls that
are compared by a ratio are timed round-robin (A, B, A, B, ...) so that a change in machine load
(other jobs share these machines) hits both sides; the load average is recorded.
Memory: peak extra memory of the first (warm-up) call: on CUDA ``torch.cuda.max_memory_allocated``
minus the allocation before the call; on CPU the peak resident set size, sampled every 0.5 ms in a
thread, minus the RSS before the call, after ``malloc_trim`` so that freed heap pages do not hide
new allocations (tracemalloc does not see torch's allocations). It includes the call's output.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import psutil
import torch

import methods
from benchmark import runtime
from methods._core import random_directions
from methods.exact_ot import exact_ot_squared
from methods.sliced_wasserstein import sliced_wasserstein_squared

try:
    import faiss  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover
    faiss = None

GB = 1e9
MB = 1e6


@dataclass(frozen=True)
class Sizes:
    """What one run measures. ``FULL`` is the full grid; ``QUICK`` a few-second smoke run."""

    search_n: int
    search_dims: tuple[int, ...]
    search_ks: tuple[int, ...]
    memory_ns: tuple[int, ...]
    memory_dim: int
    memory_k: int
    batch_ns: tuple[int, ...]
    step_ks: tuple[int, ...]
    step_dim: int
    step_batch: int
    exact_ot_ns: tuple[int, ...]
    sliced_ns: tuple[int, ...]
    sliced_projections: tuple[int, ...]
    repeats: int
    warmup: int
    sinkhorn_cases: tuple[tuple[int, int], ...] = ()  # (batch n, K) of the Sinkhorn assignment against POT


FULL = Sizes(
    search_n=65_536, search_dims=(8, 64), search_ks=(1_024, 16_384, 65_536),
    memory_ns=(65_536, 1_048_576), memory_dim=8, memory_k=16_384, batch_ns=(256, 2_048, 8_192),
    step_ks=(1_024, 16_384, 65_536), step_dim=8, step_batch=8_192,
    exact_ot_ns=(256, 512, 1_024, 2_048, 4_096), sliced_ns=(1_024, 4_096, 16_384, 65_536),
    sliced_projections=(32, 128, 512), repeats=7, warmup=2, sinkhorn_cases=((2_048, 1_024), (8_192, 16_384)),
)
QUICK = Sizes(
    search_n=1_024, search_dims=(8,), search_ks=(64,),
    memory_ns=(1_024, 4_096), memory_dim=8, memory_k=64, batch_ns=(16, 256),
    step_ks=(64,), step_dim=8, step_batch=256,
    exact_ot_ns=(32, 64), sliced_ns=(128,), sliced_projections=(8,), repeats=1, warmup=1,
    sinkhorn_cases=((64, 32),),
)


@dataclass
class Measurement:
    """One row of perf.json: a (section, implementation, sizes) cell, measured or skipped."""

    section: str
    name: str
    params: dict[str, Any]
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    seconds: list[float] = field(default_factory=list)
    median_s: float | None = None
    peak_extra_bytes: int | None = None


# --- measuring -----------------------------------------------------------------------------------
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS baselines are a little looser
        pass


def _rss_reader() -> Callable[[], int]:
    """Current resident set size in bytes: /proc/self/statm where there is one (cheap), else psutil."""
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        process = psutil.Process()
        return lambda: process.memory_info().rss
    page = os.sysconf("SC_PAGE_SIZE")
    return lambda: int(os.pread(fd, 128, 0).split()[1]) * page


_rss = _rss_reader()


class _PeakRSS:
    """Highest resident set size seen by a sampling thread while the block runs."""

    def __init__(self, interval_s: float = 0.0005):
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.interval_s)

    def __enter__(self) -> "_PeakRSS":
        self.peak = _rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def call_with_peak_memory(fn: Callable[[], Any], device: torch.device) -> tuple[float, int]:
    """Run ``fn`` once: (seconds, peak extra bytes allocated during the call, output included)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return seconds, int(peak)
    _malloc_trim()
    base = _rss()
    with _PeakRSS() as sampler:
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
    del out
    return seconds, int(max(0, sampler.peak - base))


def time_round_robin(
    calls: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int, slow_s: float = 2.0
) -> dict[str, Measurement]:
    """Peak memory on the first warm-up call of each, then ``repeats`` timed rounds A, B, A, B, ...

    A call whose first run took over ``slow_s`` is timed in the first 3 rounds only.
    """
    results: dict[str, Measurement] = {}
    first: dict[str, float] = {}
    for name, fn in calls.items():
        first[name], peak = call_with_peak_memory(fn, device)
        results[name] = Measurement("", name, {}, peak_extra_bytes=peak)
        for _ in range(warmup - 1 if first[name] <= slow_s else 0):
            fn()
    for round_ in range(repeats):
        for name, fn in calls.items():
            if round_ >= 3 and first[name] > slow_s:
                continue
            _synchronize(device)
            start = time.perf_counter()
            fn()
            _synchronize(device)
            results[name].seconds.append(time.perf_counter() - start)
    for result in results.values():
        result.median_s = statistics.median(result.seconds)
    return results


def measure_one(
    section: str, name: str, params: dict[str, Any], fn: Callable[[], Any], device: torch.device,
    repeats: int, warmup: int, slow_s: float = 2.0,
) -> Measurement:
    """Memory + time of one call; a call slower than ``slow_s`` gets 1 warm-up and 3 repeats."""
    first_s, peak = call_with_peak_memory(fn, device)
    if first_s > slow_s:
        repeats, warmup = min(repeats, 3), 1
    for _ in range(warmup - 1):
        fn()
    seconds = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    return Measurement(section, name, params, seconds=seconds, median_s=statistics.median(seconds), peak_extra_bytes=peak)


def skipped(section: str, name: str, params: dict[str, Any], reason: str) -> Measurement:
    return Measurement(section, name, params, status="skipped", reason=reason)


# --- 1 and 2: nearest-code search ---------------------------------------------------------------
def _faiss_flat_search(codebook: torch.Tensor) -> Callable[[torch.Tensor], Any]:
    index = faiss.IndexFlatL2(codebook.shape[1])
    index.add(codebook.detach().cpu().contiguous().numpy())
    return lambda features: index.search(features.detach().cpu().contiguous().numpy(), 1)[1]


def _vqp_eval(dim: int, codebook_size: int, device: torch.device) -> Callable[[torch.Tensor], Any]:
    from vector_quantize_pytorch import VectorQuantize

    vq = VectorQuantize(dim=dim, codebook_size=codebook_size).to(device).eval()

    def run(features: torch.Tensor) -> Any:
        with torch.no_grad():
            return vq(features[None])[1]

    return run


def bench_search(sizes: Sizes, device: torch.device, args: argparse.Namespace) -> list[Measurement]:
    """Nearest-code search at N = ``search_n`` for every (d, K): the implementations in ``--search-impls``."""
    rows: list[Measurement] = []
    generator = torch.Generator().manual_seed(0)
    n = sizes.search_n
    impls = set(args.search_impls.split(","))
    for dim in sizes.search_dims:
        features = torch.randn(n, dim, generator=generator).to(device)
        vqp_prev: Measurement | None = None
        for k in sizes.search_ks:
            codebook = torch.randn(k, dim, generator=generator).to(device)
            params = {"n": n, "dim": dim, "codebook_size": k}
            rows += _search_round_robin(sizes, device, impls, features, codebook, params)
            rows += _search_torch(sizes, device, args, impls, features, codebook, params)
            if "vqp_eval" in impls:
                vqp_row, vqp_prev = _search_vqp(sizes, device, args, features, params, vqp_prev)
                rows.append(vqp_row)
    return rows


def _search_round_robin(sizes: Sizes, device: torch.device, impls: set[str], features: torch.Tensor,
                        codebook: torch.Tensor, params: dict[str, int]) -> list[Measurement]:
    """Ours against faiss IndexFlatL2, timed round-robin."""
    rows: list[Measurement] = []
    calls = {"ours": lambda: methods.nearest_code(features, codebook)} if "ours" in impls else {}
    if faiss is not None and "faiss_flat_l2" in impls:
        calls["faiss_flat_l2"] = _faiss_flat_search_bound(codebook, features)
    if calls:
        print(f"search d={params['dim']} K={params['codebook_size']}: {' vs '.join(calls)}", flush=True)
        for name, result in time_round_robin(calls, device, sizes.repeats, sizes.warmup).items():
            result.section, result.params = "search", params
            rows.append(result)
    return rows


def _search_torch(sizes: Sizes, device: torch.device, args: argparse.Namespace, impls: set[str],
                  features: torch.Tensor, codebook: torch.Tensor, params: dict[str, int]) -> list[Measurement]:
    """The chunked torch search, and torch.cdist + argmin unless its N x K matrix is over the cap."""
    rows: list[Measurement] = []
    dim, k = params["dim"], params["codebook_size"]
    if "torch_chunked" in impls:
        print(f"search d={dim} K={k}: torch chunked", flush=True)
        rows.append(measure_one("search", "torch_chunked", params,
                                lambda: methods.nearest_code_torch(features, codebook), device,
                                sizes.repeats, sizes.warmup))
    matrix_bytes = params["n"] * k * features.element_size()
    if "torch_cdist" not in impls:
        pass
    elif matrix_bytes > args.cdist_cap_gb * GB:
        rows.append(skipped("search", "torch_cdist", params,
                            f"N x K would need {matrix_bytes / GB:.1f} GB (cap {args.cdist_cap_gb:g} GB)"))
    else:
        print(f"search d={dim} K={k}: cdist", flush=True)
        rows.append(measure_one("search", "torch_cdist", params,
                                lambda: torch.cdist(features, codebook).argmin(dim=1), device,
                                sizes.repeats, sizes.warmup))
    return rows


def _search_vqp(sizes: Sizes, device: torch.device, args: argparse.Namespace, features: torch.Tensor,
                params: dict[str, int], vqp_prev: Measurement | None) -> tuple[Measurement, Measurement | None]:
    """vector-quantize-pytorch's eval forward (skipped when predicted too slow): (its row, the last measured row)."""
    dim, k = params["dim"], params["codebook_size"]
    reason = _vqp_skip_reason(vqp_prev, k, device, args)
    if reason:
        return skipped("search", "vqp_eval", params, reason), vqp_prev
    try:
        run = _vqp_eval(dim, k, device)
    except ImportError as error:
        return Measurement("search", "vqp_eval", params, status="failed", reason=str(error)), vqp_prev
    print(f"search d={dim} K={k}: vector-quantize-pytorch", flush=True)
    repeats = min(sizes.repeats, args.vqp_repeats)
    measured = measure_one("search", "vqp_eval", params, lambda: run(features), device,
                           repeats, 1 if repeats > 1 else 0)
    del run
    gc.collect()
    return measured, measured


def _faiss_flat_search_bound(codebook: torch.Tensor, features: torch.Tensor) -> Callable[[], Any]:
    search = _faiss_flat_search(codebook)
    return lambda: search(features)


def _vqp_skip_reason(prev: Measurement | None, k: int, device: torch.device, args: argparse.Namespace) -> str:
    """Predict a VectorQuantize call at K from the previous K (its cost is linear in K)."""
    if prev is None or prev.median_s is None:
        return ""
    scale = k / prev.params["codebook_size"]
    predicted_s = prev.median_s * scale
    if predicted_s > args.max_call_seconds:
        return (f"predicted {predicted_s:.0f} s per call (K = {prev.params['codebook_size']:,} took "
                f"{prev.median_s:.1f} s; cost linear in K) > {args.max_call_seconds:g} s")
    predicted_bytes = (prev.peak_extra_bytes or 0) * scale
    available = (torch.cuda.mem_get_info(device)[0] if device.type == "cuda"
                 else psutil.virtual_memory().available)
    if predicted_bytes > available / 2:
        return (f"predicted peak {predicted_bytes / GB:.1f} GB (N x K distances) > half the available "
                f"{available / GB:.1f} GB")
    return ""


def _bench_search_over_n(section: str, ns: tuple[int, ...], dim: int, k: int, seed: int, device: torch.device,
                         repeats: int, warmup: int, with_torch: bool) -> list[Measurement]:
    """ours vs faiss IndexFlatL2 (and the torch path) for each N, one round-robin per N."""
    rows: list[Measurement] = []
    generator = torch.Generator().manual_seed(seed)
    codebook = torch.randn(k, dim, generator=generator).to(device)
    for n in ns:
        features = torch.randn(n, dim, generator=generator).to(device)
        params = {"n": n, "dim": dim, "codebook_size": k, "output_bytes": n * 8}
        calls = {"ours": lambda: methods.nearest_code(features, codebook)}
        if with_torch:
            calls["torch_chunked"] = lambda: methods.nearest_code_torch(features, codebook)
        if faiss is not None:
            calls["faiss_flat_l2"] = _faiss_flat_search_bound(codebook, features)
        print(f"{section} N={n}", flush=True)
        for result in time_round_robin(calls, device, repeats, warmup).values():
            result.section, result.params = section, params
            rows.append(result)
        del features
    return rows


def bench_search_batches(sizes: Sizes, device: torch.device) -> list[Measurement]:
    """The search at training-batch sizes (d and K of the memory section), where faiss by default
    takes its one-pair-at-a-time path below 128,000 query floats and ours does not."""
    return _bench_search_over_n("search_batch", sizes.batch_ns, sizes.memory_dim, sizes.memory_k, 2, device,
                                sizes.repeats, sizes.warmup, with_torch=True)


def bench_search_memory(sizes: Sizes, device: torch.device) -> list[Measurement]:
    return _bench_search_over_n("search_memory", sizes.memory_ns, sizes.memory_dim, sizes.memory_k, 1, device,
                                repeats=3, warmup=1, with_torch=False)


# --- 3: one training step of every method ----------------------------------------------------------
def _training_step(name: str, dim: int, k: int, batch: int, device: torch.device) -> Callable[[], Any]:
    generator = torch.Generator().manual_seed(0)
    quantizer = methods.build(name, dim=dim, codebook_size=k, generator=generator).to(device).train()
    parameters = [p for p in quantizer.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=0.01) if parameters else None
    # stand-ins for the encoder output and a decoder target: the step's cost is the quantizer's
    features = torch.randn(batch, dim, generator=generator).to(device).requires_grad_()
    target = torch.randn(batch, dim, generator=generator).to(device)

    def step() -> None:
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        features.grad = None
        out = quantizer(features)
        loss = out.loss + (out.quantized - target).pow(2).mean()
        loss.backward()
        if optimizer is not None:
            optimizer.step()

    return step


# Our method and the vector-quantize-pytorch adapter it is compared with, step for step.
PEER_PAIRS = (("fsq", "vqp_fsq"), ("lfq", "vqp_lfq"), ("residual", "vqp_residual"), ("simvq", "vqp_simvq"),
              ("vanilla", "vqp_vector_quantize"))


def step_codebook_sizes(sizes: Sizes) -> tuple[int, ...]:
    """The K of the training-step table: ``step_ks`` plus 2^d, where the binary methods (LFQ, BSQ) apply."""
    return tuple(sorted(set(sizes.step_ks) | {2**sizes.step_dim}))


def bench_training_step(sizes: Sizes, device: torch.device) -> list[Measurement]:
    rows: list[Measurement] = []
    for k in step_codebook_sizes(sizes):
        params = {"dim": sizes.step_dim, "codebook_size": k, "batch": sizes.step_batch}
        calls: dict[str, Callable[[], Any]] = {}
        for name in methods.available():
            if methods.get(name).codebook_size_rule == "binary" and k != 2**sizes.step_dim:
                rows.append(skipped("training_step", name, params, f"needs K = 2^d = {2**sizes.step_dim:,}"))
                continue
            try:
                calls[name] = _training_step(name, sizes.step_dim, k, sizes.step_batch, device)
            except (ValueError, TypeError, RuntimeError) as error:
                rows.append(Measurement("training_step", name, params, status="failed", reason=str(error)))
        print(f"training step K={k}: {', '.join(calls)}", flush=True)
        for name, result in time_round_robin(calls, device, sizes.repeats, sizes.warmup).items():
            result.section, result.params = "training_step", params
            rows.append(result)
    return rows


# --- 4: OT losses against the sample size -----------------------------------------------------
def _ot_call(loss_fn: Callable[..., torch.Tensor], n: int, m: int, dim: int, device: torch.device,
             *extra: Any) -> Callable[[], Any]:
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(n, dim, generator=generator).to(device)
    codes = torch.randn(m, dim, generator=generator).to(device).requires_grad_()

    def run() -> None:
        codes.grad = None
        loss_fn(features, codes, *extra).backward()

    return run


def bench_ot(sizes: Sizes, device: torch.device, args: argparse.Namespace) -> list[Measurement]:
    rows: list[Measurement] = []
    dim = sizes.step_dim
    too_slow = ""
    for n in sizes.exact_ot_ns:
        params = {"n": n, "m": n, "dim": dim}
        if too_slow:
            rows.append(skipped("exact_ot", "exact_ot_emd2", params, too_slow))
            continue
        print(f"exact OT n={n}", flush=True)
        row = measure_one("exact_ot", "exact_ot_emd2", params, _ot_call(exact_ot_squared, n, n, dim, device),
                          device, min(sizes.repeats, 5), 1)
        rows.append(row)
        if row.median_s > args.max_call_seconds / 4:
            too_slow = f"n = {n:,} already took {row.median_s:.1f} s per call (about n^2.5)"
    cases = [(n, n, p) for p in sizes.sliced_projections for n in sizes.sliced_ns]
    cases.append((sizes.step_batch, sizes.step_ks[len(sizes.step_ks) // 2], 128))  # the training-step setting
    for n, m, projections in cases:
        directions = random_directions(dim, projections, torch.Generator().manual_seed(3))
        params = {"n": n, "m": m, "dim": dim, "projections": projections}
        print(f"sliced W n={n} m={m} P={projections}", flush=True)
        rows.append(measure_one("sliced_wasserstein", "sliced_w2", params,
                                _ot_call(sliced_wasserstein_squared, n, m, dim, device, directions),
                                device, min(sizes.repeats, 5), 1))
    return rows + bench_sinkhorn(sizes, device)


SINKHORN_EPSILON, SINKHORN_ITERATIONS = 10.0, 5  # the sinkhorn method's defaults (OptVQ)


def bench_sinkhorn(sizes: Sizes, device: torch.device) -> list[Measurement]:
    """Our Sinkhorn assignment against POT's solvers on the same standardised costs, round-robin."""
    import numpy
    import ot

    from methods.sinkhorn import sinkhorn_assignment

    rows: list[Measurement] = []
    generator = torch.Generator().manual_seed(4)
    for n, k in sizes.sinkhorn_cases:
        features = torch.randn(n, sizes.step_dim, generator=generator).to(device)
        codebook = torch.randn(k, sizes.step_dim, generator=generator).to(device)
        marginals = numpy.full(n, 1 / n, dtype=numpy.float32), numpy.full(k, 1 / k, dtype=numpy.float32)

        def pot(method: str) -> Callable[[], Any]:
            def run() -> Any:
                costs = torch.cdist(features, codebook)
                costs = (costs / costs.std()).cpu().numpy()
                return ot.sinkhorn(*marginals, costs, 1 / SINKHORN_EPSILON, method=method,
                                   numItermax=SINKHORN_ITERATIONS, stopThr=0.0, warn=False).argmax(axis=1)
            return run

        calls = {"ours": lambda: sinkhorn_assignment(features, codebook, SINKHORN_EPSILON, SINKHORN_ITERATIONS),
                 "pot_sinkhorn": pot("sinkhorn"), "pot_sinkhorn_log": pot("sinkhorn_log")}
        print(f"sinkhorn n={n} K={k}: {' vs '.join(calls)}", flush=True)
        params = {"n": n, "codebook_size": k, "dim": sizes.step_dim, "iterations": SINKHORN_ITERATIONS}
        for result in time_round_robin(calls, device, min(sizes.repeats, 5), 1).values():
            result.section, result.params = "sinkhorn", params
            rows.append(result)
    return rows


# --- environment and report -----------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str:
    try:
        import importlib.metadata

        return importlib.metadata.version(module)
    except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
        return "not installed"


def environment(device: torch.device) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    return {
        "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_total_gb": round(psutil.virtual_memory().total / GB, 1),
        "openmp": runtime.settings_in_effect(),
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads() if faiss is not None else None,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "faiss": getattr(faiss, "__version__", "not installed"),
            "numpy": _version("numpy"),
            "pot": _version("pot"),
            "vector-quantize-pytorch": _version("vector-quantize-pytorch"),
        },
    }


def _find(rows: list[Measurement], section: str, name: str, **params: Any) -> Measurement | None:
    for row in rows:
        if row.section == section and row.name == name and all(row.params.get(k) == v for k, v in params.items()):
            return row
    return None


def _seconds(row: Measurement | None) -> str:
    if row is None:
        return "-"
    if row.status != "ok":
        return f"{row.status}: {row.reason}"
    value = row.median_s
    text = f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"
    if row.peak_extra_bytes is not None:
        text += f" ({row.peak_extra_bytes / MB:,.0f} MB)"
    return text


def _ratio(a: Measurement | None, b: Measurement | None) -> float | None:
    if a is None or b is None or a.status != "ok" or b.status != "ok" or not b.median_s:
        return None
    return a.median_s / b.median_s


def summarize(rows: list[Measurement], sizes: Sizes) -> dict[str, Any]:
    """The headline ratios: ours vs faiss, peers vs ours, each method's step vs vanilla."""
    search = []
    for dim in sizes.search_dims:
        for k in sizes.search_ks:
            key = {"dim": dim, "codebook_size": k}
            ours = _find(rows, "search", "ours", **key)
            search.append({
                **key,
                "ours_over_faiss": _ratio(ours, _find(rows, "search", "faiss_flat_l2", **key)),
                "vqp_over_ours": _ratio(_find(rows, "search", "vqp_eval", **key), ours),
                "torch_chunked_over_ours": _ratio(_find(rows, "search", "torch_chunked", **key), ours),
            })
    steps = []
    for k in step_codebook_sizes(sizes):
        vanilla = _find(rows, "training_step", "vanilla", codebook_size=k)
        for row in rows:
            if row.section == "training_step" and row.params.get("codebook_size") == k:
                steps.append({"method": row.name, "codebook_size": k, "ratio_to_vanilla": _ratio(row, vanilla)})
    peers = []
    for ours_name, peer_name in PEER_PAIRS:
        for k in step_codebook_sizes(sizes):
            ours, peer = (_find(rows, "training_step", n, codebook_size=k) for n in (ours_name, peer_name))
            if ours is not None and peer is not None and ours.status == peer.status == "ok":
                peers.append({"ours": ours_name, "peer": peer_name, "codebook_size": k,
                              "ours_over_peer": _ratio(ours, peer)})
    memory = [
        {"n": r.params["n"], "name": r.name, "peak_extra_bytes": r.peak_extra_bytes,
         "beyond_output_bytes": (r.peak_extra_bytes or 0) - r.params["output_bytes"]}
        for r in rows if r.section == "search_memory"
    ]
    faiss_ratios = [s["ours_over_faiss"] for s in search if s["ours_over_faiss"] is not None]
    vqp_ratios = [s["vqp_over_ours"] for s in search if s["vqp_over_ours"] is not None]
    mid_k = sizes.step_ks[len(sizes.step_ks) // 2]
    misses = [s for s in steps if s["codebook_size"] == mid_k and s["ratio_to_vanilla"] is not None
              and s["ratio_to_vanilla"] > 1.1]
    return {
        "search": search,
        "training_step": steps,
        "training_step_vs_peer": peers,
        "search_memory": memory,
        "targets": {
            "max_ours_over_faiss": max(faiss_ratios) if faiss_ratios else None,
            "ours_within_1.1x_faiss": bool(faiss_ratios) and max(faiss_ratios) <= 1.1,
            "min_vqp_over_ours": min(vqp_ratios) if vqp_ratios else None,
            "ours_faster_than_vqp_where_measured": bool(vqp_ratios) and min(vqp_ratios) > 1,
            "step_target_codebook_size": mid_k,
            "step_misses": {s["method"]: round(s["ratio_to_vanilla"], 2) for s in misses},
        },
    }


def _fmt_ratio(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"


def render_markdown(env: dict[str, Any], sizes: Sizes, rows: list[Measurement], summary: dict[str, Any],
                    quick: bool) -> str:
    """perf.md: the run's environment, the targets, then one section per kind of measurement (adds
    ``summary["exact_ot_exponent"]`` when the exact-OT times allow a fit)."""
    step_ks = step_codebook_sizes(sizes)
    lines = _environment_lines(env, sizes, quick)
    lines += _targets_lines(summary["targets"])
    lines += _search_lines(env, sizes, rows, summary)
    lines += _memory_lines(sizes, rows)
    lines += _batch_lines(sizes, rows)
    lines += _training_step_lines(sizes, rows, step_ks)
    lines += _peer_step_lines(rows, step_ks)
    lines += _ot_lines(sizes, rows, summary)
    return "\n".join(lines)


def _environment_lines(env: dict[str, Any], sizes: Sizes, quick: bool) -> list[str]:
    """The title, how the times were taken, the machine, and every merged re-measurement."""
    lines = ["# Performance of the hot paths", ""]
    lines.append(f"Generated by `{_command(env, quick)}` at {env['utc']} "
                 f"(commit {env['git_commit'] or '?'}{_openmp(env)}). Median of {sizes.repeats} calls after warm-up; "
                 "compared implementations timed round-robin; peak extra memory of one call, output included "
                 "(CPU: sampled RSS; CUDA: max_memory_allocated).")
    lines.append("")
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    lines.append(f"Device: **{env['device']}** ({env['device_name']}); CPU: {env['cpu_model']}, "
                 f"{env['cpu_count']} cores, {env['memory_total_gb']} GB; threads: torch {env['torch_threads']}, "
                 f"faiss {env['faiss_threads']}; load average at start {env['load_average_start']}, "
                 f"at end {env.get('load_average_end')} (other jobs share this machine: absolute times are "
                 f"noisy, round-robin ratios less so). Versions: {versions}.")
    for merged in env.get("merged_runs", []):
        lines.append(f"Re-measured at {merged['utc']} by `{_command(merged, merged.get('quick', False))}` (commit "
                     f"{merged.get('git_commit') or '?'}{_openmp(merged)}; load average {merged['load_average_start']}): "
                     f"sections {', '.join(merged['sections'])}, search implementations {merged['search_impls']}, "
                     f"--max-call-seconds {merged['max_call_seconds']:g}; {merged['replaced_rows']} rows replaced"
                     + (f"; sizes {', '.join(f'{k} {v}' for k, v in merged['sizes'].items())}" if "sizes" in merged else "")
                     + ".")
    lines.append("")
    return lines


def _command(env: dict[str, Any], quick: bool) -> str:
    """The command line of a run (runs recorded before the flags were kept: the --quick flag only)."""
    if "argv" in env:
        return " ".join(["python -m benchmark perf", *env["argv"]])
    return f"python -m benchmark perf{' --quick' if quick else ''}"


def _openmp(env: dict[str, Any]) -> str:
    return "".join(f", {name}={value or 'unset'}" for name, value in env.get("openmp", {}).items())


def _targets_lines(targets: dict[str, Any]) -> list[str]:
    """The targets: search against faiss and the peer, training step against vanilla."""
    lines = ["## Targets", ""]
    lines.append(f"- Our search / faiss IndexFlatL2, worst size: {_fmt_ratio(targets['max_ours_over_faiss'])} "
                 f"(target <= 1.1x: {'met' if targets['ours_within_1.1x_faiss'] else 'missed'}).")
    lines.append(f"- vector-quantize-pytorch eval / our search, smallest speed-up where measured: "
                 f"{_fmt_ratio(targets['min_vqp_over_ours'], 1)} "
                 f"({'faster everywhere measured' if targets['ours_faster_than_vqp_where_measured'] else 'NOT faster everywhere'}).")
    missed = targets["step_misses"]
    lines.append(f"- Training step within 1.1x vanilla at K = {targets['step_target_codebook_size']:,}: "
                 + ("all methods." if not missed else "missed by " + ", ".join(f"{m} {r:.2f}x" for m, r in missed.items()) + "."))
    lines.append("")
    return lines


def _search_lines(env: dict[str, Any], sizes: Sizes, rows: list[Measurement], summary: dict[str, Any]) -> list[str]:
    """Nearest-code search: every implementation per (d, K)."""
    lines = [f"## Nearest-code search, N = {sizes.search_n:,}", "",
             "Time (peak extra memory). ours = `methods.nearest_code` (faiss on CPU float32, chunked torch "
             "otherwise); faiss = IndexFlatL2 k=1, index built outside the timing; torch chunked = "
             "`methods.nearest_code_torch`; vqp = vector-quantize-pytorch `VectorQuantize` eval forward, "
             "defaults (EMA decay 0.8, rotation trick), no_grad, median of "
             f"{min(sizes.repeats, env.get('vqp_repeats', 3))} call(s).", "",
             "| d | K | ours | faiss IndexFlatL2 | ours / faiss | torch chunked | torch.cdist + argmin | vqp eval | vqp / ours |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary["search"]:
        key = {"dim": s["dim"], "codebook_size": s["codebook_size"]}
        cells = [_seconds(_find(rows, "search", name, **key))
                 for name in ("ours", "faiss_flat_l2", "torch_chunked", "torch_cdist", "vqp_eval")]
        lines.append(f"| {s['dim']} | {s['codebook_size']:,} | {cells[0]} | {cells[1]} | "
                     f"{_fmt_ratio(s['ours_over_faiss'])} | {cells[2]} | {cells[3]} | {cells[4]} | "
                     f"{_fmt_ratio(s['vqp_over_ours'], 1)} |")
    lines.append("")
    return lines


def _memory_lines(sizes: Sizes, rows: list[Measurement]) -> list[str]:
    """Peak extra memory of the search against N."""
    lines = [f"## Peak extra memory of the search against N (d = {sizes.memory_dim}, K = {sizes.memory_k:,})", "",
             "| N | ours: time | ours: peak extra | beyond the N x 8-byte output | faiss IndexFlatL2: peak extra | beyond output |",
             "|---|---|---|---|---|---|"]
    for n in sizes.memory_ns:
        ours = _find(rows, "search_memory", "ours", n=n)
        flat = _find(rows, "search_memory", "faiss_flat_l2", n=n)
        out_bytes = n * 8

        def mem(row: Measurement | None) -> tuple[str, str]:
            if row is None or row.peak_extra_bytes is None:
                return "-", "-"
            return f"{row.peak_extra_bytes / MB:.1f} MB", f"{(row.peak_extra_bytes - out_bytes) / MB:.1f} MB"

        lines.append(f"| {n:,} | {_seconds(ours).split(' (')[0]} | {mem(ours)[0]} | {mem(ours)[1]} | "
                     f"{mem(flat)[0]} | {mem(flat)[1]} |")
    lines.append("")
    return lines


def _batch_lines(sizes: Sizes, rows: list[Measurement]) -> list[str]:
    """Search at training-batch sizes: ours, faiss with its defaults, torch chunked."""
    lines = [f"## Search at training-batch sizes (d = {sizes.memory_dim}, K = {sizes.memory_k:,})", "",
             "faiss IndexFlatL2 with its default settings searches one (query, code) pair at a time when a "
             "call holds fewer than 128,000 query floats (N x d); ours always takes faiss' blocked, fused "
             "k = 1 path (`methods._core._faiss_blocked_search`), exact on both.", "",
             "| N | ours | faiss IndexFlatL2 | faiss / ours | torch chunked | torch chunked / ours |",
             "|---|---|---|---|---|---|"]
    for n in sizes.batch_ns:
        ours = _find(rows, "search_batch", "ours", n=n)
        flat = _find(rows, "search_batch", "faiss_flat_l2", n=n)
        chunked = _find(rows, "search_batch", "torch_chunked", n=n)
        lines.append(f"| {n:,} | {_seconds(ours)} | {_seconds(flat)} | {_fmt_ratio(_ratio(flat, ours), 1)} | "
                     f"{_seconds(chunked)} | {_fmt_ratio(_ratio(chunked, ours), 1)} |")
    lines.append("")
    return lines


def _training_step_lines(sizes: Sizes, rows: list[Measurement], step_ks: tuple[int, ...]) -> list[str]:
    """One training step of every method: time, ratio to vanilla, peak extra memory."""
    lines = [f"## One training step (forward + backward + SGD step), d = {sizes.step_dim}, batch {sizes.step_batch:,}", "",
             "Time, ratio to vanilla in the same round-robin, peak extra memory of the step. Every registered "
             "method with its default options, the vector-quantize-pytorch adapters (vqp_*) included; "
             f"K = 2^d = {2**sizes.step_dim:,} is where the binary methods (LFQ, BSQ) apply. Multi-codebook "
             "methods (residual, grouped) have K codes per level.", "",
             "| method | " + " | ".join(f"K = {k:,}" for k in step_ks) + " |",
             "|---|" + "---|" * len(step_ks)]
    names = sorted({r.name for r in rows if r.section == "training_step"})
    for name in names:
        cells = []
        for k in step_ks:
            row = _find(rows, "training_step", name, codebook_size=k)
            vanilla = _find(rows, "training_step", "vanilla", codebook_size=k)
            if row is None or row.status != "ok":
                cells.append(_seconds(row))
            else:
                cells.append(f"{row.median_s * 1e3:.1f} ms, {_fmt_ratio(_ratio(row, vanilla))} "
                             f"({(row.peak_extra_bytes or 0) / MB:,.0f} MB)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _peer_step_lines(rows: list[Measurement], step_ks: tuple[int, ...]) -> list[str]:
    """Our training step over the peer adapter's, per pair and K."""
    lines = ["### Ours / peer (vector-quantize-pytorch), training step", "",
             "Our step time over the peer adapter's, both timed in the same round-robin at the same batch, d "
             "and K (below 1: ours is faster). Each side keeps its defaults: the peer's VectorQuantize and "
             "ResidualVQ update EMA codebooks (VectorQuantize with the rotation trick), ours by gradient; "
             "FSQ, LFQ and SimVQ follow the same papers (see the vqbench_vqp adapters).", "",
             "| ours | peer | " + " | ".join(f"K = {k:,}" for k in step_ks) + " |",
             "|---|---|" + "---|" * len(step_ks)]
    for ours_name, peer_name in PEER_PAIRS:
        cells = []
        for k in step_ks:
            ours, peer = (_find(rows, "training_step", n, codebook_size=k) for n in (ours_name, peer_name))
            ratio = _ratio(ours, peer)
            cells.append(_fmt_ratio(ratio) if ratio is not None else
                         "-" if ours is None or peer is None else "skipped" if "skipped" in (ours.status, peer.status)
                         else "failed")
        lines.append(f"| {ours_name} | {peer_name} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _ot_lines(sizes: Sizes, rows: list[Measurement], summary: dict[str, Any]) -> list[str]:
    """Exact OT (with its growth exponent, also put in ``summary``) and sliced W2 against the sample size."""
    lines = ["## OT losses against the sample size (forward + backward, d = %d)" % sizes.step_dim, "",
             "Exact OT: POT `ot.emd2` between n features and n codes (`methods.exact_ot.exact_ot_squared`).", "",
             "| n | time | peak extra memory |", "|---|---|---|"]
    exact = [r for r in rows if r.section == "exact_ot"]
    for row in exact:
        lines.append(f"| {row.params['n']:,} | {_seconds(row).split(' (')[0]} | "
                     f"{'-' if row.peak_extra_bytes is None else f'{row.peak_extra_bytes / MB:,.0f} MB'} |")
    measured = [r for r in exact if r.status == "ok" and r.median_s]
    if len(measured) >= 3:  # the smallest n is mostly fixed overhead: fit the rest
        xs = [math.log(r.params["n"]) for r in measured[1:]]
        ys = [math.log(r.median_s) for r in measured[1:]]
        exponent = statistics.linear_regression(xs, ys).slope
        lines.append("")
        lines.append(f"Growth: time ~ n^{exponent:.1f} (least squares on log-log over n = "
                     f"{measured[1].params['n']:,} to {measured[-1].params['n']:,}).")
        summary["exact_ot_exponent"] = exponent
    lines += ["", "Sliced W2: `methods.sliced_wasserstein.sliced_wasserstein_squared`, n features vs m codes, "
              "P projections (exact 1-D W2 per projection by sorting).", "",
              "| n | m | P | time | peak extra memory |", "|---|---|---|---|---|"]
    for row in rows:
        if row.section == "sliced_wasserstein":
            p = row.params
            lines.append(f"| {p['n']:,} | {p['m']:,} | {p['projections']} | {_seconds(row).split(' (')[0]} | "
                         f"{(row.peak_extra_bytes or 0) / MB:,.0f} MB |")
    lines.append("")
    return lines + _sinkhorn_lines(sizes, rows)


def _sinkhorn_lines(sizes: Sizes, rows: list[Measurement]) -> list[str]:
    """Our Sinkhorn assignment over POT's standard and log-domain solvers."""
    if not sizes.sinkhorn_cases:
        return []
    lines = [f"Sinkhorn assignment, epsilon {SINKHORN_EPSILON:g}, {SINKHORN_ITERATIONS} iterations, d = "
             f"{sizes.step_dim}: ours (`methods.sinkhorn.sinkhorn_assignment`) against POT's `ot.sinkhorn` "
             "(float32; the standardised cost matrix and the argmax of the plan included), round-robin.", "",
             "| n | K | ours | POT sinkhorn | ours / POT | POT sinkhorn_log | ours / POT log |",
             "|---|---|---|---|---|---|---|"]
    for n, k in sizes.sinkhorn_cases:
        ours, standard, log = (_find(rows, "sinkhorn", name, n=n, codebook_size=k)
                               for name in ("ours", "pot_sinkhorn", "pot_sinkhorn_log"))
        lines.append(f"| {n:,} | {k:,} | {_seconds(ours)} | {_seconds(standard)} | {_fmt_ratio(_ratio(ours, standard))} "
                     f"| {_seconds(log)} | {_fmt_ratio(_ratio(ours, log))} |")
    lines.append("")
    return lines


# What each --sections name measures: its rows' sections and the Sizes fields it reads.
SECTION_ROWS = {"search": ("search",), "memory": ("search_memory",), "batch": ("search_batch",),
                "step": ("training_step",), "ot": ("exact_ot", "sliced_wasserstein", "sinkhorn")}
SECTION_SIZES = {"search": ("search_n", "search_dims", "search_ks"), "memory": ("memory_ns", "memory_dim", "memory_k"),
                 "batch": ("batch_ns", "memory_dim", "memory_k"), "step": ("step_ks", "step_dim", "step_batch"),
                 "ot": ("exact_ot_ns", "sliced_ns", "sliced_projections", "step_dim", "sinkhorn_cases")}


def merge_runs(old: dict[str, Any], rows: list[Measurement], sizes: Sizes,
               sections: set[str]) -> tuple[list[Measurement], Sizes, int]:
    """An earlier perf.json with the re-run ``sections`` replaced whole: their old rows dropped (a
    re-run at other sizes leaves no stale cells behind), their sizes taken from this run, every other
    section's rows and sizes kept. Returns (rows, sizes to render with, number of old rows replaced)."""
    redone = {row_section for name in sections for row_section in SECTION_ROWS[name]}
    kept = [Measurement(**m) for m in old["measurements"] if m["section"] not in redone]
    old_sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in old["sizes"].items()}
    fields = {f for name in sections for f in SECTION_SIZES[name]}
    merged = Sizes(**{**old_sizes, **{f: getattr(sizes, f) for f in fields}})
    return kept + rows, merged, len(old["measurements"]) - len(kept)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m benchmark perf``: measure the chosen sections, merge with an earlier run, write perf.md/json."""
    args, device, sizes = _parse_args(argv)
    sections = set(args.sections.split(",")) - {""}
    new_sizes = sizes
    env = environment(device)
    env["argv"] = list(sys.argv[1:] if argv is None else argv)
    env["quick"] = args.quick
    env["vqp_repeats"] = args.vqp_repeats
    previous = args.out / "perf.json"
    old = json.loads(previous.read_text()) if args.merge and previous.exists() else None
    if old is not None and sections and old["environment"].get("quick", args.quick) != args.quick:
        raise SystemExit(f"error: --merge: {previous} was made {'with' if old['environment'].get('quick') else 'without'} "
                         f"--quick; a run at the other sizes cannot be merged into it (rerun without --merge)")
    rows = _measure(sections, sizes, device, args)
    env["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if old is not None:
        rows, env, sizes = _merge_previous(old, rows, env, sizes, new_sizes, sections, args)
    summary = summarize(rows, sizes)
    markdown = render_markdown(env, sizes, rows, summary, args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"environment": env, "sizes": asdict(sizes), "summary": summary,
              "measurements": [asdict(row) for row in rows]}
    (args.out / "perf.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "perf.md").write_text(markdown)
    print(f"wrote {args.out / 'perf.md'} and {args.out / 'perf.json'}")
    return report


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, torch.device, Sizes]:
    """The command line, checked: the arguments, the device and the sizes (threads set as asked)."""
    parser = argparse.ArgumentParser(prog="python -m benchmark perf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder for perf.md and perf.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cdist-cap-gb", type=float, default=4.0,
                        help="skip torch.cdist when the N x K matrix would need more than this")
    parser.add_argument("--max-call-seconds", type=float, default=60.0,
                        help="skip a peer whose call is predicted to take longer than this")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per cell (default: 7; --quick 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default: 2; --quick 1)")
    parser.add_argument("--vqp-repeats", type=int, default=3,
                        help="timed vector-quantize-pytorch calls per size (1: no warm-up call either)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and faiss threads (default: leave the libraries' defaults)")
    parser.add_argument("--sections", default="search,memory,batch,step,ot",
                        help="comma-separated subset of search,memory,batch,step,ot ('' with --merge: re-render)")
    parser.add_argument("--search-impls", default="ours,faiss_flat_l2,torch_chunked,torch_cdist,vqp_eval",
                        help="comma-separated subset of the search implementations to measure")
    parser.add_argument("--merge", action="store_true",
                        help="keep the measurements of an existing <out>/perf.json that this run does not redo")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        if faiss is not None:
            faiss.omp_set_num_threads(args.threads)
    if args.vqp_repeats < 1:
        parser.error("--vqp-repeats must be >= 1")
    sizes = QUICK if args.quick else FULL
    if args.repeats is not None or args.warmup is not None:
        if (args.repeats is not None and args.repeats < 1) or (args.warmup is not None and args.warmup < 0):
            parser.error("--repeats must be >= 1 and --warmup >= 0")
        sizes = replace(sizes, repeats=args.repeats or sizes.repeats,
                        warmup=sizes.warmup if args.warmup is None else args.warmup)
    return args, device, sizes


def _measure(sections: set[str], sizes: Sizes, device: torch.device, args: argparse.Namespace) -> list[Measurement]:
    """The rows of every chosen section, in the report's order."""
    rows: list[Measurement] = []
    if "search" in sections:
        rows += bench_search(sizes, device, args)
    if "memory" in sections:
        rows += bench_search_memory(sizes, device)
    if "batch" in sections:
        rows += bench_search_batches(sizes, device)
    if "step" in sections:
        rows += bench_training_step(sizes, device)
    if "ot" in sections:
        rows += bench_ot(sizes, device, args)
    return rows


def _merge_previous(old: dict[str, Any], rows: list[Measurement], env: dict[str, Any], sizes: Sizes,
                    new_sizes: Sizes, sections: set[str],
                    args: argparse.Namespace) -> tuple[list[Measurement], dict[str, Any], Sizes]:
    """``--merge``: re-render an earlier perf.json (nothing re-measured) or replace its re-run sections."""
    if not rows:  # nothing re-measured: re-render only
        rows, env = [Measurement(**m) for m in old["measurements"]], old["environment"]
        sizes = Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in old["sizes"].items()})
        return rows, env, sizes
    rows, sizes, replaced = merge_runs(old, rows, sizes, sections)
    env = {**old["environment"], "merged_runs": old["environment"].get("merged_runs", []) + [
        {**env, "sections": sorted(sections), "search_impls": args.search_impls,
         "max_call_seconds": args.max_call_seconds, "replaced_rows": replaced,
         "sizes": {f: getattr(sizes, f) for name in sorted(sections) for f in SECTION_SIZES.get(name, ())}
         | {"repeats": new_sizes.repeats, "warmup": new_sizes.warmup}}]}
    return rows, env, sizes


if __name__ == "__main__":
    main()
