"""Experiments: one :class:`~benchmark.config.RunConfig` in, one flat result record out.

``run_experiment(config)`` dispatches on ``config.experiment``:

- ``fit``: the quantizer is fitted directly to a feature distribution (no encoder). Every step
  draws ``batch_size`` fresh features; the metrics are measured on ``eval_size`` held-out features
  from a separate random stream. This is the "atomic" experiment of Wasserstein VQ
  (arXiv 2506.15078): features N(mu * 1, I_d), codebook initialised by the method.
- ``vqvae``: a small conv encoder/decoder (:mod:`benchmark.models`) around the quantizer, trained
  on an image dataset with loss = reconstruction MSE + ``out.loss``; reconstruction MSE, PSNR and
  SSIM (scikit-image) on the test split, and the quantizer metrics on the test-set latents.
  Batches are drawn without replacement (one shuffled epoch after another, the last partial
  batch dropped); ``eval_size`` is not used (the whole test split is evaluated).

Record (floats): quantization_error, utilization, perplexity, dead_codes, gaussian_w2,
kmeans_error, error_vs_kmeans, final_loss, train_seconds; vqvae adds recon_mse, psnr, ssim.
``final_loss`` is the mean training loss over the last ``min(log_every, steps)`` steps.
The k-means reference trains on a separate sample (``fit``: fresh features, ``vqvae``: training-set
latents) of up to :func:`benchmark.metrics.kmeans_train_size` points (256 per code, capped).

Optimizers: the quantizer's trainable parameters form their own group at ``codebook_lr``; the
encoder/decoder use ``lr``. ``sgd`` is SGD with ``momentum``; ``adam`` is Adam with
betas = (``momentum``, 0.999) (torch's default beta2; SimVQ's 0.9 is not used). Parameters that do
not require grad (EMA codebooks, frozen bases) are left out; a method with no trainable parameters
trains without an optimizer. ``grad_clip > 0`` clips the global gradient norm over all groups.

Randomness: every random draw comes from a ``torch.Generator`` seeded from ``(seed, stream)``
(quantizer init, training batches, evaluation sample, k-means sample, image order). The
encoder/decoder initialisation and any global-RNG use inside a method run under
``torch.random.fork_rng`` seeded with ``seed``, so the caller's global RNG state is untouched and
a CPU run is deterministic for a fixed seed.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import metrics
from .config import ConfigError, RunConfig

OnStep = Callable[[int, dict[str, float]], None]

# Random streams derived from the run seed (see _generator).
_STREAM_INIT, _STREAM_TRAIN, _STREAM_EVAL, _STREAM_KMEANS, _STREAM_ORDER = 0, 1, 2, 3, 4
# Images per forward pass when evaluating a vqvae.
_EVAL_BATCH = 256

RESULT_KEYS = metrics.METRIC_KEYS + ("final_loss", "train_seconds")
VQVAE_KEYS = RESULT_KEYS + ("recon_mse", "psnr", "ssim")


class DivergedError(RuntimeError):
    """The training loss (or the codebook) became NaN/inf; the message names the step."""


# --------------------------------------------------------------------------- plumbing
def resolve_device(device: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; any other string is used as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"device: {err}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} requested but CUDA is not available")
    return resolved


def _generator(seed: int, stream: int, device: torch.device) -> torch.Generator:
    """A generator for one random stream of a run; streams of one seed are independent."""
    state = np.random.SeedSequence([seed % 2**64, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) % 2**63)


@contextlib.contextmanager
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG for module init inside a fork (restored on exit)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build_quantizer(config: RunConfig, device: torch.device) -> nn.Module:
    import methods

    quantizer = methods.build(
        config.method,
        dim=config.dim,
        codebook_size=config.codebook_size,
        generator=_generator(config.seed, _STREAM_INIT, torch.device("cpu")),
        **dict(config.method_options),
    )
    return quantizer.to(device)


def _make_optimizer(
    config: RunConfig, quantizer: nn.Module, model: nn.Module | None = None
) -> torch.optim.Optimizer | None:
    groups = []
    quantizer_params = [p for p in quantizer.parameters() if p.requires_grad]
    if quantizer_params:
        groups.append({"params": quantizer_params, "lr": config.codebook_lr})
    if model is not None:
        model_params = [p for p in model.parameters() if p.requires_grad]
        if model_params:
            groups.append({"params": model_params, "lr": config.lr})
    if not groups:
        return None
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.Adam(groups, lr=config.lr, betas=(config.momentum, 0.999))


class _Trainer:
    """The shared step: forward -> finite check -> backward -> clip -> step, plus logging."""

    def __init__(
        self,
        config: RunConfig,
        quantizer: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        on_step: OnStep | None,
        progress: bool,
    ) -> None:
        self.config = config
        self.quantizer = quantizer
        self.optimizer = optimizer
        self.on_step = on_step
        self.params = [p for group in (optimizer.param_groups if optimizer else []) for p in group["params"]]
        self.window = min(config.log_every, config.steps)
        self.recent: list[float] = []
        self.bar = tqdm(
            total=config.steps,
            disable=not progress,
            desc=f"{config.experiment} {config.method}",
            leave=False,
        )

    def step(self, step: int, loss: Tensor, out: Any) -> None:
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DivergedError(f"step {step}: training loss is {value} ({self.config.method})")
        if self.optimizer is not None and loss.requires_grad:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
            self.optimizer.step()
        self.recent.append(value)
        if len(self.recent) > self.window:
            self.recent.pop(0)
        self.bar.update(1)
        if step % self.config.log_every == 0 or step == self.config.steps:
            logged = {"loss": value}
            for name, component in out.losses.items():
                logged[name] = float(torch.as_tensor(component).detach())
            used = torch.unique(out.indices.detach()).numel()
            logged["batch_utilization"] = used / self.config.codebook_size
            self.bar.set_postfix(loss=f"{value:.4g}", refresh=False)
            if self.on_step is not None:
                self.on_step(step, logged)

    def close(self) -> float:
        self.bar.close()
        return sum(self.recent) / len(self.recent)


def _check_codebook(quantizer: nn.Module, step: int) -> Tensor:
    with torch.no_grad():
        codebook = quantizer.codebook.detach().float().cpu()
    if not torch.isfinite(codebook).all():
        raise DivergedError(f"step {step}: codebook has NaN/inf entries after training")
    return codebook


# --------------------------------------------------------------------------- fit
def _load_features(config: RunConfig) -> Any:
    import datasets

    options = dict(config.dataset_options)
    spec = datasets.get(config.dataset)
    if spec.kind != "features":
        raise ValueError(
            f"dataset: the fit experiment needs a feature distribution, {config.dataset!r} is "
            f"{spec.kind!r} (use experiment 'vqvae')"
        )
    if "dim" in spec.option_names():
        if "dim" in options and options["dim"] != config.dim:
            raise ValueError(
                f"dim: dataset_options.dim = {options['dim']!r} differs from dim = {config.dim}"
            )
        options["dim"] = config.dim
    dataset = datasets.load(config.dataset, **options)
    if dataset.kind != "features":
        raise ValueError(f"dataset: {config.dataset!r} is not a feature distribution")
    if dataset.dim != config.dim:
        raise ValueError(
            f"dim: dataset {config.dataset!r} has dim {dataset.dim} but the run has dim = {config.dim}"
        )
    return dataset


def _run_fit(
    config: RunConfig, device: torch.device, on_step: OnStep | None, progress: bool, artifacts_dir: Path | None
) -> dict[str, float]:
    if config.model_options:
        raise ConfigError("model_options: only used by the vqvae experiment; leave it empty for fit")
    dataset = _load_features(config)
    quantizer = _build_quantizer(config, device)
    optimizer = _make_optimizer(config, quantizer)
    train_gen = _generator(config.seed, _STREAM_TRAIN, device)
    trainer = _Trainer(config, quantizer, optimizer, on_step, progress)

    quantizer.train()
    _sync(device)
    start = time.perf_counter()
    try:
        for step in range(1, config.steps + 1):
            features = dataset.sample(config.batch_size, train_gen)
            out = quantizer(features)
            trainer.step(step, out.loss, out)
    finally:
        final_loss = trainer.close()
    _sync(device)
    train_seconds = time.perf_counter() - start

    quantizer.eval()
    codebook = _check_codebook(quantizer, config.steps)
    cpu = torch.device("cpu")
    eval_features = dataset.sample(config.eval_size, _generator(config.seed, _STREAM_EVAL, cpu)).cpu()
    kmeans_features = dataset.sample(
        metrics.kmeans_train_size(config.codebook_size), _generator(config.seed, _STREAM_KMEANS, cpu)
    ).cpu()
    record = _evaluate(config, quantizer, codebook, eval_features, kmeans_features, device, artifacts_dir)
    record.update(final_loss=final_loss, train_seconds=train_seconds)
    return {key: float(record[key]) for key in RESULT_KEYS}


def _in_code_space(quantizer: Any, features: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Features in the coordinates where the quantizer searches its codebook (CPU).

    The identity for every method but those that transform features before the search (FSQ's
    bound): metrics then measure the quantizer in the space it actually quantizes.
    """
    with torch.no_grad():
        return torch.cat(
            [quantizer.search_space(features[i : i + 65536].to(device)).cpu() for i in range(0, len(features), 65536)]
        )


