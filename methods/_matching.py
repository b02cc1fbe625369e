"""Shared base of the distribution-matching quantizers (Wasserstein VQ and its OT variants).

    loss = codebook_weight * ||sg(z) - e||^2 + beta * ||z - sg(e)||^2 + gamma * D(P_z, P_codebook)

D is a distance between the distribution of the (detached) features and that of the whole
codebook, so it moves every code, used or not, towards the features: the idea of
"Enhancing Vector Quantization with Distributional Matching" (arXiv:2506.15078).

Distributed training (``sync_ranks``): D is measured against the features of every rank (the
gathered batch, ``batch_features``, or all-reduced sums where D needs only sums), so each rank
computes the same D, hence the same codebook gradient, as one process on the whole batch.
Sampling and projections come from (rng_seed, step), the same on every rank.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from methods import _dist
from methods._base import (
    Quantizer,
    Tunable,
    _check_non_negative,
    check_loss_and_init,
    commitment_and_codebook,
    initial_codebook,
)


@dataclass(frozen=True)
class MatchingOptions(_dist.RankSyncOptions):
    """beta: commitment weight (0.1 in arXiv:2506.15078); codebook_weight: ||sg(z) - e||^2 weight;
    gamma: weight of the distribution term; init / init_scale: codes start N(0, init_scale^2)
    ("normal") or U[-init_scale, init_scale] ("uniform"); reduction: "mean" or "sum" over dims of
    the two VQ terms (see ``methods._base.VQOptions``)."""

    beta: float = 0.1
    codebook_weight: float = 1.0
    gamma: float = 0.5
    init_scale: float = 1.0
    init: str = "normal"
    reduction: str = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_non_negative(self, "beta", "codebook_weight", "gamma")
        check_loss_and_init(self)


class DistributionMatchingQuantizer(Quantizer):
    """Learnable (K, d) codebook + VQ terms + ``gamma`` x ``distribution_loss``.

    Subclasses set ``distribution_term`` (the key in ``out.losses``) and implement
    ``distribution_loss(features, codebook)``; features arrive detached. ``step`` counts training
    forwards (a buffer, so sampling seeded by it repeats after a state_dict round trip). A method
    whose options have a ``seed`` field draws its internal randomness from ``rng_seed`` (a buffer):
    ``seed`` when set, else drawn from the ``generator`` passed to ``build`` (the run seed), after
    the codebook, so different run seeds vary the projections and samples too.
    """

    Options = MatchingOptions
    paper = "arXiv:2506.15078"
    distribution_matching = True
    rank_synchronised = True
    distribution_term = "distribution"
    tunables = {"gamma": Tunable(1e-3, 10.0, log=True), "beta": Tunable(0.05, 2.0, log=True)}

    def __init__(self, dim: int, codebook_size: int, options, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        self.embedding = nn.Parameter(
            initial_codebook(codebook_size, dim, options.init, options.init_scale, generator)
        )
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        if hasattr(options, "seed"):
            self.register_buffer("rng_seed", self.internal_seed(generator, options.seed))

    @property
    def codebook(self) -> Tensor:
        return self.embedding

    def distribution_loss(self, features: Tensor, codebook: Tensor) -> Tensor:
        raise NotImplementedError

    def batch_features(self, features: Tensor) -> Tensor:
        """The (detached) features of the whole batch: of every rank, in rank order, when a training
        forward synchronises (``methods._dist``); ``features`` otherwise."""
        if _dist.synchronised(self.options, self.training):
            return _dist.gather_rows(features.detach())
        return features

    def step_generator(self) -> torch.Generator:
        """A CPU generator seeded by (rng_seed, step): fresh randomness each step, reproducible."""
        return torch.Generator().manual_seed(int(self.rng_seed) * 1_000_003 + int(self.step))

    def loss_terms(self, features: Tensor, codes: Tensor, codebook: Tensor) -> dict[str, Tensor]:
        losses = commitment_and_codebook(features, codes, self.options.reduction)
        losses[self.distribution_term] = self.distribution_loss(features.detach(), codebook)
        if self.training:
            self.step += 1
        return losses

    def loss_weights(self) -> dict[str, float]:
        return {
            "commitment": self.options.beta,
            "codebook": self.options.codebook_weight,
            self.distribution_term: self.options.gamma,
        }


class FeatureQueue(nn.Module):
    """FIFO queue of the last ``size`` detached features with running float64 sums, so its mean
    and covariance cost O(batch x d^2) per push instead of O(size x d^2).

    Buffers (saved in state_dict): ``items`` (size, d), ``total`` (d,), ``outer`` (d, d),
    ``count`` and ``head`` (next write position).
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("items", torch.zeros(size, dim))
        self.register_buffer("total", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("outer", torch.zeros(dim, dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("head", torch.zeros((), dtype=torch.long))

    def _ring_spans(self, start: int, n: int) -> list[slice]:
        """The n slots from ``start`` on, wrapping: one or two contiguous slices."""
        first = min(n, self.size - start)
        return [slice(start, start + first)] + ([slice(0, n - first)] if n > first else [])

    @torch.no_grad()
    def push(self, features: Tensor) -> None:
        features = features.detach()[-self.size :]
        n, head, count = features.shape[0], int(self.head), int(self.count)
        spans = self._ring_spans(head, n)
        leaving_count = min(n, max(0, count + n - self.size))
        if leaving_count:
            # while filling, the write range first covers empty slots: the occupied ones are its tail
            leaving = torch.cat([self.items[span] for span in spans])[n - leaving_count :].double()
            self.total -= leaving.sum(dim=0)
            self.outer -= leaving.t() @ leaving
        offset = 0
        for span in spans:
            width = span.stop - span.start
            self.items[span] = features[offset : offset + width].to(self.items.dtype)
            offset += width
        entering = features.double()
        self.total += entering.sum(dim=0)
        self.outer += entering.t() @ entering
        self.count.fill_(min(count + n, self.size))
        self.head.fill_((head + n) % self.size)

    def statistics(self) -> tuple[Tensor, Tensor]:
        """Mean (d,) and population covariance (d, d) of the queued features, float64."""
        if int(self.count) == 0:
            raise RuntimeError("FeatureQueue.statistics: the queue is empty")
        mean = self.total / self.count
        covariance = self.outer / self.count - torch.outer(mean, mean)
        return mean, (covariance + covariance.t()) / 2
