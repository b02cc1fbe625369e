"""IBQ: index backpropagation quantization, a straight-through one-hot over all code logits.

Shi, Li, Zhu, Zhao, Hu, "Scalable Image Tokenization with Index Backpropagation Quantization",
arXiv:2412.02692. Official code: https://github.com/TencentARC/SEED-Voken
(src/IBQ/modules/vqvae/quantize.py, ``IndexPropagationQuantize``).

    l_nk = <z_n, e_k> - ||e_k||^2 / 2   (logits="distance", default; = (||z_n||^2 - ||z_n - e_k||^2) / 2)
    l_nk = <z_n, e_k>                    (logits="dot", the official code)
    s_n = softmax(l_n / temperature),  h_n = onehot(argmax_k l_nk)
    q(z_n) = (h_n - sg(s_n) + s_n) C        (value: the code h_n C; gradient through s_n, no identity)
    loss = ||q - z||^2 + ||sg(h C) - z||^2 + beta ||h C - sg(z)||^2     (each averaged over elements)

as the official code computes it: the first ("soft") term reaches every code through the softmax
(the point of index backpropagation) and z both directly and through the logits; the second
("commitment", weight 1) pulls z to its hard code; the third ("codebook", weight ``beta`` = 0.25,
the official default) pulls the hard code to z. dq/dz = C^T (diag(s) - s s^T) dl/dz
(``relaxed_gradient``: the Jacobian of ``relaxation(z) = s C``, not the identity).

Deviations, each pinned by a test: the default logits subtract ||e_k||^2 / 2, so the hard code is
the L2-nearest code like every quantizer here (``logits="dot"`` is the official form, whose
argmax is the largest inner product: equal when the codes have equal norms); no entropy term (the
official module's default; its ImageNet configs add one of weight 0.05 on the logits at
temperature 0.01); codes start N(0, init_scale^2) (nn.Embedding's N(0, 1) at the default). The
(N, K) logits are the method itself (the softmax needs them all) and are materialised: memory
O(N K). The soft path's gradient g C^T to s is computed in backward only: the official product
(h - sg(s) + s) C costs a second (N, K) x (K, d) product whose value is h C again.

Distributed training: needs no synchronisation (``rank_synchronised`` False): its only state is
the codebook parameter, which DDP's gradient average keeps equal on every rank, and its losses are per-feature means.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods._base import QuantizerOutput, Quantizer, _check_choice, _check_non_negative, normal_codebook
from methods._registry import register

LOGITS = ("distance", "dot")


@dataclass(frozen=True)
class IBQOptions:
    """beta: weight of the codebook term ||h C - sg(z)||^2 (the official ``beta``, 0.25);
    temperature of the softmax (1: the official code has none); logits: "distance" (the hard code
    is the nearest) or "dot" (the official <z, e>); init_scale: codes start N(0, init_scale^2)."""

    beta: float = 0.25
    temperature: float = 1.0
    logits: str = "distance"
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_non_negative(self, "beta", "temperature", "init_scale")
        _check_choice(self, "logits", LOGITS)
        if self.temperature == 0:
            raise ValueError("temperature: must be > 0, got 0")


class _SoftPath(torch.autograd.Function):
    """Zero in value, gradient g C^T to the soft assignment s: the (s - sg(s)) C of the official
    one-hot product without computing the (N, K) x (K, d) product whose value is zero. No gradient
    to C through it (the official product's C gradient is h^T g, carried by the gathered code)."""

    @staticmethod
    def forward(ctx, soft: Tensor, codebook: Tensor) -> Tensor:
        ctx.save_for_backward(codebook)
        return soft.new_zeros(soft.shape[0], codebook.shape[1])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (codebook,) = ctx.saved_tensors
        return grad @ codebook.T.to(grad.dtype), None


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
        return {"soft": 1.0, "commitment": 1.0, "codebook": self.options.beta}

    def logits(self, features: Tensor, codebook: Tensor) -> Tensor:
        """(N, K) l / temperature, one fused product (the bias -||e||^2 / 2 for "distance")."""
        codebook = codebook.to(features.dtype)
        scale = 1.0 / self.options.temperature
        if self.options.logits == "dot":
            return (features @ codebook.T) * scale
        bias = codebook.pow(2).sum(dim=1) * (-0.5 * scale)
        return torch.addmm(bias, features, codebook.T, alpha=scale)

    def search(self, z: Tensor) -> Tensor:
        flat = self._flatten(z).detach()
        return self.logits(flat, self.codebook.detach()).argmax(dim=1).reshape(z.shape[:-1])

    def relaxation(self, features: Tensor) -> Tensor:
        """s C: the soft code whose Jacobian is the gradient IBQ passes to z (N, d)."""
        codebook = self.codebook
        return self.logits(features, codebook).softmax(dim=1) @ codebook

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        codebook = self.codebook
        logits = self.logits(features, codebook)
        indices = logits.detach().argmax(dim=1)
        codes = codebook[indices]
        quantized = codes + _SoftPath.apply(logits.softmax(dim=1), codebook.detach())
        losses = {
            "soft": F.mse_loss(quantized, features),
            "commitment": F.mse_loss(features, codes.detach()),
            "codebook": F.mse_loss(codes, features.detach()),
        }
        return QuantizerOutput(quantized, indices, self.weighted_sum(losses), losses)
