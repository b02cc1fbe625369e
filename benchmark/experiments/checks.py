"""Checks of a :class:`~benchmark.experiments.config.RunConfig` that need the registries.

:func:`check_against_registries` runs before anything trains: in ``run_experiment`` and, for every
trial, when a sweep spec is parsed (``benchmark.pipeline.spec``), so a bad setting stops a sweep
before Ray or MLflow start. Its errors are :class:`ConfigError` naming the RunConfig key, which
the spec parser turns into the dotted params.yaml key that set it.
"""
from __future__ import annotations

from typing import Any

import registry
from benchmark.experiments.config import ConfigError, RunConfig

_IMAGE_COUNTS: dict[tuple[str, str], int] = {}  # (dataset, repr(options)) -> training images
_BUILT: set[tuple[Any, ...]] = set()  # (method, dim, K, options) already built once
IMAGE_EXPERIMENTS = ("vqvae", "transplant")  # experiments on image datasets (model_options apply)


def check_against_registries(config: RunConfig) -> None:
    """What only the registries can tell, checked before anything trains; ConfigError naming the key.

    - the dataset's ``kind`` fits the experiment (``fit``: features, ``vqvae``, ``transplant``: images);
    - ``model_options`` are options of the image model (:class:`benchmark.experiments.models.ModelOptions`; the transplant-only
      ones only for ``transplant``);
    - ``dataset_options.dim``, when given, equals ``dim``;
    - the method accepts ``codebook_size`` and ``dim`` with its options (a CPU instance is built
      once per distinct combination: FSQ's levels must multiply to K, LFQ/BSQ need K = 2^d, ...);
    - ``vqvae``, ``transplant``: ``batch_size`` is at most the number of training images. The dataset
      is loaded once per distinct option set and process, unless it reads local files (it has a ``root`` option:
      CIFAR-10, SVHN, image folders), which the trial then checks when it loads them
      (``python -m benchmark prepare --check-data ROOT`` checks the files beforehand).

    Names and options of methods and datasets are the registries' own ValueErrors (``make_options``).
    """
    import datasets
    import methods

    try:
        dataset_spec = datasets.get(config.dataset)
        method_spec = methods.get(config.method)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _check_dataset_kind(config, dataset_spec)
    _check_options(config, dataset_spec, method_spec)
    _check_method_builds(config, method_spec)
    if config.experiment in IMAGE_EXPERIMENTS and "root" not in dataset_spec.option_names():
        _check_image_count(config)


def _check_dataset_kind(config: RunConfig, dataset_spec: Any) -> None:
    """The dataset's kind fits the experiment."""
    needs = {"fit": ("features", "a feature distribution"), "vqvae": ("images", "an image dataset"),
             "transplant": ("images", "an image dataset")}
    wanted, described = needs[config.experiment]
    if dataset_spec.kind != wanted:
        other = next(name for name, (kind, _) in needs.items() if kind != wanted)
        raise ConfigError(f"dataset: the {config.experiment} experiment needs {described}, {config.dataset!r} "
                          f"is {dataset_spec.kind!r} (use experiment {other!r})")


def _check_options(config: RunConfig, dataset_spec: Any, method_spec: Any) -> None:
    """``dataset_options.dim``, the dataset's and method's options, and the image model's options."""
    if "dim" in config.dataset_options and config.dataset_options["dim"] != config.dim:
        raise ConfigError(f"dataset_options.dim: {config.dataset_options['dim']!r} differs from dim = {config.dim}")
    try:
        registry.make_options(dataset_spec, config.dataset_options, where="dataset_options")
        registry.make_options(method_spec, config.method_options, where="method_options")
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None
    if config.experiment in IMAGE_EXPERIMENTS:
        from benchmark.experiments.models import ModelOptions  # imports torch: only when needed

        options = ModelOptions.from_mapping(config.model_options)  # ConfigError naming model_options.<key>
        options.check_experiment(config.experiment, config.model_options)


def _check_method_builds(config: RunConfig, method_spec: Any) -> None:
    """The method builds at this (K, d) with its options (once per distinct combination)."""
    import methods

    import torch

    key = (config.method, config.dim, config.codebook_size, repr(sorted(config.method_options.items())))
    if key not in _BUILT:
        try:
            with torch.random.fork_rng(devices=[]):  # a method's init may draw from the global RNG: not the caller's
                methods.build(config.method, dim=config.dim, codebook_size=config.codebook_size,
                              **dict(config.method_options))
        except (ValueError, TypeError) as err:
            field_name, sep, why = str(err).partition(": ")
            if sep and field_name in method_spec.option_names():
                raise ConfigError(f"method_options.{field_name}: {why} (method {config.method!r}, "
                                  f"codebook_size = {config.codebook_size}, dim = {config.dim})") from None
            if sep and field_name in ("codebook_size", "dim"):
                raise ConfigError(f"{field_name}: {why} (method {config.method!r})") from None
            raise ConfigError(f"method: {config.method!r} rejects codebook_size = {config.codebook_size}, "
                              f"dim = {config.dim}: {err}") from None
        _BUILT.add(key)


def _check_image_count(config: RunConfig) -> None:
    """``batch_size`` is at most the number of training images (the dataset loaded once per option set)."""
    import datasets

    images_key = (config.dataset, repr(sorted(config.dataset_options.items())))
    if images_key not in _IMAGE_COUNTS:
        try:
            dataset = datasets.load(config.dataset, **dict(config.dataset_options))
        except (ValueError, OSError) as err:
            raise ConfigError(f"dataset_options: dataset {config.dataset!r} cannot be loaded: {err}") from None
        _IMAGE_COUNTS[images_key] = int(dataset.train.shape[0])
    n_train = _IMAGE_COUNTS[images_key]
    if config.batch_size > n_train:
        raise ConfigError(f"batch_size: {config.batch_size} exceeds the {n_train} training images of "
                          f"{config.dataset!r}")
