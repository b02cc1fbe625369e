"""Correctness of the shared numerics and of each method against independent references
(brute force, POT, scipy, hand-computed examples)."""
from __future__ import annotations

import numpy as np
import ot
import pytest
import scipy.linalg
import torch

import methods
from methods._core import (
    gaussian_w2_squared,
    mean_and_covariance,
    nearest_code,
    nearest_code_faiss,
    nearest_code_torch,
    symmetric_sqrt,
    wasserstein_1d_squared,
)
from methods._matching import FeatureQueue
from methods.exact_ot import exact_ot_squared
from methods.sliced_wasserstein import sliced_wasserstein_squared
from methods.wasserstein import gaussian_wasserstein_loss


def randn(*shape: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def random_spd(d: int, seed: int) -> torch.Tensor:
    a = randn(d, d, seed=seed, dtype=torch.float64)
    return a @ a.t() / d + 0.1 * torch.eye(d, dtype=torch.float64)


# --- nearest-code search --------------------------------------------------------------------------

def brute_force(features: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return torch.cdist(features.double(), codebook.double()).argmin(dim=1)


@pytest.mark.parametrize("n,k,chunk", [(1000, 37, 64), (999, 1, 100), (5, 300, 2), (257, 16, 1000)])
def test_chunked_search_equals_brute_force(n, k, chunk):
    z, c = randn(n, 6, seed=1, dtype=torch.float64), randn(k, 6, seed=2, dtype=torch.float64)
    assert torch.equal(nearest_code_torch(z, c, chunk_size=chunk), brute_force(z, c))


@pytest.mark.parametrize("search", [nearest_code, nearest_code_faiss, nearest_code_torch])
def test_ties_go_to_the_lowest_index(search):
    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # each feature is equidistant from duplicates (exact ties) and, for the last, from 4 codes
    z = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 0.0], [0.5, 0.5]] * 30)
    expected = torch.tensor([0, 1, 0, 0] * 30)
    assert torch.equal(search(z, codebook), expected)


def test_search_k1_and_empty():
    z = randn(50, 3)
    assert torch.equal(nearest_code(z, randn(1, 3)), torch.zeros(50, dtype=torch.long))
    assert nearest_code(z[:0], randn(4, 3)).shape == (0,)


def test_search_rejects_mismatched_dim():
    with pytest.raises(ValueError, match="dim"):
        nearest_code(randn(5, 3), randn(4, 2))
    with pytest.raises(ValueError, match="features"):
        nearest_code(randn(5), randn(4, 2))


# --- Gaussian W2 ----------------------------------------------------------------------------------

def test_gaussian_w2_matches_pot_bures():
    for seed in range(3):
        m1, m2 = randn(5, seed=seed, dtype=torch.float64), randn(5, seed=seed + 10, dtype=torch.float64)
        c1, c2 = random_spd(5, seed), random_spd(5, seed + 20)
        expected = ot.gaussian.bures_wasserstein_distance(m1.numpy(), m2.numpy(), c1.numpy(), c2.numpy()) ** 2
        assert float(gaussian_w2_squared(m1, c1, m2, c2)) == pytest.approx(float(expected), rel=1e-8, abs=1e-10)


def test_gaussian_w2_matches_scipy_sqrtm_formula():
    m1, m2 = randn(4, seed=1, dtype=torch.float64), randn(4, seed=2, dtype=torch.float64)
    c1, c2 = random_spd(4, 3).numpy(), random_spd(4, 4).numpy()
    root = scipy.linalg.sqrtm(c1)
    cross = np.real(scipy.linalg.sqrtm(root @ c2 @ root))
    expected = float(((m1 - m2) ** 2).sum()) + np.trace(c1 + c2 - 2 * cross)
    got = gaussian_w2_squared(m1, torch.from_numpy(c1), m2, torch.from_numpy(c2))
    assert float(got) == pytest.approx(expected, rel=1e-8)


