"""Online clustering VQ: gradient-trained codes, and codes rarely used pulled onto batch features.

The "online clustering" baseline of the Wasserstein-VQ authors' synthetic experiment (Fang et
al., arXiv:2506.15078; official code https://github.com/VQ-Research/Wasserstein-VQ,
SimulationAnalyses/DistributionalMatchingPerspective/*/VariousVQs.py), after the online
clustered codebook of Zheng and Vedaldi, "Online Clustered Codebook", ICCV 2023, arXiv:2307.15139.

The codebook is trained by gradient on the VQ terms (codebook_weight ||sg(z) - e||^2 +
beta ||z - sg(e)||^2) and, in every training forward, for a batch z_1..z_n and K codes:

    p_k <- m p_k + (1 - m) (share of the batch whose nearest code is k)        (m = usage_decay, 0.9)
    f_k  = z_j,  j = argmin_j ||z_j - e_k||^2                                   (nearest batch feature)
    a_k  = exp(-sharpness K p_k / (1 - m) - 1e-3)                               (sharpness = 10)
    e_k <- (1 - a_k) e_k + a_k f_k

so a code with no recent use (p_k ~ 0, a_k ~ 1) jumps onto its nearest feature while a code used
at the uniform rate (K p_k ~ 1, a_k ~ e^-100) keeps its place. ``usage`` (p, starting at 0) is a
buffer. The nearest feature of every code is one search of the codebook against the batch (the
shared exact ``nearest_code``, K x n).

When the pull happens (``pull``): the authors' loop takes the gradient step first and then
searches the batch again against the stepped codes for the usage and the pull
(``pull="after_step"``). With no hook after the optimizer step, that pull is deferred: the next
training forward applies it before its own search, and switching to eval applies the last one,
so the sequence of codebooks is the authors' (three searches per step instead of two). The
default ``pull="forward"`` pulls inside the forward with that forward's indices, before the
optimizer step of the same batch (the loss terms are those of the codes before the pull).
Their codebook loss sums over dimensions: ``reduction="sum"`` with beta = 0 reproduces it (there
is no encoder in their synthetic run).

Distributed training (``sync_ranks``): the batch shares are all-reduced counts over the global
batch size, and f_k is the nearest feature over all ranks (each rank's nearest candidate and its
distance are gathered; the closest wins, the lowest rank on a tie), so every rank pulls as one
process on the whole batch. With ``pull="after_step"`` the switch to eval applies the last pull,
a collective: every rank switches together.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from methods._base import QuantizerOutput, Tunable, VQOptions, _check_choice, _check_non_negative, commitment_and_codebook
from methods import _dist
from methods._core import nearest_code, straight_through
from methods._registry import register
from methods.vanilla import VanillaVQ

# The authors' constant in a_k: a code never used still keeps exp(-1e-3) of its pull, not all of it.
PULL_OFFSET = 1e-3
PULLS = ("forward", "after_step")


@dataclass(frozen=True)
class OnlineOptions(VQOptions, _dist.RankSyncOptions):
    """usage_decay: m in (0, 1), the EMA of each code's batch share (0.9 in the authors' code);
    sharpness: how fast the pull vanishes with use (10 in the authors' code); pull: "forward" (in
    the training forward) or "after_step" (after the optimizer step, the authors' order)."""

    usage_decay: float = 0.9
    sharpness: float = 10.0
    pull: str = "forward"

    def __post_init__(self) -> None:
        super().__post_init__()
        _dist.check_sync_ranks(self)
        _check_non_negative(self, "sharpness")
        _check_choice(self, "pull", PULLS)
        value = self.usage_decay
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"usage_decay: must be in (0, 1), got {value!r}")


@register("online")
class OnlineClusteringVQ(VanillaVQ):
    """Vanilla VQ + each step's pull of rarely used codes onto their nearest batch feature."""

    Options = OnlineOptions
    paper = "arXiv:2506.15078"
    rank_synchronised = True
    tunables = {"usage_decay": Tunable(0.5, 0.99), "sharpness": Tunable(1.0, 100.0, log=True)}

    def __init__(self, dim: int, codebook_size: int, options: OnlineOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        self.register_buffer("usage", torch.zeros(codebook_size))
        self.pending: Tensor | None = None  # pull="after_step": the batch whose pull is due

    def apply_pending_pull(self) -> None:
        """pull="after_step": usage and pull of the last training batch against the codes as they
        are now (after its optimizer step)."""
        if self.pending is not None:
            features, self.pending = self.pending, None
            self.online_update(features, nearest_code(features, self.embedding.detach()))

    def train(self, mode: bool = True) -> "OnlineClusteringVQ":
        if not mode:
            self.apply_pending_pull()
        return super().train(mode)

    def pull_strength(self) -> Tensor:
        """a_k = exp(-sharpness K p_k / (1 - m) - 1e-3), (K,)."""
        decay = self.options.usage_decay
        return torch.exp(-self.options.sharpness * self.codebook_size * self.usage / (1 - decay) - PULL_OFFSET)

    @torch.no_grad()
    def online_update(self, features: Tensor, indices: Tensor) -> None:
        """Update the usage EMA from this batch's ``indices`` and pull the codes onto features."""
        decay = self.options.usage_decay
        counts = torch.bincount(indices, minlength=self.codebook_size).to(self.usage.dtype)
        total = torch.tensor(float(indices.numel()), dtype=self.usage.dtype, device=counts.device)
        synchronised = _dist.synchronised(self.options)
        if synchronised:
            _dist.all_reduce_(counts, total)
        self.usage.mul_(decay).add_(counts / total, alpha=1 - decay)
        nearest_features = features[nearest_code(self.embedding.detach(), features)].to(self.embedding.dtype)
        if synchronised:
            nearest_features = self.nearest_over_ranks(nearest_features)
        pull = self.pull_strength()[:, None]
        self.embedding.mul_(1 - pull).add_(pull * nearest_features)

    def nearest_over_ranks(self, candidates: Tensor) -> Tensor:
        """Each code's nearest feature over all ranks, from each rank's nearest ``candidates`` (K, d)."""
        distances = (candidates - self.embedding.detach()).pow(2).sum(dim=1)
        every_distance = _dist.gather_rows(distances[:, None]).reshape(-1, self.codebook_size)  # (W, K)
        every_candidate = _dist.gather_rows(candidates).reshape(-1, *candidates.shape)  # (W, K, d)
        winner = every_distance.argmin(dim=0)  # the first minimum: the lowest rank on a tie
        return every_candidate[winner, torch.arange(self.codebook_size, device=winner.device)]

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        after_step = self.options.pull == "after_step"
        if self.training and after_step:
            self.apply_pending_pull()
        codebook = self.codebook
        indices = nearest_code(features.detach(), codebook.detach())
        codes = codebook[indices]
        losses = commitment_and_codebook(features, codes, self.options.reduction)
        quantized = straight_through(features, codes)
        if self.training and after_step:
            self.pending = features.detach()
        elif self.training:
            self.online_update(features.detach(), indices)
        return QuantizerOutput(quantized, indices, self.weighted_sum(losses), losses)


