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


def check_fractions(options: Any, test: bool = True) -> None:
    """``validation_fraction`` in [0, 1) and, with ``test``, ``test_fraction`` in (0, 1), summing to < 1."""
    check_float(options, "validation_fraction", low=0.0, high=1.0, open_high=True)
    if not test:
        return
    check_float(options, "test_fraction", low=0.0, high=1.0, open_low=True, open_high=True)
    if options.test_fraction + options.validation_fraction >= 1:
        raise ValueError(
            f"validation_fraction: test_fraction + validation_fraction must be < 1 (training needs "
            f"the rest), got {options.test_fraction} + {options.validation_fraction}"
        )


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


SPLITS = ("train", "validation", "test")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split: must be one of {list(SPLITS)}, got {split!r}")
    return split


class FeatureDistribution:
    """A distribution over R^dim sampled on the fly: ``sample(n, generator, split) -> float32 (n, dim)``.

    Subclasses implement ``_sample(n, generator)``; randomness comes only from ``generator``.
    ``mean`` (dim,) and ``covariance`` (dim, dim) are float64 (closed forms for synthetic data).

    ``split`` (``"train"``, ``"validation"`` or ``"test"``): for a synthetic distribution every
    split is the same distribution and each call is a fresh independent draw, so the argument only
    has to be valid. A dataset backed by a finite set of rows (``features_file``) overrides
    ``_sample_split`` and draws from disjoint row sets, so evaluation never sees training rows.
    """

    kind = "features"
    dim: int

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> Tensor:
        """``n`` i.i.d. draws from ``split``, float32 (n, dim), on ``generator.device``."""
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
        out = self._sample_split(n, generator, check_split(split))
        assert out.shape == (n, self.dim) and out.dtype == torch.float32
        return out

    def _sample_split(self, n: int, generator: torch.Generator, split: str) -> Tensor:
        # synthetic data: every split is a fresh independent draw of the same distribution
        return self._sample(n, generator)

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
    """Images as float32 (N, C, H, W) in [0, 1]: ``train``, ``validation``, ``test``; labels long (N,).

    The three sets are disjoint. ``validation`` is held out of the training images (a seeded
    share, option ``validation_fraction``, default 0.1; ``split_seed`` fixes which), so ``train``
    is the training images *minus* the validation images: fit on ``train``, select models on
    ``validation``, report on ``test``. ``validation_fraction = 0`` gives an empty validation set
    (0, C, H, W) and the whole training set as ``train``.
    ``channels`` = C, ``size`` = H = W. Labels are the class (digits, CIFAR-10, SVHN, image folder
    subfolders) or the source image index (image patches).
    """

    kind = "images"
    train: Tensor
    validation: Tensor
    test: Tensor
    train_labels: Tensor
    validation_labels: Tensor
    test_labels: Tensor

    def _set(self, train: Tensor, train_labels: Tensor, validation: Tensor, validation_labels: Tensor,
             test: Tensor, test_labels: Tensor) -> None:
        for x, y in ((train, train_labels), (validation, validation_labels), (test, test_labels)):
            assert x.dtype == torch.float32 and x.ndim == 4 and x.shape[2] == x.shape[3]
            assert y.dtype == torch.long and y.shape == x.shape[:1]
        assert train.shape[1:] == test.shape[1:] == validation.shape[1:]
        self.train, self.train_labels = train.contiguous(), train_labels
        self.validation, self.validation_labels = validation.contiguous(), validation_labels
        self.test, self.test_labels = test.contiguous(), test_labels

    def _set_holding_out(self, train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor,
                         validation_fraction: float, split_seed: int) -> None:
        """``_set`` with a seeded ``validation_fraction`` of the given training images held out."""
        keep, held, _ = split_indices(len(train), split_seed, validation_fraction=validation_fraction)
        self._set(train[keep], train_labels[keep], train[held], train_labels[held], test, test_labels)

    def _set_uint8(self, train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
                   test_labels: np.ndarray, validation_fraction: float, split_seed: int) -> None:
        """``_set_holding_out`` from uint8 (N, C, H, W) images (scaled by 1/255) and integer labels."""
        self._set_holding_out(
            torch.from_numpy(train).to(torch.float32) / 255.0, torch.from_numpy(train_labels),
            torch.from_numpy(test).to(torch.float32) / 255.0, torch.from_numpy(test_labels),
            validation_fraction, split_seed,
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


def split_sizes(n: int, test_fraction: float = 0.0, validation_fraction: float = 0.0,
                what: str = "items") -> tuple[int, int, int]:
    """(n_train, n_validation, n_test) for ``n`` items.

    A set with a fraction > 0 gets round(n * fraction) items and at least 1; the training set must
    keep at least 1, else ValueError (naming ``what``).
    """
    n_test = max(round(n * test_fraction), 1) if test_fraction > 0 else 0
    n_validation = max(round(n * validation_fraction), 1) if validation_fraction > 0 else 0
    n_train = n - n_test - n_validation
    if n_train < 1:
        raise ValueError(
            f"{what}: too few for the split: {n} in all, {n_test} for test (test_fraction = "
            f"{test_fraction}) and {n_validation} for validation (validation_fraction = "
            f"{validation_fraction}) leave {max(n_train, 0)} for training (need >= 1)"
        )
    return n_train, n_validation, n_test


def split_permutation(n: int, split_seed: int) -> Tensor:
    """The seeded permutation of ``range(n)`` every split is cut from (int32 where it fits)."""
    dtype = torch.int32 if n < 2**31 else torch.int64
    return torch.randperm(n, generator=torch.Generator().manual_seed(split_seed), dtype=dtype)


def split_indices(n: int, split_seed: int, test_fraction: float = 0.0, validation_fraction: float = 0.0,
                  what: str = "items") -> tuple[Tensor, Tensor, Tensor]:
    """Seeded split of ``range(n)`` without replacement: (train, validation, test) indices, each sorted.

    One permutation: test = its first n_test items, validation the next n_validation, train the
    rest (:func:`split_sizes`); so the test set of a seed does not depend on validation_fraction.
    """
    n_train, n_validation, n_test = split_sizes(n, test_fraction, validation_fraction, what)
    perm = split_permutation(n, split_seed).long()
    return (perm[n_test + n_validation:].sort().values, perm[n_test:n_test + n_validation].sort().values,
            perm[:n_test].sort().values)


# ---------------------------------------------------------------- verified files


CHUNK_BYTES = 1 << 22  # 4 MiB: files are hashed and scanned in pieces this size, never read whole


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, streamed in :data:`CHUNK_BYTES` chunks (constant memory)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such file")
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file (hex), streamed in chunks: the pin a manifest records for a user's data file."""
    return file_digest(path, "sha256")


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
