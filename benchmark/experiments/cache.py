"""Content-addressed memo of trained networks (the transplant autoencoder, the sample-quality classifier).

A network is trained once per key and reused by every trial that asks for the same key, like the
k-means reference of :func:`benchmark.experiments.metrics.kmeans_codebook`. The key is everything
that determines the trained weights: a hash of the training data's bytes, the data and model
options, the training settings, the seed, and the module's architecture (its ``repr``, which
lists every layer and its shape). Weights are written with ``torch.save`` of the CPU state dict
to ``<kind>-<hash>.pt`` (atomic rename) and read back with ``torch.load(weights_only=True)``:
no pickled code is ever executed from the cache.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn


def tensor_digest(*tensors: Tensor) -> str:
    """SHA-256 of the tensors' shapes, dtypes and bytes (CPU, contiguous)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        array = tensor.detach().cpu().contiguous()
        digest.update(repr((tuple(array.shape), str(array.dtype))).encode())
        digest.update(array.numpy().tobytes())
    return digest.hexdigest()


def cache_path(cache_dir: str | Path, kind: str, key: Any, module: nn.Module) -> Path:
    """Where the weights of ``module`` trained under ``key`` live."""
    digest = hashlib.sha256(repr((kind, key, repr(module))).encode()).hexdigest()[:32]
    return Path(cache_dir) / f"{kind}-{digest}.pt"


def cached_training(
    module: nn.Module, kind: str, key: Any, train: Callable[[nn.Module], None], cache_dir: str | Path | None
) -> bool:
    """Load ``module``'s weights for ``key`` from ``cache_dir``, or ``train(module)`` and store them.

    Returns True on a cache hit. ``key`` must be a value whose ``repr`` is stable (tuples, strings,
    numbers, sorted items). ``cache_dir=None`` always trains and stores nothing.
    """
    if cache_dir is None:
        with torch.enable_grad():
            train(module)
        return False
    path = cache_path(cache_dir, kind, key, module)
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
        return True
    with torch.enable_grad():  # callers may evaluate under no_grad
        train(module)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial")
    torch.save({name: value.detach().cpu() for name, value in module.state_dict().items()}, partial)
    os.replace(partial, path)
    return False
