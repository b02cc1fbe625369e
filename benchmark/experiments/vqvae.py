"""The ``vqvae`` experiment: a small conv encoder/decoder around the quantizer, on images.

Trained on an image dataset with loss = reconstruction MSE + ``out.loss``; reconstruction MSE,
PSNR and SSIM (scikit-image) on the test split, and the quantizer metrics on the test-set latents.
Batches are drawn without replacement (one shuffled epoch after another, the last partial batch
dropped); ``eval_size`` is not used (the whole test split is evaluated). The k-means reference
trains on training-set latents.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmark.experiments import metrics
from benchmark.experiments.config import ConfigError, RunConfig
from benchmark.experiments.models import AutoEncoder, ModelOptions
from benchmark.experiments.training import (
    EVAL_BATCH, STREAM_KMEANS, STREAM_ORDER, VQVAE_KEYS, OnStep, Trainer, build_quantizer, check_codebook, result_record,
    evaluate, generator, make_optimizer, sync,
)

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


def run(
    config: RunConfig, device: torch.device, on_step: OnStep | None, progress: bool, artifacts_dir: Path | None,
    evaluation_split: str = "test",
) -> dict[str, float]:
    options = ModelOptions.from_mapping(config.model_options)
    dataset = _load_images(config)
    model = AutoEncoder(dataset.channels, dataset.size, config.dim, options).to(device)
    quantizer = build_quantizer(config, device)
    optimizer = make_optimizer(config, quantizer, model)
    train_images = dataset.train.to(device)
    n_train = train_images.shape[0]
    if config.batch_size > n_train:
        raise ConfigError(
            f"batch_size: {config.batch_size} exceeds the {n_train} training images of {config.dataset!r}"
        )
    order_gen = generator(config.seed, STREAM_ORDER, device)
    trainer = Trainer(config, quantizer, optimizer, on_step, progress)

    model.train()
    quantizer.train()
    sync(device)
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
        trainer.close()
    final_loss = trainer.final_loss
    sync(device)
    train_seconds = time.perf_counter() - start

    model.eval()
    quantizer.eval()
    codebook = check_codebook(quantizer, config.steps)
    held_out = dataset.test if evaluation_split == "test" else dataset.validation
    if held_out.shape[0] == 0:
        raise ConfigError(f"dataset_options.validation_fraction: {config.dataset!r} has no validation "
                          f"images to score a tuning trial on")
    test_latents, squared_errors, psnr, ssim = [], [], [], []
    with torch.no_grad():
        for start_row in range(0, held_out.shape[0], EVAL_BATCH):
            images = held_out[start_row : start_row + EVAL_BATCH].to(device)
            latents = model.encode(images)
            recon = model.decode(quantizer(latents).quantized).clamp(0.0, 1.0)
            test_latents.append(latents.reshape(-1, config.dim).float().cpu())
            squared_errors.append((recon - images).pow(2).flatten(1).mean(1).double().cpu())
            p, s = _image_scores(images.cpu(), recon.cpu())
            psnr += p
            ssim += s
        train_latents = torch.cat(
            [
                model.encode(dataset.train[i : i + EVAL_BATCH].to(device)).reshape(-1, config.dim).float().cpu()
                for i in range(0, n_train, EVAL_BATCH)
            ]
        )
    cap = metrics.kmeans_train_size(config.codebook_size)
    if train_latents.shape[0] > cap:
        pick = torch.randperm(
            train_latents.shape[0], generator=generator(config.seed, STREAM_KMEANS, torch.device("cpu"))
        )[:cap]
        train_latents = train_latents[pick]
    record = evaluate(config, quantizer, codebook, torch.cat(test_latents), train_latents, device, artifacts_dir)
    record.update(
        final_loss=final_loss,
        train_seconds=train_seconds,
        recon_mse=float(torch.cat(squared_errors).mean()),
        psnr=float(np.mean(psnr)),
        ssim=float(np.mean(ssim)),
    )
    return result_record(record, VQVAE_KEYS)