def _evaluate(
    config: RunConfig,
    quantizer: Any,
    codebook: torch.Tensor,
    eval_features: torch.Tensor,
    kmeans_features: torch.Tensor,
    device: torch.device,
    artifacts_dir: Path | None,
) -> dict[str, Any]:
    """The metric record on held-out features, measured in the quantizer's search space.

    With ``artifacts_dir``, also writes ``codebook.npy`` (K, d) and ``code_counts.npy`` (K,): the
    final codebook and its usage histogram on the evaluated features (the report draws them).
    """
    eval_features = _in_code_space(quantizer, eval_features, device)
    record = metrics.evaluate(
        codebook,
        eval_features,
        kmeans_features=_in_code_space(quantizer, kmeans_features, device),
        seed=config.seed,
    )
    if artifacts_dir is not None:
        artifacts_dir.mkdir(parents=True, exist_ok=True)
        cpu_codebook = codebook.detach().float().cpu()
        from methods import nearest_code

        counts = metrics.code_counts(nearest_code(eval_features.float(), cpu_codebook), config.codebook_size)
        np.save(artifacts_dir / "codebook.npy", cpu_codebook.numpy())
        np.save(artifacts_dir / "code_counts.npy", counts.numpy())
    return record


# --------------------------------------------------------------------------- vqvae
def _load_images(config: RunConfig) -> Any:
    import datasets

    spec = datasets.get(config.dataset)
    if spec.kind != "images":
        raise ValueError(
            f"dataset: the vqvae experiment needs an image dataset, {config.dataset!r} is "
            f"{spec.kind!r} (use experiment 'fit')"
        )
    return datasets.load(config.dataset, **dict(config.dataset_options))


