"""LFQ: lookup-free quantization, one bit per dimension, no codebook to learn.

Yu et al., "Language Model Beats Diffusion -- Tokenizer is Key to Visual Generation"
(MAGVIT-v2), arXiv:2310.05737, section 3.1. Official code: none public (JAX, Google);
open reproductions: https://github.com/TencentARC/Open-MAGVIT2 and vector-quantize-pytorch's
lookup_free_quantization.py (the peer we test parity against).

    C = {-1, +1}^d (K = 2^d, implicit),  q(z) = sign(z),  index = sum_i [z_i > 0] 2^(d-1-i)
    gradient to z: straight-through (dq/dz = I)
    p_n(c) = softmax_c(2 tau <z_n, c>) = prod_i sigmoid(4 tau z_ni c_i)      (factorises per bit)
    entropy penalty = mean_n H(p_n) - diversity_gamma * H(mean_n p_n)
    loss = entropy_weight * entropy penalty + beta * ||z - sg(q)||^2

The per-sample entropy is the sum of per-bit binary entropies (exact, O(N d)); the codebook
entropy H(mean_n p_n) is exact over all 2^d codes, accumulated in row blocks (O(block x K)).
The first term makes each feature confident, the second spreads the batch over the codes.
Weights: entropy_weight 0.1 and diversity_gamma 1 (the paper and the peer), inv_temperature
tau = 100 (the peer's default); beta 0.25 as in Open-MAGVIT2 (the peer's default is 0).
Deviations: the entropy terms are reported in eval mode too (the peer returns 0 there); z = 0
maps to -1 like the peer. Needs K = 2^dim (ValueError naming ``codebook_size``).
Distributed training (``sync_ranks``): mean_n p_n is over the batch of every rank (an
all-reduce whose backward makes DDP's encoder gradient that of one process on the whole batch).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from methods import _dist
from methods._base import QuantizerOutput, Quantizer, _check_non_negative
from methods._binary import binary_entropy, check_binary_size, codebook_entropy_exact, sign_codes, sign_indices
from methods._core import straight_through
from methods._registry import register


@dataclass(frozen=True)
class LFQOptions(_dist.RankSyncOptions):
    """entropy_weight: weight of the entropy penalty; diversity_gamma: weight of the codebook
    entropy inside it; inv_temperature: tau of the soft code distribution; beta: commitment."""

    entropy_weight: float = 0.1
    diversity_gamma: float = 1.0
    inv_temperature: float = 100.0
    beta: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_non_negative(self, "entropy_weight", "diversity_gamma", "inv_temperature", "beta")
        if self.inv_temperature == 0:
            raise ValueError("inv_temperature: must be > 0, got 0")


@register("lfq")
class LFQ(Quantizer):
    """Lookup-free quantization: sign per dimension, implicit {-1, 1}^d codebook."""

    Options = LFQOptions
    paper = "arXiv:2310.05737"
    trainable_by_gradient = False
    learnable_codebook = False
    codebook_size_rule = "binary"
    rank_synchronised = True

    def __init__(self, dim: int, codebook_size: int, options: LFQOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        check_binary_size(dim, codebook_size)

    @property
    def codebook(self) -> Tensor:
        return sign_codes(torch.arange(self.codebook_size), self.dim)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return sign_codes(indices, self.dim)

    def search(self, z: Tensor) -> Tensor:
        return sign_indices(self._flatten(z).detach()).reshape(z.shape[:-1])

    def loss_weights(self) -> dict[str, float]:
        return {
            "commitment": self.options.beta,
            "per_sample_entropy": self.options.entropy_weight,
            "codebook_entropy": -self.options.entropy_weight * self.options.diversity_gamma,
        }

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        indices = sign_indices(features.detach())
        codes = torch.where(features.detach() > 0, 1.0, -1.0).to(features.dtype)
        logits = 4 * self.options.inv_temperature * features
        losses = {
            "commitment": (features - codes).pow(2).mean(),
            "per_sample_entropy": binary_entropy(torch.sigmoid(logits)).sum(dim=1).mean(),
            "codebook_entropy": codebook_entropy_exact(F.logsigmoid(logits), F.logsigmoid(-logits),
                                                       _dist.synchronised(self.options, self.training)),
        }
        return QuantizerOutput(straight_through(features, codes), indices, self.weighted_sum(losses), losses)
