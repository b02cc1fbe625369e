"""vqbench datasets: feature distributions (kind "features") and image datasets (kind "images").

    datasets.available() -> list[str]
    datasets.load(name, **options)      # unknown name/option -> ValueError listing the valid ones
    datasets.get(name) -> DatasetSpec   # frozen: name, cls, options (dataclass type), kind, source
    @datasets.register("name")          # class decorator (duplicate name -> ValueError)
    entry-point group "vqbench.datasets" # plugins; one that fails is skipped with a PluginWarning

Features: ``.kind == "features"``, ``.dim``, ``.sample(n, generator) -> float32 (n, dim)``,
``.mean`` / ``.covariance`` (float64 closed forms).
Features also take ``sample(n, generator, split)``, split in ``datasets.SPLITS`` ("train",
"validation", "test"): a fresh draw for synthetic data, disjoint rows for ``features_file``.
Images: ``.kind == "images"``, ``.train`` / ``.validation`` / ``.test`` float32 (N, C, H, W) in
[0, 1] (validation held out of the training images), ``.train_labels`` / ``.validation_labels`` /
``.test_labels`` long (N,), ``.channels``, ``.size`` (H == W).

``datasets.check_data(root)`` reports which official dataset files (CIFAR-10, SVHN) under ``root``
are present and intact, and where to get the others.

This is the repository's top-level ``datasets`` package (not Hugging Face ``datasets``, which
must not be installed beside it).
"""
from __future__ import annotations

from ._common import (
    SPLITS, ChecksumError, DatasetNotFoundError, FeatureDistribution, ImageDataset, sha256_file,
)
from ._registry import (
    DATASETS, ENTRY_POINT_GROUP, KINDS, DatasetSpec, PluginError, PluginWarning, available, get, load,
    make_options, plugin_errors, register, reload_entry_points, unregister,
)
from .check import DataReport, DatasetCheck, FileCheck, check_data

# Each module registers its dataset on import; the order here is the registration order.
from . import gaussian, uniform, gaussian_mixture, disk, low_rank_gaussian, features_file  # noqa: E402,F401  isort:skip
from . import digits, image_patches, cifar10, svhn, image_folder  # noqa: E402,F401  isort:skip

__all__ = [
    "ChecksumError", "DATASETS", "DataReport", "DatasetCheck", "DatasetNotFoundError", "DatasetSpec",
    "ENTRY_POINT_GROUP", "FeatureDistribution", "FileCheck", "ImageDataset", "KINDS", "PluginError",
    "PluginWarning", "SPLITS", "available", "check_data", "get", "load", "make_options", "plugin_errors",
    "register", "reload_entry_points", "sha256_file", "unregister",
]
