"""``check_data(root)``: are the files of every dataset that reads official local files present and intact?

A dataset class that reads official files from a ``root`` folder (CIFAR-10, SVHN) declares a
classmethod ``check_files(root) -> DatasetCheck``; ``check_data`` calls it for every registered
dataset that has one, in registration order. Each file is hashed (MD5, streamed in chunks,
against the official value) exactly where the loader would read it, so a report that says ``ok``
means the loader will find and accept the files. Nothing is downloaded: a dataset that is not
ready says where to get its files. Datasets that read a user's own files (``features_file``,
``image_folder``) have no official files to check; pin them by SHA-256 instead
(``sha256_file``, ``ImageFolder.manifest()``).

    report = datasets.check_data("/data")
    report.ok                 # every checked dataset is ready
    print(report)             # one block per dataset: status, each file, where to get what is missing
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ._common import file_digest
from ._registry import DATASETS

STATUSES = ("ok", "missing", "corrupt")


@dataclass(frozen=True)
class FileCheck:
    """One file: ``status`` "ok" (MD5 matches), "missing" or "corrupt" (MD5 differs: ``actual_md5``)."""

    path: str
    status: str
    expected_md5: str
    actual_md5: str | None = None

    def __str__(self) -> str:
        if self.status == "corrupt":
            return f"corrupt  {self.path} (MD5 {self.actual_md5}, expected {self.expected_md5})"
        return f"{self.status:<8} {self.path}"


@dataclass(frozen=True)
class DatasetCheck:
    """One dataset: ready (``ok``) or not; the files looked at; ``how_to_get`` when not ready."""

    dataset: str
    ok: bool
    files: tuple[FileCheck, ...]
    how_to_get: str = ""

    def __str__(self) -> str:
        lines = [f"{self.dataset}: {'ok' if self.ok else 'NOT READY'}"]
        lines += [f"  {file}" for file in self.files]
        if not self.ok and self.how_to_get:
            lines.append(f"  how to get it: {self.how_to_get}")
        return "\n".join(lines)


@dataclass(frozen=True)
class DataReport:
    """``check_data``'s answer: one :class:`DatasetCheck` per dataset with official local files."""

    root: str
    datasets: tuple[DatasetCheck, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.datasets)

    @property
    def not_ready(self) -> list[str]:
        return [check.dataset for check in self.datasets if not check.ok]

    def __str__(self) -> str:
        ready = "all datasets ready" if self.ok else f"not ready: {', '.join(self.not_ready)}"
        return "\n".join([f"data in {self.root}: {ready}", *map(str, self.datasets)])


def check_file(path: Path, expected_md5: str) -> FileCheck:
    """Presence and MD5 (streamed) of one file."""
    if not path.is_file():
        return FileCheck(str(path), "missing", expected_md5)
    actual = file_digest(path, "md5")
    return FileCheck(str(path), "ok" if actual == expected_md5.lower() else "corrupt", expected_md5, actual)


def check_files(paths: Mapping[Path, str]) -> tuple[FileCheck, ...]:
    """:func:`check_file` for every (path, expected MD5)."""
    return tuple(check_file(path, md5) for path, md5 in paths.items())


def check_data(root: str | os.PathLike) -> DataReport:
    """Check the files of every registered dataset that reads official files from ``root``."""
    root = Path(root).expanduser()
    checks = tuple(
        spec.cls.check_files(root) for spec in map(DATASETS.get, DATASETS.available()) if hasattr(spec.cls, "check_files")
    )
    return DataReport(str(root), checks)
