"""Shared helpers of the binary (one bit per dimension) quantizers ``lfq`` and ``bsq``.

Index convention (vector-quantize-pytorch's, so indices compare directly): dimension i is bit
d-1-i of the index (the first dimension is the most significant), bit 1 = positive sign.
"""
from __future__ import annotations

import torch
from torch import Tensor

from methods import _dist


def check_binary_size(dim: int, codebook_size: int) -> None:
    if codebook_size != 2**dim:
        raise ValueError(f"codebook_size: must equal 2^dim = {2**dim} (one bit per dimension), got {codebook_size}")


def bit_weights(dim: int) -> Tensor:
    """(d,) long: 2^(d-1), ..., 2, 1."""
    return 2 ** torch.arange(dim - 1, -1, -1, dtype=torch.long)


def sign_codes(indices: Tensor, dim: int) -> Tensor:
    """indices (...) -> codes in {-1, +1}^d (...,  d), float32."""
    bits = (indices[..., None] // bit_weights(dim).to(indices.device)) % 2
    return bits.float() * 2 - 1


def sign_indices(features: Tensor) -> Tensor:
    """Index of sign(z) (z > 0 -> bit 1, z <= 0 -> bit 0), (N, d) -> (N,)."""
    return ((features > 0).long() * bit_weights(features.shape[1]).to(features.device)).sum(dim=1)


def binary_entropy(p: Tensor) -> Tensor:
    """Elementwise H(p) in nats, 0 log 0 = 0, with a finite gradient where p saturates at 0 or 1."""
    return -(_x_log_x(p) + _x_log_x(1 - p))


def _x_log_x(x: Tensor) -> Tensor:
    """x log x with the log clamped at the smallest normal number: the value of xlogy(x, x) (0 at
    x = 0), but a finite gradient at 0, where xlogy's is -inf x 0 = NaN (a saturated sigmoid)."""
    return x * x.clamp(min=torch.finfo(x.dtype).tiny).log()


def batch_mean(rows: Tensor, sync: bool = False) -> Tensor:
    """Mean over the rows (N, ...) of the batch: of every rank's rows with ``sync``, differentiably
    (``methods._dist.global_mean``), so a loss of it gets the single-process gradient under DDP."""
    if sync:
        return _dist.global_mean(rows.sum(dim=0), rows.shape[0])
    return rows.mean(dim=0)


def codebook_entropy_exact(log_p_one: Tensor, log_p_zero: Tensor, sync: bool = False) -> Tensor:
    """Entropy of the batch-mean of factorised code distributions over all 2^d codes.

    Row n puts probability p_n(k) = prod_i p_ni^b_ki (1 - p_ni)^(1 - b_ki) on code k (bits b_k).
    Splitting the d bits into the high h and the low l ones (k = (k_h, k_l)), p_n(k) =
    A_n(k_h) B_n(k_l) with A_n and B_n the same products over each half, so the batch mean is one
    matrix product, mean_n p_n(k_h, k_l) = (A^T B)[k_h, k_l] / N: N (2^h + 2^l) exponentials
    (2 N 2^(d/2)) instead of N 2^d, and no N x K block. Exact; A and B are (N, 2^(d/2)).
    ``sync``: the rows are this rank's shard, the mean is over every rank's (see ``batch_mean``).
    """
    rows, dim = log_p_one.shape
    high = dim // 2
    high_part = _half_code_probabilities(log_p_one[:, :high], log_p_zero[:, :high])
    low_part = _half_code_probabilities(log_p_one[:, high:], log_p_zero[:, high:])
    total = (high_part.t() @ low_part).flatten()
    mean = _dist.global_mean(total, rows) if sync else total / max(rows, 1)
    return -_x_log_x(mean).sum()


def _half_code_probabilities(log_p_one: Tensor, log_p_zero: Tensor) -> Tensor:
    """(N, b) per-bit log-probabilities -> (N, 2^b): row n's probability of each b-bit code, as
    exp(sum_i log(1 - p_ni) + (log-odds_n) . b_k); a column of ones when b = 0."""
    bits = log_p_one.shape[1]
    codes = (torch.arange(2**bits, device=log_p_one.device)[:, None] // bit_weights(bits).to(log_p_one.device)) % 2
    return torch.addmm(log_p_zero.sum(dim=1, keepdim=True), log_p_one - log_p_zero, codes.t().to(log_p_one.dtype)).exp()
