"""SVHN (Street View House Numbers), cropped-digits format, read from the official .mat files.

Source: Netzer et al., "Reading Digits in Natural Images with Unsupervised Feature Learning",
NIPS workshop 2011; http://ufldl.stanford.edu/housenumbers/. 73,257 train + 26,032 test RGB
32x32 images (the "extra" set is not used); the official split is used as is, except that a
seeded ``validation_fraction`` of the training images (default 0.1) is held out of ``train`` as
``validation``.

Layout: ``root/train_32x32.mat`` and ``root/test_32x32.mat`` (MATLAB v5, read with
scipy.io.loadmat from memory after the official MD5, as torchvision lists it, has been checked).
Each holds X uint8 (32, 32, 3, N) = (H, W, C, N), transposed here to (N, C, H, W), and y (N, 1)
with labels 1..10 where 10 means the digit 0, mapped here to 0..9 (y mod 10). Pixels / 255.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ._common import (
    DatasetNotFoundError, ImageDataset, check_fractions, check_int, check_root, read_verified,
)
from ._registry import register
from .check import DatasetCheck, check_files

PAGE = "http://ufldl.stanford.edu/housenumbers/"
TRAIN_FILE = "train_32x32.mat"
TEST_FILE = "test_32x32.mat"

# Official MD5s (as listed by torchvision/datasets/svhn.py).
OFFICIAL_MD5: Mapping[str, str] = MappingProxyType({
    TRAIN_FILE: "e26dedcc434d2e4c54c9b2d4a06d8373",
    TEST_FILE: "eb5a983be6a315427106f1b164d9cef3",
})
MD5 = OFFICIAL_MD5  # the table the dataset class verifies against


def _parse_mat(data: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    mat = loadmat(io.BytesIO(data))
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: not an SVHN cropped-digits file (expected variables X and y)")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise ValueError(f"{path}: X must be uint8 (32, 32, 3, N) with N labels, got {x.dtype} {x.shape}")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise ValueError(f"{path}: labels must lie in 1..10, got {y.min()}..{y.max()}")
    # (H, W, C, N) -> (N, C, H, W); label 10 is the digit 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), (y % 10).astype(np.int64)


def read_svhn(
    root: str | Path, checksums: Mapping[str, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images uint8 (N, 3, 32, 32), train labels 0..9, test images, test labels) from ``root``.

    ``checksums`` maps each file name to its MD5; the dataset class always passes the official :data:`MD5`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"SVHN: root directory {root} does not exist. Create it and put {TRAIN_FILE} and "
            f"{TEST_FILE} there, from {PAGE}{TRAIN_FILE} and {PAGE}{TEST_FILE} (page {PAGE})."
        )
    paths = (root / TRAIN_FILE, root / TEST_FILE)
    for path in paths:
        if not path.is_file():
            raise DatasetNotFoundError(
                f"SVHN: missing {path}. Download {PAGE}{path.name} (MD5 {OFFICIAL_MD5[path.name]}; "
                f"format 2, cropped digits, page {PAGE}) and put it in {root}; both {TRAIN_FILE} "
                f"and {TEST_FILE} are needed."
            )
    raw = [read_verified(path, checksums) for path in paths]  # both verified before either is parsed
    (train, train_labels), (test, test_labels) = (_parse_mat(data, path) for data, path in zip(raw, paths))
    return train, train_labels, test, test_labels


@dataclass(frozen=True)
class SvhnOptions:
    root: str | None = None  # directory holding train_32x32.mat and test_32x32.mat
    validation_fraction: float = 0.1  # share of the official training set held out as validation
    split_seed: int = 0  # which training images are held out

    def __post_init__(self) -> None:
        check_root(self)
        check_fractions(self, test=False)
        check_int(self, "split_seed", low=0)


@register("svhn")
class Svhn(ImageDataset):
    Options = SvhnOptions
    source = f"SVHN cropped digits, Netzer et al. 2011, {PAGE}"

    @classmethod
    def check_files(cls, root: str | Path) -> DatasetCheck:
        """Presence and MD5 of ``root/train_32x32.mat`` and ``root/test_32x32.mat`` (for ``check_data``)."""
        root = Path(root)
        files = check_files({root / name: MD5[name] for name in (TRAIN_FILE, TEST_FILE)})
        ok = all(file.status == "ok" for file in files)
        how = " ".join(
            f"Download {PAGE}{name} (MD5 {OFFICIAL_MD5[name]}) into {root}." for name in (TRAIN_FILE, TEST_FILE)
        ) + f" Format 2, cropped digits; page {PAGE}."
        return DatasetCheck("svhn", ok, files, "" if ok else how)

    def __init__(self, options: SvhnOptions) -> None:
        self.options = options
        train, train_labels, test, test_labels = read_svhn(options.root, checksums=MD5)
        self._set_uint8(
            train, train_labels, test, test_labels, options.validation_fraction, options.split_seed
        )
