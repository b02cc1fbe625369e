"""The conformance suite of vqbench quantizers, runnable on one quantizer from anywhere.

``tests/test_methods_conformance.py`` parametrises these checks over every registered method; a
plugin author runs the same checks on their own quantizer:

    from methods.testing import run_conformance

    def test_my_vq_conforms():
        run_conformance(MyVQ)          # or a registered name: run_conformance("my_vq")

Each check is a plain function of a registered method name that raises AssertionError (or the
unexpected exception) on failure; branches read the registry's flags, never method names. The
checks use ``pytest.raises``, so pytest must be installed.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from typing import Callable, Sequence

import pytest
import torch

import methods

__all__ = ["CHECKS", "ConformanceError", "run_conformance"]

DIM, K = 4, 24


def size_for(name: str, dim: int = DIM) -> int:
    """The suite's K for ``name`` at ``dim``: K, or 2^dim where the method needs K = 2^d."""
    return 2**dim if methods.get(name).codebook_size_rule == "binary" else K


def make(name: str, seed: int = 0, dim: int = DIM, codebook_size: int | None = None, **options) -> methods.Quantizer:
    size = size_for(name, dim) if codebook_size is None else codebook_size
    return methods.build(name, dim=dim, codebook_size=size, generator=torch.Generator().manual_seed(seed), **options)


def features(*shape: int, seed: int = 1, shift: float = 0.5) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) + shift


def train_step(q: methods.Quantizer, z: torch.Tensor, lr: float = 0.1) -> methods.QuantizerOutput:
    """One training step: forward in train mode, backward, SGD on the trainable parameters."""
    q.train()
    params = [p for p in q.parameters() if p.requires_grad]
    out = q(z)
    if params:
        optimizer = torch.optim.SGD(params, lr=lr)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    return out


def assert_nearest(codebook: torch.Tensor, z: torch.Tensor, indices: torch.Tensor) -> None:
    """indices are the brute-force (float64) nearest codes; where they differ, the distances tie
    to float32 rounding (the search runs in float32, the reference in float64)."""
    flat = z.detach().reshape(-1, codebook.shape[1]).double()
    distances = torch.cdist(flat, codebook.detach().double()).pow(2)
    reference = distances.argmin(dim=1)
    chosen = distances.gather(1, indices.reshape(-1, 1)).squeeze(1)
    best = distances.gather(1, reference[:, None]).squeeze(1)
    differ = indices.reshape(-1) != reference
    assert torch.allclose(chosen[differ], best[differ], rtol=1e-5, atol=1e-5)
    assert differ.float().mean() < 0.01


def assert_nearest_per_level(q: methods.Quantizer, z: torch.Tensor, indices: torch.Tensor) -> None:
    """Multi-codebook indices (N, L) are the brute-force nearest codes of each level: of the
    residual left by levels < l (residual), or of the l-th of L equal parts of z (grouped)."""
    codebook = q.codebook.detach()
    flat = q.search_space(z).detach().reshape(-1, q.dim)
    indices = q.level_indices(indices)
    assert codebook.shape[0] == q.num_levels == indices.shape[1]
    if q.code_structure == "residual":
        residual = flat
        for level in range(q.num_levels):
            assert_nearest(codebook[level], residual, indices[:, level])
            residual = residual - codebook[level][indices[:, level]]
    else:
        assert q.code_structure == "grouped"
        parts = flat.reshape(flat.shape[0], q.num_levels, -1)
        for level in range(q.num_levels):
            assert_nearest(codebook[level], parts[:, level], indices[:, level])


# --- the checks -----------------------------------------------------------------------------------

