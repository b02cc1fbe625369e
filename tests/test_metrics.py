"""benchmark.experiments.metrics against hand-computed tiny cases and independent references (scipy, POT)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from benchmark import metric_registry
from benchmark.experiments import metrics

# 4 points, 3 codes in 2-D; nearest codes (no ties): 0, 0, 1, 1; squared errors 1, 0.25, 1, 4.
CODEBOOK = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0]])
POINTS = torch.tensor([[0.0, 1.0], [0.5, 0.0], [2.0, 1.0], [2.0, -2.0]])


def test_hand_case_assignment_metrics():
    indices = torch.tensor([0, 0, 1, 1])
    assert metrics.quantization_error(POINTS, CODEBOOK, indices) == pytest.approx(6.25 / 4)
    counts = metrics.code_counts(indices, 3)
    assert counts.tolist() == [2, 2, 0]
    assert metrics.utilization(counts) == pytest.approx(2 / 3)
    assert metrics.dead_codes(counts) == 1
    assert metrics.perplexity(counts) == pytest.approx(2.0)


def test_perplexity_hand_values():
    # p = (3/4, 1/4): exp(H) = 1 / (0.75^0.75 * 0.25^0.25) = 1.75477...
    assert metrics.perplexity(torch.tensor([3, 1, 0, 0])) == pytest.approx(1.754765, rel=1e-5)
    assert metrics.perplexity(torch.tensor([5, 5, 5, 5])) == pytest.approx(4.0)
    assert metrics.perplexity(torch.tensor([0, 7, 0])) == pytest.approx(1.0)
    assert metrics.perplexity(torch.zeros(3, dtype=torch.long)) == 0.0  # no code used (a dropped level)


def test_one_perplexity():
    from methods import _usage

    assert metrics.perplexity is _usage.perplexity


def test_code_counts_rejects_out_of_range():
    with pytest.raises(ValueError, match="indices"):
        metrics.code_counts(torch.tensor([0, 3]), 3)


def test_evaluate_hand_case_uses_nearest_codes():
    record = metrics.evaluate(CODEBOOK, POINTS)
    assert set(record) == set(metric_registry.METRIC_KEYS)
    assert all(isinstance(v, float) for v in record.values())
    assert record["quantization_error"] == pytest.approx(1.5625)
    assert record["utilization"] == pytest.approx(2 / 3)
    assert record["dead_codes"] == 1.0
    assert record["perplexity"] == pytest.approx(2.0)
    assert math.isnan(record["kmeans_error"]) and math.isnan(record["error_vs_kmeans"])
    # gaussian_w2_sq of the record = closed form on the empirical (1/N) statistics
    mz, sz = POINTS.double().mean(0).numpy(), np.cov(POINTS.double().numpy().T, bias=True)
    mc, sc = CODEBOOK.double().mean(0).numpy(), np.cov(CODEBOOK.double().numpy().T, bias=True)
    assert record["gaussian_w2_sq"] == pytest.approx(metrics.gaussian_w2_squared(mz, sz, mc, sc))


def test_evaluate_accepts_a_module_with_codebook_and_checks_dim():
    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(CODEBOOK.clone())

        @property
        def codebook(self):
            return self.weight * 1.0  # has a grad_fn, like a reparameterised codebook

    assert metrics.evaluate(Holder(), POINTS)["quantization_error"] == pytest.approx(1.5625)
    with pytest.raises(ValueError, match="dim"):
        metrics.evaluate(CODEBOOK, torch.zeros(5, 3))


def test_gaussian_w2_squared_hand_cases():
    # 1-D: N(0, 1) vs N(3, 4): 9 + (1 - 2)^2 = 10
    assert metrics.gaussian_w2_squared([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(10.0)
    # diagonal: sum of 1-D terms: 2 + (1 - 2)^2 + (2 - 3)^2 = 4
    w2 = metrics.gaussian_w2_squared(np.zeros(2), np.diag([1.0, 4.0]), np.ones(2), np.diag([4.0, 9.0]))
    assert w2 == pytest.approx(4.0)
    # identical isotropic Gaussians (repeated eigenvalues) -> exactly 0, no NaN
    assert metrics.gaussian_w2_squared(np.ones(8), np.eye(8), np.ones(8), np.eye(8)) == pytest.approx(0.0, abs=1e-12)
    # singular covariance (a point mass) vs N(0, I_3): tr(I) = 3
    assert metrics.gaussian_w2_squared(np.zeros(3), np.zeros((3, 3)), np.zeros(3), np.eye(3)) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="shapes"):
        metrics.gaussian_w2_squared(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def _random_spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d


@pytest.mark.parametrize("d", [2, 8])
def test_gaussian_w2_squared_matches_scipy_and_pot(d):
    import ot

    rng = np.random.default_rng(d)
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d) + 2.0
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    ours = metrics.gaussian_w2_squared(m1, s1, m2, s2)

    r1 = scipy.linalg.sqrtm(s1)
    cross = scipy.linalg.sqrtm(r1 @ s2 @ r1)
    reference = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(cross))
    assert ours == pytest.approx(reference, rel=1e-7)
    np.testing.assert_allclose(metrics.sqrtm_psd(s1), np.real(r1), atol=1e-8)

    pot = float(ot.gaussian.bures_wasserstein_distance(m1, m2, s1, s2))  # W2, not squared
    assert ours == pytest.approx(pot**2, rel=1e-6)
    # symmetric
    assert metrics.gaussian_w2_squared(m2, s2, m1, s1) == pytest.approx(ours, rel=1e-7)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_gaussian_w2_squared_rank_deficient_matches_scipy():
    # POT's own sqrtm returns NaN for a singular covariance; the eigh square root does not
    rng = np.random.default_rng(0)
    s1, s2 = _random_spd(rng, 6, rank=2), _random_spd(rng, 6)
    ours = metrics.gaussian_w2_squared(np.zeros(6), s1, np.zeros(6), s2)
    r1 = np.real(scipy.linalg.sqrtm(s1))
    reference = np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(r1 @ s2 @ r1)))
    assert np.isfinite(ours)
    assert ours == pytest.approx(reference, rel=1e-4)


def test_kmeans_error_near_zero_on_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]])

    def sample(n):
        labels = torch.randint(0, 4, (n,), generator=gen)
        return centres[labels] + 0.01 * torch.randn(n, 2, generator=gen)

    # 8 codes for 4 clusters: Lloyd from a random init can leave a cluster without a code when
    # K equals the number of clusters (a local minimum, not a metric bug)
    err = metrics.kmeans_error(sample(4000), sample(500), 8, seed=0)
    assert 0.0 <= err < 1e-3  # at most 2 dims x 0.01^2 = 2e-4 expected


def test_kmeans_reference_scale_and_ratio_one():
    gen = torch.Generator().manual_seed(1)
    train = torch.randn(64 * 256, 2, generator=gen)
    held_out = torch.randn(4000, 2, generator=gen)
    err = metrics.kmeans_error(train, held_out, 64, seed=3)
    # Zador / high-rate: E ~ d * 2^(-2R/d) * const; for d=2, K=64 the Lloyd error of N(0, I)
    # is about 0.08-0.1; a sanity window, not a precise value
    assert 0.05 < err < 0.15
    centroids = metrics.kmeans_codebook(train, 64, seed=3)
    record = metrics.evaluate(centroids, held_out, kmeans_features=train, seed=3)
    assert record["kmeans_error"] == pytest.approx(err)
    assert record["error_vs_kmeans"] == pytest.approx(1.0)
    assert record["utilization"] == 1.0


def test_kmeans_error_nan_with_too_few_training_points():
    assert math.isnan(metrics.kmeans_error(torch.zeros(3, 2), torch.zeros(5, 2), 4))


def test_kmeans_train_size_is_a_fixed_number_per_code_at_every_k():
    # Before: capped at 262,144 points, i.e. 16 per code at K = 16,384 (a weaker reference)
    for k in (16, 1024, 16384, 1 << 20):
        assert metrics.kmeans_train_size(k) == k * metrics.KMEANS_POINTS_PER_CODE


def test_kmeans_reference_runs_lloyd_to_convergence():
    # Before: 25 faiss iterations stopped 0.7% above the converged error at d = 2
    gen = torch.Generator().manual_seed(4)
    k = 64
    train = torch.rand(metrics.kmeans_train_size(k), 2, generator=gen)
    held_out = torch.rand(20000, 2, generator=gen)
    converged = metrics.kmeans_error(train, held_out, k, seed=0, niter=1000 * 1000)
    reference = metrics.kmeans_error(train, held_out, k, seed=0)
    capped = metrics.kmeans_error(train, held_out, k, seed=0, niter=25)
    assert reference == pytest.approx(converged, rel=1e-3)
    assert capped > reference


# --------------------------------------------------------------------------- multi-codebook quantizers
def _multi(name, codebooks, **options):
    """A residual / grouped quantizer holding the given (L, K, d_l) codebooks."""
    import methods

    levels, k, _ = codebooks.shape
    key = "levels" if name == "residual" else "groups"
    dim = codebooks.shape[2] * (levels if name == "grouped" else 1)
    quantizer = methods.build(name, dim=dim, codebook_size=k, **{key: levels}, **options)
    with torch.no_grad():
        quantizer.embedding.copy_(codebooks)
    return quantizer.eval()


def _product_codebook(quantizer):
    """Every index tuple's code vector: the prod K_l implied codes, enumerated (small cases only)."""
    import itertools

    tuples = torch.tensor(list(itertools.product(*(range(k) for k in quantizer.level_codebook_sizes))))
    return quantizer.indices_to_codes(tuples).detach()


