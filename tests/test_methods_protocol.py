"""Protocol options, defects and degenerate input of the quantizers: loss reduction, codebook
initialisation, Wasserstein statistics, the authors' EMA and online-clustering baselines, the EMA
unused-code defect, FSQ's level tables, OptVQ's options, seeds and tunables."""
from __future__ import annotations

import pytest
import torch

import methods


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- EMA ---------------------------------------------------------------------------------------

def test_ema_code_never_chosen_keeps_its_vector():
    # Before the fix, N_k decayed below eps after ~1,150 steps at decay 0.99 and the Laplace-
    # smoothed ratio m_k / N_k sent the unused code to the origin.
    q = methods.build("ema", dim=2, codebook_size=2, generator=gen())
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 0.0], [50.0, 50.0]]))
        q.embed_sum.copy_(q.embedding)
    far = q.embedding[1].clone()
    z = torch.randn(16, 2, generator=gen(1)) * 0.1
    q.train()
    with torch.no_grad():
        for _ in range(2000):
            assert int(q(z).indices.max()) == 0
    assert torch.equal(q.embedding[1], far)


def test_ema_authors_option_set_rewrites_every_code():
    # decay 0.9, N_k from 0, every code rewritten: one step sends an unused code to m_k / N~_k
    q = methods.build("ema", dim=2, codebook_size=2, decay=0.9, initial_cluster_size=0.0, keep_unused=False,
                      generator=gen())
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        q.embed_sum.copy_(q.embedding)
    z = torch.tensor([[0.1, 0.0], [-0.1, 0.0]])
    q.train()(z)
    eps, k = 1e-5, 2
    n = torch.tensor([0.2, 0.0])  # 0.9 * 0 + 0.1 * counts
    smoothed = (n + eps) / (n.sum() + k * eps) * n.sum()
    m = torch.tensor([[0.0, 0.0], [0.9, 0.9]])
    assert torch.allclose(q.embedding, m / smoothed[:, None])
    assert float(q.embedding[1].norm()) > 1e3


# --- loss reduction and codebook initialisation -------------------------------------------------

@pytest.mark.parametrize("name", [n for n in methods.available() if "reduction" in methods.get(n).option_names()])
def test_sum_reduction_is_d_times_the_mean(name):
    z = torch.randn(64, 4, generator=gen(3)) + 0.5
    mean = methods.build(name, dim=4, codebook_size=24, generator=gen()).eval()(z)
    summed = methods.build(name, dim=4, codebook_size=24, reduction="sum", generator=gen()).eval()(z)
    assert torch.equal(mean.indices, summed.indices)
    for term in ("commitment", "codebook"):
        assert torch.allclose(summed.losses[term], 4 * mean.losses[term])
    with pytest.raises(ValueError, match="reduction"):
        methods.build(name, dim=4, codebook_size=24, reduction="max")


@pytest.mark.parametrize("name", ["vanilla", "ema", "wasserstein", "sliced_wasserstein", "rotation_trick"])
def test_uniform_init_is_u_minus_s_to_s(name):
    q = methods.build(name, dim=8, codebook_size=4096, init="uniform", init_scale=2.0, generator=gen())
    codes = q.codebook.detach()
    assert float(codes.abs().max()) <= 2.0 and float(codes.abs().max()) > 1.99
    assert float(codes.var()) == pytest.approx(4 / 3, rel=0.03)  # Var U[-s, s] = s^2 / 3
    normal = methods.build(name, dim=8, codebook_size=4096, init_scale=2.0, generator=gen()).codebook.detach()
    assert float(normal.std()) == pytest.approx(2.0, rel=0.03)
    with pytest.raises(ValueError, match="init"):
        methods.build(name, dim=8, codebook_size=8, init="laplace")


# --- Wasserstein statistics ---------------------------------------------------------------------

def test_wasserstein_batch_statistics_use_the_current_batch_only():
    from methods._core import gaussian_w2_squared, mean_and_covariance

    q = methods.build("wasserstein", dim=3, codebook_size=32, statistics="batch", normalize=False, generator=gen())
    q.train()
    q(torch.randn(50, 3, generator=gen(1)) + 5.0)  # an earlier batch would shift a queue's statistics
    z = torch.randn(40, 3, generator=gen(2))
    out = q(z)
    fm, fc = mean_and_covariance(z.double())
    cm, cc = mean_and_covariance(q.codebook.detach().double())
    expected = (gaussian_w2_squared(fm, fc, cm, cc) + 1e-10).sqrt()
    assert float(out.losses["wasserstein"].detach()) == pytest.approx(float(expected), rel=1e-5)
    queued = methods.build("wasserstein", dim=3, codebook_size=32, normalize=False, generator=gen()).train()
    queued(torch.randn(50, 3, generator=gen(1)) + 5.0)
    assert float(queued(z).losses["wasserstein"].detach()) > 2 * float(expected)


