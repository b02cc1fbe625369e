"""Density-adjusted Wasserstein VQ: the Gaussian W loss aimed at N(mu_z, c S_z) instead of N(mu_z, S_z).

Wasserstein VQ (Fang et al., arXiv:2506.15078, https://github.com/VQ-Research/Wasserstein-VQ)
matches the codebook's Gaussian to the features'. But a codebook that minimises the quantization
error does not have the feature density: for a feature density f, the optimal point density is a
power f^a, and for a Gaussian f = N(mu, S), f^a is proportional to N(mu, S / a). So

    loss = codebook_weight * ||sg(z) - e||^2 + beta * ||z - sg(e)||^2 + gamma * W(N(mu_z, c S_z), N(mu_c, S_c))
    c = 1 / a

with W and its normalisation exactly as in ``methods/wasserstein.py`` (feature statistics from the
queue; both sides divided by the largest per-dimension feature std, of S_z, not of c S_z).

Which exponent. High-resolution quantization theory (Gersho, "Asymptotically optimal block
quantization", IEEE Trans. IT 1979; Zador 1982; Gray & Neuhoff, "Quantization", IEEE Trans. IT
1998) gives, for r-th power error, the optimal point density lambda ~ f^(d/(d+r)); for squared error
(r = 2) a = d/(d+2), so c = (d+2)/d > 1: the codebook is *wider* than the features (it spreads
codes into the tails, where each cell is large). The derivation: E ~ int f lambda^(-2/d) with
int lambda = 1; the Lagrange condition f lambda^(-(d+2)/d) = const gives lambda ~ f^(d/(d+2)).
Wasserstein VQ's Theorem 2 states f^((d+2)/d), i.e. c = d/(d+2) < 1 (narrower): the reciprocal
exponent, which does not satisfy that stationarity condition. ``exponent="gersho"`` (default)
is c = (d+2)/d; ``exponent="paper"`` is c = d/(d+2); ``covariance_scale`` > 0 overrides both.

At finite K the centroid shrinkage pulls the other way (codes sit inside the features by about
E/d per coordinate); measurements of both effects: docs/wasserstein_density.md.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from methods._base import _check_non_negative
from methods._registry import register
from methods.wasserstein import WassersteinOptions, WassersteinVQ, gaussian_wasserstein_loss

EXPONENTS = ("gersho", "paper")


@dataclass(frozen=True)
class WassersteinDensityOptions(WassersteinOptions):
    """exponent: "gersho" (target covariance (d+2)/d S_z) or "paper" (d/(d+2) S_z);
    covariance_scale: c > 0 overrides the exponent (0 = use it)."""

    exponent: str = "gersho"
    covariance_scale: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.exponent not in EXPONENTS:
            raise ValueError(f"exponent: must be one of {list(EXPONENTS)}, got {self.exponent!r}")
        _check_non_negative(self, "covariance_scale")


def target_covariance_scale(dim: int, exponent: str, covariance_scale: float = 0.0) -> float:
    """c with target N(mu_z, c S_z): (d+2)/d for "gersho", d/(d+2) for "paper", or the override."""
    if covariance_scale > 0:
        return float(covariance_scale)
    if exponent == "gersho":
        return (dim + 2) / dim
    if exponent == "paper":
        return dim / (dim + 2)
    raise ValueError(f"exponent: must be one of {list(EXPONENTS)}, got {exponent!r}")


@register("wasserstein_density")
class WassersteinDensityVQ(WassersteinVQ):
    """Gaussian W between N(mu_z, c S_z) (feature queue) and the codebook's Gaussian."""

    Options = WassersteinDensityOptions
    distribution_term = "wasserstein"

    @property
    def covariance_scale(self) -> float:
        return target_covariance_scale(self.dim, self.options.exponent, self.options.covariance_scale)

    def distribution_loss(self, features: Tensor, codebook: Tensor) -> Tensor:
        mean, cov = self.feature_statistics(features)
        target_cov = self.covariance_scale * cov
        if self.options.normalize:  # by the features' spread, not the target's, as wasserstein does
            scale = cov.diagonal().clamp(min=0).sqrt().max().clamp(min=1e-12)
            mean, target_cov = mean / scale, target_cov / scale**2
            codebook = codebook / scale.to(codebook.dtype)
        return gaussian_wasserstein_loss(mean, target_cov, codebook, normalize=False, squared=self.options.squared)