def test_gaussian_w2_zero_for_identical_and_diagonal_closed_form():
    m, c = randn(6, seed=3, dtype=torch.float64), random_spd(6, 5)
    assert float(gaussian_w2_squared(m, c, m, c)) == pytest.approx(0.0, abs=1e-9)
    a, b = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64), torch.tensor([9.0, 1.0, 0.0], dtype=torch.float64)
    dmu = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    expected = float(dmu.pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    got = gaussian_w2_squared(dmu, torch.diag(a), torch.zeros(3, dtype=torch.float64), torch.diag(b))
    # b has a zero variance: its eigenvalue is clamped at 1e-12 (finite gradient), a 2e-6 bias
    assert float(got) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("target", ["identity", "singular"])
def test_gaussian_w2_gradient_is_finite_for_isotropic_and_singular_covariances(target):
    """eigh's eigenvector gradient is NaN for repeated eigenvalues; ours must not need repairs."""
    d = 4
    cov_b = torch.eye(d, dtype=torch.float64)
    if target == "singular":
        cov_b[2:, 2:] = 0
    cov_b.requires_grad_(True)
    mean_b = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    w2 = gaussian_w2_squared(torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64), mean_b, cov_b)
    w2.backward()
    assert torch.isfinite(cov_b.grad).all() and torch.isfinite(mean_b.grad).all()
    if target == "identity":  # d/dS_b of tr(S_b) - 2 sum sqrt(eig(S_b)) at I is I - I = 0
        assert float(w2.detach()) == pytest.approx(0.0, abs=1e-9)
        assert torch.allclose(cov_b.grad, torch.zeros(d, d, dtype=torch.float64), atol=1e-6)


def test_symmetric_sqrt_matches_scipy():
    c = random_spd(5, 9)
    assert np.allclose(symmetric_sqrt(c).numpy(), np.real(scipy.linalg.sqrtm(c.numpy())), atol=1e-10)


# --- Wasserstein VQ ------------------------------------------------------------------------------

def test_feature_queue_statistics_equal_those_of_the_last_items():
    queue = FeatureQueue(size=50, dim=3)
    pushed = []
    for step, n in enumerate([7, 20, 30, 13, 64, 1, 49]):
        batch = randn(n, 3, seed=step) + step
        queue.push(batch)
        pushed.append(batch)
        recent = torch.cat(pushed)[-50:].double()
        mean, cov = queue.statistics()
        assert torch.allclose(mean, recent.mean(0), atol=1e-9)
        assert torch.allclose(cov, torch.from_numpy(np.cov(recent.numpy().T, bias=True)), atol=1e-8)
        # the ring holds exactly the last items (filled from slot 0, so the occupied slots lead)
        held = queue.items[: int(queue.count)].double().numpy()
        assert np.array_equal(held[np.lexsort(held.T)], recent.numpy()[np.lexsort(recent.numpy().T)])


def test_wasserstein_loss_equals_independent_computation():
    q = methods.build("wasserstein", dim=3, codebook_size=32, queue_size=1000,
                      generator=torch.Generator().manual_seed(0))
    z = randn(200, 3, seed=4) * torch.tensor([1.0, 2.0, 0.5]) + 3.0
    out = q.train()(z)
    zs, cs = z.double().numpy(), q.codebook.detach().double().numpy()
    scale = np.sqrt(np.var(zs, axis=0)).max()
    w = ot.gaussian.bures_wasserstein_distance(
        zs.mean(0) / scale, cs.mean(0) / scale, np.cov(zs.T, bias=True) / scale**2, np.cov(cs.T, bias=True) / scale**2
    )
    assert float(out.losses["wasserstein"].detach()) == pytest.approx(float(w), rel=1e-4)
    expected_loss = 0.1 * out.losses["commitment"] + 1.0 * out.losses["codebook"] + 0.5 * out.losses["wasserstein"]
    assert float(out.loss.detach()) == pytest.approx(float(expected_loss.detach()), rel=1e-6)


def test_wasserstein_term_moves_only_the_codebook():
    q = methods.build("wasserstein", dim=2, codebook_size=8, generator=torch.Generator().manual_seed(0))
    z = randn(64, 2).requires_grad_(True)
    out = q.train()(z)
    (grad_z,) = torch.autograd.grad(out.losses["wasserstein"], z, allow_unused=True)
    assert grad_z is None
    (grad_c,) = torch.autograd.grad(out.losses["wasserstein"], q.embedding)
    assert grad_c.abs().sum() > 0


