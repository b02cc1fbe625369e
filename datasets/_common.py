"""Shared pieces of the dataset modules: option checks, base classes, split, file verification."""
from __future__ import annotations

import hashlib
import math
import operator
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A dataset file is absent; the message names the file, where it belongs and where to get it."""


class ChecksumError(ValueError):
    """A dataset file's MD5 differs from the official one; the message names file and both hashes."""


# ---------------------------------------------------------------- option checks (ValueError naming the field)


def check_int(options: Any, name: str, low: int | None = None, high: int | None = None) -> None:
    value = getattr(options, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name}: must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name}: must be <= {high}, got {value!r}")


def check_float(
    options: Any, name: str, *, positive: bool = False, low: float | None = None,
    high: float | None = None, open_low: bool = False, open_high: bool = False,
) -> None:
    """Finite number (ints accepted and stored as float); optional bounds."""
    value = getattr(options, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    value = float(value)
    object.__setattr__(options, name, value)
    if positive and not value > 0:
        raise ValueError(f"{name}: must be > 0, got {value!r}")
    if low is not None and (value <= low if open_low else value < low):
        raise ValueError(f"{name}: must be {'>' if open_low else '>='} {low}, got {value!r}")
    if high is not None and (value >= high if open_high else value > high):
        raise ValueError(f"{name}: must be {'<' if open_high else '<='} {high}, got {value!r}")


def check_root(options: Any, name: str = "root") -> None:
    """A data directory: required (nothing is downloaded), stored as a string (``~`` expanded)."""
    value = getattr(options, name)
    if value is None or value == "":
        raise ValueError(
            f"{name}: required; pass the directory that holds the dataset files "
            "(nothing is downloaded at run time)"
        )
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name}: must be a path, got {value!r}")
    object.__setattr__(options, name, str(Path(value).expanduser()))


# ---------------------------------------------------------------- base classes


class FeatureDistribution:
    """A distribution over R^dim sampled on the fly: ``sample(n, generator) -> float32 (n, dim)``.

    Subclasses implement ``_sample(n, generator)``; randomness comes only from ``generator``.
    ``mean`` (dim,) and ``covariance`` (dim, dim) are float64 closed forms.
    """

    kind = "features"
    dim: int

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` i.i.d. draws, float32 (n, dim), on ``generator.device``."""
        if isinstance(n, bool):
            raise ValueError(f"n: must be an integer >= 1, got {n!r}")
        try:
            n = operator.index(n)
        except TypeError:
            raise ValueError(f"n: must be an integer >= 1, got {n!r}") from None
        if n < 1:
            raise ValueError(f"n: must be an integer >= 1, got {n!r}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: must be a torch.Generator, got {type(generator).__name__}")
        out = self._sample(n, generator)
        assert out.shape == (n, self.dim) and out.dtype == torch.float32
        return out

    def _sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    @property
    def mean(self) -> Tensor:
        raise NotImplementedError

    @property
    def covariance(self) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"  # type: ignore[attr-defined]


class ImageDataset:
    """Images as float32 (N, C, H, W) in [0, 1]: ``train``, ``test``; labels long (N,).

    ``channels`` = C, ``size`` = H = W. Labels are the class (digits, CIFAR-10, SVHN) or the source
    image index (image patches).
    """

    kind = "images"
    train: Tensor
    test: Tensor
    train_labels: Tensor
    test_labels: Tensor

    def _set(self, train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor) -> None:
        for x, y in ((train, train_labels), (test, test_labels)):
            assert x.dtype == torch.float32 and x.ndim == 4 and x.shape[2] == x.shape[3]
            assert y.dtype == torch.long and y.shape == x.shape[:1]
        assert train.shape[1:] == test.shape[1:]
        self.train, self.train_labels = train.contiguous(), train_labels
        self.test, self.test_labels = test.contiguous(), test_labels

    def _set_uint8(self, train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
                   test_labels: np.ndarray) -> None:
        """``_set`` from uint8 (N, C, H, W) images (scaled by 1/255) and integer label arrays."""
        self._set(
            torch.from_numpy(train).to(torch.float32) / 255.0, torch.from_numpy(train_labels),
            torch.from_numpy(test).to(torch.float32) / 255.0, torch.from_numpy(test_labels),
        )

    @property
    def channels(self) -> int:
        return int(self.train.shape[1])

    @property
    def size(self) -> int:
        return int(self.train.shape[2])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(train={tuple(self.train.shape)}, "
            f"test={tuple(self.test.shape)}, {self.options})"  # type: ignore[attr-defined]
        )


def split(n: int, test_fraction: float, split_seed: int) -> tuple[Tensor, Tensor]:
    """Deterministic random split of ``range(n)``: (train indices, test indices), each sorted.

    n_test = round(n * test_fraction), clamped to [1, n - 1].
    """
    if n < 2:
        raise ValueError(f"need at least 2 items to split, got {n}")
    n_test = min(max(round(n * test_fraction), 1), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    return perm[n_test:].sort().values, perm[:n_test].sort().values


# ---------------------------------------------------------------- verified files


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def verify(data: bytes, expected: str, what: str) -> bytes:
    """Return ``data`` if its MD5 is ``expected``; else raise :class:`ChecksumError`.

    The bytes are hashed and then parsed from memory, so what is parsed is what was checked.
    """
    actual = md5_hex(data)
    if actual != expected.lower():
        raise ChecksumError(
            f"{what}: MD5 mismatch: expected {expected.lower()}, got {actual}; the file is corrupt, "
            "truncated or not the official release: download it again"
        )
    return data


def read_verified(path: Path, checksums: Mapping[str, str]) -> bytes:
    """Read ``path`` whole and verify it against ``checksums[path.name]``."""
    return verify(path.read_bytes(), checksums[path.name], str(path))
