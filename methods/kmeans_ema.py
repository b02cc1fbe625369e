"""k-means EMA VQ: EMA VQ with k-means initialisation and dead-code reset, the common practical fix.

EMA updates as in ``methods/ema.py`` (van den Oord et al. 2017, arXiv:1711.00937, appendix A.1;
Razavi et al. 2019, arXiv:1906.00446). The two additions are those of Dhariwal et al., "Jukebox:
A Generative Model for Music", arXiv:2005.00341 (random restarts of unused codes) and of the
k-means initialisation popularised by vector-quantize-pytorch
(https://github.com/lucidrains/vector-quantize-pytorch, ``kmeans_init``, ``threshold_ema_dead_code``):

1. k-means initialisation: the first training batch is clustered with ``kmeans_iters`` Lloyd
   steps (shared exact search ``nearest_code``, sums by ``index_add_``; starting codes sampled
   from the batch without replacement), then e_k = centroid_k, N_k = max(n_k, 1), m_k = N_k e_k.
   With fewer features than codes every feature becomes a code and the rest are drawn with
   replacement (duplicates die and are reset by 2.). ``kmeans_iters = 0`` = codes drawn from the batch.
2. Dead-code reset: a code not chosen by any feature for ``dead_after`` consecutive training
   steps is re-seeded onto a feature of the current batch (distinct features while there are
   enough), with N_k = 1, m_k = e_k. Runs after the EMA update, so a reset code equals a feature.

    loss = beta * ||z - sg(e)||^2   (the codebook is not trained by gradient)

State (buffers, so a state_dict round trip repeats the next step): the EMA buffers, ``initialised``,
``unused_steps`` (K,), ``step`` and ``rng_seed``. Randomness (k-means starts, reset picks) comes
from a generator seeded by (rng_seed, step); rng_seed is the ``seed`` option when set, else drawn
from the generator passed to build (the run seed).
Deviations: the restart criterion counts steps without use (not an EMA cluster size under a
threshold, as vector-quantize-pytorch does); Lloyd keeps the previous centroid of an empty cluster
(faiss splits a large one instead).

Distributed training (``sync_ranks``): the EMA sums are all-reduced as in ``methods/ema.py``; the
k-means runs on the first batch gathered from every rank and rank 0's centroids are broadcast;
``unused_steps`` counts steps without use on any rank (all-reduced counts), so every rank finds
the same dead codes, and their new vectors are drawn by rank 0 from the gathered batch and
broadcast. Same codes on every rank, and those of one process on the whole batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from methods._base import QuantizerOutput, Tunable, _check_optional_seed, _check_positive_int
from methods import _dist
from methods._core import nearest_code, straight_through
from methods._registry import register
from methods.ema import EMAOptions, EMAVQ


@dataclass(frozen=True)
class KMeansEMAOptions(EMAOptions):
    """kmeans_iters: Lloyd steps on the first training batch (0 = codes sampled from it);
    dead_after: training steps without use before a code is reset; seed: seeds both (with the
    step); None (default): drawn from the generator passed to build."""

    kmeans_iters: int = 10
    dead_after: int = 20
    seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive_int(self, "dead_after")
        if isinstance(self.kmeans_iters, bool) or not isinstance(self.kmeans_iters, int) or self.kmeans_iters < 0:
            raise ValueError(f"kmeans_iters: must be an integer >= 0, got {self.kmeans_iters!r}")
        _check_optional_seed(self)


def sample_rows(count: int, n: int, generator: torch.Generator) -> Tensor:
    """``count`` row indices of n rows: distinct while count <= n, all rows plus draws with
    replacement otherwise (CPU, long)."""
    if count <= n:
        return torch.randperm(n, generator=generator)[:count]
    return torch.cat([torch.randperm(n, generator=generator), torch.randint(n, (count - n,), generator=generator)])


@torch.no_grad()
def kmeans(features: Tensor, codebook_size: int, iterations: int, generator: torch.Generator) -> Tensor:
    """Lloyd's algorithm on ``features`` (N, d) -> (K, d) centroids; exact assignments by the shared
    search; an empty cluster keeps its previous centroid."""
    features = features.detach()
    start = sample_rows(codebook_size, features.shape[0], generator).to(features.device)
    centroids = features[start].clone()
    for _ in range(iterations):
        assignment = nearest_code(features, centroids)
        counts = torch.bincount(assignment, minlength=codebook_size)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, features)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None].to(sums.dtype)
    return centroids


@register("kmeans_ema")
class KMeansEMAVQ(EMAVQ):
    """EMA VQ + k-means init from the first training batch + reset of codes unused for ``dead_after`` steps."""

    Options = KMeansEMAOptions
    paper = "arXiv:2005.00341"
    tunables = {"decay": Tunable(0.8, 0.999), "dead_after": Tunable(choices=(5, 10, 20, 50, 100))}

    def __init__(self, dim: int, codebook_size: int, options: KMeansEMAOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.register_buffer("unused_steps", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("rng_seed", self.internal_seed(generator, options.seed))

    def step_generator(self) -> torch.Generator:
        """A CPU generator seeded by (rng_seed, step), as ``DistributionMatchingQuantizer.step_generator``."""
        return torch.Generator().manual_seed(int(self.rng_seed) * 1_000_003 + int(self.step))

    @torch.no_grad()
    def kmeans_initialise(self, features: Tensor) -> None:
        """Codes = k-means centroids of ``features`` (N, d); EMA statistics = their cluster sizes and sums."""
        features = features.to(self.embedding.dtype)
        synchronised = _dist.synchronised(self.options)
        if synchronised:
            features = _dist.gather_rows(features)
        centroids = kmeans(features, self.codebook_size, self.options.kmeans_iters, self.step_generator())
        counts = torch.bincount(nearest_code(features, centroids), minlength=self.codebook_size)
        sizes = counts.clamp(min=1).to(self.cluster_size.dtype)
        self.embedding.copy_(centroids)
        self.embed_sum.copy_(centroids * sizes[:, None])
        self.cluster_size.copy_(sizes)
        if synchronised:
            _dist.broadcast_(self.embedding, self.embed_sum, self.cluster_size)
        self.initialised.fill_(True)

    @torch.no_grad()
    def reset_dead_codes(self, features: Tensor, indices: Tensor) -> None:
        """Count steps without use; re-seed codes unused for ``dead_after`` steps onto batch features."""
        counts = torch.bincount(indices, minlength=self.codebook_size)
        synchronised = _dist.synchronised(self.options)
        if synchronised:
            _dist.all_reduce_(counts)
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        dead = (self.unused_steps >= self.options.dead_after).nonzero().squeeze(1)
        if dead.numel() == 0:
            return
        if synchronised:
            features = _dist.gather_rows(features)
        picks = sample_rows(dead.numel(), features.shape[0], self.step_generator()).to(features.device)
        fresh = features[picks].to(self.embedding.dtype)
        if synchronised:
            _dist.broadcast_(fresh)
        self.embedding[dead] = fresh
        self.embed_sum[dead] = fresh
        self.cluster_size[dead] = 1.0
        self.unused_steps[dead] = 0

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        if self.training and not bool(self.initialised) and features.shape[0] > 0:
            self.kmeans_initialise(features.detach())
        indices = nearest_code(features.detach(), self.embedding)
        codes = self.embedding[indices]
        losses = {"commitment": (features - codes).pow(2).mean()}
        if self.training:
            self.ema_update(features.detach(), indices)
            if features.shape[0] > 0:
                self.reset_dead_codes(features.detach(), indices)
            self.step += 1
        return QuantizerOutput(straight_through(features, codes), indices, self.weighted_sum(losses), losses)
