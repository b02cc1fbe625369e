"""Gaussian with a singular covariance: z = scale * U w, w ~ N(0, I_rank), U (dim, rank).

U has orthonormal columns spanning a random rank-dimensional subspace of R^dim, fixed by
``basis_seed`` (QR of a standard normal dim x rank matrix, float64, signs fixed so that
diag(R) > 0). The features live on that subspace: the covariance scale^2 U U^T has rank
``rank`` < ``dim`` and dim - rank zero eigenvalues, which stresses any loss that takes a matrix
square root or inverse of the feature covariance (Gaussian W2).
Closed forms: E[z] = 0, Cov[z] = scale^2 U U^T.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._common import FeatureDistribution, check_float, check_int
from ._registry import register


@dataclass(frozen=True)
class LowRankGaussianOptions:
    dim: int = 8
    rank: int = 2
    scale: float = 1.0  # standard deviation along every direction of the subspace
    basis_seed: int = 0  # fixes the subspace (not the samples)

    def __post_init__(self) -> None:
        check_int(self, "dim", low=2)
        check_int(self, "rank", low=1)
        if self.rank >= self.dim:
            raise ValueError(f"rank: must be < dim ({self.dim}) for a singular covariance, got {self.rank}")
        check_float(self, "scale", positive=True)
        check_int(self, "basis_seed", low=0)


@register("low_rank_gaussian")
class LowRankGaussian(FeatureDistribution):
    Options = LowRankGaussianOptions
    source = "synthetic: Gaussian on a random rank-r subspace (singular covariance)"

    def __init__(self, options: LowRankGaussianOptions) -> None:
        self.options = options
        self.dim = options.dim
        g = torch.Generator().manual_seed(options.basis_seed)
        q, r = torch.linalg.qr(torch.randn(options.dim, options.rank, generator=g, dtype=torch.float64))
        self.basis = q * torch.sign(torch.diagonal(r))  # (dim, rank), orthonormal columns

    def _sample(self, n: int, generator: torch.Generator) -> Tensor:
        w = torch.randn(n, self.options.rank, generator=generator, device=generator.device)
        return (w * self.options.scale) @ self.basis.to(device=generator.device, dtype=torch.float32).T

    @property
    def mean(self) -> Tensor:
        return torch.zeros(self.dim, dtype=torch.float64)

    @property
    def covariance(self) -> Tensor:
        return self.options.scale**2 * self.basis @ self.basis.T
