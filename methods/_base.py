"""The quantizer interface every method implements.

A quantizer maps features ``z`` of shape (..., d) to the nearest of K code vectors (the rows of
``q.codebook``), passes gradients to ``z`` with the straight-through estimator, and returns the
loss terms its method adds to the training loss.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from methods import _dist
from methods._core import nearest_code, straight_through
from methods._usage import CodeUsage, code_usage


class QuantizerOutput(NamedTuple):
    """What every quantizer's forward returns.

    quantized: same shape as the input, value = nearest code, gradient straight through to z.
    indices:   long, shape z.shape[:-1], index of the nearest code in ``q.codebook``.
    loss:      scalar, the weighted sum of ``losses`` the method wants added to the training loss.
    losses:    the unweighted components (e.g. ``commitment``, ``codebook``, ``wasserstein``).
    """

    quantized: Tensor
    indices: Tensor
    loss: Tensor
    losses: dict[str, Tensor]


def _check_non_negative(options: Any, *names: str) -> None:
    for name in names:
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
            raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")


def _check_int(options: Any, *names: str) -> None:
    for name in names:
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: must be an integer, got {value!r}")


def _check_optional_seed(options: Any, name: str = "seed") -> None:
    value = getattr(options, name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{name}: must be an integer or None (None = derived from the generator), got {value!r}")


def _check_positive_int(options: Any, *names: str) -> None:
    for name in names:
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")


REDUCTIONS = ("mean", "sum")
INITS = ("normal", "uniform")


def _check_choice(options: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(options, name)
    if value not in choices:
        raise ValueError(f"{name}: must be one of {list(choices)}, got {value!r}")


def check_loss_and_init(options: Any) -> None:
    """Validate the shared ``reduction``, ``init`` and ``init_scale`` fields of an options dataclass."""
    _check_non_negative(options, "init_scale")
    for name, choices in (("reduction", REDUCTIONS), ("init", INITS)):
        if hasattr(options, name):
            _check_choice(options, name, choices)


@dataclass(frozen=True)
class Tunable:
    """The search range of one option for a tuning stage: a float range ``[low, high]``
    (log-uniform when ``log``) or a finite set of ``choices``. Read from ``Quantizer.tunables``
    (carried on ``MethodSpec.tunables``)."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.choices, list):
            object.__setattr__(self, "choices", tuple(self.choices))
        if self.choices:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("choices: a Tunable is either a range (low, high, log) or choices, not both")
            return
        if self.low is None or self.high is None:
            raise ValueError(f"low: a range Tunable needs low and high, got low={self.low!r}, high={self.high!r}")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or not self.low < self.high:
            raise ValueError(f"low: must be finite and < high, got low={self.low!r}, high={self.high!r}")
        if self.log and not self.low > 0:
            raise ValueError(f"low: a log-uniform range needs low > 0, got {self.low!r}")


@dataclass(frozen=True)
class VQOptions:
    """Options every codebook-learning quantizer shares.

    beta: weight of the commitment term ||z - sg(e)||^2 (pulls features/encoder to their code).
    codebook_weight: weight of the codebook term ||sg(z) - e||^2 (pulls the chosen code to z).
    init_scale: codes are initialised i.i.d. N(0, init_scale^2) (``init="normal"``) or
      U[-init_scale, init_scale] (``init="uniform"``).
    reduction: "mean" averages both squared errors over every element (F.mse_loss, the papers'
      VQ-VAE code); "sum" sums over the d dimensions and averages over features
      (``(e - sg(z)).square().sum(1).mean()``, the Wasserstein-VQ authors' synthetic script), d x "mean".
    """

    beta: float = 0.25
    codebook_weight: float = 1.0
    init_scale: float = 1.0
    init: str = "normal"
    reduction: str = "mean"

    def __post_init__(self) -> None:
        _check_non_negative(self, "beta", "codebook_weight")
        check_loss_and_init(self)


