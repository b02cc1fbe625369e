"""Uniform distribution on the cube [low, high]^dim.

Every coordinate is independent U(low, high): E[z] = (low + high)/2 * 1,
Cov[z] = (high - low)^2 / 12 * I. A bounded, flat density: the codebook should tile the cube.
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

    def __post_init__(self) -> None:
        check_int(self, "dim", low=1)
        check_float(self, "low")
        check_float(self, "high")
        if not self.high > self.low:
            raise ValueError(f"high: must be > low ({self.low!r}), got {self.high!r}")


@register("uniform")
class Uniform(FeatureDistribution):
    Options = UniformOptions
    source = "uniform cube [low, high]^dim (synthetic)"

    def __init__(self, options: UniformOptions) -> None:
        self.options = options
        self.dim = options.dim

    def _sample(self, n: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(n, self.dim, generator=generator, device=generator.device)
        return u * (self.options.high - self.options.low) + self.options.low

    @property
    def mean(self) -> Tensor:
        return torch.full((self.dim,), (self.options.low + self.options.high) / 2, dtype=torch.float64)

    @property
    def covariance(self) -> Tensor:
        width = self.options.high - self.options.low
        return torch.eye(self.dim, dtype=torch.float64) * width**2 / 12
