"""What the image experiments (``vqvae``, ``transplant``) share: loading, the tokenizer's evaluation
and the downstream prior's record.

Evaluation of a tokenizer (encoder -> quantizer -> decoder) on the held-out split (test; a tuning
trial: validation): reconstruction MSE, PSNR and SSIM (scikit-image) per image, averaged; the
quantizer metrics on the held-out latents, with the k-means reference trained on training-split
latents (at most ``metrics.kmeans_train_size(K)``, a seeded subsample).

The prior (``model_options.prior_steps`` > 0, :mod:`benchmark.experiments.prior`): trained on the
training-split token grids, scored on the held-out ones (``prior_bits_per_token``,
``prior_bits_per_image``); as many samples as held-out images are decoded and compared with the
held-out images in the feature space of the dataset's classifier
(:mod:`benchmark.experiments.sample_quality`): ``frechet_classifier``, ``knn_precision``,
``knn_recall``. ``prior_seconds`` is the wall time of all of it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from benchmark import paths
from benchmark.experiments import metrics
from benchmark.experiments.config import ConfigError, RunConfig
from benchmark.experiments.prior import PriorSettings, nll_bits_per_token, sample, train_prior
from benchmark.experiments.sample_quality import dataset_classifier, features_of, frechet_distance, knn_precision_recall
from benchmark.experiments.training import (
    EVAL_BATCH, STREAM_KMEANS, STREAM_PRIOR, evaluate, generator, result_record,
)



def load_images(config: RunConfig) -> Any:
    import datasets

    spec = datasets.get(config.dataset)
    if spec.kind != "images":
        raise ValueError(
            f"dataset: the {config.experiment} experiment needs an image dataset, {config.dataset!r} is "
            f"{spec.kind!r} (use experiment 'fit')"
        )
    return datasets.load(config.dataset, **dict(config.dataset_options))


def train_count(config: RunConfig, dataset: Any) -> int:
    """The number of training images, checked to hold at least one batch."""
    n_train = dataset.train.shape[0]
    if config.batch_size > n_train:
        raise ConfigError(
            f"batch_size: {config.batch_size} exceeds the {n_train} training images of {config.dataset!r}"
        )
    return n_train


def epochs(n: int, batch_size: int, order_gen: torch.Generator, device: torch.device) -> Iterator[Tensor]:
    """Index batches of shuffled epochs, the last partial batch of each dropped."""
    while True:
        order = torch.randperm(n, generator=order_gen, device=device)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def held_out(dataset: Any, config: RunConfig, evaluation_split: str) -> Tensor:
    images = dataset.test if evaluation_split == "test" else dataset.validation
    if images.shape[0] == 0:
        raise ConfigError(f"dataset_options.validation_fraction: {config.dataset!r} has no validation "
                          f"images to score a tuning trial on")
    return images


SSIM_K1, SSIM_K2 = 0.01, 0.03  # scikit-image's (and Wang et al. 2004's) stabilising constants, data range 1


def ssim_window(height: int, width: int) -> int:
    """The SSIM window side: 7, or the largest odd size that fits a smaller image."""
    side = min(height, width)
    return min(7, side if side % 2 else side - 1)


def image_scores(images: Tensor, recons: Tensor) -> tuple[list[float], list[float]]:
    """Per-image PSNR and SSIM (data range 1, channels averaged) of a batch (N, C, H, W), all at once.

    The definitions of scikit-image's ``peak_signal_noise_ratio`` and ``structural_similarity`` (its
    defaults, Wang et al. 2004), evaluated for the whole batch by array operations instead of one
    call per image and channel (tests compare it with scikit-image image by image):

    - PSNR = 10 log10(1 / MSE), MSE over the image's pixels and channels;
    - SSIM: local means mu, variances s^2 (sample, x w^2 / (w^2 - 1)) and covariance s_xy over a
      uniform w x w window (``ssim_window``, reflected borders), the map
      (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)) with
      C1 = (0.01)^2, C2 = (0.03)^2, averaged over the pixels at least (w - 1) / 2 from the border,
      then over channels.
    """
    from scipy.ndimage import uniform_filter

    a = images.permute(0, 2, 3, 1).double().numpy()  # (N, H, W, C)
    b = recons.permute(0, 2, 3, 1).double().numpy()
    n, height, width, _ = a.shape
    with np.errstate(divide="ignore"):  # a perfect reconstruction has PSNR inf, as in scikit-image
        psnr = 10 * np.log10(1.0 / ((a - b) ** 2).reshape(n, -1).mean(axis=1))
    win = ssim_window(height, width)

    def local_mean(x: np.ndarray) -> np.ndarray:
        return uniform_filter(x, size=(1, win, win, 1))  # per image and channel

    cov_norm = win**2 / (win**2 - 1)
    ux, uy = local_mean(a), local_mean(b)
    vx = cov_norm * (local_mean(a * a) - ux * ux)
    vy = cov_norm * (local_mean(b * b) - uy * uy)
    vxy = cov_norm * (local_mean(a * b) - ux * uy)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    ssim = ssim_map[:, pad : height - pad, pad : width - pad, :].mean(axis=(1, 2)).mean(axis=1)
    return [float(v) for v in psnr], [float(v) for v in ssim]


@torch.no_grad()
def encode_all(model: Any, images: Tensor, device: torch.device) -> Tensor:
    """Channels-last latents (N, h, w, d) of ``images`` on the CPU."""
    return torch.cat([model.encode(images[i : i + EVAL_BATCH].to(device)).float().cpu()
                      for i in range(0, images.shape[0], EVAL_BATCH)])


@torch.no_grad()
def evaluate_tokenizer(
    config: RunConfig, model: Any, quantizer: Any, codebook: Tensor, dataset: Any, device: torch.device,
    artifacts_dir: Path | None, evaluation_split: str,
) -> dict[str, float]:
    """Reconstruction and quantizer metrics of encoder -> quantizer -> decoder (module docstring)."""
    images_out = held_out(dataset, config, evaluation_split)
    test_latents, squared_errors, psnr, ssim = [], [], [], []
    for start_row in range(0, images_out.shape[0], EVAL_BATCH):
        images = images_out[start_row : start_row + EVAL_BATCH].to(device)
        latents = model.encode(images)
        recon = model.decode(quantizer(latents).quantized).clamp(0.0, 1.0)
        test_latents.append(latents.reshape(-1, config.dim).float().cpu())
        squared_errors.append((recon - images).pow(2).flatten(1).mean(1).double().cpu())
        p, s = image_scores(images.cpu(), recon.cpu())
        psnr += p
        ssim += s
    train_latents = encode_all(model, dataset.train, device).reshape(-1, config.dim)
    cap = metrics.kmeans_train_size(config.codebook_size)
    if train_latents.shape[0] > cap:
        pick = torch.randperm(
            train_latents.shape[0], generator=generator(config.seed, STREAM_KMEANS, torch.device("cpu"))
        )[:cap]
        train_latents = train_latents[pick]
    record = evaluate(config, quantizer, codebook, torch.cat(test_latents), train_latents, device, artifacts_dir)
    record.update(recon_mse=float(torch.cat(squared_errors).mean()), psnr=float(np.mean(psnr)),
                  ssim=float(np.mean(ssim)))
    return record


def token_vocabulary(quantizer: Any) -> int:
    """The prior's vocabulary: the largest level codebook (K for a single codebook)."""
    sizes = getattr(quantizer, "level_codebook_sizes", (quantizer.codebook_size,))
    return int(max(sizes))


