"""Rotation-trick VQ: vanilla VQ whose gradient to z is a rotation and rescaling, not the identity.

Fifty, Junkins, Duan, Iyengar, Liu, Amid, Thrun, Re, "Restructuring Vector Quantization with the
Rotation Trick", ICLR 2025, arXiv:2410.06424. Official code:
https://github.com/cfifty/rotation_trick (also vector-quantize-pytorch's ``rotate_to``).

Forward: the nearest code e of z, as in vanilla VQ. Backward: q is treated as

    q~ = sg(lambda R) z,   lambda = ||e|| / ||z||,
    R = I - 2 r r^T + 2 e^ z^^T,   z^ = z/||z||,  e^ = e/||e||,  r = (z^ + e^) / ||z^ + e^||

R is the rotation taking z^ onto e^ (a Householder reflection through r followed by one through
e^, written as the paper's section 4.2 formula so R z costs O(d)), so lambda R z = e and
dq/dz = lambda R: the gradient keeps its angle to z as it moves to e and is scaled by the norm
ratio. Codebook and commitment losses are vanilla VQ's (codebook_weight ||sg(z) - e||^2 +
beta ||z - sg(e)||^2); R and lambda are detached, so only those losses train the codebook.

Value: the output is codes + (q~ - sg(q~)), bit-equal to the code (q~ is e only up to rounding).
Degenerate rows: when z = 0 or e = 0 no rotation exists (lambda is 0 or undefined); those rows
fall back to the straight-through gradient. When z^ = -e^ (antipodal, r undefined) r is set to 0,
leaving R = I + 2 e^ z^^T = I - 2 e^ e^^T, the reflection that maps z^ onto e^.

Distributed training: needs no synchronisation (``rank_synchronised`` False): its only state is
the codebook parameter, which DDP's gradient average keeps equal on every rank, and its losses are per-feature means.
"""
from __future__ import annotations

import torch
from torch import Tensor

from methods._base import QuantizerOutput, VQOptions
from methods._core import nearest_code
from methods._registry import register
from methods.vanilla import VanillaVQ

# Below this norm a vector has no usable direction (z = 0, e = 0, or z^ = -e^ for r).
_TINY = 1e-12


def rotate_onto(features: Tensor, codes: Tensor) -> Tensor:
    """lambda R z per row, with lambda R built from detached z and e: value ~ e, Jacobian lambda R.

    features: (N, d) with gradient; codes: (N, d), used detached. Rows where z or e vanish return
    ``features`` (straight-through gradient).
    """
    z = features.detach()
    codes = codes.detach().to(features.dtype)
    z_norm = z.norm(dim=1, keepdim=True)
    e_norm = codes.norm(dim=1, keepdim=True)
    z_hat = z / z_norm.clamp(min=_TINY)
    e_hat = codes / e_norm.clamp(min=_TINY)
    r = z_hat + e_hat
    r_norm = r.norm(dim=1, keepdim=True)
    r = torch.where(r_norm > 1e-6, r / r_norm.clamp(min=_TINY), torch.zeros_like(r))
    rotated = (
        features
        - 2 * r * (features * r).sum(dim=1, keepdim=True)
        + 2 * e_hat * (features * z_hat).sum(dim=1, keepdim=True)
    ) * (e_norm / z_norm.clamp(min=_TINY))
    degenerate = (z_norm <= _TINY) | (e_norm <= _TINY)
    return torch.where(degenerate, features, rotated)


@register("rotation_trick")
class RotationTrickVQ(VanillaVQ):
    """Vanilla VQ (learnable codebook, VQ-VAE losses) with the rotation-trick gradient to z."""

    Options = VQOptions
    paper = "arXiv:2410.06424"
    straight_through = False

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        codebook = self.codebook
        indices = nearest_code(features.detach(), codebook.detach())
        codes = codebook[indices]
        losses = self.loss_terms(features, codes, codebook)
        rotated = rotate_onto(features, codes)
        quantized = codes.detach().to(features.dtype) + (rotated - rotated.detach())
        return QuantizerOutput(quantized, indices, self.weighted_sum(losses), losses)
