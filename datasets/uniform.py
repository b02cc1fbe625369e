"""Uniform distribution on the cube [low, high]^dim, shifted by ``mean`` in every coordinate.

Every coordinate is independent U(low, high) + mean: E[z] = ((low + high)/2 + mean) * 1,
Cov[z] = (high - low)^2 / 12 * I. A bounded, flat density: the codebook should tile the cube.
The mean-shifted uniform of Wasserstein VQ (arXiv 2506.15078), z ~ U[-1, 1]^d + mu, is
``mean = mu`` with the default ``low = -1``, ``high = 1``, the same option as ``gaussian``'s mean
shift; ``mean = 0`` (the default) is the plain cube.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._common import FeatureDistribution, check_float, check_int
from ._registry import register


@dataclass(frozen=True)
class UniformOptions:
    dim: int = 8
    low: float = -1.0
    high: float = 1.0
    mean: float = 0.0  # mu: added to every coordinate

    def __post_init__(self) -> None:
        check_int(self, "dim", low=1)
        check_float(self, "low")
        check_float(self, "high")
        if not self.high > self.low:
            raise ValueError(f"high: must be > low ({self.low!r}), got {self.high!r}")
        check_float(self, "mean")


@register("uniform")
class Uniform(FeatureDistribution):
    Options = UniformOptions
    source = "uniform cube [low, high]^dim (synthetic)"

    def __init__(self, options: UniformOptions) -> None:
        self.options = options
        self.dim = options.dim

    def _sample(self, n: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(n, self.dim, generator=generator, device=generator.device)
        return u * (self.options.high - self.options.low) + (self.options.low + self.options.mean)

    @property
    def mean(self) -> Tensor:
        center = (self.options.low + self.options.high) / 2 + self.options.mean
        return torch.full((self.dim,), center, dtype=torch.float64)

    @property
    def covariance(self) -> Tensor:
        width = self.options.high - self.options.low
        return torch.eye(self.dim, dtype=torch.float64) * width**2 / 12
