"""Sinkhorn VQ (OptVQ): during training, assign features to codes by entropic optimal transport.

Zhang, Zhang, Wang, Liu, Lu, "Preventing Local Pitfalls in Vector Quantization via Optimal
Transport", arXiv:2412.15195. Official code: https://github.com/zbr17/OptVQ
(optvq/models/quantizer.py, ``VectorQuantizerSinkhorn``).

Nearest-code assignment leaves codes far from the features unchosen and untrained. OptVQ instead
assigns a training batch z_1..z_n to the K codes with the entropic OT plan between the batch and
the codebook, uniform marginals (each feature mass 1/n, each code 1/K), so every code receives
features. With C_ij = ||z_i - c_j|| (Euclidean, as in the official code) standardised by its
std over the batch, C~ = C / std(C) (the official code also subtracts the mean and the minimum:
constant shifts do not change the plan):

    P_ij = exp(-epsilon C~_ij + f_i + g_j),    epsilon = 10 (an inverse temperature, as in OptVQ;
                                               POT's entropic regularisation is reg = 1 / epsilon)
    repeat ``iterations`` (5) times, in log domain:
        g_j = -log K - logsumexp_i(-epsilon C~_ij + f_i)      (code marginals 1/K)
        f_i = -log n - logsumexp_j(-epsilon C~_ij + g_j)      (feature marginals 1/n, exact after the step)
    index_i = argmax_j P_ij = argmax_j (g_j - epsilon C~_ij)

starting from f = 0 (the same updates, in the same order, as POT's ``sinkhorn_log``). The losses
are vanilla VQ's on the assigned codes: codebook_weight ||sg(z) - e||^2 + beta ||z - sg(e)||^2,
straight-through gradient. At evaluation (and in ``search``) the index is the nearest code.

Time and memory: when the n x K kernel fits in ``DENSE_KERNEL_BYTES`` (1 GiB; batch 8,192 x
K 16,384 in float32 does), the costs are computed and exponentiated once, into the Gibbs kernel
with each row's maximum factored out, and each iteration is two matrix-vector products, as POT's
``sinkhorn_knopp`` (potentials still kept as logs, so nothing overflows; see ``_DenseKernel``).
When a kernel sum is too small to trust (a code or a feature more than about 87 / epsilon standard
deviations from the rest, in float32), and for larger problems, the exact log-domain path runs
instead, as it does when ``block_rows`` is given: every pass recomputes the
cost in row blocks of at most ``methods._core.SEARCH_BLOCK_ELEMENTS`` entries (64 MiB in float32),
keeping running log-sum-exps over the rows, so memory is O(block + n + K); iterations + 2 passes
over the n x K costs (one for the std, one per iteration, one for the argmax; each f update shares
its pass with the next g update), with up to two exponentials per entry.
OptVQ's options: ``projection=True`` makes the codebook a learnable linear layer applied to the
learned codes, codebook = E W^T + b (W: d x d, b: d, nn.Linear's default init U(+-1/sqrt(d)), drawn
from the generator), as OptVQ's codebook projection; OptVQ's loss weights are ``beta=1.0``
(commitment) and ``codebook_weight=0.25`` (the defaults stay vanilla VQ's 0.25 / 1.0).

What differs from OptVQ (arXiv:2412.15195): argmax instead of the official default of sampling the
index from the plan's row (``use_prob``); the standardisation divides by the std only (shifts are
no-ops); a zero std (all distances equal) leaves the costs unscaled; OptVQ's multi-head
quantization (d split into 4 heads, one assignment each) is not implemented: ``indices`` here is
one code per feature vector, so heads need the multi-codebook interface (one index per head).

Distributed training (``sync_ranks``): the plan couples every feature of the batch, so its std,
n and the column log-sum-exps of each iteration are taken over all ranks (one all-reduce of K
values per iteration): each rank's assignment is its rows of the whole batch's plan.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from methods._base import (
    QuantizerOutput, Tunable, VQOptions, _check_non_negative, _check_positive_int, commitment_and_codebook, seeded_linear,
)
from methods import _dist
from methods._core import SEARCH_BLOCK_ELEMENTS, nearest_code, straight_through
from methods._registry import register
from methods.vanilla import VanillaVQ


@dataclass(frozen=True)
class SinkhornOptions(VQOptions, _dist.RankSyncOptions):
    """epsilon: inverse temperature on the standardised costs (10 in OptVQ; larger = closer to
    exact OT); iterations: Sinkhorn iterations per training step (5 in OptVQ)."""

    epsilon: float = 10.0
    iterations: int = 5
    projection: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _dist.check_sync_ranks(self)
        _check_non_negative(self, "epsilon")
        if not self.epsilon > 0:
            raise ValueError(f"epsilon: must be > 0, got {self.epsilon!r}")
        _check_positive_int(self, "iterations")
        if not isinstance(self.projection, bool):
            raise ValueError(f"projection: must be true or false, got {self.projection!r}")


def _cost_blocks(features: Tensor, codebook: Tensor, block_rows: int, buffer: Tensor | None = None,
                 squared: bool = False):
    """Yield (start, (rows, K) Euclidean distances, or squared ones) over row blocks of ``features``.

    The blocks are views of one ``buffer`` (rows >= block_rows), overwritten by the next block:
    fresh 64 MiB blocks cost more in page faults than the arithmetic that fills them.
    """
    if buffer is None:
        buffer = _block_buffer(features, codebook, block_rows)
    code_norms = codebook.pow(2).sum(dim=1)
    codebook_t = codebook.t()
    for start in range(0, features.shape[0], block_rows):
        block = features[start : start + block_rows]
        distances = torch.addmm(code_norms, block, codebook_t, beta=1.0, alpha=-2.0, out=buffer[: block.shape[0]])
        distances.add_(block.pow(2).sum(dim=1, keepdim=True)).clamp_(min=0)
        yield start, distances if squared else distances.sqrt_()


def _block_buffer(features: Tensor, codebook: Tensor, block_rows: int) -> Tensor:
    return features.new_empty(min(block_rows, features.shape[0]), codebook.shape[0])


def _logsumexp_(logits: Tensor, dim: int) -> Tensor:
    """log sum_dim exp(logits), max-shifted like ``torch.logsumexp`` but overwriting ``logits``
    (torch's version allocates two more blocks per call: a third of the Sinkhorn time)."""
    shift = logits.amax(dim=dim, keepdim=True)
    return logits.sub_(shift).exp_().sum(dim=dim).log_().add_(shift.squeeze(dim))


def _standardising_scale(features: Tensor, codebook: Tensor, block_rows: int, buffer: Tensor,
                         sync: bool = False) -> Tensor:
    """Unbiased std of all n K distances (as torch.std in the official code), from float64 sums of
    per-row sums (all-reduced over ranks with ``sync``); 1 when it is 0 (all distances equal)."""
    total = torch.zeros((), dtype=torch.float64, device=features.device)
    total_sq = torch.zeros((), dtype=torch.float64, device=features.device)
    for _, squared in _cost_blocks(features, codebook, block_rows, buffer, squared=True):
        total_sq += squared.sum(dim=1).sum(dtype=torch.float64)
        total += squared.sqrt_().sum(dim=1).sum(dtype=torch.float64)
    count = features.shape[0] * codebook.shape[0]
    if sync:
        sums = torch.stack([total, total_sq, torch.tensor(float(count), dtype=torch.float64, device=total.device)])
        _dist.all_reduce_(sums)
        total, total_sq, count = sums[0], sums[1], int(sums[2])
    variance = (total_sq - total**2 / count) / (count - 1) if count > 1 else total.new_zeros(())
    std = variance.clamp(min=0).sqrt()
    return torch.where(std > 0, std, torch.ones_like(std)).to(features.dtype)


@torch.no_grad()
def _sinkhorn(
    features: Tensor, codebook: Tensor, epsilon: float, iterations: int, block_rows: int, final_rows: bool,
    sync: bool = False,
) -> tuple[Tensor | None, Tensor, Tensor]:
    """The Sinkhorn iterations of the module docstring, in ``iterations + 2`` cost passes (one fewer
    without ``final_rows``): the std, the first g, then one per iteration.

    The f update of iteration t and the g update of iteration t + 1 share one pass: f_i depends on
    g and row i only, so each row block updates its f and, with it, adds its terms to the column
    log-sum-exp of the next g. The last f (``final_rows``) is skipped when only the argmax is wanted
    (it adds a constant per row). Returns (f or None, g, scale).
    With ``sync`` the rows are this rank's shard of the batch: the std, n and each column
    log-sum-exp are taken over every rank (``methods._dist``), so f, g and the plan are those of
    the whole batch.
    """
    n, k = features.shape[0], codebook.shape[0]
    log_rows = math.log(_dist.row_offset(n, features.device)[1] if sync else n)
    buffer, scratch = _block_buffer(features, codebook, block_rows), _block_buffer(features, codebook, block_rows)
    scale = _standardising_scale(features, codebook, block_rows, buffer, sync)
    factor = -epsilon / scale
    f = torch.zeros(n, dtype=features.dtype, device=features.device)
    column = torch.full((k,), -math.inf, dtype=features.dtype, device=features.device)
    for _, cost in _cost_blocks(features, codebook, block_rows, buffer):  # g from f = 0
        column = torch.logaddexp(column, _logsumexp_(cost.mul_(factor), dim=0))
    if sync:
        column = _dist.logsumexp_over_ranks(column)
    g = -math.log(k) - column
    for iteration in range(1, iterations + 1):
        last = iteration == iterations
        if last and not final_rows:
            return None, g, scale
        column = torch.full((k,), -math.inf, dtype=features.dtype, device=features.device)
        for start, cost in _cost_blocks(features, codebook, block_rows, buffer):
            logits = cost.mul_(factor)
            f_block = -log_rows - _logsumexp_(torch.add(logits, g, out=scratch[: logits.shape[0]]), dim=1)
            f[start : start + f_block.shape[0]] = f_block
            if not last:
                column = torch.logaddexp(column, _logsumexp_(logits.add_(f_block[:, None]), dim=0))
        if not last:
            if sync:
                column = _dist.logsumexp_over_ranks(column)
            g = -math.log(k) - column
    return f, g, scale


# The dense path keeps the n x K Gibbs kernel when it holds at most this many bytes (1 GiB).
DENSE_KERNEL_BYTES = 1 << 30


class _DenseKernel:
    """The Sinkhorn iterations of the module docstring with the Gibbs kernel exponentiated once,
    as POT's ``sinkhorn_knopp`` does, but in potentials kept as logs so nothing overflows:

        Kr_ij = exp(-epsilon C~_ij - a_i),   a_i = max_j (-epsilon C~_ij)     (each row's max is 1)
        g_j = -log K - W - log sum_i Kr_ij exp(w_i - W),    w_i = a_i + f_i, W = max_i w_i
        f_i = -log n - a_i - G - log sum_j Kr_ij exp(g_j - G),                G = max_j g_j

    the same updates as the log-domain ones, with two matrix-vector products per iteration instead
    of two passes of exponentials. Terms below the dtype's smallest normal number are dropped (or
    raised to it), an absolute error under ``tiny`` per term; every sum is checked to be at least
    ``SAFE_MARGIN`` x its count x ``tiny``, so that this error stays below 1 / SAFE_MARGIN of it.
    A sum under that (costs spread over more than about 87 / epsilon standard deviations in
    float32) makes :meth:`build` or the update return None, and the caller runs the exact
    log-domain blocks instead."""

    SAFE_MARGIN = 1e6

    def __init__(self, kernel: Tensor, row_shift: Tensor, scale: Tensor) -> None:
        self.kernel, self.row_shift, self.scale = kernel, row_shift, scale
        info = torch.finfo(kernel.dtype)
        self.log_tiny = math.log(info.tiny)
        self.tiny = info.tiny

    @classmethod
    def build(cls, features: Tensor, codebook: Tensor, epsilon: float) -> "_DenseKernel":
        n, k = features.shape[0], codebook.shape[0]
        kernel = torch.addmm(codebook.pow(2).sum(dim=1), features, codebook.t(), beta=1.0, alpha=-2.0)
        kernel.add_(features.pow(2).sum(dim=1, keepdim=True)).clamp_(min=0)
        total_sq = kernel.sum(dim=1).sum(dtype=torch.float64)
        total = kernel.sqrt_().sum(dim=1).sum(dtype=torch.float64)
        count = n * k
        variance = (total_sq - total**2 / count) / (count - 1) if count > 1 else total.new_zeros(())
        std = variance.clamp(min=0).sqrt()
        scale = torch.where(std > 0, std, torch.ones_like(std)).to(features.dtype)
        kernel.mul_(-epsilon / scale)  # logits -epsilon C~
        row_shift = kernel.amax(dim=1)
        info = torch.finfo(kernel.dtype)
        kernel.sub_(row_shift[:, None]).clamp_(min=math.log(info.tiny)).exp_()
        return cls(kernel, row_shift, scale)

    def _scaled_exp(self, logs: Tensor) -> tuple[Tensor, Tensor]:
        shift = logs.amax()
        return (logs - shift).clamp_(min=self.log_tiny).exp_(), shift

    def _safe_log(self, sums: Tensor, terms: int) -> Tensor | None:
        if not bool((sums >= self.SAFE_MARGIN * terms * self.tiny).all()):  # NaN fails it too
            return None
        return sums.log()

    def code_potentials(self, f: Tensor) -> Tensor | None:
        """g from f (None when a sum is too small to trust)."""
        n, k = self.kernel.shape
        weights, shift = self._scaled_exp(self.row_shift + f)
        logs = self._safe_log(self.kernel.t() @ weights, n)
        return None if logs is None else -math.log(k) - shift - logs

    def feature_potentials(self, g: Tensor) -> Tensor | None:
        """f from g (None when a sum is too small to trust)."""
        n, k = self.kernel.shape
        weights, shift = self._scaled_exp(g)
        logs = self._safe_log(self.kernel @ weights, k)
        return None if logs is None else -math.log(n) - self.row_shift - shift - logs

    def argmax(self, g: Tensor) -> Tensor | None:
        """argmax_j (g_j - epsilon C~_ij) per row, overwriting the kernel (None when a row's
        largest term is too small to trust)."""
        weights, _ = self._scaled_exp(g)
        best, indices = self.kernel.mul_(weights).max(dim=1)
        return indices if self._safe_log(best, 1) is not None else None


def _sinkhorn_dense(features: Tensor, codebook: Tensor, epsilon: float, iterations: int,
                    final_rows: bool) -> tuple[_DenseKernel, Tensor | None, Tensor] | None:
    """:func:`_sinkhorn` on the dense kernel: (kernel, f or None, g), or None when the kernel
    would exceed ``DENSE_KERNEL_BYTES`` or a sum was too small to trust."""
    n, k = features.shape[0], codebook.shape[0]
    if n * k * features.element_size() > DENSE_KERNEL_BYTES:
        return None
    dense = _DenseKernel.build(features, codebook, epsilon)
    f: Tensor | None = torch.zeros(n, dtype=features.dtype, device=features.device)
    for iteration in range(1, iterations + 1):
        g = dense.code_potentials(f)
        if g is None:
            return None
        if iteration == iterations and not final_rows:
            return dense, None, g
        f = dense.feature_potentials(g)
        if f is None:
            return None
    return dense, f, g


def _block_rows(codebook: Tensor, block_rows: int | None) -> int:
    return block_rows if block_rows is not None else max(1, SEARCH_BLOCK_ELEMENTS // codebook.shape[0])


def sinkhorn_potentials(
    features: Tensor, codebook: Tensor, epsilon: float, iterations: int, block_rows: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Log-domain Sinkhorn between ``features`` (n, d) and ``codebook`` (K, d), uniform marginals.

    Returns (f (n,), g (K,), scale) with plan P_ij = exp(-epsilon C_ij / scale + f_i + g_j),
    C_ij = ||z_i - c_j|| and scale = std of C (1 when it is 0). The dense kernel when it fits and
    is safe (module docstring), else, or with ``block_rows``, row blocks: memory O(block_rows x K).
    """
    features, codebook = features.detach(), codebook.detach().to(features.dtype)
    if block_rows is None:
        with torch.no_grad():
            dense = _sinkhorn_dense(features, codebook, epsilon, iterations, final_rows=True)
        if dense is not None:
            kernel, f, g = dense
            assert f is not None
            return f, g, kernel.scale
    f, g, scale = _sinkhorn(features, codebook, epsilon, iterations, _block_rows(codebook, block_rows),
                            final_rows=True)
    assert f is not None
    return f, g, scale


@torch.no_grad()
def sinkhorn_assignment(
    features: Tensor, codebook: Tensor, epsilon: float, iterations: int, block_rows: int | None = None,
    sync: bool = False,
) -> Tensor:
    """argmax_j of each row of the entropic OT plan, (n,) long: on the dense kernel when it fits and
    is safe (one exponential per entry), else, or with ``block_rows``, in row blocks (memory
    O(block x K), ``iterations + 2`` passes over the n x K costs). ``sync``: ``features`` is this
    rank's shard and the plan is that of the batch of every rank (``methods._dist``; row blocks)."""
    features, codebook = features.detach(), codebook.detach().to(features.dtype)
    if block_rows is None and not sync:
        dense = _sinkhorn_dense(features, codebook, epsilon, iterations, final_rows=False)
        indices = dense[0].argmax(dense[2]) if dense is not None else None
        del dense
        if indices is not None:
            return indices
    block_rows = _block_rows(codebook, block_rows)
    _, g, scale = _sinkhorn(features, codebook, epsilon, iterations, block_rows, final_rows=False, sync=sync)
    indices = torch.empty(features.shape[0], dtype=torch.long, device=features.device)
    factor = -epsilon / scale
    for start, cost in _cost_blocks(features, codebook, block_rows):
        indices[start : start + cost.shape[0]] = cost.mul_(factor).add_(g).argmax(dim=1)
    return indices


def sinkhorn_plan(features: Tensor, codebook: Tensor, epsilon: float, iterations: int) -> Tensor:
    """The dense (n, K) plan, for tests and small problems only."""
    f, g, scale = sinkhorn_potentials(features, codebook, epsilon, iterations)
    cost = torch.cdist(features.detach(), codebook.detach().to(features.dtype))
    return torch.exp(-epsilon * cost / scale + f[:, None] + g[None, :])


@register("sinkhorn")
class SinkhornVQ(VanillaVQ):
    """Vanilla VQ whose training assignment is the argmax of the entropic OT plan (OptVQ)."""

    Options = SinkhornOptions
    paper = "arXiv:2412.15195"
    rank_synchronised = True
    tunables = {"epsilon": Tunable(1.0, 100.0, log=True), "beta": Tunable(0.05, 2.0, log=True)}

    def __init__(self, dim: int, codebook_size: int, options: SinkhornOptions, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        self.projection = None
        if options.projection:
            self.projection = seeded_linear(dim, generator)

    @property
    def codebook(self) -> Tensor:
        return self.embedding if self.projection is None else self.projection(self.embedding)

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        codebook = self.codebook
        if self.training and features.shape[0] > 0:
            indices = sinkhorn_assignment(features, codebook, self.options.epsilon, self.options.iterations,
                                          sync=_dist.synchronised(self.options))
        else:
            indices = nearest_code(features.detach(), codebook.detach())
        codes = codebook[indices]
        losses = commitment_and_codebook(features, codes, self.options.reduction)
        return QuantizerOutput(straight_through(features, codes), indices, self.weighted_sum(losses), losses)