def test_wasserstein_gradient_descent_matches_the_gaussian():
    """Pure W descent (gamma only) drives the codebook's mean and covariance to the features'."""
    q = methods.build("wasserstein", dim=2, codebook_size=256, beta=0.0, codebook_weight=0.0, gamma=1.0,
                      squared=True, queue_size=4096, generator=torch.Generator().manual_seed(0))
    # each code gets 1/K of the gradient of the statistics: scale the step with K
    optimizer = torch.optim.SGD(q.parameters(), lr=0.5 * 256)
    shift = torch.tensor([4.0, -2.0])
    for step in range(100):
        out = q.train()(randn(512, 2, seed=step) * torch.tensor([2.0, 0.5]) + shift)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    mean, cov = mean_and_covariance(q.codebook.detach().double())
    assert torch.allclose(mean, shift.double(), atol=0.05)
    assert torch.allclose(cov, torch.diag(torch.tensor([4.0, 0.25], dtype=torch.float64)), atol=0.1)


# --- sliced and exact OT --------------------------------------------------------------------------

@pytest.mark.parametrize("n,m", [(40, 40), (37, 11), (8, 100)])
def test_1d_wasserstein_is_exact(n, m):
    a, b = randn(n, 1, seed=1, dtype=torch.float64), randn(m, 1, seed=2, dtype=torch.float64) * 2 + 1
    expected = ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), ot.dist(a.numpy(), b.numpy()))
    assert float(wasserstein_1d_squared(a, b)[0]) == pytest.approx(float(expected), rel=1e-9)


def test_sliced_wasserstein_estimate_in_one_dimension_is_the_exact_w2():
    z, c = randn(300, 1, seed=3), randn(50, 1, seed=4) + 1.5
    q = methods.build("sliced_wasserstein", dim=1, codebook_size=50, projections=4)
    with torch.no_grad():
        q.embedding.copy_(c)
    out = q.eval()(z)
    expected = ot.wasserstein_1d(z[:, 0].double().numpy(), c[:, 0].double().numpy(), p=2)
    assert float(out.losses["sliced_wasserstein"].detach()) == pytest.approx(float(expected), rel=1e-5)


def test_sliced_wasserstein_matches_pot_with_the_same_projections():
    z, c = randn(120, 5, seed=5, dtype=torch.float64), randn(30, 5, seed=6, dtype=torch.float64)
    directions = randn(5, 16, seed=7, dtype=torch.float64)
    directions = directions / directions.norm(dim=0)
    pot = ot.sliced_wasserstein_distance(z.numpy(), c.numpy(), projections=directions.numpy(), p=2)
    assert float(sliced_wasserstein_squared(z, c, directions)) == pytest.approx(float(pot) ** 2, rel=1e-8)