def check_output_shapes(name: str) -> None:
    q = make(name)
    for shape in [(32, DIM), (2, 5, 3, DIM), (DIM,)]:
        z = features(*shape)
        out = q(z)
        assert isinstance(out, methods.QuantizerOutput)
        assert out.quantized.shape == z.shape and out.quantized.dtype == z.dtype
        assert out.indices.shape == q.indices_shape(z.shape[:-1]) and out.indices.dtype == torch.long
        per_level = q.level_indices(out.indices)
        assert (per_level >= 0).all() and (per_level < torch.tensor(q.level_codebook_sizes)).all()
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert all(v.ndim == 0 and torch.isfinite(v) for v in out.losses.values())
        assert bool(out.losses) == methods.get(name).has_loss_terms
    if q.code_structure == "single":
        assert q.level_codebook_sizes == (q.codebook_size,) and q.codebook.shape == (q.codebook_size, DIM)
    else:
        level_dim = DIM if q.code_structure == "residual" else DIM // q.num_levels
        assert q.codebook.shape == (q.num_levels, q.codebook_size, level_dim)
        assert q.level_codebook_sizes == (q.codebook_size,) * q.num_levels
    assert q.bits_per_token == pytest.approx(sum(math.log2(k) for k in q.level_codebook_sizes))


def check_indices_are_nearest_codes(name: str) -> None:
    q = make(name).eval()  # in training mode an EMA codebook moves after the search
    z = features(3, 7, 5, DIM)
    out = q(z)
    if q.code_structure == "single":
        assert_nearest(q.codebook, q.search_space(z), out.indices)
        assert torch.equal(out.quantized.detach(), q.codebook.detach()[out.indices])
    else:
        assert_nearest_per_level(q, z, out.indices)
    assert torch.equal(q.search(z), out.indices)
    assert torch.equal(q.indices_to_codes(out.indices).detach(), out.quantized.detach())


