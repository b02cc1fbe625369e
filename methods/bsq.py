"""BSQ: binary spherical quantization, the sign of a unit vector, scaled back onto the sphere.

Zhao, Xiong, Krähenbühl, "Image and Video Tokenization with Binary Spherical Quantization"
(BSQ-ViT), arXiv:2406.07548. Official code: https://github.com/zhaoyue-zephyrus/bsq-vit
(transcoder/models/quantizer/bsq.py).

    u = z / ||z||,  q(z) = sign(u) / sqrt(d)   (C = {-1/sqrt(d), +1/sqrt(d)}^d on the unit sphere)
    index = sum_i [u_i > 0] 2^(d-1-i)
    gradient to u: straight-through before the scaling onto the sphere, q = (u + sg(sign(u) - u)) / sqrt(d),
      so dq/du = I / sqrt(d) (``gradient_gain = "inverse_sqrt_dim"``), as the official code
    soft entropy (the paper's factorised approximation, group size 1):
      p_ni = sigmoid(4 tau u_ni / sqrt(d)),  H_sample = mean_n sum_i H(p_ni),
      H_codebook ~ sum_i H(mean_n p_ni)
    loss = beta mean_n ||u_n - sg(q_n)||^2 + entropy_weight (gamma0 H_sample - gamma H_codebook) / tau

as the official code computes it (``BinarySphericalQuantizer`` with group_size 1 and the analytical
per-sample entropy, its 18- and 36-bit ImageNet configs). Defaults: beta = 0 as every official
config; entropy_weight = 0.1 = the official zeta (1) times the weight 0.1 its training loss puts on
the quantizer's whole loss (``codebook_weight``; the official ramp-up from 3x over the first 2,000
steps is not modelled). ``entropy_weight=1, beta=b`` is the official quantizer loss at beta = b.

Because every code has norm 1, ||u - q||^2 = 2 - 2 <u, q> is bounded and the quantization error
lives on the sphere (``error_space = "sphere"``: never rank it against euclidean E). Every
quantizer of this kind is a fixed codebook (nothing to learn, nothing dies).
Deviations, pinned by tests: no linear in/out projections (the encoder/decoder of the model supply
them); the codebook entropy is the per-bit approximation only (no sub-group option); entropies
use 0 log 0 = 0 where the official code takes p log(p + 1e-8) (a difference below 1e-7 per bit).
Needs K = 2^dim (``codebook_size``).
Distributed training (``sync_ranks``): mean_n p_ni is over the batch of every rank (an
all-reduce whose backward makes DDP's encoder gradient that of one process on the whole batch).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from methods._base import QuantizerOutput, Quantizer, _check_non_negative
from methods import _dist
from methods._binary import batch_mean, binary_entropy, check_binary_size, sign_codes, sign_indices
from methods._core import straight_through
from methods._registry import register


@dataclass(frozen=True)
class BSQOptions(_dist.RankSyncOptions):
    """beta: commitment weight; entropy_weight (zeta), gamma0, gamma: the entropy penalty;
    inv_temperature: tau of the soft bit probabilities."""

    beta: float = 0.0
    entropy_weight: float = 0.1
    gamma0: float = 1.0
    gamma: float = 1.0
    inv_temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_non_negative(self, "beta", "entropy_weight", "gamma0", "gamma", "inv_temperature")
        if self.inv_temperature == 0:
            raise ValueError("inv_temperature: must be > 0, got 0")


@register("bsq")
class BSQ(Quantizer):
    """Binary spherical quantization on the unit sphere, implicit 2^d-code codebook."""

    Options = BSQOptions
    paper = "arXiv:2406.07548"
    trainable_by_gradient = False
    learnable_codebook = False
    codebook_size_rule = "binary"
    rank_synchronised = True
    error_space = "sphere"
    gradient_gain = "inverse_sqrt_dim"

    def __init__(self, dim: int, codebook_size: int, options: BSQOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        check_binary_size(dim, codebook_size)

    @property
    def codebook(self) -> Tensor:
        return self.indices_to_codes(torch.arange(self.codebook_size))

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return sign_codes(indices, self.dim) / self.dim**0.5

    def search_space(self, features: Tensor) -> Tensor:
        return F.normalize(features, dim=-1)

    def search(self, z: Tensor) -> Tensor:
        return sign_indices(self.search_space(self._flatten(z).detach())).reshape(z.shape[:-1])

    def loss_weights(self) -> dict[str, float]:
        scale = self.options.entropy_weight / self.options.inv_temperature
        return {"commitment": self.options.beta, "per_sample_entropy": scale * self.options.gamma0, "codebook_entropy": -scale * self.options.gamma}

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        unit = self.search_space(features)
        indices = sign_indices(unit.detach())
        codes = torch.where(unit.detach() > 0, 1.0, -1.0).to(features.dtype) / self.dim**0.5
        p = torch.sigmoid(4 * self.options.inv_temperature * unit / self.dim**0.5)
        losses = {
            "commitment": (unit - codes).pow(2).sum(dim=1).mean(),
            "per_sample_entropy": binary_entropy(p).sum(dim=1).mean(),
            "codebook_entropy": binary_entropy(batch_mean(p, _dist.synchronised(self.options, self.training))).sum(),
        }
        return QuantizerOutput(straight_through(unit / self.dim**0.5, codes), indices, self.weighted_sum(losses), losses)
