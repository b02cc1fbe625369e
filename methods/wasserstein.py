"""Wasserstein VQ: match the Gaussian statistics of the codebook to those of the features.

Fang et al., "Enhancing Vector Quantization with Distributional Matching: A Theoretical and
Empirical Study", arXiv:2506.15078 (ICLR 2025 submission "distributional matching").
Official code: https://github.com/VQ-Research/Wasserstein-VQ.

    W^2 = ||mu_z - mu_c||^2 + tr(S_z + S_c - 2 (S_z^1/2 S_c S_z^1/2)^1/2)      (Olkin-Pukelsheim)
    loss = codebook_weight * ||sg(z) - e||^2 + beta * ||z - sg(e)||^2 + gamma * W

As in the authors' VQ-VAE code: feature statistics (mu_z, S_z) come from a FIFO queue of the last
``queue_size`` detached features (``statistics="batch"``: from the current batch alone, as in the
authors' synthetic script, which also sets ``normalize=False``); codebook statistics from all K codes; both sides are divided by
the largest per-dimension feature std (``normalize``); the loss uses W, not W^2 (``squared``
switches); W only moves the codebook. Deviations: the cross term is differentiated through
``eigvalsh`` of S_z^1/2 S_c S_z^1/2 with S_z^1/2 computed from detached statistics, so the gradient
is finite for an isotropic codebook (repeated eigenvalues) and for singular covariances
(K < d, constant feature dims) without zeroing NaN gradients; the queue keeps running float64
sums so its statistics cost O(batch x d^2) per step.
Distributed training (``sync_ranks``): the queue takes the features of every rank (gathered in
rank order) and ``statistics="batch"`` all-reduces (n, sum z, sum z z^T), so mu_z and S_z are those
of the whole batch (never an average of per-rank covariances).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from methods import _dist
from methods._base import _check_positive_int
from methods._core import gaussian_w2_squared, mean_and_covariance, symmetric_sqrt
from methods._matching import DistributionMatchingQuantizer, FeatureQueue, MatchingOptions
from methods._registry import register

STATISTICS = ("queue", "batch")

@dataclass(frozen=True)
class WassersteinOptions(MatchingOptions):
    """queue_size: features kept for the statistics (65,536 in the paper); statistics: "queue"
    (the feature statistics of the queue) or "batch" (of the current batch only: needs >= 2
    features per forward); normalize: divide by the max per-dim feature std; squared: use W^2
    instead of W in the loss."""

    queue_size: int = 65536
    normalize: bool = True
    squared: bool = False
    statistics: str = "queue"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive_int(self, "queue_size")
        for name in ("normalize", "squared"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        if self.statistics not in STATISTICS:
            raise ValueError(f"statistics: must be one of {list(STATISTICS)}, got {self.statistics!r}")


def global_mean_and_covariance(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population covariance of the rows of ``x`` over every rank, from the all-reduced
    sums n, sum x and sum x x^T (``methods._dist``)."""
    count = torch.tensor(float(x.shape[0]), dtype=x.dtype, device=x.device)
    total, outer = x.sum(dim=0), x.t() @ x
    _dist.all_reduce_(count, total, outer)
    mean = total / count
    covariance = outer / count - torch.outer(mean, mean)
    return mean, (covariance + covariance.t()) / 2


def gaussian_wasserstein_loss(
    feature_mean: Tensor, feature_cov: Tensor, codebook: Tensor, normalize: bool, squared: bool
) -> Tensor:
    """The Wasserstein VQ distribution term between N(feature stats) and the codebook's Gaussian.

    Statistics are float64 for the d x d eigen-problems; returns a scalar in the codebook's dtype.
    """
    feature_mean, feature_cov = feature_mean.double(), feature_cov.double()
    code_mean, code_cov = mean_and_covariance(codebook.double())
    if normalize:
        scale = feature_cov.diagonal().clamp(min=0).sqrt().max().clamp(min=1e-12)
        feature_mean, code_mean = feature_mean / scale, code_mean / scale
        feature_cov, code_cov = feature_cov / scale**2, code_cov / scale**2
    w2 = gaussian_w2_squared(feature_mean, feature_cov, code_mean, code_cov, symmetric_sqrt(feature_cov))
    distance = w2 if squared else (w2 + 1e-10).sqrt()
    return distance.to(codebook.dtype)


@register("wasserstein")
class WassersteinVQ(DistributionMatchingQuantizer):
    """Gaussian closed-form W between the feature queue's and the codebook's statistics."""

    Options = WassersteinOptions
    distribution_term = "wasserstein"

    def __init__(self, dim: int, codebook_size: int, options: WassersteinOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        self.queue = FeatureQueue(options.queue_size, dim)

    def min_batch_size(self) -> int:
        return 2 if self.options.statistics == "batch" else 1

    def feature_statistics(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and covariance (float64) of the queue, after pushing ``features`` in training mode;
        of ``features`` alone with ``statistics="batch"``."""
        if self.options.statistics == "batch":
            if _dist.synchronised(self.options, self.training):
                return global_mean_and_covariance(features.double())
            return mean_and_covariance(features.double())
        if self.training:
            self.queue.push(self.batch_features(features))
        if int(self.queue.count) > 0:
            return self.queue.statistics()
        return mean_and_covariance(features.double())  # evaluation before any training step

    def distribution_loss(self, features: Tensor, codebook: Tensor) -> Tensor:
        mean, cov = self.feature_statistics(features)
        return gaussian_wasserstein_loss(mean, cov, codebook, self.options.normalize, self.options.squared)
