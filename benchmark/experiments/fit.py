"""The ``fit`` experiment: a quantizer fitted directly to a feature distribution (no encoder).

Every step draws ``batch_size`` fresh features; the metrics are measured on ``eval_size`` held-out
features of the test split from a separate random stream (a tuning trial: the validation split,
a stream of its own), and the k-means reference trains on a third (training split). This is the
"atomic" experiment of Wasserstein VQ (arXiv 2506.15078): features N(mu * 1, I_d), codebook
initialised by the method.

Random streams (``random_stream``): by default every use has its own generator derived from the
seed (initialisation, training batches, evaluation, k-means reference), so changing one never
shifts another. ``"single"`` replays a script that seeds the global RNG once and draws on the
CPU in program order, as the Wasserstein-VQ authors' synthetic script does: the method's
initialisation, ``skip_draws_after_init`` discarded normal draws (a script that copies its codes
into a default-initialised ``nn.Embedding`` has drawn K x d of them), an evaluation sample before
the first step, then each step's batch followed, at step 1, every ``log_every`` steps and the last
step, by an evaluation sample. The metrics use the last one. The k-means reference keeps its own
stream either way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmark.experiments import metrics
from benchmark.experiments.config import ConfigError, RunConfig
from benchmark.experiments.training import (
    STREAM_EVAL, STREAM_KMEANS, STREAM_TRAIN, STREAM_VALIDATION, OnStep, Trainer, build_quantizer, check_codebook,
    check_split_size, result_record,
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
    check_split_size(dataset, evaluation_split, config.codebook_size)
    cpu = torch.device("cpu")
    stream = STREAM_EVAL if evaluation_split == "test" else STREAM_VALIDATION
    single = torch.Generator().manual_seed(config.seed) if config.random_stream == "single" else None
    quantizer = build_quantizer(config, device, init_generator=single)
    optimizer = make_optimizer(config, quantizer)
    trainer = Trainer(config, quantizer, optimizer, on_step, progress)
    if single is None:
        train_gen = generator(config.seed, STREAM_TRAIN, device)
        eval_gen = generator(config.seed, stream, cpu)
    else:
        train_gen = eval_gen = single
        torch.randn(config.skip_draws_after_init, generator=single)
    evaluation = EvaluationSamples(dataset, config, eval_gen, evaluation_split, scheduled=single is not None)

    def train_step(step: int) -> tuple[torch.Tensor, Any]:
        """One batch of fresh features through the quantizer."""
        out = quantizer(dataset.sample(config.batch_size, train_gen).to(device))
        evaluation.after_batch(step)
        return out.loss, out

    quantizer.train()
    final_loss, train_seconds = timed_training(trainer, device, train_step)

    quantizer.eval()
    codebook = check_codebook(quantizer, config.steps)
    kmeans_features = dataset.sample(
        metrics.kmeans_train_size(config.codebook_size), generator(metrics.KMEANS_REFERENCE_SEED, STREAM_KMEANS, cpu)
    ).cpu()
    record = evaluate(config, quantizer, codebook, evaluation.final().cpu(), kmeans_features, device, artifacts_dir)
    record.update(final_loss=final_loss, train_seconds=train_seconds)
    return result_record(record)


class EvaluationSamples:
    """The evaluation features: drawn once after training from their own stream, or (``scheduled``,
    the single stream) before the first step and after the batch of step 1, of every
    ``log_every``-th step and of the last step, keeping the last."""

    def __init__(self, dataset: Any, config: RunConfig, generator: torch.Generator, split: str, scheduled: bool):
        self.dataset, self.config, self.generator, self.split = dataset, config, generator, split
        self.scheduled = scheduled
        self.latest = self.draw() if scheduled else None

    def draw(self) -> torch.Tensor:
        return self.dataset.sample(self.config.eval_size, self.generator, split=self.split)

    def after_batch(self, step: int) -> None:
        if self.scheduled and (step == 1 or step % self.config.log_every == 0 or step == self.config.steps):
            self.latest = self.draw()

    def final(self) -> torch.Tensor:
        return self.latest if self.latest is not None else self.draw()
