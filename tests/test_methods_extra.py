"""Reference tests of the issue-8 quantizers against independent computations (numpy, POT, faiss)."""
from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

import methods


def randn(*shape: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def scalar(value: torch.Tensor) -> float:
    return float(value.detach())


def jacobian_rows(quantized: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-row Jacobians dq_n/dz_n (rows are independent), (N, d, d)."""
    return torch.stack(
        [torch.autograd.grad(quantized[:, i].sum(), z, retain_graph=True)[0] for i in range(z.shape[1])], dim=1
    )


# --- fsq ------------------------------------------------------------------------------------------

def fsq_reference(z: np.ndarray, levels: list[int], eps: float = 1e-3):
    """The paper's formulas (arXiv:2309.15505, appendix code), written out in float64 numpy."""
    levels_arr = np.array(levels, dtype=np.float64)
    half_l = (levels_arr - 1) * (1 + eps) / 2
    offset = np.where(levels_arr % 2 == 0, 0.5, 0.0)
    shift = np.where(levels_arr > 2, np.arctanh(offset / half_l), 0.0)  # vqbench: no shift for L = 2
    bounded = np.tanh(z + shift) * half_l - offset
    rounded = np.round(bounded)
    half_width = np.floor(levels_arr / 2)
    codes = rounded / half_width
    basis = np.concatenate([[1], np.cumprod(levels_arr[:-1])])
    indices = ((rounded + half_width) * basis).sum(axis=1).astype(np.int64)
    gradient = (1 - np.tanh(z + shift) ** 2) * half_l / half_width
    return codes, indices, gradient


@pytest.mark.parametrize("levels", [(3, 4, 5, 2), (8, 5, 5, 5), (7, 6)])
def test_fsq_matches_the_papers_formulas(levels):
    k = int(np.prod(levels))
    q = methods.build("fsq", dim=len(levels), codebook_size=k, levels=levels)
    z = (randn(500, len(levels), seed=1) * 2).requires_grad_(True)
    out = q(z)
    codes, indices, gradient = fsq_reference(z.detach().double().numpy(), list(levels))
    assert np.allclose(out.quantized.detach().numpy(), codes, atol=1e-6)
    assert np.array_equal(out.indices.numpy(), indices)
    (grad,) = torch.autograd.grad(out.quantized.sum(), z)
    assert np.allclose(grad.numpy(), gradient, rtol=1e-4, atol=1e-6)
    # the grid holds K distinct codes, indexed consistently; each dim takes exactly L_i values
    assert q.codebook.unique(dim=0).shape[0] == k
    assert torch.equal(q.codebook[out.indices], out.quantized.detach())
    for i, level in enumerate(levels):
        assert q.codebook[:, i].unique().numel() == level
    assert list(q.parameters()) == [] and q.state_dict() == {}


def test_fsq_sizes_must_match_levels_or_are_derived():
    with pytest.raises(ValueError, match="levels.*codebook_size"):
        methods.build("fsq", dim=3, codebook_size=100, levels=(8, 5, 5))
    with pytest.raises(ValueError, match="levels"):
        methods.build("fsq", dim=4, codebook_size=200, levels=(8, 5, 5))
    with pytest.raises(ValueError, match="levels"):
        methods.build("fsq", dim=2, codebook_size=6, levels=(3, 0))
    assert methods.build("fsq", dim=4, codebook_size=24).levels == (6, 4, 1, 1)
    assert methods.build("fsq", dim=8, codebook_size=1024).levels == (4, 4, 4, 4, 4, 1, 1, 1)
    assert methods.build("fsq", dim=3, codebook_size=1000).levels == (10, 10, 10)
    assert methods.build("fsq", dim=4, codebook_size=1000).levels == (8, 5, 5, 5)  # the paper's table
    assert methods.build("fsq", dim=6, codebook_size=64000).levels == (8, 8, 8, 5, 5, 5)
    assert methods.build("fsq", dim=3, codebook_size=2).levels == (2, 1, 1)
    assert methods.build("fsq", dim=2, codebook_size=1).levels == (1, 1)
    spec = methods.get("fsq")
    assert not spec.learnable_codebook and not spec.trainable_by_gradient and spec.straight_through


# --- rotation trick -------------------------------------------------------------------------------

def rotation_matrix(z: np.ndarray, e: np.ndarray) -> np.ndarray:
    """The paper's lambda R (section 4.2), built explicitly as a d x d matrix."""
    z_hat, e_hat = z / np.linalg.norm(z), e / np.linalg.norm(e)
    r = (z_hat + e_hat) / np.linalg.norm(z_hat + e_hat)
    rotation = np.eye(len(z)) - 2 * np.outer(r, r) + 2 * np.outer(e_hat, z_hat)
    assert np.allclose(rotation @ rotation.T, np.eye(len(z)), atol=1e-12)
    assert np.allclose(rotation @ z_hat, e_hat, atol=1e-12)
    return np.linalg.norm(e) / np.linalg.norm(z) * rotation


def test_rotation_trick_value_is_the_code_and_gradient_is_lambda_r():
    q = methods.build("rotation_trick", dim=3, codebook_size=5, generator=torch.Generator().manual_seed(0)).double()
    z = randn(6, 3, seed=2, dtype=torch.float64).requires_grad_(True)
    out = q(z)
    codes = q.codebook.detach().double()[out.indices]
    assert torch.equal(out.quantized.detach(), codes)
    jacobian = jacobian_rows(out.quantized, z)
    for n in range(6):
        expected = rotation_matrix(z[n].detach().numpy(), codes[n].numpy())
        assert np.allclose(jacobian[n].numpy(), expected, atol=1e-10)
    assert not torch.allclose(jacobian, torch.eye(3, dtype=torch.float64).expand_as(jacobian))
    # the VQ losses still train the codebook; the rotation itself sends it no gradient
    out.loss.backward()
    assert q.embedding.grad is not None and q.embedding.grad.abs().sum() > 0


def test_rotation_trick_degenerate_rows():
    q = methods.build("rotation_trick", dim=2, codebook_size=2)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    # z = 0 (nearest code [0, 0] too) and e = 0: straight-through; z antipodal to its code: reflection
    z = torch.tensor([[0.0, 0.0], [0.1, 0.3], [-0.2, 0.0]], dtype=torch.float64, requires_grad=True)
    out = q(z)
    jacobian = jacobian_rows(out.quantized, z)
    assert torch.isfinite(jacobian).all()
    assert out.indices.tolist() == [1, 1, 1]
    assert torch.equal(jacobian[0], torch.eye(2, dtype=torch.float64))
    assert torch.equal(jacobian[1], torch.eye(2, dtype=torch.float64))
    assert torch.equal(jacobian[2], torch.eye(2, dtype=torch.float64))
    q2 = methods.build("rotation_trick", dim=2, codebook_size=1)
    with torch.no_grad():
        q2.embedding.copy_(torch.tensor([[2.0, 0.0]]))
    z2 = torch.tensor([[-0.5, 0.0]], dtype=torch.float64, requires_grad=True)
    jacobian = jacobian_rows(q2(z2).quantized, z2)[0]
    # lambda = 4, R = I - 2 e^ e^^T = diag(-1, 1): maps z to the code and stays a scaled isometry
    assert torch.allclose(jacobian, torch.tensor([[-4.0, 0.0], [0.0, 4.0]], dtype=torch.float64))


# --- mmd ------------------------------------------------------------------------------------------

def mmd_reference(x: np.ndarray, y: np.ndarray, bandwidth: float = 0.0) -> float:
    """Biased MMD^2, Gaussian kernel; median heuristic over the pooled sample's distinct pairs."""
    pooled = np.concatenate([x, y])
    distances = ((pooled[:, None, :] - pooled[None, :, :]) ** 2).sum(-1)
    n = len(x)
    if bandwidth > 0:
        width = bandwidth**2
    else:
        distinct = np.sort(distances[np.triu_indices(len(pooled), k=1)])
        width = distinct[(len(distinct) - 1) // 2]
    kernel = np.exp(-distances / (2 * width))
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


@pytest.mark.parametrize("bandwidth", [0.0, 0.7])
def test_mmd_loss_equals_numpy(bandwidth):
    q = methods.build("mmd", dim=3, codebook_size=20, bandwidth=bandwidth, generator=torch.Generator().manual_seed(0))
    z = randn(50, 3, seed=3) * torch.tensor([1.0, 2.0, 0.5]) + 1.0
    with torch.no_grad():
        out = q.eval()(z)
    expected = mmd_reference(z.double().numpy(), q.codebook.detach().double().numpy(), bandwidth)
    assert scalar(out.losses["mmd"]) == pytest.approx(expected, rel=1e-5)
    assert scalar(out.loss) == pytest.approx(
        scalar(0.1 * out.losses["commitment"] + out.losses["codebook"] + 0.5 * out.losses["mmd"]), rel=1e-6
    )


def test_mmd_is_zero_for_identical_samples_and_positive_otherwise():
    from methods.mmd import mmd_squared

    x = randn(40, 4, seed=4, dtype=torch.float64)
    assert scalar(mmd_squared(x, x.clone())) == pytest.approx(0.0, abs=1e-12)
    assert scalar(mmd_squared(x, x + 0.5)) > 1e-3
    q = methods.build("mmd", dim=4, codebook_size=40)
    with torch.no_grad():
        q.embedding.copy_(x.float())
    assert scalar(q.eval()(x.float()).losses["mmd"]) == pytest.approx(0.0, abs=1e-6)


def test_mmd_samples_at_most_max_samples_codes():
    q = methods.build("mmd", dim=2, codebook_size=400, max_samples=64, beta=0.0, codebook_weight=0.0)
    out = q.train()(randn(500, 2, seed=5))
    out.loss.backward()
    touched = int((q.embedding.grad.abs().sum(dim=1) > 0).sum())
    assert 0 < touched <= 64


# --- wasserstein_density --------------------------------------------------------------------------

def codebook_with_moments(k: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    """k points whose sample mean and population covariance are exactly ``mean`` and ``cov``."""
    x = randn(k, mean.shape[0], seed=seed, dtype=torch.float64)
    x = x - x.mean(0)
    whitened = x @ torch.linalg.inv(torch.linalg.cholesky(x.t() @ x / k)).t()
    return whitened @ torch.linalg.cholesky(cov).t() + mean


@pytest.mark.parametrize("options,scale", [
    ({"exponent": "gersho"}, 5 / 3),
    ({"exponent": "paper"}, 3 / 5),
    ({"covariance_scale": 0.8}, 0.8),
])
def test_wasserstein_density_is_zero_exactly_at_the_scaled_target(options, scale):
    q = methods.build("wasserstein_density", dim=3, codebook_size=64, squared=True, queue_size=4096,
                      generator=torch.Generator().manual_seed(0), **options)
    assert q.covariance_scale == pytest.approx(scale)
    z = randn(2000, 3, seed=6) @ torch.tensor([[1.0, 0.3, 0.0], [0.0, 2.0, 0.5], [0.0, 0.0, 0.4]]) + 3.0
    q.train()(z)  # fills the queue
    mean, cov = q.queue.statistics()
    losses = {}
    for c in (scale, 1.0, 1 / scale):
        with torch.no_grad():
            q.embedding.copy_(codebook_with_moments(64, mean, c * cov, seed=7).float())
        losses[c] = scalar(q.eval()(z).losses["wasserstein"])
    assert losses[scale] == pytest.approx(0.0, abs=1e-5)
    assert losses[1.0] > 1e-3 and losses[1 / scale] > losses[1.0]
    # the value is the plain Gaussian W2^2 to N(mu, c S) in units of the largest feature std
    with torch.no_grad():
        q.embedding.copy_(randn(64, 3, seed=8))
    std = scalar(cov.diagonal().sqrt().max())
    codes = q.codebook.detach().double().numpy()
    expected = ot.gaussian.bures_wasserstein_distance(
        mean.numpy() / std, codes.mean(0) / std, scale * cov.numpy() / std**2, np.cov(codes.T, bias=True) / std**2
    ) ** 2
    assert scalar(q.eval()(z).losses["wasserstein"]) == pytest.approx(float(expected), rel=1e-4)


def test_wasserstein_density_options_are_checked():
    with pytest.raises(ValueError, match="exponent"):
        methods.build("wasserstein_density", dim=2, codebook_size=4, exponent="zador")
    with pytest.raises(ValueError, match="covariance_scale"):
        methods.build("wasserstein_density", dim=2, codebook_size=4, covariance_scale=-1.0)
    assert methods.get("wasserstein_density").defaults["exponent"] == "gersho"


# --- kmeans_ema -----------------------------------------------------------------------------------

def quantization_error(features: torch.Tensor, codebook: torch.Tensor) -> float:
    return float(torch.cdist(features.double(), codebook.double()).min(dim=1).values.pow(2).mean())


def test_kmeans_ema_initialisation_reaches_faiss_kmeans_quality():
    import faiss

    z = randn(4000, 4, seed=9) * torch.tensor([1.0, 2.0, 0.5, 1.0]) + 2.0
    q = methods.build("kmeans_ema", dim=4, codebook_size=32, kmeans_iters=20, generator=torch.Generator().manual_seed(0))
    random_error = quantization_error(z, q.codebook)
    q.train()(z)
    assert bool(q.initialised)
    reference = faiss.Kmeans(4, 32, niter=20, seed=1)
    reference.train(z.numpy())
    faiss_error = quantization_error(z, torch.from_numpy(reference.centroids))
    ours = quantization_error(z, q.codebook)
    assert ours <= 1.03 * faiss_error and ours < 0.2 * random_error
    # a second batch does not re-initialise: only the EMA step moves the codes, a little
    before = q.codebook.clone()
    q(z)
    assert (q.codebook - before).abs().max() < 0.05


def test_kmeans_ema_resets_a_dead_code_after_dead_after_steps():
    q = methods.build("kmeans_ema", dim=2, codebook_size=8, dead_after=3, generator=torch.Generator().manual_seed(0))
    q.train()(randn(256, 2, seed=20))
    far = torch.tensor([100.0, 100.0])
    with torch.no_grad():  # force code 5 dead: far from every feature
        q.embedding[5] = far
        q.embed_sum[5] = far * q.cluster_size[5]
        q.unused_steps.zero_()
    for step in range(1, 4):
        batch = randn(256, 2, seed=20 + step)
        out = q(batch)
        assert (out.indices != 5).all()
        if step < 3:
            assert q.codebook[5].norm() > 50 and int(q.unused_steps[5]) == step
    # reset after exactly dead_after = 3 unused steps, onto a feature of the latest batch
    assert (q.codebook[5] == batch).all(dim=1).any()
    assert int(q.unused_steps[5]) == 0 and float(q.cluster_size[5]) == 1.0
    assert int((q.unused_steps > 0).sum()) == 0  # the other codes stayed in use


def test_kmeans_ema_fewer_features_than_codes_and_options():
    q = methods.build("kmeans_ema", dim=3, codebook_size=50)
    z = randn(20, 3, seed=30)
    q.train()(z)
    # every feature became a code
    assert all((q.codebook - row).norm(dim=1).min() < 0.2 for row in z)
    with pytest.raises(ValueError, match="dead_after"):
        methods.build("kmeans_ema", dim=2, codebook_size=4, dead_after=0)
    with pytest.raises(ValueError, match="kmeans_iters"):
        methods.build("kmeans_ema", dim=2, codebook_size=4, kmeans_iters=-1)
    assert not methods.get("kmeans_ema").trainable_by_gradient


# --- sinkhorn -------------------------------------------------------------------------------------

def standardised_costs(z: np.ndarray, c: np.ndarray) -> np.ndarray:
    costs = np.sqrt(((z[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    return costs / costs.std(ddof=1)


@pytest.mark.parametrize("iterations", [1, 5, 400])
def test_sinkhorn_plan_equals_pot_sinkhorn_log(iterations):
    from methods.sinkhorn import sinkhorn_plan, sinkhorn_potentials

    z, c = randn(30, 3, seed=40, dtype=torch.float64) + 1.0, randn(12, 3, seed=41, dtype=torch.float64)
    costs = standardised_costs(z.numpy(), c.numpy())
    a, b = np.full(30, 1 / 30), np.full(12, 1 / 12)
    expected = ot.sinkhorn(a, b, costs, reg=1 / 10.0, method="sinkhorn_log", numItermax=iterations,
                           stopThr=0.0, warn=False)
    plan = sinkhorn_plan(z, c, 10.0, iterations).numpy()
    assert np.allclose(plan, expected, rtol=1e-9, atol=1e-14)
    assert np.allclose(plan.sum(1), a)  # the row (feature) marginals are exact after each iteration
    if iterations == 400:
        assert np.allclose(plan.sum(0), b, rtol=1e-6)
    # memory-bounded blocks give the same potentials as one block
    f_small, g_small, _ = sinkhorn_potentials(z, c, 10.0, iterations, block_rows=7)
    f_one, g_one, _ = sinkhorn_potentials(z, c, 10.0, iterations, block_rows=1000)
    assert torch.allclose(f_small, f_one, atol=1e-12) and torch.allclose(g_small, g_one, atol=1e-12)


@pytest.mark.parametrize("iterations", [1, 5])
def test_sinkhorn_assignment_is_the_argmax_of_the_plan_at_every_block_size(iterations):
    # the assignment fuses each f update with the next g update and skips the last f: same plan
    from methods.sinkhorn import sinkhorn_assignment, sinkhorn_plan

    z, c = randn(50, 3, seed=45, dtype=torch.float64) * 0.5 + 1.0, randn(20, 3, seed=46, dtype=torch.float64)
    expected = sinkhorn_plan(z, c, 10.0, iterations).argmax(dim=1)
    for block_rows in (1, 7, 50, 1000):
        assert torch.equal(sinkhorn_assignment(z, c, 10.0, iterations, block_rows=block_rows), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sinkhorn_dense_kernel_equals_the_log_domain_blocks(dtype):
    # exponentiated once (two matrix-vector products per iteration) or per pass in row blocks: one plan
    from methods.sinkhorn import _sinkhorn_dense, sinkhorn_assignment, sinkhorn_potentials

    z, c = randn(300, 4, seed=47, dtype=dtype), randn(90, 4, seed=48, dtype=dtype) * 0.5
    assert _sinkhorn_dense(z, c, 10.0, 5, final_rows=True) is not None  # the dense path does run here
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    for iterations in (1, 5, 30):
        dense, blocked = sinkhorn_potentials(z, c, 10.0, iterations), sinkhorn_potentials(z, c, 10.0, iterations, 64)
        for a, b in zip(dense, blocked):
            assert torch.allclose(a, b, rtol=tolerance, atol=tolerance)
        assert torch.equal(sinkhorn_assignment(z, c, 10.0, iterations),
                           sinkhorn_assignment(z, c, 10.0, iterations, block_rows=64))


def test_sinkhorn_dense_kernel_hands_an_underflowing_problem_to_the_blocks():
    from methods.sinkhorn import _sinkhorn_dense, sinkhorn_assignment, sinkhorn_plan

    z, c = randn(40, 2, seed=49), randn(10, 2, seed=50)
    c[3] += 30.0  # a code ~20 standard deviations from every feature: exp(-200 x 20) is 0 in float32
    assert _sinkhorn_dense(z, c, 200.0, 3, final_rows=False) is None
    expected = sinkhorn_plan(z.double(), c.double(), 200.0, 3).argmax(dim=1)
    assert torch.equal(sinkhorn_assignment(z, c, 200.0, 3), expected)


def test_sinkhorn_assignment_tends_to_the_exact_balanced_matching():
    from methods.sinkhorn import sinkhorn_assignment

    # six features crowded around two of six codes: nearest-code assignment uses only 2 codes
    c = randn(6, 2, seed=42, dtype=torch.float64) * 3
    z = c[[0, 0, 0, 1, 1, 1]] + 0.3 * randn(6, 2, seed=43, dtype=torch.float64)
    assert torch.cdist(z, c).argmin(dim=1).unique().numel() <= 3
    indices = sinkhorn_assignment(z, c, epsilon=200.0, iterations=3000)
    assert sorted(indices.tolist()) == list(range(6))  # a permutation: every code gets one feature
    matching = ot.emd(np.full(6, 1 / 6), np.full(6, 1 / 6), torch.cdist(z, c).numpy())
    assert indices.tolist() == matching.argmax(axis=1).tolist()


def test_sinkhorn_trains_with_balanced_and_evaluates_with_nearest_codes():
    q = methods.build("sinkhorn", dim=2, codebook_size=16, generator=torch.Generator().manual_seed(0))
    z = randn(512, 2, seed=44) * 0.3 + 3.0  # far from the N(0, 1) codebook: nearest uses few codes
    nearest = q.eval()(z).indices
    trained = q.train()(z).indices
    assert torch.equal(nearest, q.search(z))
    assert trained.unique().numel() > 2 * nearest.unique().numel()
    with pytest.raises(ValueError, match="epsilon"):
        methods.build("sinkhorn", dim=2, codebook_size=4, epsilon=0.0)


@pytest.mark.parametrize("dim", [2, 8])
def test_simvq_draws_its_basis_then_the_skipped_block_then_an_nn_linear(dim):
    # What a script seeding the global RNG makes with basis = randn(K, d), an nn.Embedding(K, d) of
    # its own, then nn.Linear(d, d): the same basis and the same Linear, bit for bit.
    k = 32
    torch.manual_seed(5)
    basis = torch.randn(k, dim)
    torch.nn.Embedding(k, dim)
    linear = torch.nn.Linear(dim, dim)
    q = methods.build("simvq", dim=dim, codebook_size=k, basis="init", init="normal", init_scale=1.0,
                      draws_before_projection=k * dim, generator=torch.Generator().manual_seed(5))
    assert torch.equal(q.basis, basis)
    assert torch.equal(q.projection.weight, linear.weight) and torch.equal(q.projection.bias, linear.bias)


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_simvq_draws_before_projection_must_be_a_count(bad):
    with pytest.raises(ValueError, match="draws_before_projection"):
        methods.build("simvq", dim=4, codebook_size=8, draws_before_projection=bad)
