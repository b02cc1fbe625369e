"""``python -m benchmark selftest --device cuda``: does this machine's accelerator run vqbench?

Four checks, one table:

1. **conformance**: the conformance suite (``methods.testing``) on every registered method;
2. **step**: one training step (forward, backward, optimizer step) of every method on the device,
   loss and codebook finite;
3. **sweep**: a tiny Ray Tune sweep of four trials with ``gpus_per_trial`` 0.25 on a local Ray
   (one GPU shared by the four), recorded in a throwaway MLflow store; every trial must finish and
   record the device it actually ran on;
4. **search**: ``methods.nearest_code`` on the device against a torch reference (``torch.cdist``
   argmin): the distances of the codes found equal the minimal distances.

With ``--device cuda`` on a machine without CUDA it says so and exits 0 (nothing to check);
otherwise it exits 1 when a check fails. ``--device cpu`` runs the same checks on the CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

SWEEP_TRIALS = 4
GPUS_PER_TRIAL = 0.25


def check_conformance(device: str) -> str:
    """The conformance suite on every registered method (it runs on the CPU: the suite's own)."""
    import methods
    from methods.testing import run_conformance

    names = methods.available()
    for name in names:
        run_conformance(name)
    return f"{len(names)} methods conform"


def check_steps(device: str) -> str:
    """One training step of every method on ``device``."""
    import torch

    import methods

    names = methods.available()
    for name in names:
        spec = methods.get(name)
        dim, size = _shape(name)
        generator = torch.Generator().manual_seed(0)
        quantizer = methods.build(name, dim=dim, codebook_size=size, generator=generator).to(device)
        parameters = [p for p in quantizer.parameters() if p.requires_grad]
        features = torch.randn(256, dim, generator=generator).to(device).requires_grad_(True)
        out = quantizer(features)
        loss = out.loss + out.quantized.square().mean()
        loss.backward()
        if parameters:
            torch.optim.SGD(parameters, lr=0.01).step()
        if not (torch.isfinite(loss) and torch.isfinite(quantizer.codebook).all()):
            raise RuntimeError(f"{name}: non-finite loss or codebook after one step on {device}")
        if out.indices.device.type != torch.device(device).type:
            raise RuntimeError(f"{name}: indices on {out.indices.device}, not {device} ({spec.cls.__name__})")
    return f"{len(names)} methods trained one step on {device}"


def _shape(name: str) -> tuple[int, int]:
    """(dim, K) every method accepts: K = 2^d for the lookup-free ones, FSQ's default levels."""
    import methods

    for dim, size in ((4, 16), (8, 256), (3, 8)):
        try:
            methods.build(name, dim=dim, codebook_size=size)
        except ValueError:
            continue
        return dim, size
    raise ValueError(f"{name}: no small (dim, codebook_size) accepted")


def check_sweep(device: str) -> str:
    """Four trials with gpus_per_trial 0.25 through Ray Tune and MLflow, on a local Ray."""
    import yaml

    from benchmark.pipeline import spec as sweep_spec
    from benchmark.pipeline import sweep, tracking

    with tempfile.TemporaryDirectory(prefix="vqbench-selftest-") as folder:
        params = {
            "tracking": {"uri": "mlflow.db", "results_dir": "results"},
            "ray": {"cpus_per_trial": 0.25, "gpus_per_trial": GPUS_PER_TRIAL, "storage_path": "ray"},
            "base": {"experiment": "fit", "dataset": "gaussian", "codebook_size": 64, "dim": 4, "steps": 20,
                     "batch_size": 256, "eval_size": 1024, "log_every": 10, "device": device},
            "sweeps": {"selftest": {"grid": {"method": ["vanilla", "wasserstein"], "seed": [0, 1]}}},
        }
        path = Path(folder) / "params.yaml"
        path.write_text(yaml.safe_dump(params))
        spec = sweep_spec.load_sweep(path, "selftest")
        with contextlib.redirect_stderr(io.StringIO()):
            outcome = sweep.run_sweep(spec, quiet=True)
        if outcome.finished != SWEEP_TRIALS:
            raise RuntimeError(f"{outcome.summary()}; errors: {sorted(set(outcome.table['error'].dropna()))}")
        client = tracking.make_client(spec.tracking.uri)
        tags = [client.get_run(run_id).data.tags for run_id in outcome.table["run_id"]]
    devices = sorted({t.get("device", "?") for t in tags})
    gpus = sorted({t.get("ray_gpu_ids", "?") for t in tags})
    if any(not d.startswith(device) for d in devices):
        raise RuntimeError(f"trials ran on {devices}, not {device}")
    return f"{SWEEP_TRIALS} trials finished on {', '.join(devices)}; Ray GPU ids {', '.join(gpus)}"


def check_search(device: str) -> str:
    """``methods.nearest_code`` on ``device`` against ``torch.cdist`` argmin."""
    import torch

    import methods

    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for rows, size, dim in ((4096, 1024, 8), (20000, 4096, 32), (3, 16384, 2)):
        features = torch.randn(rows, dim, generator=generator).to(device)
        codebook = torch.randn(size, dim, generator=generator).to(device)
        found = methods.nearest_code(features, codebook)
        distances = torch.cdist(features.double(), codebook.double())
        best = distances.min(dim=1).values
        gap = (distances.gather(1, found[:, None]).squeeze(1) - best).abs().max().item()
        worst = max(worst, gap)
        if gap > 1e-5 * max(1.0, best.max().item()):
            raise RuntimeError(f"N {rows}, K {size}, d {dim}: a code {gap:.2e} farther than the nearest")
    return f"nearest codes match torch.cdist (largest distance gap {worst:.1e})"


CHECKS: dict[str, Callable[[str], str]] = {
    "conformance": check_conformance, "step": check_steps, "sweep": check_sweep, "search": check_search,
}


def device_status(device: str) -> str | None:
    """Why ``device`` cannot be checked here (None when it can)."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return (f"no CUDA device on this machine (torch {torch.__version__}, CUDA build "
                f"{torch.version.cuda or 'none'}); nothing to check")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks; print one table; 0 when all pass (or there is no such device), else 1."""
    parser = argparse.ArgumentParser(prog="python -m benchmark selftest", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="device to check (default: cuda)")
    parser.add_argument("--checks", default=",".join(CHECKS),
                        help=f"comma-separated subset of {', '.join(CHECKS)} (default: all)")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.checks.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in CHECKS]
    if unknown:
        parser.error(f"--checks: unknown {unknown}; valid: {list(CHECKS)}")
    absent = device_status(args.device)
    if absent:
        print(f"selftest: {absent}")
        return 0
    from benchmark.pipeline.cluster import environment

    where = environment(args.device)
    print(f"selftest on {where['device']} ({where['device_name']}), torch {where['torch']}, CUDA {where['cuda']}, "
          f"driver {where['cuda_driver']}\n")
    rows = []
    for name in chosen:
        start = time.perf_counter()
        try:
            detail, ok = CHECKS[name](args.device), True
        except Exception as err:  # noqa: BLE001 - each check reports its own failure
            detail, ok = f"{type(err).__name__}: {err}".splitlines()[0], False
            traceback.print_exc(file=sys.stderr)
        rows.append((name, "pass" if ok else "FAIL", f"{time.perf_counter() - start:.1f}", detail))
    print("| check | result | seconds | detail |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if all(row[1] == "pass" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
