"""The ``transplant`` experiment: quantizers fitted to the latents of one frozen, pre-trained autoencoder.

The idea of VQ-Transplant (swap the quantizer of a trained tokenizer, keep its encoder and decoder):
every method sees the *same* real latents (non-Gaussian, anisotropic), so the comparison isolates
the quantizer from the encoder it would otherwise co-train.

1. Autoencoder: the conv encoder/decoder of :mod:`benchmark.experiments.models` with ``dim``
   latent channels and *no* quantizer, trained with MSE by Adam at ``model_lr`` for
   ``model_options.autoencoder_steps`` steps of ``batch_size`` training images (shuffled epochs,
   last partial batch dropped), initialised and ordered from ``seed``. It is trained once per
   (training images' bytes, dataset and options, architecture, dim, steps, batch_size, model_lr,
   seed) and memoised under ``data/models/`` (:mod:`benchmark.experiments.cache`): every method
   of one setting and seed shares it.
2. Quantizer: fitted for ``steps`` steps on the frozen encoder's training-split latents, each
   step the latent grids of ``batch_size`` training images (shuffled epochs, as ``vqvae``: the
   same budget), loss = the quantizer's own ``out.loss``, optimised by ``optimizer`` at
   ``codebook_lr``.
3. Optional decoder fine-tune (``model_options.decoder_finetune_steps``, default 0 = off): a copy
   of the decoder trained on the quantized training latents (quantizer frozen) with MSE, Adam at
   ``model_lr``, ``batch_size`` images per step, the same number of steps for every method.
4. Evaluation as ``vqvae`` (:func:`benchmark.experiments.images.evaluate_tokenizer`): reconstruction
   MSE, PSNR, SSIM of the held-out images decoded from their quantized latents; E, E / k-means, U,
   perplexity on the held-out latents; with ``model_options.prior_steps`` > 0 the downstream prior.

``train_seconds`` is the quantizer's fit (plus the decoder fine-tune), not the autoencoder's
(memoised, shared by trials); ``autoencoder_mse`` is the autoencoder's own held-out
reconstruction MSE without a quantizer, the floor the quantized reconstructions are measured
against.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmark import paths
from benchmark.experiments.cache import cached_training, tensor_digest
from benchmark.experiments.config import RunConfig
from benchmark.experiments.images import (
    encode_all, epochs, evaluate_tokenizer, held_out, load_images, tokenizer_result, train_count,
)
from benchmark.experiments.models import AutoEncoder, ModelOptions
from benchmark.experiments.training import (
    STREAM_AUTOENCODER, STREAM_FINETUNE, STREAM_ORDER, OnStep, Trainer, build_quantizer, check_codebook,
    generator, make_optimizer, seeded_global_rng, sync,
)


def autoencoder_key(config: RunConfig, options: ModelOptions, dataset: Any) -> tuple:
    """Everything that determines the trained autoencoder's weights (the module's architecture is
    added by the cache from its repr)."""
    return (
        config.dataset, tuple(sorted((k, repr(v)) for k, v in dict(config.dataset_options).items())),
        tensor_digest(dataset.train), options.architecture(), config.dim, options.autoencoder_steps,
        config.batch_size, float(config.model_lr), config.seed,
    )


def pretrained_autoencoder(
    config: RunConfig, options: ModelOptions, dataset: Any, device: torch.device, cache_dir: str | Path | None,
) -> tuple[AutoEncoder, bool]:
    """The frozen autoencoder of this dataset and seed, trained or from the cache (True = hit)."""
    with seeded_global_rng(config.seed, device):
        model = AutoEncoder(dataset.channels, dataset.size, config.dim, options).to(device)

    def fit(module: AutoEncoder) -> None:
        images = dataset.train.to(device)
        optimizer = torch.optim.Adam(module.parameters(), lr=config.model_lr, foreach=True)
        batches = epochs(images.shape[0], config.batch_size, generator(config.seed, STREAM_AUTOENCODER, device),
                          device)
        module.train()
        for _ in range(options.autoencoder_steps):
            batch = images[next(batches)]
            loss = torch.nn.functional.mse_loss(module.decode(module.encode(batch)), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    hit = cached_training(model, "autoencoder", autoencoder_key(config, options, dataset), fit, cache_dir)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, hit


def run(
    config: RunConfig, device: torch.device, on_step: OnStep | None, progress: bool, artifacts_dir: Path | None,
    evaluation_split: str = "test",
) -> dict[str, float]:
    options = ModelOptions.from_mapping(config.model_options)
    dataset = load_images(config)
    n_train = train_count(config, dataset)
    model, _ = pretrained_autoencoder(config, options, dataset, device, paths.MODELS_CACHE_DIR)
    train_latents = encode_all(model, dataset.train, device).to(device)  # (N, h, w, d), frozen
    quantizer = build_quantizer(config, device)
    optimizer = make_optimizer(config, quantizer)
    trainer = Trainer(config, quantizer, optimizer, on_step, progress)

    batches = epochs(n_train, config.batch_size, generator(config.seed, STREAM_ORDER, device), device)

    def train_step(step: int) -> tuple[Tensor, Any]:
        """One batch of frozen training latents through the quantizer."""
        out = quantizer(train_latents[next(batches)])
        return out.loss, out

    quantizer.train()
    sync(device)
    start = time.perf_counter()
    final_loss = trainer.run(train_step)
    quantizer.eval()
    codebook = check_codebook(quantizer, config.steps)
    tokenizer = model
    if options.decoder_finetune_steps:
        tokenizer = _finetune_decoder(config, options, model, quantizer, train_latents, dataset.train.to(device),
                                      device)
    sync(device)
    train_seconds = time.perf_counter() - start

    record = evaluate_tokenizer(config, tokenizer, quantizer, codebook, dataset, device, artifacts_dir,
                                evaluation_split)
    with torch.no_grad():
        images = held_out(dataset, config, evaluation_split).to(device)
        record["autoencoder_mse"] = float(torch.nn.functional.mse_loss(
            model.decode(model.encode(images)).clamp(0.0, 1.0), images).double())
    record.update(final_loss=final_loss, train_seconds=train_seconds)
    return tokenizer_result(config, options.prior_steps, record, tokenizer, quantizer, dataset,
                            device, evaluation_split)


def _finetune_decoder(
    config: RunConfig, options: ModelOptions, model: AutoEncoder, quantizer: Any, train_latents: Tensor,
    train_images: Tensor, device: torch.device,
) -> AutoEncoder:
    """A copy of ``model`` whose decoder is trained on the quantized training latents (module docstring)."""
    tuned = copy.deepcopy(model)
    decoder_params = list(tuned.decoder.parameters())
    for parameter in decoder_params:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(decoder_params, lr=config.model_lr, foreach=True)
    batches = epochs(train_images.shape[0], config.batch_size, generator(config.seed, STREAM_FINETUNE, device),
                      device)
    tuned.decoder.train()
    for _ in range(options.decoder_finetune_steps):
        pick = next(batches)
        with torch.no_grad():
            codes = quantizer(train_latents[pick]).quantized
        loss = torch.nn.functional.mse_loss(tuned.decode(codes), train_images[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    tuned.eval()
    for parameter in decoder_params:
        parameter.requires_grad_(False)
    return tuned
