"""The machinery every experiment shares: devices, seeded random streams, the quantizer, the
optimizer, the training step and the evaluation record.

The experiments (one module each, dispatched by :mod:`benchmark.experiments.train`):

- ``fit``: the quantizer is fitted directly to a feature distribution (no encoder). Every step
  draws ``batch_size`` fresh features; the metrics are measured on ``eval_size`` held-out features
  from a separate random stream. This is the "atomic" experiment of Wasserstein VQ
  (arXiv 2506.15078): features N(mu * 1, I_d), codebook initialised by the method.
- ``vqvae``: a small conv encoder/decoder (:mod:`benchmark.experiments.models`) around the quantizer, trained
  on an image dataset with loss = reconstruction MSE + ``out.loss``; reconstruction MSE, PSNR and
  SSIM (scikit-image) on the test split, and the quantizer metrics on the test-set latents.
  Batches are drawn without replacement (one shuffled epoch after another, the last partial
  batch dropped); ``eval_size`` is not used (the whole test split is evaluated).
- ``transplant``: a quantizer-free autoencoder trained once per image dataset (memoised), the
  quantizer fitted to its frozen encoder's training latents, decoded by its frozen decoder
  (:mod:`benchmark.experiments.transplant`); the same record as ``vqvae``.

``vqvae`` and ``transplant`` add the downstream prior's record (:mod:`benchmark.experiments.images`) when ``model_options.prior_steps`` > 0.

Record (floats): quantization_error, utilization, perplexity, dead_codes, gaussian_w2_sq,
kmeans_error, error_vs_kmeans, bits_per_token, final_loss, train_seconds; vqvae adds recon_mse,
psnr, ssim; a multi-codebook quantizer adds utilization_level_<l> and perplexity_level_<l> per
level (its k-means columns are NaN: :mod:`benchmark.experiments.metrics`).
``final_loss`` is the mean training loss over the last ``min(log_every, steps)`` steps.
The k-means reference trains on a separate sample (``fit``: fresh features, ``vqvae``: training-set
latents) of :func:`benchmark.experiments.metrics.kmeans_train_size` points (256 per code at every K).

Optimizers: the quantizer's trainable parameters form their own group at ``codebook_lr``; the
encoder/decoder use ``model_lr``. ``sgd`` is SGD with ``momentum``; ``adam`` is Adam with
betas = (``adam_beta1``, ``adam_beta2``), both with ``foreach=True``: torch's CPU default
updates one parameter tensor at a time (about ten small kernels each), the multi-tensor path
does the same arithmetic per element in the same order (records identical to the bit) for a
tenth of the kernel launches: 2.1 of 17 ms of a digits VQ-VAE step was Adam. Parameters that do
not require grad (EMA codebooks, frozen bases) are left out; a method with no trainable parameters
trains without an optimizer. ``grad_clip > 0`` clips the global gradient norm over all groups;
with ``codebook_grad_clip > 0`` the quantizer's parameters are clipped on their own at that norm
and ``grad_clip`` covers the encoder/decoder alone (the Wasserstein-VQ authors clip the two
separately).

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
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from benchmark import paths
from benchmark.experiments import metrics
from benchmark.experiments.config import ConfigError, RunConfig

OnStep = Callable[[int, dict[str, float]], None]
StepFn = Callable[[int], tuple[Tensor, Any]]  # step -> (training loss, quantizer output)

# Random streams derived from the run seed (see generator).
STREAM_INIT, STREAM_TRAIN, STREAM_EVAL, STREAM_KMEANS, STREAM_ORDER, STREAM_VALIDATION = 0, 1, 2, 3, 4, 5
STREAM_PRIOR, STREAM_AUTOENCODER, STREAM_FINETUNE = 6, 7, 8  # prior samples; transplant's autoencoder, fine-tune
# Images per forward pass when evaluating a vqvae.
EVAL_BATCH = 256


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


def generator(seed: int, stream: int, device: torch.device) -> torch.Generator:
    """A generator for one random stream of a run; streams of one seed are independent."""
    state = np.random.SeedSequence([seed % 2**64, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) % 2**63)


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG for module init inside a fork (restored on exit)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_quantizer(config: RunConfig, device: torch.device, init_generator: torch.Generator | None = None) -> nn.Module:
    """The run's quantizer on ``device``, initialised from ``init_generator`` (default: the run's
    initialisation stream)."""
    import methods

    quantizer = methods.build(
        config.method,
        dim=config.dim,
        codebook_size=config.codebook_size,
        generator=init_generator or generator(config.seed, STREAM_INIT, torch.device("cpu")),
        **dict(config.method_options),
    )
    quantizer.register_forward_hook(_output_check(methods.get(config.method).describe()))
    return quantizer.to(device)


class RunWarning(UserWarning):
    """Something that limits what a run's numbers can show (recorded with the trial, shown in the report)."""


