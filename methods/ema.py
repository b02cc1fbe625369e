"""EMA VQ: codes are exponential moving averages of the features assigned to them.

van den Oord et al. 2017 (appendix A.1, arXiv:1711.00937); Razavi, van den Oord, Vinyals,
"Generating Diverse High-Fidelity Images with VQ-VAE-2", NeurIPS 2019, arXiv:1906.00446.
Official code: https://github.com/deepmind/sonnet (vqvae.py, VectorQuantizerEMA).

In training mode every forward updates, for each code k with n_k assigned features summing to s_k:

    N_k <- decay * N_k + (1 - decay) * n_k              (cluster size)
    m_k <- decay * m_k + (1 - decay) * s_k              (feature sum)
    e_k  = m_k / Ntilde_k,   Ntilde_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j   (Laplace smoothing)

The codebook is not trained by gradient; the loss is beta * ||z - sg(e)||^2 only.
Deviation: N starts at 1 and m at the initial codes (not 0), so a code that is never assigned
keeps its initial position instead of being divided towards infinity by a vanishing N_k.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from methods._base import QuantizerOutput, Quantizer, _check_non_negative, normal_codebook
from methods._core import nearest_code, straight_through
from methods._registry import register


@dataclass(frozen=True)
class EMAOptions:
    """beta: commitment weight; decay in (0, 1); eps > 0: Laplace smoothing; init_scale: N(0, s^2) init."""

    beta: float = 0.25
    decay: float = 0.99
    eps: float = 1e-5
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_non_negative(self, "beta", "eps", "init_scale")
        if isinstance(self.decay, bool) or not isinstance(self.decay, (int, float)) or not 0 < self.decay < 1:
            raise ValueError(f"decay: must be in (0, 1), got {self.decay!r}")
        if not self.eps > 0:
            raise ValueError(f"eps: must be > 0, got {self.eps!r}")


@register("ema")
class EMAVQ(Quantizer):
    """EMA codebook updates (buffers ``cluster_size``, ``embed_sum``, ``embedding``)."""

    Options = EMAOptions
    paper = "arXiv:1906.00446"
    trainable_by_gradient = False

    def __init__(self, dim: int, codebook_size: int, options: EMAOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        initial = normal_codebook(codebook_size, dim, options.init_scale, generator)
        self.register_buffer("embedding", initial.clone())
        self.register_buffer("embed_sum", initial.clone())
        self.register_buffer("cluster_size", torch.ones(codebook_size))

    @property
    def codebook(self) -> Tensor:
        return self.embedding

    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.options.beta}

    @torch.no_grad()
    def ema_update(self, features: Tensor, indices: Tensor) -> None:
        """One EMA step from flat features (N, d) and their code indices (N,)."""
        decay, eps, k = self.options.decay, self.options.eps, self.codebook_size
        counts = torch.bincount(indices, minlength=k).to(self.cluster_size.dtype)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, features.to(self.embed_sum.dtype))
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        self.embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + eps) / (total + k * eps) * total
        self.embedding.copy_(self.embed_sum / smoothed[:, None])

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        indices = nearest_code(features.detach(), self.embedding)
        codes = self.embedding[indices]
        losses = {"commitment": (features - codes).pow(2).mean()}
        if self.training:
            self.ema_update(features.detach(), indices)
        return QuantizerOutput(straight_through(features, codes), indices, self.weighted_sum(losses), losses)