def test_exact_ot_loss_equals_pot_emd2():
    z = randn(60, 3, seed=8)
    q = methods.build("exact_ot", dim=3, codebook_size=20, max_samples=100, generator=torch.Generator().manual_seed(1))
    out = q.eval()(z)
    zs, cs = z.double().numpy(), q.codebook.detach().double().numpy()
    costs = ((zs[:, None, :] - cs[None, :, :]) ** 2).sum(-1)
    expected = ot.emd2(np.full(60, 1 / 60), np.full(20, 1 / 20), costs)
    assert float(out.losses["exact_ot"].detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(exact_ot_squared(z.double(), q.codebook.detach().double())) == pytest.approx(float(expected), rel=1e-10)


def test_exact_ot_samples_at_most_max_samples():
    z = randn(500, 2, seed=9)
    q = methods.build("exact_ot", dim=2, codebook_size=400, max_samples=64)
    out = q.train()(z)
    assert torch.isfinite(out.losses["exact_ot"])
    (grad,) = torch.autograd.grad(out.losses["exact_ot"], q.embedding)
    touched = int((grad.abs().sum(dim=1) > 0).sum())
    assert 0 < touched <= 64  # the OT term sees a sample of 64 codes, not all 400


# --- EMA and SimVQ --------------------------------------------------------------------------------

def test_ema_update_matches_hand_computation():
    q = methods.build("ema", dim=2, codebook_size=3, decay=0.5, eps=0.1)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
        q.embed_sum.copy_(q.embedding)
    z = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [9.0, 1.0]])
    out = q.train()(z)
    assert out.indices.tolist() == [0, 0, 1]
    # N = 0.5 * [1, 1, 1] + 0.5 * [2, 1, 0] = [1.5, 1.0, 0.5]; total 3
    # m = 0.5 * e + 0.5 * [[0, 2], [9, 1], [0, 0]] = [[0, 1], [9.5, 0.5], [0, 5]]
    # Ntilde = (N + 0.1) / (3 + 0.3) * 3
    n = torch.tensor([1.5, 1.0, 0.5])
    smoothed = (n + 0.1) / 3.3 * 3
    m = torch.tensor([[0.0, 1.0], [9.5, 0.5], [0.0, 5.0]])
    assert torch.allclose(q.cluster_size, n)
    assert torch.allclose(q.embed_sum, m)
    # codes 0 and 1 got features: e = m / Ntilde; code 2 got none and keeps its vector
    assert torch.allclose(q.codebook[:2], (m / smoothed[:, None])[:2])
    assert torch.equal(q.codebook[2], torch.tensor([0.0, 10.0]))
    # loss: beta * mean((z - e)^2) with the pre-update codes
    assert float(out.losses["commitment"].detach()) == pytest.approx((2 + 2 + 2) / 6)


def test_ema_codebook_is_not_a_parameter():
    q = methods.build("ema", dim=3, codebook_size=5)
    assert list(q.parameters()) == [] and not methods.get("ema").trainable_by_gradient


def test_simvq_basis_init_draws_the_basis_like_a_plain_codebook():
    """basis="init": the authors' linear baseline, a frozen U[-1, 1] (or N(0, s^2)) codebook."""
    uniform = methods.build("simvq", dim=8, codebook_size=4096, basis="init", init="uniform",
                            generator=torch.Generator().manual_seed(0))
    assert float(uniform.basis.abs().max()) <= 1.0 and float(uniform.basis.abs().max()) > 0.99
    normal = methods.build("simvq", dim=8, codebook_size=4096, basis="init", init_scale=2.0,
                           generator=torch.Generator().manual_seed(0))
    assert float(normal.basis.std()) == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError, match="basis: must be one of"):
        methods.build("simvq", dim=8, codebook_size=16, basis="identity")


def test_simvq_codes_are_the_projected_frozen_basis():
    q = methods.build("simvq", dim=4, codebook_size=64, generator=torch.Generator().manual_seed(0))
    basis = q.basis.clone()
    assert "basis" not in dict(q.named_parameters())
    assert torch.allclose(q.codebook, basis @ q.projection.weight.t() + q.projection.bias)
    assert float(basis.std()) == pytest.approx(4 ** -0.5, rel=0.2)
    optimizer = torch.optim.SGD(q.parameters(), lr=0.5)
    before = q.codebook.detach().clone()
    out = q.train()(randn(32, 4) + 2)
    out.loss.backward()
    optimizer.step()
    assert torch.equal(q.basis, basis)
    # the whole codebook moved, not only the selected codes
    moved = (q.codebook.detach() - before).norm(dim=1) > 0
    assert moved.all() and out.indices.unique().numel() < 64


def test_vanilla_losses_are_the_vq_vae_terms():
    q = methods.build("vanilla", dim=3, codebook_size=10, beta=0.25, codebook_weight=1.0)
    z = randn(40, 3)
    out = q(z)
    mse = torch.nn.functional.mse_loss(z, q.codebook[out.indices].detach())
    assert torch.allclose(out.losses["commitment"], mse) and torch.allclose(out.losses["codebook"], mse)
    assert torch.allclose(out.loss, 1.25 * mse)
