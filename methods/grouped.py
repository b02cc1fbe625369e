"""Grouped (product) VQ: split z into G equal parts along d, one codebook of K codes per part.

Jegou, Douze, Schmid, "Product Quantization for Nearest Neighbor Search", TPAMI 2011 (no arXiv;
faiss ``IndexPQ`` is its reference implementation); as a VQ-VAE bottleneck e.g. the grouped
quantizer of wav2vec 2.0 (arXiv:2006.11477) and vector-quantize-pytorch's multi-head
``VectorQuantize(heads=G, separate_codebook_per_head=True)``.

    z = [z^1, ..., z^G],  z^g in R^(d/G),   k_g = argmin_j ||z^g - e^g_j||^2
    q(z) = [e^1_{k_1}, ..., e^G_{k_G}],  indices (..., G),  gradient to z: straight-through
    loss = codebook_weight ||sg(z) - q||^2 + beta ||z - sg(q)||^2   (averaged over all d elements)

The G searches are independent, so the implied codebook is the Cartesian product of K^G codes
at the cost of G K-way searches: G log2 K bits per token. ``groups`` must divide d.
Deviations: codebooks learned by gradient (wav2vec 2.0 uses Gumbel-softmax selection, the
peer EMA by default); codes initialised N(0, init_scale^2).

Distributed training: needs no synchronisation (``rank_synchronised`` False): its only state is
the codebook parameters, which DDP's gradient average keeps equal on every rank, and its losses are per-feature means.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from methods._base import QuantizerOutput, Quantizer, _check_non_negative, _check_positive_int, commitment_and_codebook, normal_codebook
from methods._core import nearest_code, straight_through
from methods._registry import register


@dataclass(frozen=True)
class GroupedOptions:
    """groups: number of parts G (must divide dim); beta / codebook_weight: commitment / codebook
    weights; init_scale: codes start N(0, init_scale^2)."""

    groups: int = 2
    beta: float = 0.25
    codebook_weight: float = 1.0
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_positive_int(self, "groups")
        _check_non_negative(self, "beta", "codebook_weight", "init_scale")


@register("grouped")
class GroupedVQ(Quantizer):
    """Product VQ: a (G, K, d/G) codebook parameter, one exact search per group."""

    Options = GroupedOptions
    paper = "doi:10.1109/TPAMI.2010.57"
    code_structure = "grouped"

    def __init__(self, dim: int, codebook_size: int, options: GroupedOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        if dim % options.groups:
            raise ValueError(f"groups: must divide dim = {dim}, got {options.groups}")
        self.group_dim = dim // options.groups
        self.embedding = nn.Parameter(
            torch.stack([normal_codebook(codebook_size, self.group_dim, options.init_scale, generator) for _ in range(options.groups)])
        )

    @property
    def level_codebook_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,) * self.options.groups

    @property
    def codebook(self) -> Tensor:
        """(G, K, d/G): the codebook of each group."""
        return self.embedding

    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """indices (..., G) -> concatenated group codes (..., d)."""
        codes = self.codebook[torch.arange(self.options.groups, device=indices.device), indices]
        return codes.reshape(*indices.shape[:-1], self.dim)

    def _search_flat(self, features: Tensor, codebook: Tensor) -> Tensor:
        parts = features.detach().reshape(-1, self.options.groups, self.group_dim)
        return torch.stack([nearest_code(parts[:, g].contiguous(), codebook[g]) for g in range(self.options.groups)], dim=1)

    def search(self, z: Tensor) -> Tensor:
        indices = self._search_flat(self._flatten(z), self.codebook.detach())
        return indices.reshape(*z.shape[:-1], self.options.groups)

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        codebook = self.codebook
        indices = self._search_flat(features, codebook.detach())
        codes = self.indices_to_codes(indices).to(features.dtype)
        losses = commitment_and_codebook(features, codes)
        return QuantizerOutput(straight_through(features, codes), indices, self.weighted_sum(losses), losses)
