"""Content-addressed memos: trained networks (the transplant autoencoder, the sample-quality
classifier) and, through :func:`compute_once`, the k-means reference of
:func:`benchmark.experiments.metrics.kmeans_codebook`.

:func:`compute_once` is the one memo protocol: a value is loaded when its file exists; otherwise it
is computed under an exclusive lock on ``<file>.lock`` (``filelock``) and written by atomic rename.
Concurrent processes that miss the same key (two Ray actors starting trials of one setting at once)
compute it once: the second waits on the lock and then loads the first one's file.

A network is trained once per key and reused by every trial that asks for the same key. The key is everything
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
from typing import Any, Callable, TypeVar

import torch
from torch import Tensor, nn

T = TypeVar("T")


def compute_once(
    path: str | Path, load: Callable[[Path], T], compute: Callable[[], T], store: Callable[[T, Path], None]
) -> tuple[T, bool]:
    """The value memoised at ``path`` and whether it was there (True = loaded, no work done).

    On a miss, ``compute()`` runs under an exclusive lock on ``<path>.lock`` and ``store(value,
    partial)`` writes a partial file in the same folder that is renamed onto ``path`` (atomic):
    readers never see a half-written file, and a process that missed the same ``path`` meanwhile
    waits for the lock, then loads the stored value instead of computing it again.
    """
    from filelock import FileLock

    path = Path(path)
    if path.exists():
        return load(path), True
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(f"{path.name}.lock"))):
        if path.exists():  # computed by another process while this one waited
            return load(path), True
        value = compute()
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial{path.suffix}")
        store(value, partial)
        os.replace(partial, path)
    return value, False


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

    def trained() -> dict[str, Tensor]:
        with torch.enable_grad():  # callers may evaluate under no_grad
            train(module)
        return {name: value.detach().cpu() for name, value in module.state_dict().items()}

    state, hit = compute_once(
        cache_path(cache_dir, kind, key, module),
        lambda path: torch.load(path, map_location="cpu", weights_only=True),
        trained,
        lambda value, path: torch.save(value, path),
    )
    if hit:
        module.load_state_dict(state)
    return hit
