"""Vanilla VQ (VQ-VAE): nearest-code assignment, codebook learned by gradient.

van den Oord, Vinyals, Kavukcuoglu, "Neural Discrete Representation Learning", NeurIPS 2017,
arXiv:1711.00937. Official code: https://github.com/deepmind/sonnet (vqvae.py).

    q(z) = e_k,  k = argmin_j ||z - e_j||^2
    loss = codebook_weight * ||sg(z) - e_k||^2 + beta * ||z - sg(e_k)||^2
    gradient to z: straight-through (dq/dz = I)

Only the chosen codes receive gradient, which is why codes far from the features die.
Deviation: codes are initialised N(0, init_scale^2) by default (``init="uniform"``: U[-s, s]);
squared errors are averaged over elements like ``F.mse_loss`` (``reduction="sum"``: summed over
dims, as the Wasserstein-VQ authors' synthetic script does).

Distributed training: needs no synchronisation (``rank_synchronised`` False): its only state is
the codebook parameter, which DDP's gradient average keeps equal on every rank, and its losses are per-feature means.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from methods._base import Quantizer, Tunable, VQOptions, commitment_and_codebook, initial_codebook
from methods._registry import register


@register("vanilla")
class VanillaVQ(Quantizer):
    """Vanilla VQ with a learnable (K, d) codebook parameter."""

    Options = VQOptions
    paper = "arXiv:1711.00937"
    tunables = {"beta": Tunable(0.05, 2.0, log=True)}

    def __init__(self, dim: int, codebook_size: int, options: VQOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        self.embedding = nn.Parameter(
            initial_codebook(codebook_size, dim, options.init, options.init_scale, generator)
        )

    @property
    def codebook(self) -> Tensor:
        return self.embedding

    def loss_terms(self, features: Tensor, codes: Tensor, codebook: Tensor) -> dict[str, Tensor]:
        return commitment_and_codebook(features, codes, self.options.reduction)

    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}
