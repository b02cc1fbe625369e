"""SimVQ: a frozen random codebook reparameterised by one learnable linear layer.

Li, Xu, Xin, Zhu, "Addressing Representation Collapse in Vector Quantized Models with One Linear
Layer", arXiv:2411.02038. Official code: https://github.com/youngsheen/SimVQ.

    C ~ N(0, d^-1) frozen (K x d),   codebook = C W^T + b   (W: d x d, b: d, learnable)
    loss = codebook_weight * ||q - sg(z)||^2 + beta * ||sg(q) - z||^2,  beta = 0.25

Every code moves with W and b, so the gradient of the chosen codes updates the whole codebook
and no code is left behind. The basis is a buffer: saved with the state, never optimised.
W and b get nn.Linear's default init (uniform +-1/sqrt(d)), drawn from ``generator`` as
nn.Linear draws them (weight, then bias, each with ``uniform_``), so a script seeding the global
RNG makes the same projection.

``basis="init"`` draws the frozen basis like a plain codebook instead (``init`` / ``init_scale``:
N(0, s^2) or U[-s, s]): the Wasserstein-VQ authors' "linear" baseline of their synthetic script
(a Linear(d, d) with bias on a frozen N(0, I) or U[-1, 1] codebook). That script keeps its basis
in an nn.Embedding made after the codes and overwritten by them, so the embedding's own N(0, 1)
draws (K d of them) come between the basis and the Linear: ``draws_before_projection`` discards
that many normal draws there, to replay the script's random stream.

Distributed training: needs no synchronisation (``rank_synchronised`` False): its only state is
the projection parameters (the basis is a fixed buffer), which DDP's gradient average keeps equal on every rank, and its losses are per-feature means.
"""
from __future__ import annotations


import math

import torch
from torch import Tensor, nn

from dataclasses import dataclass

from methods._base import (
    Quantizer, Tunable, VQOptions, _check_choice, _check_int, _check_non_negative, commitment_and_codebook,
    initial_codebook, normal_codebook,
)
from methods._registry import register

BASES = ("paper", "init")


def torch_default_linear(dim: int, generator: torch.Generator | None) -> nn.Linear:
    """A (d -> d) ``nn.Linear`` initialised as PyTorch initialises one (weight, then bias, each
    U[-1/sqrt(d), 1/sqrt(d)] by ``uniform_``), drawing from ``generator`` instead of the global RNG."""
    linear = nn.Linear(dim, dim, bias=True)
    bound = 1 / math.sqrt(dim)
    with torch.no_grad():
        linear.weight.uniform_(-bound, bound, generator=generator)
        linear.bias.uniform_(-bound, bound, generator=generator)
    return linear


@dataclass(frozen=True)
class SimVQOptions(VQOptions):
    """basis: "paper" (the frozen basis is N(0, 1/d), ``init`` / ``init_scale`` unused) or "init"
    (drawn by ``init`` / ``init_scale`` like a plain codebook). draws_before_projection: normal draws
    from the generator discarded between the basis and the projection (0: none)."""

    basis: str = "paper"
    draws_before_projection: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice(self, "basis", BASES)
        _check_int(self, "draws_before_projection")
        _check_non_negative(self, "draws_before_projection")


@register("simvq")
class SimVQ(Quantizer):
    """SimVQ; with ``basis="paper"`` ``init`` and ``init_scale`` are ignored for the basis N(0, 1/d)."""

    Options = SimVQOptions
    paper = "arXiv:2411.02038"
    tunables = {"beta": Tunable(0.05, 2.0, log=True)}

    def __init__(self, dim: int, codebook_size: int, options: SimVQOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        if options.basis == "paper":
            basis = normal_codebook(codebook_size, dim, dim ** -0.5, generator)
        else:
            basis = initial_codebook(codebook_size, dim, options.init, options.init_scale, generator)
        self.register_buffer("basis", basis)
        if options.draws_before_projection:
            torch.randn(options.draws_before_projection, generator=generator)
        self.projection = torch_default_linear(dim, generator)

    @property
    def codebook(self) -> Tensor:
        return self.projection(self.basis)

    def loss_terms(self, features: Tensor, codes: Tensor, codebook: Tensor) -> dict[str, Tensor]:
        return commitment_and_codebook(features, codes, self.options.reduction)

    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}