@pytest.mark.parametrize("name", ["residual", "grouped"])
def test_multi_codebook_record_against_brute_force(name):
    gen = torch.Generator().manual_seed(0)
    codebooks = torch.randn(2, 3, 2, generator=gen) * torch.tensor([[[2.0]], [[0.5]]])
    quantizer = _multi(name, codebooks)
    features = torch.randn(400, quantizer.dim, generator=gen) * 1.5
    record = metrics.evaluate_levels(quantizer, features)
    assert metrics.evaluate(quantizer, features) == pytest.approx(record, nan_ok=True)  # dispatch on the structure
    assert set(record) == set(metric_registry.METRIC_KEYS) | {
        "utilization_level_0", "utilization_level_1", "perplexity_level_0", "perplexity_level_1"}
    indices = quantizer.search(features)
    codes = quantizer.indices_to_codes(indices)
    assert record["quantization_error"] == pytest.approx(float((features - codes).double().pow(2).sum(1).mean()))
    for level in range(2):
        counts = torch.bincount(indices[:, level], minlength=3)
        assert record[f"utilization_level_{level}"] == pytest.approx(float((counts > 0).float().mean()))
        assert record[f"perplexity_level_{level}"] == pytest.approx(metrics.perplexity(counts))
    used = sum(int((torch.bincount(indices[:, level], minlength=3) > 0).sum()) for level in range(2))
    assert record["utilization"] == pytest.approx(used / 6) and record["dead_codes"] == 6 - used
    _, joint = torch.unique(indices, dim=0, return_counts=True)
    assert record["perplexity"] == pytest.approx(metrics.perplexity(joint))
    assert record["bits_per_token"] == pytest.approx(2 * math.log2(3))
    assert math.isnan(record["kmeans_error"]) and math.isnan(record["error_vs_kmeans"])
    # W2 against the implied codebook: all 9 index tuples, equally weighted, enumerated
    implied = _product_codebook(quantizer)
    expected = metrics.gaussian_w2_squared(*metrics.gaussian_stats(features), *metrics.gaussian_stats(implied))
    assert record["gaussian_w2_sq"] == pytest.approx(expected, rel=1e-6)  # the 9 sums rounded to float32


def test_multi_codebook_error_is_measured_in_level_order_not_against_the_product_optimum():
    """Residual search is greedy: E is the error of the quantizer's own codes, which can exceed
    the nearest of the implied product codes."""
    codebooks = torch.tensor([[[0.0], [1.0]], [[0.0], [0.6]]])  # sums 0, 0.6, 1, 1.6
    quantizer = _multi("residual", codebooks)
    z = torch.tensor([[0.55]])  # greedy: level 0 -> 1.0 (residual -0.45), level 1 -> 0: error 0.2025
    assert metrics.evaluate_levels(quantizer, z)["quantization_error"] == pytest.approx(0.45**2)


def test_single_codebook_record_carries_bits_per_token():
    assert metrics.evaluate(CODEBOOK, POINTS)["bits_per_token"] == pytest.approx(math.log2(3))
    assert metrics.evaluate(torch.zeros(256, 2), POINTS)["bits_per_token"] == 8.0