def check_split_size(dataset: Any, split: str, codebook_size: int) -> None:
    """Warn (RunWarning) when the evaluated split of a finite dataset holds fewer distinct vectors
    than there are codes: utilization cannot then exceed n / K, and every method reads as collapsing."""
    count = getattr(dataset, "n_vectors", None)
    if count is None:
        return
    n = int(count(split))
    if n < codebook_size:
        warnings.warn(f"the {split} split holds {n} vectors, fewer than K = {codebook_size}: utilization is at "
                      f"most {n / codebook_size:.0%} whatever the method (give the split more rows, or use a "
                      f"smaller K)", RunWarning, stacklevel=2)


class QuantizerOutputError(ValueError):
    """A quantizer returned outputs of the wrong shape (caught at the call, not by the metrics)."""


def _output_check(owner: str) -> Callable[..., None]:
    """A forward hook checking every call's output shapes: ``quantized`` the input's, ``indices``
    ``quantizer.indices_shape(leading)`` (a shape comparison: nothing is computed). A plugin
    returning, say, a flattened ``quantized`` would otherwise train and report normal metrics."""

    def check(quantizer: nn.Module, inputs: tuple[Any, ...], out: Any) -> None:
        features = inputs[0] if inputs else None
        if not isinstance(features, Tensor):
            return
        leading = tuple(features.shape[:-1])
        expected = {"quantized": tuple(features.shape)}
        if hasattr(quantizer, "indices_shape"):
            expected["indices"] = tuple(quantizer.indices_shape(leading))
        for name, shape in expected.items():
            value = getattr(out, name, None)
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            if got != shape:
                raise QuantizerOutputError(f"method: {owner} returned {name} of shape {got} for features of shape "
                                           f"{tuple(features.shape)}; expected {shape} (methods.testing."
                                           f"run_conformance checks a quantizer's outputs)")

    return check


def make_optimizer(
    config: RunConfig, quantizer: nn.Module, model: nn.Module | None = None
) -> torch.optim.Optimizer | None:
    groups = []
    quantizer_params = [p for p in quantizer.parameters() if p.requires_grad]
    if quantizer_params:
        groups.append({"params": quantizer_params, "lr": config.codebook_lr})
    if model is not None:
        model_params = [p for p in model.parameters() if p.requires_grad]
        if model_params:
            groups.append({"params": model_params, "lr": config.model_lr})
    if not groups:
        return None
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.codebook_lr, momentum=config.momentum, foreach=True)
    return torch.optim.Adam(groups, lr=config.codebook_lr, betas=(config.adam_beta1, config.adam_beta2), foreach=True)