@torch.no_grad()
def token_grids(model: Any, quantizer: Any, images: Tensor, device: torch.device) -> tuple[Tensor, tuple[int, ...]]:
    """Tokens (N, L) of ``images`` in raster order (levels innermost) and the indices' shape per image."""
    grids = []
    for i in range(0, images.shape[0], EVAL_BATCH):
        grids.append(quantizer.search(model.encode(images[i : i + EVAL_BATCH].to(device))).long().cpu())
    indices = torch.cat(grids)
    return indices.reshape(indices.shape[0], -1), tuple(indices.shape[1:])


@torch.no_grad()
def prior_record(
    config: RunConfig, prior_steps: int, model: Any, quantizer: Any, dataset: Any, device: torch.device,
    evaluation_split: str, settings: PriorSettings | None = None,
) -> dict[str, float]:
    """Train the token prior on this tokenizer and measure it (module docstring)."""
    start = time.perf_counter()
    settings = settings or PriorSettings(steps=prior_steps)
    vocab = token_vocabulary(quantizer)
    train_tokens, grid_shape = token_grids(model, quantizer, dataset.train, device)
    images_out = held_out(dataset, config, evaluation_split)
    test_tokens, _ = token_grids(model, quantizer, images_out, device)
    prior = train_prior(train_tokens, vocab, settings, seed=config.seed, device=device)
    bits = nll_bits_per_token(prior, test_tokens)
    draws = sample(prior, images_out.shape[0], generator(config.seed, STREAM_PRIOR, device))
    indices = draws.reshape(draws.shape[0], *grid_shape)
    decoded = torch.cat([model.decode(quantizer.indices_to_codes(indices[i : i + EVAL_BATCH]).float())
                         .clamp(0.0, 1.0) for i in range(0, indices.shape[0], EVAL_BATCH)])
    classifier, _ = dataset_classifier(config.dataset, config.dataset_options, dataset, device,
                                       paths.MODELS_CACHE_DIR)
    fake, real = features_of(classifier, decoded), features_of(classifier, images_out)
    precision, recall = knn_precision_recall(fake, real)
    return {
        "prior_bits_per_token": bits,
        "prior_bits_per_image": bits * train_tokens.shape[1],
        "frechet_classifier": frechet_distance(fake, real),
        "knn_precision": precision,
        "knn_recall": recall,
        "prior_seconds": time.perf_counter() - start,
    }


def tokenizer_result(
    config: RunConfig, prior_steps: int, record: dict[str, Any], tokenizer: Any,
    quantizer: Any, dataset: Any, device: torch.device, evaluation_split: str,
) -> dict[str, float]:
    """``record`` plus the prior's record when a prior is asked for (test runs only)."""
    if prior_steps and evaluation_split == "test":  # a tuning trial is scored without it
        record.update(prior_record(config, prior_steps, tokenizer, quantizer, dataset, device, evaluation_split))
    return result_record(record)
