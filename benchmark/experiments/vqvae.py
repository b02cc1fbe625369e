"""The ``vqvae`` experiment: a small conv encoder/decoder around the quantizer, on images.

Trained on an image dataset with loss = reconstruction MSE + ``out.loss``; reconstruction MSE,
PSNR and SSIM (scikit-image) on the test split, and the quantizer metrics on the test-set latents.
Batches are drawn without replacement (one shuffled epoch after another, the last partial batch
dropped); ``eval_size`` is not used (the whole test split is evaluated). The k-means reference
trains on training-set latents. With ``model_options.prior_steps`` > 0 the downstream prior is
trained on the tokenizer and measured (:mod:`benchmark.experiments.images`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmark.experiments.config import RunConfig
from benchmark.experiments.images import epochs, evaluate_tokenizer, load_images, tokenizer_result, train_count
from benchmark.experiments.models import AutoEncoder, ModelOptions
from benchmark.experiments.training import (
    STREAM_ORDER, OnStep, Trainer, build_quantizer, check_codebook, generator, make_optimizer,
    timed_training,
)


def run(
    config: RunConfig, device: torch.device, on_step: OnStep | None, progress: bool, artifacts_dir: Path | None,
    evaluation_split: str = "test",
) -> dict[str, float]:
    options = ModelOptions.from_mapping(config.model_options)
    options.check_experiment(config.experiment, config.model_options)
    dataset = load_images(config)
    model = AutoEncoder(dataset.channels, dataset.size, config.dim, options).to(device)
    quantizer = build_quantizer(config, device)
    optimizer = make_optimizer(config, quantizer, model)
    train_images = dataset.train.to(device)
    batches = epochs(train_count(config, dataset), config.batch_size, generator(config.seed, STREAM_ORDER, device),
                     device)
    trainer = Trainer(config, quantizer, optimizer, on_step, progress)

    def train_step(step: int) -> tuple[torch.Tensor, Any]:
        """One batch through encoder -> quantizer -> decoder: reconstruction MSE + the quantizer's loss."""
        batch = train_images[next(batches)]
        out = quantizer(model.encode(batch))
        recon = model.decode(out.quantized)
        return torch.nn.functional.mse_loss(recon, batch) + out.loss, out

    model.train()
    quantizer.train()
    final_loss, train_seconds = timed_training(trainer, device, train_step)

    model.eval()
    quantizer.eval()
    codebook = check_codebook(quantizer, config.steps)
    record = evaluate_tokenizer(config, model, quantizer, codebook, dataset, device, artifacts_dir, evaluation_split)
    record.update(final_loss=final_loss, train_seconds=train_seconds)
    return tokenizer_result(config, options.prior_steps, record, model, quantizer, dataset, device,
                            evaluation_split)
