"""Shared helpers of the binary (one bit per dimension) quantizers ``lfq`` and ``bsq``.

Index convention (vector-quantize-pytorch's, so indices compare directly): dimension i is bit
d-1-i of the index (the first dimension is the most significant), bit 1 = positive sign.
"""
from __future__ import annotations

import torch
from torch import Tensor

# Rows per block of the exact codebook entropy: keeps the (rows x K) block near 4M floats.
_BLOCK_ELEMENTS = 1 << 22


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
    """Elementwise H(p) in nats, 0 log 0 = 0."""
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


def codebook_entropy_exact(log_p_one: Tensor, log_p_zero: Tensor) -> Tensor:
    """Entropy of the batch-mean of factorised code distributions over all 2^d codes.

    Row n puts probability prod_i p_ni^b_ki (1 - p_ni)^(1 - b_ki) on code k (bits b_k). The mean
    over rows is accumulated in row blocks, so memory is O(block x K), never N x K.
    """
    rows, dim = log_p_one.shape
    bits = (torch.arange(2**dim, device=log_p_one.device)[:, None] // bit_weights(dim).to(log_p_one.device)) % 2
    bits = bits.to(log_p_one.dtype)  # (K, d)
    block = max(1, _BLOCK_ELEMENTS // 2**dim)
    total = log_p_one.new_zeros(2**dim)
    for start in range(0, rows, block):
        one, zero = log_p_one[start : start + block], log_p_zero[start : start + block]
        # sum_i b_ki log p_ni + (1 - b_ki) log(1 - p_ni) = sum_i log(1 - p_ni) + (log-odds) . b_k
        total = total + ((one - zero) @ bits.T + zero.sum(dim=1, keepdim=True)).exp().sum(dim=0)
    mean = total / max(rows, 1)
    return -torch.xlogy(mean, mean).sum()