def check_straight_through_gradient(name: str) -> None:
    q = make(name)
    z = features(16, DIM).requires_grad_(True)
    out = q(z)
    if methods.get(name).straight_through:
        # dq/dz = d search_space(z)/dz: the identity unless the method searches transformed features
        weights = features(16, DIM, seed=5)
        (grad,) = torch.autograd.grad((out.quantized * weights).sum(), z)
        (expected,) = torch.autograd.grad((q.search_space(z) * weights).sum(), z)
        assert torch.allclose(grad, q.gradient_gain_value * expected)
        return
    if methods.get(name).relaxed_gradient:
        # the value is the hard code, the gradient that of the method's soft relaxation
        weights = features(16, DIM, seed=5)
        (grad,) = torch.autograd.grad((out.quantized * weights).sum(), z)
        (expected,) = torch.autograd.grad((q.relaxation(z) * weights).sum(), z)
        assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-6)
        assert grad.abs().sum() > 0
        return
    # q = sg(M_z) z with M_z z = q: per-feature Jacobians (rows are independent) map z to its code
    jacobian = torch.stack(
        [torch.autograd.grad(out.quantized[:, i].sum(), z, retain_graph=True)[0] for i in range(DIM)], dim=1
    )
    assert torch.isfinite(jacobian).all()
    mapped = torch.einsum("nij,nj->ni", jacobian, z.detach())
    assert torch.allclose(mapped, out.quantized.detach(), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(jacobian, torch.eye(DIM).expand_as(jacobian))


def check_codebook_moves(name: str) -> None:
    spec = methods.get(name)
    q = make(name)
    before = q.codebook.detach().clone()
    z = features(64, DIM)
    q.train()
    out = q(z)
    trainable = [p for p in q.parameters() if p.requires_grad]
    if not spec.learnable_codebook:  # a fixed implicit codebook: nothing to train, nothing moves
        assert not trainable and torch.equal(q.codebook.detach(), before)
        return
    if spec.trainable_by_gradient:
        assert trainable, "a gradient-trained codebook needs parameters"
        out.loss.backward()
        for parameter in trainable:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
        torch.optim.SGD(trainable, lr=0.1).step()
    assert not torch.allclose(q.codebook.detach(), before)


def check_eval_mode_keeps_state(name: str) -> None:
    q = make(name).eval()
    state = copy.deepcopy(q.state_dict())
    z = features(64, DIM)
    first = q(z)
    second = q(z)
    assert torch.equal(first.indices, second.indices) and torch.equal(first.loss, second.loss)
    for key, value in q.state_dict().items():
        assert torch.equal(value, state[key]), key


def check_state_dict_round_trip(name: str) -> None:
    z1, z2 = features(64, DIM, seed=2), features(64, DIM, seed=3)
    original = make(name, seed=0)
    train_step(original, z1)
    restored = make(name, seed=99)
    restored.load_state_dict(original.state_dict())
    out_a, out_b = train_step(original, z2), train_step(restored, z2)
    assert torch.equal(out_a.indices, out_b.indices)
    assert torch.allclose(out_a.loss, out_b.loss)
    assert torch.allclose(original.codebook, restored.codebook)


def check_same_seed_same_result(name: str) -> None:
    runs = []
    for _ in range(2):
        q = make(name, seed=7)
        for step in range(3):
            out = train_step(q, features(64, DIM, seed=10 + step))
        runs.append((q.codebook.detach().clone(), out.loss.detach(), out.indices))
    assert torch.equal(runs[0][0], runs[1][0])
    assert torch.equal(runs[0][1], runs[1][1]) and torch.equal(runs[0][2], runs[1][2])
    if methods.get(name).learnable_codebook:  # the seed draws the initial codebook
        assert not torch.equal(make(name, seed=7).codebook, make(name, seed=8).codebook)


def check_degenerate_sizes(name: str) -> None:
    """K = 1, K < d (singular codebook covariance) and a constant feature dimension stay finite."""
    if not methods.get(name).degenerate_sizes:  # the method refuses the sizes it cannot handle
        with pytest.raises(ValueError, match="codebook_size|levels"):
            make(name, dim=6, codebook_size=1)
        return
    binary = methods.get(name).codebook_size_rule == "binary"
    for dim, codebook_size in [(1, 2)] if binary else [(6, 1), (6, 2)]:
        q = make(name, dim=dim, codebook_size=codebook_size)
        z = features(40, dim)
        z[:, 0] = 3.0
        out = train_step(q, z)
        assert torch.isfinite(out.loss) and torch.isfinite(q.codebook).all()
        assert (out.indices < codebook_size).all() and (out.indices >= 0).all()


def check_bad_input(name: str) -> None:
    q = make(name)
    with pytest.raises(ValueError, match="dim"):
        q(features(8, DIM + 1))
    for bad in (float("nan"), float("inf")):
        z = features(8, DIM)
        z[3, 1] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            q(z)
    with pytest.raises(ValueError, match="floating"):
        q(torch.ones(8, DIM, dtype=torch.long))


def check_bad_options(name: str) -> None:
    spec = methods.get(name)
    with pytest.raises(ValueError, match="codebook_size"):
        methods.build(name, dim=DIM, codebook_size=0)
    with pytest.raises(ValueError, match="dim"):
        methods.build(name, dim=0, codebook_size=size_for(name))
    with pytest.raises(ValueError, match="no_such_option"):
        methods.build(name, dim=DIM, codebook_size=size_for(name), no_such_option=1)
    # Every real-valued option (weights, scales, decay, eps) is non-negative by definition.
    for field in dataclasses.fields(spec.options):
        if type(spec.defaults[field.name]) is float:
            with pytest.raises(ValueError, match=field.name):
                methods.build(name, dim=DIM, codebook_size=size_for(name), **{field.name: -1.0})


def check_empty_batch(name: str) -> None:
    q = make(name)
    for shape in [(0, DIM), (3, 0, DIM)]:
        with pytest.raises(ValueError, match="z: empty batch"):
            q(torch.empty(*shape))


def check_batch_too_small_for_statistics(name: str) -> None:
    q = make(name)
    needed = q.min_batch_size()
    if needed > 1:
        with pytest.raises(ValueError, match="too small"):
            q(features(needed - 1, DIM))
    assert torch.isfinite(q(features(needed, DIM)).loss)


def check_generator_must_be_a_torch_generator(name: str) -> None:
    for bad in (0, "0", torch.tensor(0)):
        with pytest.raises(TypeError, match="generator"):
            methods.build(name, dim=DIM, codebook_size=size_for(name), generator=bad)


def check_quantized_has_the_input_dtype(name: str) -> None:
    """One dtype rule: ``quantized`` has the dtype of z (half precisions included)."""
    q = make(name)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        z = features(32, DIM).to(dtype).requires_grad_(True)
        assert train_step(q, z.detach()).quantized.dtype == dtype
        q.eval()  # an EMA codebook moves after the search in training mode
        out = q(z)
        assert out.quantized.dtype == dtype and out.quantized.shape == z.shape
        assert torch.isfinite(out.loss)
        # the code's value, to the precision of the coarser of the input and the codebook
        expected = q.indices_to_codes(out.indices).detach().double()
        precision = max(torch.finfo(dtype).eps, torch.finfo(q.codebook.dtype).eps)
        assert torch.allclose(out.quantized.detach().double(), expected, rtol=precision, atol=precision)
        (grad,) = torch.autograd.grad(q.train()(z).quantized.float().sum(), z)  # a peer may cut it in eval
        assert grad.dtype == dtype and torch.isfinite(grad).all()


def check_tunables_name_options(name: str) -> None:
    spec = methods.get(name)
    for option, tunable in spec.tunables.items():
        assert option in spec.option_names()
        assert isinstance(tunable, methods.Tunable)
        if not tunable.choices:
            default = spec.defaults[option]
            assert tunable.low <= default <= tunable.high, (option, default)


CHECKS = [
    check_output_shapes,
    check_indices_are_nearest_codes,
    check_straight_through_gradient,
    check_codebook_moves,
    check_eval_mode_keeps_state,
    check_state_dict_round_trip,
    check_same_seed_same_result,
    check_degenerate_sizes,
    check_bad_input,
    check_bad_options,
    check_empty_batch,
    check_batch_too_small_for_statistics,
    check_generator_must_be_a_torch_generator,
    check_quantized_has_the_input_dtype,
    check_tunables_name_options,
]


class ConformanceError(AssertionError):
    """One or more conformance checks failed; the message lists each with its error."""


def run_conformance(name_or_class: str | type[methods.Quantizer],
                    checks: Sequence[Callable[[str], None]] = CHECKS) -> None:
    """Run the conformance ``checks`` (all by default) on one quantizer.

    ``name_or_class`` is a registered method name, or a Quantizer subclass, which is registered
    for the run under a throwaway name and unregistered afterwards. Every check runs; if any
    fail, ConformanceError names each failed check with its error (the first one chained).
    """
    name, temporary = name_or_class, False
    if not isinstance(name_or_class, str):
        if not (isinstance(name_or_class, type) and issubclass(name_or_class, methods.Quantizer)):
            raise TypeError(f"name_or_class: a method name or a Quantizer subclass, got {name_or_class!r}")
        name = "conformance_" + re.sub(r"\W", "_", name_or_class.__qualname__).lower()
        methods.register(name)(name_or_class)
        temporary = True
    try:
        methods.get(name)
        failures = []
        for check in checks:
            try:
                check(name)
            except (Exception, pytest.fail.Exception) as err:  # collected, re-raised below
                failures.append((check.__name__, err))
    finally:
        if temporary:
            methods.unregister(name)
    if failures:
        lines = "\n".join(f"  {check}: {type(err).__name__}: {err}".rstrip() for check, err in failures)
        raise ConformanceError(
            f"{name_or_class!r}: {len(failures)} of {len(checks)} conformance checks failed:\n{lines}"
        ) from failures[0][1]
