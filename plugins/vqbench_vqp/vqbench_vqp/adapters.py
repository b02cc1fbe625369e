"""Adapters: vector-quantize-pytorch's quantizers behind vqbench's ``Quantizer`` interface.

Each adapter builds the peer module UNMODIFIED (its own constructor, forward and update rules)
and only translates: flat features (N, d) go in as one sequence (1, N, d); the peer's output,
indices and loss come back as a ``QuantizerOutput`` with the peer's unweighted loss parts.
The peer draws its initial weights from the global RNG; the adapter seeds it inside
``torch.random.fork_rng`` from the ``generator`` it is given, so the global state is untouched
and a seed repeats. Where the peer deliberately differs from vqbench's conventions the class
flags say so (never the name), and the conformance suite reads them:

- ``vqp_vector_quantize``: EMA codebook (decay 0.8), rotation trick (``straight_through`` False).
- ``vqp_residual``: each level passes the identity to its residual, so dq/dz = L I
  (``gradient_gain = "levels"``); EMA codebooks; the rotation trick is switched off because a
  sum of per-level rotations is not of the form sg(M_z) z.
- ``vqp_fsq``: the peer exposes no pre-rounding coordinates, so ``search_space`` is its own
  quantize (its nearest grid code is itself); levels of 1 divide by zero in the peer and levels
  of 2 need its symmetric variant: ``degenerate_sizes`` False and ValueError naming ``levels``.
- ``vqp_lfq``: K = 2^d (``codebook_size_rule = "binary"``); entropy terms are 0 in eval mode.
- ``vqp_simvq``: one combined loss term (``vq``), as the peer returns it; rotation trick; the
  value is snapped to ``codebook[indices]`` (the peer's differs by rounding), gradient its own.

Distributed training: ``vqp_vector_quantize`` and ``vqp_residual`` all-reduce their EMA cluster
sizes and sums themselves when torch.distributed is initialised (the peer's ``sync_codebook``
default), and ``vqp_fsq`` and ``vqp_simvq`` need no synchronisation (a fixed grid; a codebook
trained by gradient alone, with per-feature mean losses). ``vqp_lfq`` is not equivalent to one
process (``ddp_equivalent`` False): the peer's ``maybe_distributed_mean`` discards the result of
``torch.distributed.nn.all_reduce`` (out of place) and divides its own batch mean by the world
size, so its codebook entropy is that of mean_n p_n / W.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from methods._base import QuantizerOutput, Quantizer, _check_non_negative, _check_positive_int
from methods.fsq import balanced_levels
from methods.residual import residual_search


def _peer():
    """The vector-quantize-pytorch package, imported when a module is built (it costs about 2 s, and
    registering the adapters must stay cheap for every process that lists the methods)."""
    import vector_quantize_pytorch

    return vector_quantize_pytorch


def _seed(generator: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator))


class VQPAdapter(Quantizer):
    """Common translation; subclasses build ``self.module`` in ``make_module``."""

    def __init__(self, dim: int, codebook_size: int, options: Any, generator: torch.Generator | None = None):
        super().__init__(dim, codebook_size, options, generator)
        self.check_sizes(dim, codebook_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed(generator))
            self.module = self.make_module(dim, codebook_size, options)

    def check_sizes(self, dim: int, codebook_size: int) -> None:
        """Raise ValueError for sizes the peer cannot build."""

    def make_module(self, dim: int, codebook_size: int, options: Any) -> nn.Module:
        raise NotImplementedError

    def run(self, features: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The peer's forward on (N, d): quantized (N, d), indices (N, ...), unweighted losses."""
        raise NotImplementedError

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        quantized, indices, losses = self.run(features)
        losses = {name: value.to(features.dtype).reshape(()) for name, value in losses.items()}
        loss = self.weighted_sum(losses) if losses else features.new_zeros(())
        return QuantizerOutput(quantized.to(features.dtype), indices.long(), loss, losses)


@dataclass(frozen=True)
class VQPVectorQuantizeOptions:
    """decay: EMA decay (the peer's 0.8); commitment_weight (the peer's 1.0)."""

    decay: float = 0.8
    commitment_weight: float = 1.0

    def __post_init__(self) -> None:
        _check_non_negative(self, "decay", "commitment_weight")
        if self.decay > 1:
            raise ValueError(f"decay: must be in [0, 1], got {self.decay}")


