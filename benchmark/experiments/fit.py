"""The ``fit`` experiment: a quantizer fitted directly to a feature distribution (no encoder).

Every step draws ``batch_size`` fresh features; the metrics are measured on ``eval_size`` held-out
features of the test split from a separate random stream (a tuning trial: the validation split,
a stream of its own), and the k-means reference trains on a third (training split). This is the
"atomic" experiment of Wasserstein VQ (arXiv 2506.15078): features N(mu * 1, I_d), codebook
initialised by the method.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmark.experiments import metrics
from benchmark.experiments.config import ConfigError, RunConfig
from benchmark.experiments.training import (
    RESULT_KEYS, STREAM_EVAL, STREAM_KMEANS, STREAM_TRAIN, STREAM_VALIDATION, OnStep, Trainer, build_quantizer, check_codebook, result_record,
    evaluate, generator, make_optimizer, timed_training,
)

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


def run(
    config: RunConfig, device: torch.device, on_step: OnStep | None, progress: bool, artifacts_dir: Path | None,
    evaluation_split: str = "test",
) -> dict[str, float]:
    if config.model_options:
        raise ConfigError("model_options: only used by the image experiments; leave it empty for fit")
    dataset = _load_features(config)
    quantizer = build_quantizer(config, device)
    optimizer = make_optimizer(config, quantizer)
    train_gen = generator(config.seed, STREAM_TRAIN, device)
    trainer = Trainer(config, quantizer, optimizer, on_step, progress)

    def train_step(step: int) -> tuple[torch.Tensor, Any]:
        """One batch of fresh features through the quantizer."""
        out = quantizer(dataset.sample(config.batch_size, train_gen))
        return out.loss, out

    quantizer.train()
    final_loss, train_seconds = timed_training(trainer, device, train_step)

    quantizer.eval()
    codebook = check_codebook(quantizer, config.steps)
    cpu = torch.device("cpu")
    stream = STREAM_EVAL if evaluation_split == "test" else STREAM_VALIDATION
    eval_features = dataset.sample(config.eval_size, generator(config.seed, stream, cpu), split=evaluation_split).cpu()
    kmeans_features = dataset.sample(
        metrics.kmeans_train_size(config.codebook_size), generator(metrics.KMEANS_REFERENCE_SEED, STREAM_KMEANS, cpu)
    ).cpu()
    record = evaluate(config, quantizer, codebook, eval_features, kmeans_features, device, artifacts_dir)
    record.update(final_loss=final_loss, train_seconds=train_seconds)
    return result_record(record, RESULT_KEYS)