class Quantizer(nn.Module):
    """Base class: input checks, flattening, search, straight-through; subclasses give the codebook
    and the loss terms.

    Subclasses set ``Options`` (a frozen dataclass), implement ``codebook`` and ``loss_terms`` and
    may override ``quantize_flat`` entirely (e.g. EMA updates).
    Class flags read by the registry and the tests (never branch on names):
      ``trainable_by_gradient``: the optimizer trains the codebook (False for EMA-style updates).
      ``distribution_matching``: the method has a codebook-vs-features distribution loss.
      ``nonparametric_matching``: that loss compares the samples themselves (sliced W, exact OT, MMD),
        not a parametric model of them (the Gaussian W loss); implies ``distribution_matching``.
      ``straight_through``: dq/dz is the straight-through estimator in codebook coordinates,
        i.e. the Jacobian of ``search_space`` (the identity by default). False: the gradient is
        that of q = sg(M_z) z with a detached per-feature matrix M_z mapping z onto its code
        (M_z z = q; the rotation trick).
      ``learnable_codebook``: the codebook is learned (by gradient or EMA) and its initialisation
        follows the generator. False for a fixed implicit codebook (FSQ's grid).
      ``relaxed_gradient``: the value is the hard code but dq/dz is the Jacobian of
        ``relaxation(z)``, a soft assignment over the codes (IBQ); implies ``straight_through``
        False.
      ``code_structure``: "single" (one codebook, indices z.shape[:-1]), "residual" (level l
        quantizes the residual left by levels < l, quantized = sum of the level codes) or
        "grouped" (z split into equal parts along d, one codebook per part, quantized = their
        concatenation). Multi-codebook indices have shape z.shape[:-1] + (num_levels,); their
        codebook is (num_levels, K, d_level). ``level_codebook_sizes`` gives K per level.
      ``error_space``: "euclidean" (E = ||z - quantized||^2 is comparable across methods) or
        "sphere" (features and codes are l2-normalised before the search: E is measured on the
        unit sphere of ``search_space`` and is never ranked against euclidean E) or "bounded"
        (features are squashed into a box before the search, FSQ: E is measured there).
      ``codebook_size_rule``: "any", or "binary" (K must equal 2^dim: one bit per dimension).
      ``gradient_gain``: "one", or "levels" where a straight-through residual quantizer passes the
        identity once per level (dq/dz = num_levels x the Jacobian of ``search_space``; the
        peer's ResidualVQ does), or "inverse_sqrt_dim" where the estimator acts before the codes
        are scaled onto the unit sphere (dq/dz = the Jacobian / sqrt(d); BSQ's official code).
      ``degenerate_sizes``: K = 1 and K < d build and train (False where a wrapped peer cannot:
        building then raises ValueError).
      ``has_loss_terms``: ``losses`` is non-empty (False for a peer with no loss, e.g. its FSQ).
      ``rank_synchronised``: the method's training reads batch statistics beyond per-feature loss
        means (EMA sums, usage, queues, batch covariances, OT plans, batch entropies, draws over the
        batch) and synchronises them across torch.distributed ranks (``methods._dist``; option
        ``sync_ranks``, on by default). False: it needs no synchronisation, its module docstring
        says why (its state is parameters trained by gradient, which DDP's average keeps equal,
        and its losses are per-feature means or functions of the codebook alone).
      ``ddp_equivalent``: W ranks with a shard of each batch each train as one process on the whole
        batch (with its synchronisation on). False only for a wrapped peer whose own
        synchronisation does not achieve it; its docstring says why.
    """

    Options: ClassVar[type] = VQOptions
    paper: ClassVar[str] = ""
    # option name -> search range for a tuning stage; every key must be a field of ``Options``
    tunables: ClassVar[Mapping[str, Tunable]] = MappingProxyType({})
    trainable_by_gradient: ClassVar[bool] = True
    distribution_matching: ClassVar[bool] = False
    nonparametric_matching: ClassVar[bool] = False
    straight_through: ClassVar[bool] = True
    learnable_codebook: ClassVar[bool] = True
    relaxed_gradient: ClassVar[bool] = False
    code_structure: ClassVar[str] = "single"
    error_space: ClassVar[str] = "euclidean"
    codebook_size_rule: ClassVar[str] = "any"
    gradient_gain: ClassVar[str] = "one"
    degenerate_sizes: ClassVar[bool] = True
    has_loss_terms: ClassVar[bool] = True
    rank_synchronised: ClassVar[bool] = False
    ddp_equivalent: ClassVar[bool] = True

    def __init__(self, dim: int, codebook_size: int, options: Any, generator: torch.Generator | None = None):
        super().__init__()
        for name, value in (("dim", dim), ("codebook_size", codebook_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        if not isinstance(options, self.Options):
            raise TypeError(f"options: expected {self.Options.__name__}, got {type(options).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        self.dim = dim
        self.codebook_size = codebook_size
        self.options = options

    # --- what subclasses provide -------------------------------------------------------------
    @property
    def codebook(self) -> Tensor:
        """Effective code vectors, (K, d)."""
        raise NotImplementedError

    def loss_terms(self, features: Tensor, codes: Tensor, codebook: Tensor) -> dict[str, Tensor]:
        """Unweighted loss components for flat ``features`` (N, d) and their ``codes`` (N, d)."""
        raise NotImplementedError

    def loss_weights(self) -> dict[str, float]:
        """Weight of each component of ``loss_terms`` in ``loss``."""
        raise NotImplementedError

    def relaxation(self, features: Tensor) -> Tensor:
        """Soft codes (N, d) whose Jacobian is dq/dz, for ``relaxed_gradient`` methods only."""
        raise NotImplementedError

    # --- code structure (single and multi-codebook) ---------------------------------------------
    @property
    def level_codebook_sizes(self) -> tuple[int, ...]:
        """K of each level's codebook: (K,) for a single codebook."""
        return (self.codebook_size,)

    @property
    def num_levels(self) -> int:
        """Indices per token: 1 for a single codebook, else the trailing size of ``indices``."""
        return len(self.level_codebook_sizes)

    @property
    def bits_per_token(self) -> float:
        """sum_l log2 K_l: the bits one token's indices carry."""
        return sum(math.log2(size) for size in self.level_codebook_sizes)

    def indices_shape(self, leading: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of ``indices`` for features of shape leading + (d,): leading, plus (num_levels,)
        for a multi-codebook structure."""
        return tuple(leading) if self.code_structure == "single" else (*leading, self.num_levels)

    def level_indices(self, indices: Tensor) -> Tensor:
        """Indices of any leading shape as (N, num_levels), one column per level."""
        return indices.reshape(-1, self.num_levels)

    def code_usage(self, indices: Tensor, over_ranks: bool | None = None) -> CodeUsage:
        """Per-level and overall usage (counts, utilization, perplexity) of ``indices``.

        Under torch.distributed with several ranks, U and perplexity are those of the indices of
        every rank together (gathered, rank 0's first), as one process on the whole batch would
        count them: a collective, so every rank calls it. ``over_ranks`` defaults to the option
        ``sync_ranks`` (True where the method has none); False counts this rank's indices alone.
        """
        rows = self.level_indices(indices)
        if over_ranks is None:
            over_ranks = getattr(self.options, "sync_ranks", True)
        if over_ranks and _dist.world_size() > 1:
            rows = _dist.gather_rows(rows)
        return code_usage(rows, self.level_codebook_sizes)

    # --- shared machinery ----------------------------------------------------------------------
    def extra_repr(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.options, f.name)!r}" for f in dataclasses.fields(self.options))
        return f"dim={self.dim}, codebook_size={self.codebook_size}, {fields}"

    def _flatten(self, z: Tensor) -> Tensor:
        if not isinstance(z, Tensor):
            raise TypeError(f"z: expected a torch.Tensor, got {type(z).__name__}")
        if not z.is_floating_point():
            raise ValueError(f"z: expected a floating-point tensor, got dtype {z.dtype}")
        if z.ndim < 1 or z.shape[-1] != self.dim:
            raise ValueError(
                f"z: last dimension must equal dim = {self.dim}, got shape {tuple(z.shape)}"
            )
        if z.numel() == 0:
            raise ValueError(f"z: empty batch (no feature vectors), got shape {tuple(z.shape)}")
        if not torch.isfinite(z).all():
            raise ValueError("z: features contain NaN or inf")
        return z.reshape(-1, self.dim)

    @property
    def gradient_gain_value(self) -> float:
        """The factor ``gradient_gain`` names: dq/dz = this x the Jacobian of ``search_space``."""
        return {"one": 1.0, "levels": float(self.num_levels), "inverse_sqrt_dim": self.dim**-0.5}[self.gradient_gain]

    def min_batch_size(self) -> int:
        """Fewest feature vectors per forward the method's statistics are defined for (1 by default)."""
        return 1

    def internal_seed(self, generator: torch.Generator | None, seed: int | None) -> Tensor:
        """The seed of the method's internal randomness (projections, sampling, k-means starts):
        ``seed`` when given, else drawn from ``generator`` (the run seed; the global RNG when None).
        Returned as a 0-d long tensor, to be registered as a buffer so a state_dict carries it."""
        if seed is not None:
            return torch.tensor(int(seed), dtype=torch.long)
        return torch.randint(0, 2**31 - 1, (), generator=generator, dtype=torch.long)

    def search_space(self, features: Tensor) -> Tensor:
        """Features (..., d) in the coordinates of ``codebook``, where the nearest code is sought.

        The identity for every method that searches the raw features; FSQ bounds them first.
        """
        return features

    def search(self, z: Tensor) -> Tensor:
        """Nearest-code indices for z (..., d) -> z.shape[:-1], no gradient, no state change."""
        flat = self.search_space(self._flatten(z))
        return nearest_code(flat, self.codebook.detach()).reshape(z.shape[:-1])

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Code vectors for an index tensor of any shape -> indices.shape + (d,)."""
        return self.codebook[indices]

    def weighted_sum(self, losses: dict[str, Tensor]) -> Tensor:
        weights = self.loss_weights()
        total = None
        for name, value in losses.items():
            term = weights[name] * value
            total = term if total is None else total + term
        return total

    def quantize_flat(self, features: Tensor) -> QuantizerOutput:
        """Default: nearest code, straight-through, weighted loss terms. features: (N, d)."""
        codebook = self.codebook
        indices = nearest_code(features.detach(), codebook.detach())
        codes = codebook[indices]
        losses = self.loss_terms(features, codes, codebook)
        return QuantizerOutput(straight_through(features, codes), indices, self.weighted_sum(losses), losses)

    def working_dtype(self) -> torch.dtype:
        """The dtype quantization runs in: that of the quantizer's state (float32 unless converted)."""
        for tensor in (*self.parameters(), *self.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize z (..., d). ``quantized`` has z's shape and dtype (the one dtype rule: a half-
        precision input gets a half-precision output, whatever precision the codebook holds)."""
        flat = self._flatten(z)
        needed = self.min_batch_size()
        if flat.shape[0] < needed:
            raise ValueError(
                f"z: batch of {flat.shape[0]} feature vector(s) is too small: this quantizer's options "
                f"need at least {needed} per forward"
            )
        flat = flat.to(self.working_dtype())  # e.g. half-precision features quantized in float32
        out = self.quantize_flat(flat)
        return QuantizerOutput(
            out.quantized.reshape(z.shape).to(z.dtype), out.indices.reshape(self.indices_shape(z.shape[:-1])), out.loss,
            out.losses,
        )


def squared_error(a: Tensor, b: Tensor, reduction: str = "mean") -> Tensor:
    """||a - b||^2 reduced over (N, d): "mean" over every element, "sum" over d then mean over N."""
    error = (a - b).pow(2)
    if reduction == "mean":
        return error.mean()
    if reduction == "sum":
        return error.sum(dim=-1).mean()
    raise ValueError(f"reduction: must be one of {list(REDUCTIONS)}, got {reduction!r}")


def commitment_and_codebook(features: Tensor, codes: Tensor, reduction: str = "mean") -> dict[str, Tensor]:
    """The VQ-VAE pair: commitment ||z - sg(e)||^2 and codebook ||sg(z) - e||^2.

    ``reduction="mean"`` averages over every element (``F.mse_loss``), as in the papers' VQ-VAE
    code, so their loss weights carry over unchanged (the quantization-error metric sums over dims:
    E = d x this); ``"sum"`` sums over dims and averages over features, as the Wasserstein-VQ
    authors' synthetic script does.
    """
    return {
        "commitment": squared_error(features, codes.detach(), reduction),
        "codebook": squared_error(features.detach(), codes, reduction),
    }


def normal_codebook(codebook_size: int, dim: int, scale: float, generator: torch.Generator | None) -> Tensor:
    """(K, d) i.i.d. N(0, scale^2), drawn from ``generator`` (or the global RNG when None)."""
    return torch.randn(codebook_size, dim, generator=generator) * scale


def seeded_linear(dim: int, generator: torch.Generator | None) -> nn.Linear:
    """A (d -> d) ``nn.Linear`` with weight and bias U[-1/sqrt(d), 1/sqrt(d)] (PyTorch's default bound), drawn
    from ``generator`` (weight first, then bias) rather than the global RNG."""
    linear = nn.Linear(dim, dim, bias=True)
    bound = 1 / math.sqrt(dim)
    with torch.no_grad():
        linear.weight.copy_(torch.rand(dim, dim, generator=generator) * 2 * bound - bound)
        linear.bias.copy_(torch.rand(dim, generator=generator) * 2 * bound - bound)
    return linear


def initial_codebook(
    codebook_size: int, dim: int, init: str, scale: float, generator: torch.Generator | None
) -> Tensor:
    """(K, d) initial codes: i.i.d. N(0, scale^2) for ``init="normal"``, U[-scale, scale] for
    ``"uniform"`` (the authors' uniform synthetic setting uses U[-1, 1]^d), from ``generator``."""
    if init == "normal":
        return normal_codebook(codebook_size, dim, scale, generator)
    if init == "uniform":
        return (torch.rand(codebook_size, dim, generator=generator) * 2 - 1) * scale
    raise ValueError(f"init: must be one of {list(INITS)}, got {init!r}")
