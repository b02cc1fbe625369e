"""Equal-weight mixture of isotropic Gaussians: a non-Gaussian (multimodal) feature distribution.

    z ~ (1/M) sum_j N(m_j, scale^2 I_dim),   j = 0 .. M-1  (M = ``components``)

Placement of the means (s = ``separation``): component j sits on coordinate axis floor(j / 2),
at +s/2 for even j and -s/2 for odd j:
    m_0 = +s/2 e_0, m_1 = -s/2 e_0, m_2 = +s/2 e_1, m_3 = -s/2 e_1, ...
so M <= 2 * dim, and the default (M = 2) is the bimodal pair +-s/2 e_0, a distance s apart.
With scale = 1 and s = 4 the two modes are clearly separated: the case where a Gaussian-moment
(W2) loss only sees the first two moments, and MMD / sliced W are expected to do better
(Wasserstein VQ, later revision, arXiv 2506.15078).

Closed forms: mean m = (1/M) sum_j m_j, covariance = scale^2 I + (1/M) sum_j m_j m_j^T - m m^T.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._common import FeatureDistribution, check_float, check_int
from ._registry import register


@dataclass(frozen=True)
class GaussianMixtureOptions:
    dim: int = 8
    components: int = 2
    separation: float = 4.0  # distance between the two means on one axis
    scale: float = 1.0  # standard deviation of each component, every coordinate

    def __post_init__(self) -> None:
        check_int(self, "dim", low=1)
        check_int(self, "components", low=1)
        if self.components > 2 * self.dim:
            raise ValueError(
                f"components: at most 2 * dim = {2 * self.dim} (two means per axis), "
                f"got {self.components}"
            )
        check_float(self, "separation", low=0.0)
        check_float(self, "scale", positive=True)


@register("gaussian_mixture")
class GaussianMixture(FeatureDistribution):
    Options = GaussianMixtureOptions
    source = "bimodal (non-Gaussian) experiment, Wasserstein VQ later revision, arXiv 2506.15078"

    def __init__(self, options: GaussianMixtureOptions) -> None:
        self.options = options
        self.dim = options.dim
        means = torch.zeros(options.components, options.dim, dtype=torch.float64)
        for j in range(options.components):
            means[j, j // 2] = options.separation / 2 * (1 if j % 2 == 0 else -1)
        self.means = means  # (M, dim) float64

    def _sample(self, n: int, generator: torch.Generator) -> Tensor:
        device = generator.device
        which = torch.randint(self.options.components, (n,), generator=generator, device=device)
        noise = torch.randn(n, self.dim, generator=generator, device=device)
        return self.means.to(device=device, dtype=torch.float32)[which] + noise * self.options.scale

    @property
    def mean(self) -> Tensor:
        return self.means.mean(0)

    @property
    def covariance(self) -> Tensor:
        m = self.mean
        between = self.means.T @ self.means / self.options.components - torch.outer(m, m)
        return torch.eye(self.dim, dtype=torch.float64) * self.options.scale**2 + between
