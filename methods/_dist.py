"""Collectives that make stateful quantizers train under ``torch.distributed`` (DDP) as one process.

With W ranks each holding a shard of the batch, a quantizer whose update reads batch statistics
(EMA cluster sizes and sums, usage shares, feature queues and covariances, k-means starts, OT
potentials, entropy of the batch-mean code distribution) sees only its shard. It synchronises
them here so that W ranks with shards B_1..B_W train exactly as one process on B_1 + ... + B_W:

- sums over the batch (counts, feature sums, sum z z^T, sums of probabilities) are all-reduced:
  n = sum_r n_r, sum_r sum_{i in B_r} z_i, ...; a sample covariance comes from the global sums,
  never from per-rank covariances;
- a statistic that is no sum (sorted projections, kernel medians, a FIFO queue, k-means) is
  computed on the gathered batch, ranks in order (rank 0's rows first), the order of the
  single-process batch when B_r is the r-th slice of it;
- a loss term that is a function of a global sum (the batch-mean code distribution of LFQ / BSQ)
  all-reduces it with ``torch.distributed.nn``'s differentiable all-reduce: its backward sums the
  gradient over ranks, which DDP's average over ranks then divides back, so the encoder receives
  exactly the single-process gradient;
- random draws are the same on every rank: they come from generators seeded by buffers
  (``rng_seed``, ``step``), which DDP broadcasts from rank 0 when it wraps the model; draws whose
  result becomes state (k-means starts, dead-code restarts) are broadcast from rank 0 as well.

Synchronisation happens in training forwards only, which every rank runs in lockstep (as DDP
requires); evaluation never communicates, so ranks may evaluate different numbers of batches.
It is on by default (the option ``sync_ranks``) and costs nothing in a single process: every helper
is called only when ``synchronised`` is True, i.e. torch.distributed is initialised with more
than one rank.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class RankSyncOptions:
    """sync_ranks: when torch.distributed is initialised with several ranks, synchronise the
    method's batch statistics across them in training (see ``methods._dist``); False: each rank
    updates from its own shard, as in a single process."""

    sync_ranks: bool = True

    def __post_init__(self) -> None:
        check_sync_ranks(self)


def check_sync_ranks(options: Any) -> None:
    if not isinstance(options.sync_ranks, bool):
        raise ValueError(f"sync_ranks: must be true or false, got {options.sync_ranks!r}")


def world_size() -> int:
    """Ranks of the default process group; 1 when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def synchronised(options: Any, training: bool = True) -> bool:
    """True when a training forward must synchronise: several ranks and ``options.sync_ranks``
    (True when the options have no such field)."""
    return training and getattr(options, "sync_ranks", True) and world_size() > 1


def all_reduce_(*tensors: Tensor) -> None:
    """Sum each tensor over ranks, in place."""
    for tensor in tensors:
        dist.all_reduce(tensor)


def all_reduce_max_(tensor: Tensor) -> None:
    """Elementwise maximum over ranks, in place."""
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)


def all_reduce_differentiable(tensor: Tensor) -> Tensor:
    """Sum over ranks whose backward sums the incoming gradient over ranks (see the module doc)."""
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(tensor)


def broadcast_(*tensors: Tensor, source: int = 0) -> None:
    """Overwrite each tensor with rank ``source``'s, in place."""
    for tensor in tensors:
        dist.broadcast(tensor, source)


def row_counts(rows: int, device: torch.device | str = "cpu") -> list[int]:
    """Rows of every rank, in rank order."""
    local = torch.tensor([rows], dtype=torch.long, device=device)
    counts = [torch.zeros_like(local) for _ in range(world_size())]
    dist.all_gather(counts, local)
    return [int(count) for count in counts]


def row_offset(rows: int, device: torch.device | str = "cpu") -> tuple[int, int]:
    """(rows before this rank's, rows of all ranks): where this shard sits in the gathered batch."""
    counts = row_counts(rows, device)
    return sum(counts[: dist.get_rank()]), sum(counts)


def gather_rows(x: Tensor) -> Tensor:
    """The rows of ``x`` (n_r, ...) of every rank concatenated in rank order, (sum_r n_r, ...);
    shards may differ in size. Not differentiable (callers gather detached features)."""
    counts = row_counts(x.shape[0], x.device)
    largest = max(counts)
    padded = x.new_zeros((largest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:count] for part, count in zip(parts, counts)])


def global_mean(row_sum: Tensor, rows: int) -> Tensor:
    """sum over ranks of ``row_sum`` / total rows, differentiable in ``row_sum`` (see the module doc)."""
    total = torch.tensor(float(rows), dtype=row_sum.dtype, device=row_sum.device)
    all_reduce_(total)
    return all_reduce_differentiable(row_sum) / total


def logsumexp_over_ranks(x: Tensor) -> Tensor:
    """log sum_r exp(x_r) elementwise over ranks (max-shifted; -inf where every rank has -inf)."""
    shift = x.clone()
    all_reduce_max_(shift)
    finite_shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    total = (x - finite_shift).exp()
    all_reduce_(total)
    return total.log() + finite_shift
