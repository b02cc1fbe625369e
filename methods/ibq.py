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
temperature 0.01); codes start N(0, init_scale^2) (nn.Embedding's N(0, 1) at the default).

Cost: the forward is the shared nearest-code search ("distance"; a blocked argmax for "dot"),
since the soft path is zero in value (the official product (h - sg(s) + s) C recomputes h C).
The softmax exists only in the backward, in row blocks that recompute their logits: memory
O(rows x K) (``SOFT_BLOCK_ELEMENTS``), never O(N K); time about four (N, K, d) products and one
exp per (n, k) pair, against the search's one product.

Distributed training: needs no synchronisation (``rank_synchronised`` False): its only state is
the codebook parameter, which DDP's gradient average keeps equal on every rank, and its losses are per-feature means.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from methods._core import nearest_code
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


# Rows per block of the soft assignment's backward: a block's (rows, K) logits stay in cache-sized
# pieces and memory is O(rows x K), never O(N x K).
SOFT_BLOCK_ELEMENTS = 1 << 18


def ibq_logits(features: Tensor, codebook: Tensor, temperature: float, form: str) -> Tensor:
    """(N, K) l / temperature, one fused product (the bias -||e||^2 / 2 for "distance")."""
    codebook = codebook.to(features.dtype)
    scale = 1.0 / temperature
    if form == "dot":
        return (features @ codebook.T) * scale
    bias = codebook.pow(2).sum(dim=1) * (-0.5 * scale)
    return torch.addmm(bias, features, codebook.T, alpha=scale)


def _row_blocks(rows: int, codebook_size: int) -> list[slice]:
    step = max(1, SOFT_BLOCK_ELEMENTS // max(1, codebook_size))
    return [slice(start, start + step) for start in range(0, rows, step)]


class _SoftPath(torch.autograd.Function):
    """Zero in value; the gradient of the official (s - sg(s)) C, s = softmax(l(z, C)), to z and C.

    For the incoming gradient g (N, d) and a = g C^T (N, K):
        dL/dl = s * (a - r),  r_n = sum_k s_nk a_nk = <g_n, s_n C>          (softmax Jacobian)
        dL/dz = (dL/dl) C / T,   dL/dC = (dL/dl)^T z / T  (- colsum(dL/dl) e_k / T for "distance")
    computed in row blocks that recompute their logits, so no (N, K) tensor is ever held and the
    forward never forms s. Each block works on p = exp(l - l_h), shifted by the logit of the hard
    code h (the row maximum, known from the search: no max pass), one product giving the logits
    already shifted; the softmax's normaliser Z_n = sum_k p_nk and s_n C come out of one product
    p [1, C], and the division by Z is applied to (N, d) and (d, K) factors, never to (N, K).
    The official product's own C gradient h^T g is carried by the gathered hard code, as its
    value (s - sg(s)) C = 0 is never computed."""

    @staticmethod
    def forward(ctx, features: Tensor, codebook: Tensor, indices: Tensor, temperature: float, form: str) -> Tensor:
        ctx.save_for_backward(features, codebook, indices)
        ctx.temperature, ctx.form = temperature, form
        return features.new_zeros(features.shape[0], codebook.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        features, codebook, indices = ctx.saved_tensors
        scale, distance = 1.0 / ctx.temperature, ctx.form == "distance"
        weights = codebook.to(features.dtype)
        size = weights.shape[0]
        grad = grad.to(features.dtype)
        columns = weights.T.contiguous()  # (d, K): the layout every product below reads fastest
        bias = weights.pow(2).sum(dim=1) * -0.5 if distance else weights.new_zeros(size)
        shift = (features * weights[indices]).sum(dim=1) + bias[indices]  # l_h * T: the row maximum
        ones = weights.new_ones(1, size)
        # l - l_h = [z, 1, -l_h] [C^T; bias; 1] / T in one product
        shifted_logits = torch.cat([columns, bias[None], ones]) * scale
        grad_features = torch.empty_like(features) if ctx.needs_input_grad[0] else None
        # rows: sum_n (dL/dl)_nk z_n and sum_n (dL/dl)_nk, each row of the (d + 1, K) accumulator
        accumulated = weights.new_zeros(features.shape[1] + 1, size) if ctx.needs_input_grad[1] else None
        for block in _row_blocks(features.shape[0], size):
            z, g = features[block], grad[block]
            unit = z.new_ones(z.shape[0], 1)
            p = torch.cat([z, unit, -shift[block, None]], dim=1).mm(shifted_logits).exp_()
            inverse_norm = p.sum(dim=1, keepdim=True).reciprocal_()  # 1 / Z
            r = (g * p.mm(columns.T)).sum(dim=1, keepdim=True).mul_(inverse_norm)  # <g, s C>
            grad_logits = g.mm(columns).mul_(p).addcmul_(p, r, value=-1.0)  # Z * dL/dl
            if grad_features is not None:
                torch.mm(grad_logits, columns.T, out=grad_features[block]).mul_(inverse_norm * scale)
            if accumulated is not None:
                accumulated.addmm_(torch.cat([z, unit], dim=1).mul_(inverse_norm).T, grad_logits, alpha=scale)
        grad_codebook = None
        if accumulated is not None:
            grad_codebook = accumulated[:-1].T.clone()
            if distance:
                grad_codebook.addcmul_(accumulated[-1][:, None], weights, value=-1.0)
            grad_codebook = grad_codebook.to(codebook.dtype)
        return grad_features, grad_codebook, None, None, None


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
        """(N, K) l / temperature (the reference form: the training step never forms it whole)."""
        return ibq_logits(features, codebook, self.options.temperature, self.options.logits)

    def hard_indices(self, features: Tensor, codebook: Tensor) -> Tensor:
        """argmax_k l_nk of detached (N, d) features: the nearest code for "distance" logits (the
        shared search: the argmax of <z, e> - ||e||^2 / 2 is the argmin of ||z - e||^2), the
        largest inner product for "dot", in row blocks."""
        if self.options.logits == "distance":
            return nearest_code(features, codebook)
        indices = torch.empty(features.shape[0], dtype=torch.long, device=features.device)
        for block in _row_blocks(features.shape[0], codebook.shape[0]):
            indices[block] = self.logits(features[block], codebook).argmax(dim=1)
        return indices

    def search(self, z: Tensor) -> Tensor:
        flat = self._flatten(z).detach()
        return self.hard_indices(flat, self.codebook.detach()).reshape(z.shape[:-1])

    def relaxation(self, features: Tensor) -> Tensor:
        """s C: the soft code whose Jacobian is the gradient IBQ passes to z (N, d)."""
        codebook = self.codebook
        return self.logits(features, codebook).softmax(dim=1) @ codebook

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        codebook = self.codebook
        indices = self.hard_indices(features.detach(), codebook.detach())
        codes = codebook[indices]
        quantized = codes + _SoftPath.apply(features, codebook, indices, self.options.temperature, self.options.logits)
        losses = {
            "soft": F.mse_loss(quantized, features),
            "commitment": F.mse_loss(features, codes.detach()),
            "codebook": F.mse_loss(codes, features.detach()),
        }
        return QuantizerOutput(quantized, indices, self.weighted_sum(losses), losses)