class VQPVectorQuantize(VQPAdapter):
    """``VectorQuantize(dim, codebook_size, decay, commitment_weight)`` with its defaults."""

    Options = VQPVectorQuantizeOptions
    paper = "arXiv:1711.00937"
    trainable_by_gradient = False
    straight_through = False
    rank_synchronised = True

    def make_module(self, dim, codebook_size, options):
        return _peer().VectorQuantize(dim=dim, codebook_size=codebook_size, decay=options.decay, commitment_weight=options.commitment_weight)

    @property
    def codebook(self) -> Tensor:
        return self.module.codebook

    def loss_weights(self):
        return {"commitment": self.options.commitment_weight}

    def run(self, features):
        quantized, indices, _, breakdown = self.module(features[None], return_loss_breakdown=True)
        return quantized[0], indices[0], {"commitment": breakdown.commitment}


@dataclass(frozen=True)
class VQPResidualOptions(VQPVectorQuantizeOptions):
    """levels: number of quantizers; decay / commitment_weight as ``vqp_vector_quantize``."""

    levels: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive_int(self, "levels")


class VQPResidual(VQPAdapter):
    """``ResidualVQ(dim, num_quantizers=levels, codebook_size, rotation_trick=False)``."""

    Options = VQPResidualOptions
    paper = "arXiv:2107.03312"
    trainable_by_gradient = False
    code_structure = "residual"
    gradient_gain = "levels"
    rank_synchronised = True

    def make_module(self, dim, codebook_size, options):
        return _peer().ResidualVQ(
            dim=dim, num_quantizers=options.levels, codebook_size=codebook_size, decay=options.decay,
            commitment_weight=options.commitment_weight, rotation_trick=False,
        )

    @property
    def level_codebook_sizes(self):
        return (self.codebook_size,) * self.options.levels

    @property
    def codebook(self) -> Tensor:
        return self.module.codebooks

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        codebook = self.codebook
        total = None
        for level in range(self.options.levels):
            codes = codebook[level][indices[..., level]]
            total = codes if total is None else total + codes
        return total

    def loss_weights(self):
        return {"commitment": 1.0}

    def search(self, z: Tensor) -> Tensor:
        """The peer's rule without its EMA side effects: level l searches the residual of < l."""
        indices = residual_search(self._flatten(z).detach(), self.codebook.detach())
        return indices.reshape(*z.shape[:-1], self.options.levels)

    def run(self, features):
        quantized, indices, losses = self.module(features[None])
        return quantized[0], indices[0], {"commitment": losses.sum()}


@dataclass(frozen=True)
class VQPFSQOptions:
    """levels per dimension (() = vqbench's derived levels for (dim, K))."""

    levels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.levels, list):
            object.__setattr__(self, "levels", tuple(self.levels))
        if not isinstance(self.levels, tuple) or any(isinstance(v, bool) or not isinstance(v, int) for v in self.levels):
            raise ValueError(f"levels: must be a tuple of integers, got {self.levels!r}")


