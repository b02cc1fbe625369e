"""Residual VQ (RVQ): L codebooks, level l quantizes what the levels before it left over.

Zeghidour, Luebs, Omran, Skoglund, Tagliasacchi, "SoundStream: An End-to-End Neural Audio Codec",
arXiv:2107.03312 (Algorithm 1, quantizer dropout); Lee, Kim, Kim, Cho, Han, "Autoregressive Image
Generation using Residual Quantization" (RQ-VAE), arXiv:2203.01941. Official code: RQ-VAE
https://github.com/kakaobrain/rq-vae-transformer (SoundStream has none; peer:
vector-quantize-pytorch's ``ResidualVQ``).

    r_1 = z,   k_l = argmin_j ||r_l - e^l_j||^2,   r_{l+1} = r_l - sg(e^l_{k_l})
    q(z) = sum_l e^l_{k_l},  indices (..., L),  gradient to z: straight-through, dq/dz = I
    loss = sum_l [ codebook_weight ||sg(r_l) - e^l_{k_l}||^2 + beta ||r_l - sg(e^l_{k_l})||^2 ]

Each level's search is exact (``nearest_code``) on its residual; K codes per level, so one token
carries L log2 K bits. ``shared_codebook`` uses one codebook at every level (RQ-VAE's choice).
``quantizer_dropout`` (training only): with this probability a feature is quantized by only its
first n ~ U{1..L} levels (SoundStream's bitrate scalability); the unused levels get index -1 and
no loss. The levels drawn follow ``seed`` and a step counter, so a run repeats.

Deviations: the codebook is learned by gradient (RQ-VAE and SoundStream use EMA, as does the
peer by default); the per-level squared errors are averaged over elements like ``F.mse_loss``
and summed over levels; dropout is drawn per feature vector rather than per example (a forward
sees flat features); the peer's quantized output has gradient L x I (each level passes the
identity to its residual), ours the straight-through identity of RQ-VAE (Z + sg(Z^ - Z)).

Distributed training (``sync_ranks``): the codebooks are trained by gradient (DDP averages
them); the only batch-level state is the dropout draws, drawn for the whole batch on every rank
(same seed and step) and sliced at the rank's offset, so each feature drops the levels it would
drop in one process on the whole batch; the per-level losses are normalised by the global count
of features using the level (``level_count_shares``), not the rank's own.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from methods._base import (
    QuantizerOutput,
    Quantizer,
    _check_int,
    _check_non_negative,
    _check_positive_int,
    normal_codebook,
)
from methods import _dist
from methods._core import nearest_code, straight_through
from methods._registry import register


def residual_search(features: Tensor, codebooks: Tensor) -> Tensor:
    """Greedy residual search: (N, d) features, (L, K, d) codebooks -> (N, L) indices, level l exact on
    r_l = z - sum_{m<l} e^m_{k_m}."""
    residual = features
    columns = []
    for level in range(codebooks.shape[0]):
        index = nearest_code(residual, codebooks[level])
        residual = residual - codebooks[level][index]
        columns.append(index)
    return torch.stack(columns, dim=1)


@dataclass(frozen=True)
class ResidualOptions(_dist.RankSyncOptions):
    """levels: number of codebooks L (>= 1); shared_codebook: one codebook for every level;
    quantizer_dropout: probability that a training feature uses only its first n ~ U{1..L}
    levels; beta / codebook_weight: commitment / codebook weights; init_scale: codes start
    N(0, init_scale^2); seed: seeds the dropout draws."""

    levels: int = 4
    shared_codebook: bool = False
    quantizer_dropout: float = 0.0
    beta: float = 0.25
    codebook_weight: float = 1.0
    init_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive_int(self, "levels")
        _check_int(self, "seed")
        if not isinstance(self.shared_codebook, bool):
            raise ValueError(f"shared_codebook: must be true or false, got {self.shared_codebook!r}")
        _check_non_negative(self, "quantizer_dropout", "beta", "codebook_weight", "init_scale")
        if self.quantizer_dropout > 1:
            raise ValueError(f"quantizer_dropout: must be a probability in [0, 1], got {self.quantizer_dropout!r}")


@register("residual")
class ResidualVQ(Quantizer):
    """Residual VQ with L gradient-trained codebooks of K codes (or one shared)."""

    Options = ResidualOptions
    paper = "arXiv:2107.03312"
    code_structure = "residual"
    rank_synchronised = True

    def __init__(self, dim: int, codebook_size: int, options: ResidualOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        count = 1 if options.shared_codebook else options.levels
        self.embedding = nn.Parameter(
            torch.stack([normal_codebook(codebook_size, dim, options.init_scale, generator) for _ in range(count)])
        )
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def level_codebook_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,) * self.options.levels

    @property
    def codebook(self) -> Tensor:
        """(L, K, d): the codebook of each level (the same one L times when shared)."""
        return self.embedding.expand(self.options.levels, -1, -1)

    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """indices (..., L) -> sum of the level codes (..., d); index -1 (dropped level) adds 0."""
        codebook = self.codebook
        total = None
        for level in range(self.options.levels):  # summed in level order, as in the forward
            column = indices[..., level]
            codes = codebook[level][column.clamp(min=0)] * (column >= 0).unsqueeze(-1).to(codebook.dtype)
            total = codes if total is None else total + codes
        return total

    def search(self, z: Tensor) -> Tensor:
        indices = residual_search(self._flatten(z).detach(), self.codebook.detach())
        return indices.reshape(*z.shape[:-1], self.options.levels)

    def _active_levels(self, rows: int, device: torch.device) -> Tensor:
        """Levels each feature uses: L, or n ~ U{1..L} with probability ``quantizer_dropout``."""
        levels = self.options.levels
        if not self.training or self.options.quantizer_dropout == 0 or levels == 1:
            return torch.full((rows,), levels, dtype=torch.long, device=device)
        generator = torch.Generator().manual_seed(int(self.options.seed) * 1_000_003 + int(self.step))
        offset, total = _dist.row_offset(rows) if _dist.synchronised(self.options) else (0, rows)
        dropped = torch.rand(total, generator=generator)[offset : offset + rows] < self.options.quantizer_dropout
        drawn = torch.randint(1, levels + 1, (total,), generator=generator)[offset : offset + rows]
        return torch.where(dropped, drawn, torch.full_like(drawn, levels)).to(device)

    def level_count_shares(self, active: Tensor, dtype: torch.dtype) -> Tensor:
        """Per level, the elements of the features using it over all ranks, divided by the world size:
        a rank's loss normalised by it has, after DDP's average over ranks, the gradient of one
        process normalising by its own count (a rank's own count differs under dropout)."""
        levels = torch.arange(self.options.levels, device=active.device)
        counts = (active[:, None] > levels).sum(dim=0).to(dtype) * self.dim
        _dist.all_reduce_(counts)
        return counts / _dist.world_size()

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        codebook = self.codebook
        active = self._active_levels(features.shape[0], features.device)
        if self.training:
            self.step += 1
        residual = features
        total = torch.zeros_like(features)
        commitment = codebook_term = features.new_zeros(())
        columns = []
        shares = self.level_count_shares(active, features.dtype) if _dist.synchronised(self.options, self.training) else None
        for level in range(self.options.levels):
            index = nearest_code(residual.detach(), codebook[level].detach())
            codes = codebook[level][index].to(features.dtype)
            used = (active > level).to(features.dtype).unsqueeze(1)
            count = (used.sum() * self.dim if shares is None else shares[level]).clamp(min=1)
            commitment = commitment + ((residual - codes.detach()).pow(2) * used).sum() / count
            codebook_term = codebook_term + ((residual.detach() - codes).pow(2) * used).sum() / count
            total = total + codes.detach() * used
            residual = residual - codes.detach() * used
            columns.append(torch.where(active > level, index, torch.full_like(index, -1)))
        losses = {"commitment": commitment, "codebook": codebook_term}
        indices = torch.stack(columns, dim=1)
        return QuantizerOutput(straight_through(features, total), indices, self.weighted_sum(losses), losses)