def _image_scores(images: Tensor, recons: Tensor) -> tuple[list[float], list[float]]:
    """Per-image PSNR and SSIM (scikit-image, data_range 1, channels last)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = images.permute(0, 2, 3, 1).double().numpy()
    b = recons.permute(0, 2, 3, 1).double().numpy()
    side = min(a.shape[1], a.shape[2])
    win = min(7, side if side % 2 else side - 1)  # skimage needs an odd window <= the image side
    psnr, ssim = [], []
    for x, y in zip(a, b):
        psnr.append(float(peak_signal_noise_ratio(x, y, data_range=1.0)))
        ssim.append(float(structural_similarity(x, y, data_range=1.0, channel_axis=-1, win_size=win)))
    return psnr, ssim


def _run_vqvae(
    config: RunConfig, device: torch.device, on_step: OnStep | None, progress: bool, artifacts_dir: Path | None
) -> dict[str, float]:
    from .models import AutoEncoder, ModelOptions

    options = ModelOptions.from_mapping(config.model_options)
    dataset = _load_images(config)
    model = AutoEncoder(dataset.channels, dataset.size, config.dim, options).to(device)
    quantizer = _build_quantizer(config, device)
    optimizer = _make_optimizer(config, quantizer, model)
    train_images = dataset.train.to(device)
    n_train = train_images.shape[0]
    if config.batch_size > n_train:
        raise ConfigError(
            f"batch_size: {config.batch_size} exceeds the {n_train} training images of {config.dataset!r}"
        )
    order_gen = _generator(config.seed, _STREAM_ORDER, device)
    trainer = _Trainer(config, quantizer, optimizer, on_step, progress)

    model.train()
    quantizer.train()
    _sync(device)
    start = time.perf_counter()
    order = torch.randperm(n_train, generator=order_gen, device=device)
    position = 0
    try:
        for step in range(1, config.steps + 1):
            if position + config.batch_size > n_train:  # new epoch (the last partial batch is dropped)
                order = torch.randperm(n_train, generator=order_gen, device=device)
                position = 0
            batch = train_images[order[position : position + config.batch_size]]
            position += config.batch_size
            out = quantizer(model.encode(batch))
            recon = model.decode(out.quantized)
            loss = torch.nn.functional.mse_loss(recon, batch) + out.loss
            trainer.step(step, loss, out)
    finally:
        final_loss = trainer.close()
    _sync(device)
    train_seconds = time.perf_counter() - start

    model.eval()
    quantizer.eval()
    codebook = _check_codebook(quantizer, config.steps)
    test_latents, squared_errors, psnr, ssim = [], [], [], []
    with torch.no_grad():
        for start_row in range(0, dataset.test.shape[0], _EVAL_BATCH):
            images = dataset.test[start_row : start_row + _EVAL_BATCH].to(device)
            latents = model.encode(images)
            recon = model.decode(quantizer(latents).quantized).clamp(0.0, 1.0)
            test_latents.append(latents.reshape(-1, config.dim).float().cpu())
            squared_errors.append((recon - images).pow(2).flatten(1).mean(1).double().cpu())
            p, s = _image_scores(images.cpu(), recon.cpu())
            psnr += p
            ssim += s
        train_latents = torch.cat(
            [
                model.encode(dataset.train[i : i + _EVAL_BATCH].to(device)).reshape(-1, config.dim).float().cpu()
                for i in range(0, n_train, _EVAL_BATCH)
            ]
        )
    cap = metrics.kmeans_train_size(config.codebook_size)
    if train_latents.shape[0] > cap:
        pick = torch.randperm(
            train_latents.shape[0], generator=_generator(config.seed, _STREAM_KMEANS, torch.device("cpu"))
        )[:cap]
        train_latents = train_latents[pick]
    record = _evaluate(config, quantizer, codebook, torch.cat(test_latents), train_latents, device, artifacts_dir)
    record.update(
        final_loss=final_loss,
        train_seconds=train_seconds,
        recon_mse=float(torch.cat(squared_errors).mean()),
        psnr=float(np.mean(psnr)),
        ssim=float(np.mean(ssim)),
    )
    return {key: float(record[key]) for key in VQVAE_KEYS}


# --------------------------------------------------------------------------- entry point
_EXPERIMENTS = {"fit": _run_fit, "vqvae": _run_vqvae}


def run_experiment(
    config: RunConfig,
    *,
    on_step: OnStep | None = None,
    progress: bool = False,
    artifacts_dir: str | Path | None = None,
) -> dict[str, float]:
    """Train and evaluate one run; returns the flat result record (floats).

    ``artifacts_dir``: where to write the final ``codebook.npy`` and ``code_counts.npy`` (optional).

    ``on_step(step, metrics)`` is called every ``config.log_every`` steps and at the last step with
    the loss, each unweighted loss component of the quantizer and ``batch_utilization``.
    Raises :class:`DivergedError` when the loss turns NaN/inf, ValueError (ConfigError) on bad
    settings; unknown dataset/method names raise the registries' ValueErrors.
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"config: expected a RunConfig, got {type(config).__name__}")
    device = resolve_device(config.device)
    with _seeded_global_rng(config.seed, device):
        artifacts = Path(artifacts_dir) if artifacts_dir is not None else None
        return _EXPERIMENTS[config.experiment](config, device, on_step, progress, artifacts)
