"""Uniform distribution on the 2-D disk of radius R.

The 2-D "disk" experiment of Wasserstein VQ (arXiv 2506.15078, K = 400): the codebook should
cover the disk. Sampling by inverse CDF in polar coordinates: r = R sqrt(u), theta = 2 pi v with
u, v ~ U(0, 1) (P(r <= t) = t^2 / R^2 for a uniform disk).
Closed forms: E[z] = 0, Cov[z] = R^2 / 4 I_2 (E[r^2] = R^2 / 2, split over two coordinates).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ._common import FeatureDistribution, check_float, check_int
from ._registry import register


@dataclass(frozen=True)
class DiskOptions:
    radius: float = 1.0
    dim: int = 2  # fixed: present so that a sweep setting dim gets a clear error

    def __post_init__(self) -> None:
        check_float(self, "radius", positive=True)
        check_int(self, "dim")
        if self.dim != 2:
            raise ValueError(f"dim: the disk is 2-D, dim must be 2, got {self.dim!r}")


@register("disk")
class Disk(FeatureDistribution):
    Options = DiskOptions
    source = "2-D disk experiment, Wasserstein VQ, arXiv 2506.15078"

    def __init__(self, options: DiskOptions) -> None:
        self.options = options
        self.dim = 2

    def _sample(self, n: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(n, 2, generator=generator, device=generator.device)
        r = self.options.radius * u[:, 0].sqrt()
        theta = 2 * math.pi * u[:, 1]
        return torch.stack((r * theta.cos(), r * theta.sin()), dim=1)

    @property
    def mean(self) -> Tensor:
        return torch.zeros(2, dtype=torch.float64)

    @property
    def covariance(self) -> Tensor:
        return torch.eye(2, dtype=torch.float64) * self.options.radius**2 / 4