class Trainer:
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
        codebook_ids = {id(p) for p in quantizer.parameters()}
        self.codebook_params = [p for p in self.params if id(p) in codebook_ids]
        self.model_params = [p for p in self.params if id(p) not in codebook_ids]
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
            self.clip()
            self.optimizer.step()
        self.recent.append(value)
        if len(self.recent) > self.window:
            self.recent.pop(0)
        self.bar.update(1)
        if step % self.config.log_every == 0 or step == self.config.steps:
            logged = {"loss": value}
            for name, component in out.losses.items():
                logged[name] = float(torch.as_tensor(component).detach())
            if getattr(self.quantizer, "code_structure", "single") == "single":
                used = torch.unique(out.indices.detach()).numel()
                logged["batch_utilization"] = used / self.config.codebook_size
            else:  # over all levels: sum_l used_l / sum_l K_l
                logged["batch_utilization"] = self.quantizer.code_usage(out.indices.detach()).overall_utilization
            self.bar.set_postfix(loss=f"{value:.4g}", refresh=False)
            if self.on_step is not None:
                self.on_step(step, logged)

    def clip(self) -> None:
        """Gradient-norm clipping: one global norm, or the quantizer and the model separately."""
        config = self.config
        if config.codebook_grad_clip > 0:
            if self.codebook_params:
                torch.nn.utils.clip_grad_norm_(self.codebook_params, config.codebook_grad_clip)
            if config.grad_clip > 0 and self.model_params:
                torch.nn.utils.clip_grad_norm_(self.model_params, config.grad_clip)
        elif config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip)

    def run(self, step_fn: StepFn) -> float:
        """Steps 1..``config.steps`` through ``step_fn``; the final loss (the bar is closed either way)."""
        try:
            for step in range(1, self.config.steps + 1):
                loss, out = step_fn(step)
                self.step(step, loss, out)
        finally:
            self.close()
        return self.final_loss

    def close(self) -> None:
        """Close the progress bar; safe in a ``finally`` (never raises over the run's own error)."""
        self.bar.close()

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last ``window`` steps (NaN before the first step)."""
        return sum(self.recent) / len(self.recent) if self.recent else math.nan


def timed_training(trainer: Trainer, device: torch.device, step_fn: StepFn) -> tuple[float, float]:
    """``trainer.run(step_fn)`` between device syncs: (final loss, training seconds)."""
    sync(device)
    start = time.perf_counter()
    final_loss = trainer.run(step_fn)
    sync(device)
    return final_loss, time.perf_counter() - start


def check_codebook(quantizer: nn.Module, step: int) -> Tensor:
    with torch.no_grad():
        codebook = quantizer.codebook.detach().float().cpu()
    if not torch.isfinite(codebook).all():
        raise DivergedError(f"step {step}: codebook has NaN/inf entries after training")
    return codebook



def in_code_space(quantizer: Any, features: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Features in the coordinates where the quantizer searches its codebook (CPU).

    The identity for every method but those that transform features before the search (FSQ's
    bound): metrics then measure the quantizer in the space it actually quantizes.
    """
    with torch.no_grad():
        return torch.cat(
            [quantizer.search_space(features[i : i + 65536].to(device)).cpu() for i in range(0, len(features), 65536)]
        )


def evaluate(
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
    A multi-codebook quantizer (residual, grouped) is judged through its own search
    (:func:`benchmark.experiments.metrics.evaluate_levels`: no k-means reference, per-level
    columns) and writes ``level_codebooks.npy`` (L, K, d_l) and ``level_code_counts.npz`` (one
    (K_l,) array ``level_<l>`` per level) instead (the report's codebook and usage figures draw single codebooks only).
    ``config.kmeans_reference`` False skips the k-means reference (kmeans_error, error_vs_kmeans NaN).
    """
    if getattr(quantizer, "code_structure", "single") != "single":
        return _evaluate_levels(quantizer, eval_features, device, artifacts_dir)
    eval_features = in_code_space(quantizer, eval_features, device)
    record = metrics.evaluate(
        codebook,
        eval_features,
        kmeans_features=in_code_space(quantizer, kmeans_features, device) if config.kmeans_reference else None,
        seed=metrics.KMEANS_REFERENCE_SEED,
        kmeans_cache=paths.KMEANS_CACHE_DIR,
    )
    if artifacts_dir is not None:
        artifacts_dir.mkdir(parents=True, exist_ok=True)
        cpu_codebook = codebook.detach().float().cpu()
        from methods._core import nearest_code

        counts = metrics.code_counts(nearest_code(eval_features.float(), cpu_codebook), config.codebook_size)
        np.save(artifacts_dir / "codebook.npy", cpu_codebook.numpy())
        np.save(artifacts_dir / "code_counts.npy", counts.numpy())
    return record


def _evaluate_levels(
    quantizer: Any, eval_features: torch.Tensor, device: torch.device, artifacts_dir: Path | None
) -> dict[str, Any]:
    record = metrics.evaluate_levels(quantizer, eval_features, device=device)
    if artifacts_dir is not None:
        artifacts_dir.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            indices = torch.cat([quantizer.level_indices(quantizer.search(eval_features[i : i + 65536].to(device))).cpu()
                                 for i in range(0, len(eval_features), 65536)])
            np.save(artifacts_dir / "level_codebooks.npy", quantizer.codebook.detach().float().cpu().numpy())
        counts = quantizer.code_usage(indices).counts
        np.savez(artifacts_dir / "level_code_counts.npz", **{f"level_{l}": c.numpy() for l, c in enumerate(counts)})
    return record


def result_record(record: dict[str, Any]) -> dict[str, float]:
    """The final record as floats (its keys: ``benchmark.metric_registry``)."""
    return {key: float(value) for key, value in record.items()}