@pytest.mark.parametrize("name", ["wasserstein", "wasserstein_density"])
def test_batch_statistics_need_two_features(name):
    q = methods.build(name, dim=3, codebook_size=8, statistics="batch", generator=gen())
    with pytest.raises(ValueError, match="too small"):
        q(torch.randn(1, 3))
    with pytest.raises(ValueError, match="too small"):
        q(torch.randn(3))  # a single vector is a batch of one
    assert torch.isfinite(q(torch.randn(2, 3)).loss)
    assert torch.isfinite(methods.build(name, dim=3, codebook_size=8, generator=gen())(torch.randn(1, 3)).loss)
    with pytest.raises(ValueError, match="statistics"):
        methods.build(name, dim=3, codebook_size=8, statistics="window")


# --- seeds: internal randomness follows the run's generator -------------------------------------

SEEDED = {
    "sliced_wasserstein": {},
    "exact_ot": {"max_samples": 8},
    "mmd": {"max_samples": 8},
    "kmeans_ema": {},
}


def _internal_draw(name: str, generator_seed: int, **options) -> torch.Tensor:
    """A training step's output that depends on the method's internal randomness only: the
    codebook is the same for every generator."""
    q = methods.build(name, dim=4, codebook_size=24, generator=gen(generator_seed), **SEEDED[name], **options)
    reference = methods.build(name, dim=4, codebook_size=24, generator=gen(0), **SEEDED[name])
    with torch.no_grad():
        q.embedding.copy_(reference.embedding)
    out = q.train()(torch.randn(64, 4, generator=gen(9)))
    if name == "kmeans_ema":  # k-means starts are drawn on the first batch
        return q.codebook.detach().clone()
    return out.losses[methods.get(name).cls.distribution_term].detach()


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_different_generators_give_different_internal_draws(name):
    assert methods.get(name).defaults["seed"] is None
    assert not torch.equal(_internal_draw(name, 1), _internal_draw(name, 2))
    assert torch.equal(_internal_draw(name, 1), _internal_draw(name, 1))
    # an explicit seed overrides the generator
    assert torch.equal(_internal_draw(name, 1, seed=5), _internal_draw(name, 2, seed=5))
    with pytest.raises(ValueError, match="seed"):
        methods.build(name, dim=4, codebook_size=24, seed=1.5)


# --- tunables -----------------------------------------------------------------------------------

def test_tunables_are_carried_on_the_spec():
    assert methods.get("wasserstein").tunables["gamma"] == methods.Tunable(1e-3, 10.0, log=True)
    assert "decay" in methods.get("ema").tunables and "decay" in methods.get("kmeans_ema").tunables
    assert all(methods.get(n).tunables for n in methods.available() if methods.get(n).distribution_matching)


def test_a_tunable_must_name_an_option():
    class BadTunables(methods.get("vanilla").cls):
        tunables = {"gama": methods.Tunable(0.1, 1.0)}

    with pytest.raises(ValueError, match="tunables.*gama"):
        methods.register("bad_tunables_test")(BadTunables)
    assert "bad_tunables_test" not in methods.available()


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"low": 1.0, "high": 0.5}, "low"), ({"low": 0.0, "high": 1.0, "log": True}, "low"),
    ({"low": 0.1}, "low"), ({"low": 0.1, "high": 1.0, "choices": (1, 2)}, "choices"),
])
def test_tunable_ranges_are_checked(kwargs, field):
    with pytest.raises(ValueError, match=field):
        methods.Tunable(**kwargs)


# --- nearest-code search at large magnitudes and in half precision -------------------------------

