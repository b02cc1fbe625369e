"""Typed run configuration: the one shape every experiment, sweep trial and report row shares.

Data flow (one way): ``params.yaml`` -> :class:`RunConfig` -> ``datasets`` -> ``methods`` ->
``benchmark.experiments.train`` -> MLflow -> ``benchmark.report.build``. A field name here is the same spelling as
its params.yaml key and its MLflow param.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import registry

EXPERIMENTS = ("fit", "vqvae", "transplant")  # each is a module benchmark/experiments/<name>.py
# The experiments that learn the features they quantize (an encoder trains with the quantizer). In
# the others (fit: fixed features; transplant: a frozen encoder) a quantizer without a learnable
# codebook has nothing to train.
LEARNED_FEATURES = ("vqvae",)
OPTIMIZERS = ("sgd", "adam")
RANDOM_STREAMS = ("per_purpose", "single")
OPTION_FIELDS = ("dataset_options", "method_options", "model_options")  # mappings of registry options
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")  # what RunConfig.device accepts


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field (dotted path)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run (one trial of a sweep).

    ``fit``: the quantizer is fitted directly to a feature distribution (no encoder); each step
    draws ``batch_size`` fresh features, evaluation uses ``eval_size`` held-out features.
    ``vqvae``: a small conv encoder/decoder around the quantizer trained on an image dataset;
    ``batch_size`` counts images, ``dim`` is the latent channel count.
    ``transplant``: the quantizer fitted to the latents of a frozen autoencoder trained once per
    image dataset and seed (``batch_size`` images' latent grids per step), decoded by its decoder.
    """

    experiment: str = "fit"
    dataset: str = "gaussian"
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    method: str = "vanilla"
    codebook_size: int = 1024
    dim: int = 8
    method_options: Mapping[str, Any] = field(default_factory=dict)
    model_options: Mapping[str, Any] = field(default_factory=dict)
    steps: int = 500
    batch_size: int = 4096
    eval_size: int = 65536
    optimizer: str = "sgd"
    model_lr: float = 1e-3  # encoder/decoder learning rate (vqvae only)
    codebook_lr: float = 1.0  # learning rate of the quantizer's parameters
    momentum: float = 0.9  # SGD momentum (sgd only)
    adam_beta1: float = 0.9  # Adam's first-moment decay (adam only)
    adam_beta2: float = 0.999  # Adam's second-moment decay (adam only)
    grad_clip: float = 0.0  # global grad-norm clip, 0 = off (all parameters, or the model's alone, see below)
    codebook_grad_clip: float = 0.0  # > 0: the quantizer's grad norm is clipped on its own at this value
    device: str = "auto"  # "auto" picks CUDA when present, else CPU
    seed: int = 0
    log_every: int = 50
    kmeans_reference: bool = True  # fit the k-means reference (E / k-means); false at K where it is infeasible
    # "per_purpose": one generator per use (initialisation, training batches, evaluation, ...);
    # "single" (fit only): one generator in program order, as a script seeding the global RNG (fit.py)
    random_stream: str = "per_purpose"
    skip_draws_after_init: int = 0  # "single": normal draws discarded after the initialisation (fit.py)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ConfigError(f"{name}: {why}")

        if self.experiment not in EXPERIMENTS:
            bad("experiment", f"unknown experiment {self.experiment!r}; valid: {list(EXPERIMENTS)}")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"unknown optimizer {self.optimizer!r}; valid: {list(OPTIMIZERS)}")
        for name in ("codebook_size", "dim", "steps", "batch_size", "eval_size", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad(name, f"must be an integer >= 1, got {value!r}")
        for name in ("model_lr", "codebook_lr", "grad_clip", "codebook_grad_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
                    or not math.isfinite(value):
                bad(name, f"must be a finite number >= 0, got {value!r}")
        for name in ("momentum", "adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                bad(name, f"must be a number in [0, 1), got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            bad("seed", f"must be an integer, got {self.seed!r}")
        if not isinstance(self.kmeans_reference, bool):
            bad("kmeans_reference", f"must be true or false, got {self.kmeans_reference!r}")
        if self.random_stream not in RANDOM_STREAMS:
            bad("random_stream", f"unknown random stream {self.random_stream!r}; valid: {list(RANDOM_STREAMS)}")
        if self.random_stream == "single" and self.experiment != "fit":
            bad("random_stream", f"'single' is only defined for the fit experiment, not {self.experiment!r}")
        skip = self.skip_draws_after_init
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            bad("skip_draws_after_init", f"must be an integer >= 0, got {skip!r}")
        if skip and self.random_stream != "single":
            bad("skip_draws_after_init", "only used with random_stream: single")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            bad("device", f"must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")
        for name in OPTION_FIELDS:
            if not isinstance(getattr(self, name), Mapping):
                bad(name, f"must be a mapping, got {type(getattr(self, name)).__name__}")
        if self.experiment == "fit":
            if self.eval_size < self.codebook_size:
                bad("eval_size", f"must be >= codebook_size = {self.codebook_size} for the fit experiment "
                                 f"(fewer evaluation points than codes caps utilization), got {self.eval_size}")
            if self.model_options:
                bad("model_options", f"only used by the image experiments; leave it empty for fit, "
                                     f"got {dict(self.model_options)!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "") -> "RunConfig":
        """Build from a (params.yaml) mapping; unknown keys raise ConfigError naming them."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where or 'run'}: must be a mapping, got {type(values).__name__}")
        try:
            return registry.make_options(cls, values, where=where)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (options as dicts), suitable for YAML/JSON."""
        out = dataclasses.asdict(self)
        for name in OPTION_FIELDS:
            out[name] = dict(getattr(self, name))
        return out

    def flat_params(self) -> dict[str, Any]:
        """Flat ``{key: value}`` with options as dotted keys (``method_options.gamma``): MLflow params."""
        flat: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                for sub, subvalue in sorted(value.items()):
                    flat[f"{key}.{sub}"] = subvalue
            else:
                flat[key] = value
        return flat

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))  # params.yaml keys of one run
