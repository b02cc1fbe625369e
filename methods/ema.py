"""EMA VQ: codes are exponential moving averages of the features assigned to them.

van den Oord et al. 2017 (appendix A.1, arXiv:1711.00937); Razavi, van den Oord, Vinyals,
"Generating Diverse High-Fidelity Images with VQ-VAE-2", NeurIPS 2019, arXiv:1906.00446.
Official code: https://github.com/deepmind/sonnet (vqvae.py, VectorQuantizerEMA).

In training mode every forward updates, for each code k with n_k assigned features summing to s_k:

    N_k <- decay * N_k + (1 - decay) * n_k              (cluster size)
    m_k <- decay * m_k + (1 - decay) * s_k              (feature sum)
    e_k  = m_k / Ntilde_k,   Ntilde_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j   (Laplace smoothing)

The codebook is not trained by gradient; the loss is beta * ||z - sg(e)||^2 only.

Deviations (defaults): N starts at ``initial_cluster_size`` = 1 and m at the initial codes (not 0),
so a code is never divided by a vanishing N_k at the start; and a code with no feature in a step
keeps its vector (``keep_unused``). Without that, m_k and N_k of an unused code decay together
while the smoothed N~_k keeps a floor near eps, so once N_k falls below eps (after ~1,150 steps at
decay 0.99, eps 1e-5) e_k = m_k / N~_k shrinks to the origin; a kept code resumes the EMA the
first time it is chosen again.

The Wasserstein-VQ authors' EMA baseline (their synthetic script): ``decay=0.9, eps=1e-5,
initial_cluster_size=0, keep_unused=False`` (sums start at the initial codes; the smoothing
formula above, their ``num_tokens`` argument being K). There an unused code is divided by
N~_k ~ eps from the first step and flies away from the features.

Distributed training (``rank_synchronised``): n_k and s_k are sums over the batch, all-reduced
over ranks before the update (``sync_ranks``), so W ranks with a shard each keep the codebook of
one process on the whole batch; the initial codes come from the build generator (build every
rank from the same seed, or let DDP broadcast rank 0's buffers when it wraps the model).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from methods._base import QuantizerOutput, Quantizer, Tunable, _check_non_negative, check_loss_and_init, initial_codebook
from methods import _dist
from methods._core import nearest_code, straight_through
from methods._registry import register


@dataclass(frozen=True)
class EMAOptions(_dist.RankSyncOptions):
    """beta: commitment weight; decay in (0, 1); eps > 0: Laplace smoothing; init / init_scale:
    N(0, s^2) ("normal") or U[-s, s] ("uniform") initial codes; initial_cluster_size: N_k at the
    start (1; the authors' baseline 0); keep_unused: a code with no feature in a step keeps its
    vector (False: every code is rewritten to m_k / N~_k, as in Sonnet and the authors' code)."""

    beta: float = 0.25
    decay: float = 0.99
    eps: float = 1e-5
    init_scale: float = 1.0
    init: str = "normal"
    initial_cluster_size: float = 1.0
    keep_unused: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_non_negative(self, "beta", "eps", "initial_cluster_size")
        check_loss_and_init(self)
        if not isinstance(self.keep_unused, bool):
            raise ValueError(f"keep_unused: must be true or false, got {self.keep_unused!r}")
        if isinstance(self.decay, bool) or not isinstance(self.decay, (int, float)) or not 0 < self.decay < 1:
            raise ValueError(f"decay: must be in (0, 1), got {self.decay!r}")
        if not self.eps > 0:
            raise ValueError(f"eps: must be > 0, got {self.eps!r}")


@register("ema")
class EMAVQ(Quantizer):
    """EMA codebook updates (buffers ``cluster_size``, ``embed_sum``, ``embedding``)."""

    Options = EMAOptions
    paper = "arXiv:1906.00446"
    trainable_by_gradient = False
    rank_synchronised = True
    tunables = {"decay": Tunable(0.8, 0.999)}

    def __init__(self, dim: int, codebook_size: int, options: EMAOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        initial = initial_codebook(codebook_size, dim, options.init, options.init_scale, generator)
        self.register_buffer("embedding", initial.clone())
        self.register_buffer("embed_sum", initial.clone())
        self.register_buffer("cluster_size", torch.full((codebook_size,), float(options.initial_cluster_size)))

    @property
    def codebook(self) -> Tensor:
        return self.embedding

    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.options.beta}

    @torch.no_grad()
    def ema_update(self, features: Tensor, indices: Tensor) -> None:
        """One EMA step from flat features (N, d) and their code indices (N,)."""
        decay, eps, k = self.options.decay, self.options.eps, self.codebook_size
        counts = torch.bincount(indices, minlength=k).to(self.cluster_size.dtype)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, features.to(self.embed_sum.dtype))
        if _dist.synchronised(self.options):
            _dist.all_reduce_(counts, sums)
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        self.embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + eps) / (total + k * eps) * total
        updated = self.embed_sum / smoothed[:, None]
        if self.options.keep_unused:
            used = counts > 0
            self.embedding[used] = updated[used]
        else:
            self.embedding.copy_(updated)

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        indices = nearest_code(features.detach(), self.embedding)
        codes = self.embedding[indices]
        losses = {"commitment": (features - codes).pow(2).mean()}
        if self.training:
            self.ema_update(features.detach(), indices)
        return QuantizerOutput(straight_through(features, codes), indices, self.weighted_sum(losses), losses)