def float64_nearest(features: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """argmin_k ||c_k||^2 - 2 z . c_k in float64 (||z||^2 left out: it would swamp the gaps)."""
    z, c = features.double(), codebook.double()
    return (c.pow(2).sum(1)[None, :] - 2 * z @ c.t()).argmin(dim=1)


@pytest.mark.parametrize("scale", [1e3, 1e5, 1e8, 1e21])
def test_search_is_exact_at_large_magnitudes(scale):
    # Before: float32 faiss agreed with float64 on 99.0% of rows at 1e5, 15% at 1e8, and
    # returned -1 at 1e21 (squared distances overflow float32).
    from methods._core import nearest_code

    codebook = torch.randn(256, 8, generator=gen(0))
    z = torch.randn(2048, 8, generator=gen(1)) * scale
    got = nearest_code(z, codebook)
    assert int(got.min()) >= 0
    assert torch.equal(got, float64_nearest(z, codebook))


def test_search_is_exact_for_features_far_from_a_small_codebook():
    from methods._core import float32_search_is_exact, nearest_code

    codebook = torch.randn(64, 4, generator=gen(0)) * 1e-3 + 1e4  # spread 1e-2, magnitude 1e4
    z = codebook[torch.randint(64, (500,), generator=gen(1))] + torch.randn(500, 4, generator=gen(2)) * 1e-4
    assert not float32_search_is_exact(z, codebook)
    assert torch.equal(nearest_code(z, codebook), float64_nearest(z, codebook))
    assert float32_search_is_exact(torch.randn(10, 4) * 1e6, torch.randn(16, 4) * 1e6)  # scale-free


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_are_searched_in_float32(dtype):
    from methods._core import nearest_code

    codebook = torch.randn(512, 8, generator=gen(0))
    z = (torch.randn(1000, 8, generator=gen(1)) * 2).to(dtype)
    assert torch.equal(nearest_code(z, codebook), float64_nearest(z.float(), codebook))


# --- FSQ default levels -----------------------------------------------------------------------------

@pytest.mark.parametrize(("dim", "codebook_size"), [(8, 1024), (4, 1000), (8, 256), (2, 64), (6, 4096), (16, 1024)])
def test_fsq_default_levels_use_the_codes_of_gaussian_features(dim, codebook_size):
    # Before: (d = 8, K = 1024) derived (4, 4, 2, 2, 2, 2, 2, 2), utilization 2-3% of N(0, I_8).
    q = methods.build("fsq", dim=dim, codebook_size=codebook_size)
    assert 2 not in q.levels or codebook_size == 2
    indices = q.search(torch.randn(100_000, dim, generator=gen(0)))
    assert (torch.bincount(indices, minlength=codebook_size) > 0).float().mean() >= 0.9


def test_fsq_a_level_of_two_splits_at_zero():
    q = methods.build("fsq", dim=1, codebook_size=2, levels=(2,))
    assert q.search(torch.tensor([[-0.01], [0.01]])).tolist() == [0, 1]


# --- online clustering ------------------------------------------------------------------------------

def test_online_pulls_unused_codes_onto_their_nearest_feature():
    q = methods.build("online", dim=2, codebook_size=4, generator=gen())
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [20.0, 20.0], [-30.0, 0.0]])
    with torch.no_grad():
        q.embedding.copy_(codebook)
    z = torch.tensor([[0.1, 0.0], [0.9, 0.1], [1.1, 0.0], [3.0, 3.0]])
    out = q.train()(z)
    assert out.indices.tolist() == [0, 1, 1, 1]
    share = torch.tensor([0.25, 0.75, 0.0, 0.0])
    assert torch.allclose(q.usage, 0.1 * share)
    a = torch.exp(-10 * 4 * q.usage / 0.1 - 1e-3)
    nearest = z[[0, 2, 3, 0]]  # nearest batch feature of each code
    expected = (1 - a[:, None]) * codebook + a[:, None] * nearest
    assert torch.allclose(q.embedding.detach(), expected)
    assert torch.allclose(q.embedding[2].detach(), z[3], atol=0.02)  # unused: pulled (a = e^-0.001)
    assert torch.allclose(q.embedding[1].detach(), codebook[1], atol=1e-12)  # used: a = e^-30
    out.loss.backward()  # the gradient step still applies to the pre-pull loss terms
    assert torch.isfinite(q.embedding.grad).all()


def test_online_keeps_codes_alive_under_a_mean_shift_where_vanilla_loses_them():
    q = methods.build("online", dim=8, codebook_size=256, beta=0.0, reduction="sum", generator=gen())
    vanilla = methods.build("vanilla", dim=8, codebook_size=256, beta=0.0, reduction="sum", generator=gen())
    for model in (q, vanilla):
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
        for step in range(30):
            out = model.train()(torch.randn(2048, 8, generator=gen(step)) + 4.0)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
    z = torch.randn(20000, 8, generator=gen(99)) + 4.0
    used = lambda model: (torch.bincount(model.search(z), minlength=256) > 0).float().mean()  # noqa: E731
    assert used(q) > 0.5 and used(vanilla) < 0.05  # measured: 69% and 1.2%


# --- OptVQ options of sinkhorn ----------------------------------------------------------------------

def test_sinkhorn_projection_trains_a_linear_layer_on_the_codebook():
    q = methods.build("sinkhorn", dim=4, codebook_size=24, projection=True, beta=1.0, codebook_weight=0.25,
                      generator=gen())
    assert torch.allclose(q.codebook, q.projection(q.embedding))
    out = q.train()(torch.randn(64, 4, generator=gen(1)))
    assert float(out.loss.detach()) == pytest.approx(float((out.losses["commitment"] + 0.25 * out.losses["codebook"]).detach()))
    out.loss.backward()
    for parameter in (q.embedding, q.projection.weight, q.projection.bias):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    assert methods.build("sinkhorn", dim=4, codebook_size=24).projection is None
    with pytest.raises(ValueError, match="projection"):
        methods.build("sinkhorn", dim=4, codebook_size=24, projection=1)
