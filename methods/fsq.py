"""FSQ: finite scalar quantization, an implicit grid codebook with no learned parameters.

Mentzer, Minnen, Agustsson, Tschannen, "Finite Scalar Quantization: VQ-VAE Made Simple",
ICLR 2024, arXiv:2309.15505. Official code: https://github.com/google-research/google-research
(fsq/fsq.ipynb); also vector-quantize-pytorch's finite_scalar_quantization.py.

Each of the d feature dimensions is bounded to L_i levels and rounded:

    h_i = (L_i - 1)(1 + eps) / 2,   o_i = 1/2 if L_i is even else 0,   s_i = atanh(o_i / h_i)  (0 if L_i = 2)
    b_i(z) = tanh(z_i + s_i) h_i - o_i                    (bound: round(b_i) has exactly L_i values)
    q_i = round(b_i(z)) / w_i,  w_i = floor(L_i / 2)     (normalised to about [-1, 1])
    gradient: straight through the rounding, dq_i/dz_i = b_i'(z_i) / w_i
    index = sum_i (round(b_i) + w_i) prod_{j < i} L_j     (mixed radix)

The codebook is the implicit grid of all prod(L_i) codes, in the coordinates of ``q``; the nearest
code of the bounded features ``search_space(z) = b(z) / w`` is their rounding, so the search is
O(N d) instead of a K-way comparison. There is no codebook loss: nothing can die and nothing is
learned (``learnable_codebook = False``).

Sizes: ``build("fsq", dim=d, codebook_size=K, levels=(L_1, ..., L_d))`` needs len(levels) = d and
prod(levels) = K (ValueError naming ``levels`` otherwise). With the default ``levels = ()`` the
levels are derived from (d, K):
1. the paper's recommended levels (Table 1: [8, 6, 5], [8, 5, 5, 5], [7, 5, 5, 5, 5],
   [8, 8, 8, 6, 5], [8, 8, 8, 5, 5, 5]) when one has d entries and product K;
2. otherwise the prime factors of K, largest first, each multiplied onto the dimension with the
   fewest levels so far, then no level of 2 left where it can be avoided: two 2s become one 4, a
   lone 2 multiplies the smallest level above 2 (only K = 2 keeps a 2). Levels are listed largest
   first; dimensions left at one level are constant 0.
E.g. (d=4, K=1000) -> (8, 5, 5, 5), (d=8, K=1024) -> (4, 4, 4, 4, 4, 1, 1, 1) (utilization 100% of
N(0, I_8) at 50,000 samples; the balanced (4, 4, 2, 2, 2, 2, 2, 2) reached 3.4%), (d=4, K=24) -> (6, 4, 1, 1).

Why no 2s: with the half-level shift s = atanh(0.5 / 0.5005) = 3.8 a level of 2 puts its single
boundary at z = -3.8, so the dimension is constant in practice (the paper avoids L = 2 in Table 1).

Deviations: a level of 2 gets no shift (its boundary at z = 0; explicit levels may contain 2s);
``beta`` (default 0, as in the paper) optionally weights a commitment term
||search_space(z) - sg(q)||^2, reported in ``losses`` either way so the output has a component;
levels of 1 are allowed (a constant dimension) so that any K factors into any d.

Distributed training: needs no synchronisation (``rank_synchronised`` False): its only state is
none (a fixed grid: nothing is learned), which DDP's gradient average keeps equal on every rank, and its losses are per-feature means.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from methods._base import QuantizerOutput, Quantizer, _check_non_negative
from methods._core import straight_through
from methods._registry import register


@dataclass(frozen=True)
class FSQOptions:
    """levels: levels per dimension (() = derived from dim and codebook_size, see the module doc);
    beta: weight of the optional commitment term (0 in the paper); eps: bound margin (1e-3)."""

    levels: tuple[int, ...] = ()
    beta: float = 0.0
    eps: float = 1e-3

    def __post_init__(self) -> None:
        if isinstance(self.levels, list):
            object.__setattr__(self, "levels", tuple(self.levels))
        if not isinstance(self.levels, tuple) or any(
            isinstance(level, bool) or not isinstance(level, int) or level < 1 for level in self.levels
        ):
            raise ValueError(f"levels: must be a tuple of integers >= 1, got {self.levels!r}")
        _check_non_negative(self, "beta", "eps")


# Mentzer et al. 2023, Table 1: recommended levels for about 2^8, 2^10, 2^12, 2^14, 2^16 codes.
PAPER_LEVELS = ((8, 6, 5), (8, 5, 5, 5), (7, 5, 5, 5, 5), (8, 8, 8, 6, 5), (8, 8, 8, 5, 5, 5))


def balanced_levels(dim: int, codebook_size: int) -> tuple[int, ...]:
    """Levels with product ``codebook_size`` over ``dim`` dimensions, as balanced as the prime
    factors allow (largest prime first onto the dimension with the fewest levels)."""
    primes, rest, factor = [], codebook_size, 2
    while factor * factor <= rest:
        while rest % factor == 0:
            primes.append(factor)
            rest //= factor
        factor += 1
    if rest > 1:
        primes.append(rest)
    levels = [1] * dim
    for prime in sorted(primes, reverse=True):
        smallest = min(range(dim), key=lambda i: (levels[i], i))
        levels[smallest] *= prime
    return tuple(levels)


def derived_levels(dim: int, codebook_size: int) -> tuple[int, ...]:
    """Levels with product ``codebook_size`` over ``dim`` dimensions: the paper's table row of that
    size and length, else :func:`balanced_levels` with levels of 2 merged away (see the module doc)."""
    for row in PAPER_LEVELS:
        if len(row) == dim and math.prod(row) == codebook_size:
            return row
    levels = list(balanced_levels(dim, codebook_size))
    twos = levels.count(2)
    merged = [level for level in levels if level > 2] + [4] * (twos // 2)
    if twos % 2:
        if merged:
            merged[merged.index(min(merged))] *= 2
        else:
            merged.append(2)  # K = 2: nothing to merge onto (a 2 has no shift, see the module doc)
    merged.sort(reverse=True)
    return tuple(merged + [1] * (dim - len(merged)))


@register("fsq")
class FSQ(Quantizer):
    """Finite scalar quantization; non-persistent buffers hold the levels, radix basis and grid."""

    Options = FSQOptions
    paper = "arXiv:2309.15505"
    trainable_by_gradient = False
    learnable_codebook = False
    error_space = "bounded"  # E is measured after the tanh bound, in the grid's own coordinates

    def __init__(self, dim: int, codebook_size: int, options: FSQOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        levels = options.levels
        if levels:
            if len(levels) != dim:
                raise ValueError(f"levels: needs one entry per dimension (dim = {dim}), got {levels!r}")
            if math.prod(levels) != codebook_size:
                raise ValueError(
                    f"levels: prod(levels) = {math.prod(levels)} for levels {levels!r} must equal "
                    f"codebook_size = {codebook_size}"
                )
        else:
            levels = derived_levels(dim, codebook_size)
        self.levels = levels
        level_tensor = torch.tensor(levels, dtype=torch.long)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), level_tensor[:-1]]), dim=0)
        half_levels = (level_tensor - 1).double() * (1 + options.eps) / 2
        offsets = (level_tensor % 2 == 0).double() * 0.5
        # no shift for L = 2: it would put the single boundary at z = -3.8 (module doc)
        shifts = torch.where(level_tensor > 2, torch.atanh(offsets / half_levels.clamp(min=1e-12)), 0.0)
        self.register_buffer("basis", basis, persistent=False)
        self.register_buffer("half_levels", half_levels.float(), persistent=False)
        self.register_buffer("offsets", offsets.float(), persistent=False)
        self.register_buffer("shifts", shifts.float(), persistent=False)
        self.register_buffer("half_width", (level_tensor // 2).clamp(min=1).float(), persistent=False)
        self.register_buffer("level_tensor", level_tensor, persistent=False)
        self.register_buffer("grid", self.indices_to_codes(torch.arange(codebook_size)), persistent=False)

    @property
    def codebook(self) -> Tensor:
        return self.grid

    def bound(self, features: Tensor) -> Tensor:
        """b(z) = tanh(z + s) h - o: after rounding, dimension i takes exactly L_i values."""
        dtype = features.dtype
        return torch.tanh(features + self.shifts.to(dtype)) * self.half_levels.to(dtype) - self.offsets.to(dtype)

    def search_space(self, features: Tensor) -> Tensor:
        return self.bound(features) / self.half_width.to(features.dtype)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        digits = (indices[..., None] // self.basis) % self.level_tensor
        return (digits - self.level_tensor // 2).float() / self.half_width

    def _round(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Bounded features -> (search-space features, rounded integer levels centred at 0)."""
        bounded = self.bound(features)
        return bounded / self.half_width.to(features.dtype), torch.round(bounded)

    def _indices(self, rounded: Tensor) -> Tensor:
        return ((rounded.long() + self.level_tensor // 2) * self.basis).sum(dim=-1)

    def search(self, z: Tensor) -> Tensor:
        """Nearest grid code of the bounded features: their rounding (O(N d), no K-way search)."""
        flat = self._flatten(z).detach()
        _, rounded = self._round(flat)
        return self._indices(rounded).reshape(z.shape[:-1])

    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.options.beta}

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        scaled, rounded = self._round(features)
        codes = rounded.detach() / self.half_width.to(features.dtype)
        losses = {"commitment": (scaled - codes).pow(2).mean()}
        indices = self._indices(rounded.detach())
        return QuantizerOutput(straight_through(scaled, codes), indices, self.weighted_sum(losses), losses)