class VQPFSQ(VQPAdapter):
    """``FSQ(levels)``; levels of 2 switch on the peer's ``preserve_symmetry`` (it requires it)."""

    Options = VQPFSQOptions
    error_space = "bounded"  # the peer's search space is its bounded grid
    paper = "arXiv:2309.15505"
    trainable_by_gradient = False
    learnable_codebook = False
    degenerate_sizes = False
    has_loss_terms = False

    def check_sizes(self, dim, codebook_size):
        levels = self.options.levels or balanced_levels(dim, codebook_size)  # the peer takes levels of 2, not of 1
        if len(levels) != dim or math.prod(levels) != codebook_size:
            raise ValueError(f"levels: need one entry per dimension with product codebook_size = {codebook_size}, got {levels!r}")
        if min(levels) < 2:
            raise ValueError(f"levels: the peer's FSQ divides by zero at one level; got {levels!r} for codebook_size {codebook_size}")
        self.levels = levels

    def make_module(self, dim, codebook_size, options):
        return _peer().FSQ(levels=list(self.levels), preserve_symmetry=2 in self.levels)

    @property
    def codebook(self) -> Tensor:
        return self.module.implicit_codebook

    def search_space(self, features: Tensor) -> Tensor:
        """The peer's bounded features before its rounding, in the code's units (its ``bound`` rounds
        inside, so the pre-rounding value is written out from its documented formula):
        tanh(z + shift) * half_l - offset over half_width, or tanh(z) with ``preserve_symmetry``
        (its floor(x + 0.5) is the rounding of x = (L - 1)(tanh z + 1) / 2, mapped by 2 x / (L - 1) - 1)."""
        module = self.module
        if getattr(module, "preserve_symmetry", False):
            return torch.tanh(features)
        levels = module._levels.to(features.dtype)
        half_l = (levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(module._levels % 2 == 0, 0.5, 0.0).to(features.dtype)
        shift = torch.atanh(offset / half_l)
        return (torch.tanh(features + shift) * half_l - offset) / (module._levels // 2)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        # the peer's indices_to_codes moves channels first for image-shaped indices: index the grid
        return self.codebook[indices]

    def loss_weights(self):
        return {}

    def run(self, features):
        quantized, indices = self.module(features[None])
        return quantized[0], indices[0], {}


@dataclass(frozen=True)
class VQPLFQOptions:
    """entropy_weight, diversity_gamma, commitment_weight: the peer's LFQ weights (0.1, 1, 0)."""

    entropy_weight: float = 0.1
    diversity_gamma: float = 1.0
    commitment_weight: float = 0.0

    def __post_init__(self) -> None:
        _check_non_negative(self, "entropy_weight", "diversity_gamma", "commitment_weight")


class VQPLFQ(VQPAdapter):
    """``LFQ(dim, codebook_size=2^dim)`` (no projections)."""

    Options = VQPLFQOptions
    paper = "arXiv:2310.05737"
    trainable_by_gradient = False
    learnable_codebook = False
    codebook_size_rule = "binary"
    rank_synchronised = True
    ddp_equivalent = False

    def check_sizes(self, dim, codebook_size):
        if codebook_size != 2**dim:
            raise ValueError(f"codebook_size: must equal 2^dim = {2**dim}, got {codebook_size}")

    def make_module(self, dim, codebook_size, options):
        return _peer().LFQ(
            dim=dim, codebook_size=codebook_size, entropy_loss_weight=options.entropy_weight,
            diversity_gamma=options.diversity_gamma, commitment_loss_weight=options.commitment_weight,
        )

    @property
    def codebook(self) -> Tensor:
        return self.module.codebook

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return self.codebook[indices]

    def loss_weights(self):
        w = self.options.entropy_weight
        return {"per_sample_entropy": w, "codebook_entropy": -w * self.options.diversity_gamma, "commitment": self.options.commitment_weight}

    def run(self, features):
        (quantized, indices, _), breakdown = self.module(features[None], return_loss_breakdown=True)
        losses = {"per_sample_entropy": breakdown.per_sample_entropy, "codebook_entropy": breakdown.batch_entropy, "commitment": breakdown.commitment}
        return quantized[0], indices[0], losses


@dataclass(frozen=True)
class VQPSimVQOptions:
    """commitment_weight: the peer's overall weight (1.0); input_to_quantize_weight: its beta (0.25)."""

    commitment_weight: float = 1.0
    input_to_quantize_weight: float = 0.25

    def __post_init__(self) -> None:
        _check_non_negative(self, "commitment_weight", "input_to_quantize_weight")


class VQPSimVQ(VQPAdapter):
    """``SimVQ(dim, codebook_size)``: frozen Gaussian codebook through a learned linear map."""

    Options = VQPSimVQOptions
    paper = "arXiv:2411.02038"
    straight_through = False

    def make_module(self, dim, codebook_size, options):
        return _peer().SimVQ(dim=dim, codebook_size=codebook_size, input_to_quantize_commit_loss_weight=options.input_to_quantize_weight)

    @property
    def codebook(self) -> Tensor:
        return self.module.codebook

    def loss_weights(self):
        return {"vq": self.options.commitment_weight}

    def run(self, features):
        quantized, indices, loss = self.module(features[None])
        # the peer transforms the chosen codes apart from the whole codebook, so its value can
        # differ from codebook[indices] by rounding: keep its gradient, take the code's value
        quantized, indices = quantized[0], indices[0]
        codes = self.codebook[indices].detach()
        return codes + (quantized - quantized.detach()), indices, {"vq": loss}
