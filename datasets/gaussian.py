"""Isotropic Gaussian with a mean shift: z ~ N(mean * 1, scale^2 I_dim).

The "atomic" synthetic experiment of Wasserstein VQ (arXiv 2506.15078): features
N(mu * 1, I_8) with mu in {0, 2, 4, 6, 8}, codebook initialised N(0, I); a large mu puts the
features far from the initial codes, which is what collapses vanilla VQ.
Closed forms: E[z] = mean * 1, Cov[z] = scale^2 I.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._common import FeatureDistribution, check_float, check_int
from ._registry import register


@dataclass(frozen=True)
class GaussianOptions:
    dim: int = 8
    mean: float = 0.0  # mu: every coordinate of the mean
    scale: float = 1.0  # standard deviation of every coordinate

    def __post_init__(self) -> None:
        check_int(self, "dim", low=1)
        check_float(self, "mean")
        check_float(self, "scale", positive=True)


@register("gaussian")
class Gaussian(FeatureDistribution):
    Options = GaussianOptions
    source = "Wasserstein VQ atomic experiment, arXiv 2506.15078"

    def __init__(self, options: GaussianOptions) -> None:
        self.options = options
        self.dim = options.dim

    def _sample(self, n: int, generator: torch.Generator) -> Tensor:
        noise = torch.randn(n, self.dim, generator=generator, device=generator.device)
        return noise * self.options.scale + self.options.mean

    @property
    def mean(self) -> Tensor:
        return torch.full((self.dim,), self.options.mean, dtype=torch.float64)

    @property
    def covariance(self) -> Tensor:
        return torch.eye(self.dim, dtype=torch.float64) * self.options.scale**2
