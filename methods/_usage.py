"""Code usage of single and multi-codebook indices: counts, utilization and perplexity per level.

For indices of shape (N, L) (one column per level, K_l codes at level l; a single codebook is
L = 1) and the codebook sizes (K_1, ..., K_L):

    counts_l[k]   = #{n : indices[n, l] = k}                 (``torch.bincount``, never N x K)
    U_l           = #{k : counts_l[k] > 0} / K_l             (utilization of level l)
    PPL_l         = exp(H(counts_l / N_l))                   (perplexity, at most K_l)
    U             = sum_l #{used at level l} / sum_l K_l     (overall utilization)
    PPL           = exp(H(joint))                            (perplexity of the whole index tuple,
                                                              at most prod_l K_l)

Negative indices mark a level a token did not use (residual quantizer dropout) and are not
counted; a token counts towards the joint histogram with its full tuple, -1 entries included.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


class CodeUsage(NamedTuple):
    """counts: one (K_l,) long tensor per level; utilization / perplexity: one float per level;
    overall_utilization, joint_perplexity: over all levels (see the module doc)."""

    counts: tuple[Tensor, ...]
    utilization: tuple[float, ...]
    perplexity: tuple[float, ...]
    overall_utilization: float
    joint_perplexity: float


def perplexity(counts: Tensor) -> float:
    """exp(entropy) of a usage histogram, in [1, number of bins]; 0 for an empty histogram (no token
    used any code: a residual level every token dropped)."""
    counts = torch.as_tensor(counts)
    total = counts.sum()
    if int(total) == 0:
        return 0.0
    p = counts[counts > 0].double() / total
    return math.exp(float(-(p * p.log()).sum()))


def code_usage(indices: Tensor, level_codebook_sizes: tuple[int, ...]) -> CodeUsage:
    """Usage of ``indices`` (N, L) long against codebooks of ``level_codebook_sizes`` (L entries)."""
    if indices.ndim != 2 or indices.shape[1] != len(level_codebook_sizes):
        raise ValueError(
            f"indices: expected shape (N, {len(level_codebook_sizes)}), got {tuple(indices.shape)}"
        )
    if indices.dtype != torch.long:
        raise ValueError(f"indices: expected dtype torch.long, got {indices.dtype}")
    counts = []
    for level, size in enumerate(level_codebook_sizes):
        column = indices[:, level]
        column = column[column >= 0]
        if column.numel() and int(column.max()) >= size:
            raise ValueError(f"indices: level {level} has index {int(column.max())} >= its codebook size {size}")
        counts.append(torch.bincount(column, minlength=size).cpu())
    used = [int((c > 0).sum()) for c in counts]
    _, joint_counts = torch.unique(indices, dim=0, return_counts=True) if indices.shape[0] else (None, torch.zeros(0))
    return CodeUsage(
        counts=tuple(counts),
        utilization=tuple(u / size for u, size in zip(used, level_codebook_sizes)),
        perplexity=tuple(perplexity(c) for c in counts),
        overall_utilization=sum(used) / sum(level_codebook_sizes),
        joint_perplexity=perplexity(joint_counts),
    )
