"""The ``vqvae`` experiment: a small conv encoder/decoder around the quantizer, on images.

Trained on an image dataset with loss = reconstruction MSE + ``out.loss``; reconstruction MSE,
PSNR and SSIM (scikit-image) on the test split, and the quantizer metrics on the test-set latents.
Batches are drawn without replacement (one shuffled epoch after another, the last partial batch
dropped); ``eval_size`` is not used (the whole test split is evaluated). The k-means reference
trains on training-set latents. With ``model_options.prior_steps`` > 0 the downstream prior is
trained on the tokenizer and measured (:mod:`benchmark.experiments.images`).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmark.experiments.config import ConfigError, RunConfig
from benchmark.experiments.images import PRIOR_KEYS, evaluate_tokenizer, load_images, prior_record
from benchmark.experiments.models import AutoEncoder, ModelOptions
from benchmark.experiments.training import (
    STREAM_ORDER, VQVAE_KEYS, OnStep, Trainer, build_quantizer, check_codebook, generator, make_optimizer,
    result_record, sync,
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
    record = evaluate_tokenizer(config, model, quantizer, codebook, dataset, device, artifacts_dir, evaluation_split)
    record.update(final_loss=final_loss, train_seconds=train_seconds)
    keys = VQVAE_KEYS
    if options.prior_steps and evaluation_split == "test":  # a tuning trial is scored without it
        record.update(prior_record(config, options.prior_steps, model, quantizer, dataset, device, evaluation_split))
        keys = VQVAE_KEYS + PRIOR_KEYS
    return result_record(record, keys)
