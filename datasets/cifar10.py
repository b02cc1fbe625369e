"""CIFAR-10 read from the official "CIFAR-10 python version" files (no download, no torchvision).

Source: Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009;
https://www.cs.toronto.edu/~kriz/cifar.html. 50,000 train + 10,000 test RGB 32x32 images,
10 classes; the official split is used as is (train = data_batch_1..5 in order, test = test_batch),
except that a seeded ``validation_fraction`` of the training images (default 0.1) is held out of
``train`` as ``validation``.

Layout under ``root``, either of:
- ``cifar-10-batches-py/`` holding data_batch_1 .. data_batch_5 and test_batch (the extracted archive);
- ``cifar-10-python.tar.gz`` (the archive itself; read in memory, never extracted).
Every file (the archive and each batch) is checked against its official MD5 (the values
torchvision lists) before it is parsed; batches are unpickled only after that check
(``encoding="bytes"``). A batch is a dict: b"data" uint8 (n, 3072), each row the R, G, B planes
of 1024 pixels in row-major order, so a row reshapes to (3, 32, 32) = CHW; b"labels" n ints.
Pixels are divided by 255.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ._common import (
    DatasetNotFoundError, ImageDataset, check_fractions, check_int, check_root, read_verified, verify,
)
from ._registry import register
from .check import DatasetCheck, check_files

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
TEST_FILES = ("test_batch",)

ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"

# Official MD5s (as listed by torchvision/datasets/cifar.py).
MD5: Mapping[str, str] = MappingProxyType({
    ARCHIVE: ARCHIVE_MD5,
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
})


def _where_to_get(root: Path) -> str:
    return (
        f"Download the CIFAR-10 python version from {URL} (MD5 {ARCHIVE_MD5}; page {PAGE}) and put "
        f"the archive in {root}, or extract it there so that {root / FOLDER} holds "
        f"{', '.join(TRAIN_FILES + TEST_FILES)}."
    )


def _parse_batch(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    batch = pickle.loads(data, encoding="bytes")  # only ever called on MD5-verified bytes
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{what}: not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    images, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072 or len(labels) != len(images):
        raise ValueError(f"{what}: b'data' must be uint8 (n, 3072) with n labels, got {images.dtype} {images.shape}")
    return images.reshape(-1, 3, 32, 32), labels


def read_cifar10(
    root: str | Path, checksums: Mapping[str, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images uint8 (N, 3, 32, 32), train labels, test images, test labels) from ``root``.

    ``checksums`` maps each file name (the archive's and each batch's) to its MD5; the dataset
    class always passes the official :data:`MD5`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"CIFAR-10: root directory {root} does not exist. {_where_to_get(root)}")
    names = TRAIN_FILES + TEST_FILES
    folder = root / FOLDER
    missing = [name for name in names if not (folder / name).is_file()]
    raw: dict[str, tuple[bytes, str]] = {}  # name -> (verified bytes, where from)
    if not missing:
        for name in names:
            raw[name] = read_verified(folder / name, checksums), str(folder / name)
    elif (root / ARCHIVE).is_file():
        archive = read_verified(root / ARCHIVE, checksums)
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for name in names:
                member = f"{FOLDER}/{name}"
                try:
                    handle = tar.extractfile(member)
                except KeyError:
                    handle = None
                what = f"{root / ARCHIVE}:{member}"
                if handle is None:
                    raise DatasetNotFoundError(f"CIFAR-10: {what} is missing from the archive. {_where_to_get(root)}")
                raw[name] = verify(handle.read(), checksums[name], what), what
    else:
        raise DatasetNotFoundError(
            f"CIFAR-10: missing {folder / missing[0]}"
            + (f" (and {len(missing) - 1} more: {', '.join(missing[1:])})" if len(missing) > 1 else "")
            + f", and no archive {root / ARCHIVE}. {_where_to_get(root)}"
        )
    # every file has passed its checksum before the first one is unpickled
    parsed = {name: _parse_batch(data, what) for name, (data, what) in raw.items()}

    def stack(group: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        return (np.concatenate([parsed[n][0] for n in group]), np.concatenate([parsed[n][1] for n in group]))

    return *stack(TRAIN_FILES), *stack(TEST_FILES)


@dataclass(frozen=True)
class Cifar10Options:
    root: str | None = None  # directory holding cifar-10-batches-py/ or cifar-10-python.tar.gz
    validation_fraction: float = 0.1  # share of the official training set held out as validation
    split_seed: int = 0  # which training images are held out

    def __post_init__(self) -> None:
        check_root(self)
        check_fractions(self, test=False)
        check_int(self, "split_seed", low=0)


@register("cifar10")
class Cifar10(ImageDataset):
    Options = Cifar10Options
    source = f"CIFAR-10, Krizhevsky 2009, {PAGE}"

    @classmethod
    def check_files(cls, root: str | Path) -> DatasetCheck:
        """Presence and MD5 of what :func:`read_cifar10` would read under ``root`` (for ``check_data``):
        the extracted batches when all six are there, else the archive."""
        root, names = Path(root), TRAIN_FILES + TEST_FILES
        if all((root / FOLDER / name).is_file() for name in names):
            files = check_files({root / FOLDER / name: MD5[name] for name in names})
        else:
            files = check_files({root / ARCHIVE: MD5[ARCHIVE]})
        ok = all(file.status == "ok" for file in files)
        return DatasetCheck("cifar10", ok, files, "" if ok else _where_to_get(root))

    def __init__(self, options: Cifar10Options) -> None:
        self.options = options
        train, train_labels, test, test_labels = read_cifar10(options.root, checksums=MD5)
        self._set_uint8(
            train, train_labels, test, test_labels, options.validation_fraction, options.split_seed
        )
