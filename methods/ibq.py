"""IBQ: index backpropagation quantization, a straight-through one-hot over all code logits.

Shi, Li, Zhu, Zhao, Hu, "Scalable Image Tokenization with Index Backpropagation Quantization",
arXiv:2412.02692. Official code: https://github.com/TencentARC/SEED-Voken (IBQ).

    l_nk = (2 <z_n, e_k> - ||e_k||^2) / temperature     (= (||z_n||^2 - ||z_n - e_k||^2) / temperature)
    s_n = softmax(l_n),  h_n = onehot(argmax_k l_nk)       (the nearest code)
    q(z_n) = (h_n - sg(s_n) + s_n) C                       (value: the code; gradient: through s_n)
    loss = codebook_weight ||sg(z) - q||^2 + beta ||z - sg(q)||^2

The relaxed one-hot passes gradient to every code (weighted by its softmax probability) and to
z through the logits, so all codes train together: dq/dz = C^T (diag(s) - s s^T) dl/dz
(``relaxed_gradient``: the Jacobian of ``relaxation(z) = s C``, not the identity).
Deviations: the paper's logits are <z, e_k>; we subtract ||e_k||^2 / 2 (scaled by 2), so the hard
code is the L2-nearest code like every quantizer here (identical when the codes have equal
norms); no entropy term (the official code adds an optional one). The (N, K) logits are the
method itself (the softmax needs them all) and are materialised: memory O(N K).

Distributed training: needs no synchronisation (``rank_synchronised`` False): its only state is
the codebook parameter, which DDP's gradient average keeps equal on every rank, and its losses are per-feature means.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from methods._base import QuantizerOutput, Quantizer, _check_non_negative, commitment_and_codebook, normal_codebook
from methods._registry import register


@dataclass(frozen=True)
class IBQOptions:
    """beta / codebook_weight: commitment / codebook weights; temperature of the softmax;
    init_scale: codes start N(0, init_scale^2)."""

    beta: float = 0.25
    codebook_weight: float = 1.0
    temperature: float = 1.0
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_non_negative(self, "beta", "codebook_weight", "temperature", "init_scale")
        if self.temperature == 0:
            raise ValueError("temperature: must be > 0, got 0")


@register("ibq")
class IBQ(Quantizer):
    """Index backpropagation quantization with a learnable (K, d) codebook."""

    Options = IBQOptions
    paper = "arXiv:2412.02692"
    straight_through = False
    relaxed_gradient = True

    def __init__(self, dim: int, codebook_size: int, options: IBQOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        self.embedding = nn.Parameter(normal_codebook(codebook_size, dim, options.init_scale, generator))

    @property
    def codebook(self) -> Tensor:
        return self.embedding

    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}

    def logits(self, features: Tensor, codebook: Tensor) -> Tensor:
        codebook = codebook.to(features.dtype)
        return (2 * features @ codebook.T - codebook.pow(2).sum(dim=1)) / self.options.temperature

    def relaxation(self, features: Tensor) -> Tensor:
        """s C: the soft code whose Jacobian is the gradient IBQ passes to z (N, d)."""
        codebook = self.codebook
        return self.logits(features, codebook).softmax(dim=1) @ codebook

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        codebook = self.codebook
        soft = self.logits(features, codebook).softmax(dim=1)
        indices = soft.detach().argmax(dim=1)
        codes = codebook[indices]
        # (h - sg(s) + s) C: the value is the code h C; s C - sg(s) C carries the gradient through s
        # (to z and to every code's logit). Added as t - sg(t) so the value is the code bit for bit.
        through_soft = soft @ codebook - soft.detach() @ codebook
        quantized = codes + (through_soft - through_soft.detach())
        # As the official code: the codebook term is taken on the relaxed output, so its gradient reaches
        # every code through the softmax (the point of index backpropagation); the commitment term on
        # the hard code. Taken on ``codes`` instead, IBQ would train exactly as vanilla VQ without a decoder.
        losses = commitment_and_codebook(features, quantized)
        return QuantizerOutput(quantized, indices, self.weighted_sum(losses), losses)
