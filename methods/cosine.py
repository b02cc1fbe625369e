"""Cosine VQ: l2-normalised features and codes, optionally in a low-dimensional factorised space.

Yu et al., "Vector-quantized Image Modeling with Improved VQGAN" (ViT-VQGAN), arXiv:2110.04627,
section 3.2 ("factorized codes" and "l2-normalized codes"). Official code: none public; peer:
vector-quantize-pytorch ``VectorQuantize(use_cosine_sim=True, codebook_dim=...)``.

    u = normalize(P_in z)  (P_in: d -> code_dim linear; the identity when code_dim = 0)
    c_k = normalize(e_k),  k = argmin_j ||u - c_j||^2 = argmax_j <u, c_j>
    q(z) = P_out(c_k)      (P_out: code_dim -> d; the identity when code_dim = 0)
    gradient to u: straight-through; loss = codebook_weight ||sg(u) - c_k||^2 + beta ||u - sg(c_k)||^2

On the sphere the search is by cosine similarity, codes cannot drift away in norm, and the
ViT-VQGAN paper reports markedly better codebook usage. Without projection the output is the
unit code itself, so the quantization error lives on the sphere (``error_space = "sphere"``):
it must never be ranked against the euclidean E of other methods. ``codebook`` is the effective
code in output coordinates (K, d), P_out(c_k); ``sphere_codebook`` the unit codes (K, code_dim).
Deviations: codes initialised N(0, init_scale^2) then normalised; P_in / P_out get nn.Linear's
default init drawn from ``generator``.

Distributed training: needs no synchronisation (``rank_synchronised`` False): its only state is
the codebook and projection parameters, which DDP's gradient average keeps equal on every rank, and its losses are per-feature means.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods._base import QuantizerOutput, Quantizer, _check_int, _check_non_negative, commitment_and_codebook, normal_codebook
from methods._core import nearest_code, straight_through
from methods._registry import register


@dataclass(frozen=True)
class CosineOptions:
    """code_dim: dimension of the factorised code space (0 = no projection, codes live in R^d);
    beta / codebook_weight: commitment / codebook weights; init_scale: raw code init scale."""

    code_dim: int = 0
    beta: float = 0.25
    codebook_weight: float = 1.0
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_int(self, "code_dim")
        if self.code_dim < 0:
            raise ValueError(f"code_dim: must be >= 0 (0 = no projection), got {self.code_dim}")
        _check_non_negative(self, "beta", "codebook_weight", "init_scale")


def _linear(fan_in: int, fan_out: int, generator: torch.Generator | None) -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out)
    bound = 1 / math.sqrt(fan_in)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(fan_out, fan_in, generator=generator) * 2 * bound - bound)
        layer.bias.copy_(torch.rand(fan_out, generator=generator) * 2 * bound - bound)
    return layer


@register("cosine")
class CosineVQ(Quantizer):
    """l2-normalised VQ with an optional factorised (code_dim) search space."""

    Options = CosineOptions
    paper = "arXiv:2110.04627"
    error_space = "sphere"

    def __init__(self, dim: int, codebook_size: int, options: CosineOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        self.code_dim = options.code_dim or dim
        self.embedding = nn.Parameter(normal_codebook(codebook_size, self.code_dim, options.init_scale, generator))
        if options.code_dim:
            self.project_in = _linear(dim, self.code_dim, generator)
            self.project_out = _linear(self.code_dim, dim, generator)
        else:
            self.project_in = self.project_out = nn.Identity()

    @property
    def sphere_codebook(self) -> Tensor:
        """(K, code_dim) unit codes, where the search happens."""
        return F.normalize(self.embedding, dim=1)

    @property
    def codebook(self) -> Tensor:
        return self.project_out(self.sphere_codebook)

    def search_space(self, features: Tensor) -> Tensor:
        return F.normalize(self.project_in(features), dim=-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return self.project_out(self.sphere_codebook[indices])

    def search(self, z: Tensor) -> Tensor:
        flat = self.search_space(self._flatten(z)).detach()
        return nearest_code(flat, self.sphere_codebook.detach()).reshape(z.shape[:-1])

    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        unit = self.search_space(features)
        sphere = self.sphere_codebook
        indices = nearest_code(unit.detach(), sphere.detach())
        codes = sphere[indices].to(features.dtype)
        losses = commitment_and_codebook(unit, codes)
        quantized = self.project_out(straight_through(unit, codes))
        return QuantizerOutput(quantized, indices, self.weighted_sum(losses), losses)
