"""Each method's mechanism, on a tiny setting where it tells the method apart from vanilla VQ.

Selected by declared flags and loss terms, never by names: a relaxed gradient trains codes no
feature chose; an EMA codebook moves to the features without an optimizer. (An entropy term's
preference for spread usage: tests/test_methods_official.py for BSQ, test_methods_field for LFQ.)
"""
from __future__ import annotations

import copy

import pytest
import torch

import methods
from methods.testing import features, make, train_step

SINGLE = [n for n in methods.available() if methods.get(n).code_structure == "single"]
RELAXED = [n for n in SINGLE if methods.get(n).relaxed_gradient]
EMA_LIKE = [n for n in SINGLE if methods.get(n).learnable_codebook and not methods.get(n).trainable_by_gradient]


def unchosen_code_gradient(name: str) -> float:
    q = make(name, dim=4, codebook_size=32)
    z = features(16, 4)
    out = q(z)
    out.loss.backward()
    unused = torch.ones(32, dtype=torch.bool)
    unused[out.indices] = False
    return float(q.codebook.grad[unused].abs().sum()) if q.codebook.grad is not None else 0.0


@pytest.mark.parametrize("name", RELAXED)
def test_relaxed_gradient_trains_codes_no_feature_chose(name):
    assert RELAXED and unchosen_code_gradient("vanilla") == 0.0
    assert unchosen_code_gradient(name) > 0.0


@pytest.mark.parametrize("name", EMA_LIKE)
def test_ema_codebook_moves_to_the_features_without_an_optimizer(name):
    q = make(name, dim=4, codebook_size=8).train()
    z = features(64, 4, seed=4)
    for _ in range(50):
        out = q(z)
    codes = q.codebook.detach()[out.indices]
    vanilla = make("vanilla", dim=4, codebook_size=8).train()
    before = vanilla.codebook.detach().clone()
    for _ in range(50):
        vanilla(z)
    assert torch.equal(vanilla.codebook.detach(), before)  # a gradient-trained codebook needs an optimizer
    assert (codes - z).pow(2).sum(1).mean() < (before[vanilla(z).indices] - z).pow(2).sum(1).mean()


def test_vanilla_weights_the_commitment_on_z_and_the_codebook_term_on_the_codes():
    """loss = codebook_weight ||sg(z) - e||^2 + beta ||z - sg(e)||^2 (element means): both terms have
    the same value, so only the gradients tell the weights apart: d/dz = 2 beta (z - e) / (N d),
    d/de_k = 2 codebook_weight sum_{n -> k} (e_k - z_n) / (N d)."""
    q = make("vanilla", dim=4, codebook_size=8)
    z = features(32, 4, seed=6).requires_grad_(True)
    out = q(z)
    (grad_z, grad_c) = torch.autograd.grad(out.loss, (z, q.embedding))
    codes = q.embedding.detach()[out.indices]
    scale = 2 / z.numel()
    assert torch.allclose(grad_z, scale * q.options.beta * (z.detach() - codes), atol=1e-7)
    expected = torch.zeros_like(grad_c).index_add_(0, out.indices, scale * q.options.codebook_weight * (codes - z.detach()))
    assert torch.allclose(grad_c, expected, atol=1e-7)


# --- the loss each method declares, pinned by its gradients ----------------------------------------

def _declares(name: str, *terms: str) -> bool:
    spec = methods.get(name)
    options = spec.options()
    return (spec.straight_through and spec.error_space == "euclidean" and spec.gradient_gain == "one"
            and all(hasattr(options, field) for field in ("beta",) + (("codebook_weight",) if "codebook" in terms else ()))
            and getattr(options, "reduction", "mean") == "mean" and set(terms) <= set(make(name).loss_weights()))


VQ_PAIR = [n for n in SINGLE if _declares(n, "commitment", "codebook")]
COMMITMENT_ONLY = [n for n in SINGLE if n not in VQ_PAIR and _declares(n, "commitment")
               and set(make(n).loss_weights()) == {"commitment"}]


# the Gaussian W's default statistics come from a queue of detached features; from the batch they
# would carry a gradient to z unless the term detaches it
DECLARED = [pytest.param(n, {}, id=n) for n in VQ_PAIR + COMMITMENT_ONLY] + [
    pytest.param("wasserstein", {"statistics": "batch"}, id="wasserstein-batch_statistics")]


@pytest.mark.parametrize("name, overrides", DECLARED)
def test_loss_is_the_declared_vq_terms_with_their_weights(name, overrides):
    """loss = beta ||z - sg(e)||^2 + codebook_weight ||sg(z) - e||^2 (+ gamma D for distribution
    matching, D as the method computes it, its gradient reaching the parameters only, never z),
    element means, e = codebook[indices]: the value and the gradient to z and to every parameter
    equal this surrogate's, built from the options alone. A flipped sign, swapped weights or a moved
    stop-gradient changes a gradient even where values agree."""
    assert {"vanilla", "simvq", "online", "wasserstein"} <= set(VQ_PAIR) and {"ema", "kmeans_ema"} <= set(COMMITMENT_ONLY)
    q = make(name, **overrides).train()
    q(features(40, 4, seed=13))  # a first training forward (k-means initialisation, queues)
    options = q.options
    before = copy.deepcopy(q).eval()  # the codebook the forward searched (a training forward may update it)
    z = features(40, 4, seed=12).requires_grad_(True)
    out = q(z)
    params = [p for p in q.parameters() if p.requires_grad]
    codes = before.codebook[out.indices]
    surrogate = options.beta * torch.nn.functional.mse_loss(z, codes.detach())
    if name in VQ_PAIR:
        surrogate = surrogate + options.codebook_weight * torch.nn.functional.mse_loss(z.detach(), codes)
    before_params = [p for p in before.parameters() if p.requires_grad]
    value = float(surrogate.detach())
    want = [torch.zeros_like(t) if g is None else g
            for t, g in zip([z] + params, torch.autograd.grad(surrogate, [z] + before_params, allow_unused=True))]
    if methods.get(name).distribution_matching:  # D as the method computes it, weighted by gamma
        (term,) = set(out.losses) - {"commitment", "codebook"}
        value += options.gamma * float(out.losses[term].detach())
        extra = torch.autograd.grad(out.losses[term], params, retain_graph=True, allow_unused=True)
        want = want[:1] + [w if e is None else w + options.gamma * e for w, e in zip(want[1:], extra)]
    assert float(out.loss.detach()) == pytest.approx(value, rel=1e-5)
    got = torch.autograd.grad(out.loss, [z] + params, allow_unused=True)
    for g, w in zip(got, want):
        assert torch.allclose(torch.zeros_like(w) if g is None else g, w, rtol=1e-5, atol=1e-7)
    assert got[0].abs().sum() > 0


# --- each mechanism against vanilla VQ, on a tiny setting where it matters -------------------------

FAR = 3.0  # features shifted away from the N(0, 1) codes: vanilla then uses and moves only a few codes
MATCHING = [n for n in SINGLE if methods.get(n).distribution_matching]


def codebook_mean_gap(name: str, steps: int = 30, **options) -> tuple[float, float, list[float]]:
    """||mean(codebook) - mean(z)|| before and after ``steps`` SGD steps on the loss, and each
    step's distribution term (empty for vanilla)."""
    q = make(name, dim=4, codebook_size=32, **options)
    z = features(256, 4, seed=14, shift=FAR)
    gap = lambda: float((q.codebook.detach().mean(0) - z.mean(0)).norm())  # noqa: E731
    start, terms = gap(), []
    for _ in range(steps):
        out = train_step(q, z, lr=0.5)
        terms += [float(out.losses[q.distribution_term].detach())] if methods.get(name).distribution_matching else []
    return start, gap(), terms


@pytest.mark.parametrize("name", MATCHING)
def test_distribution_matching_pulls_the_whole_codebook_to_the_features(name):
    """D(P_z, P_codebook) reaches every code: gradient descent on the loss (gamma 10, the top of its
    tuning range, so the slowest D, MMD's, shows in 30 steps) brings the codebook's mean to the
    features' at least twice as far as vanilla moves it with only its few chosen codes, and lowers D."""
    assert {"wasserstein", "sliced_wasserstein", "exact_ot"} <= set(MATCHING)
    start, vanilla, _ = codebook_mean_gap("vanilla")
    _, matched, terms = codebook_mean_gap(name, gamma=10.0)
    assert start - matched > 2 * (start - vanilla) > 0
    assert terms[-1] < terms[0]


def fraction_of_codes_moved_towards(name: str, z: torch.Tensor) -> float:
    q = make(name, dim=4, codebook_size=32)
    before = q.codebook.detach().clone()
    train_step(q, z, lr=0.1)
    target = z.mean(0)
    return float(((q.codebook.detach() - target).norm(dim=1) < (before - target).norm(dim=1)).float().mean())


def test_simvq_one_step_moves_every_code_towards_the_features():
    """SimVQ's codes are C W^T + b: the gradient of the chosen codes moves W and b, hence every code;
    vanilla's unchosen codes stay where they are."""
    z = features(64, 4, seed=15, shift=FAR)
    assert fraction_of_codes_moved_towards("simvq", z) > 0.8
    assert fraction_of_codes_moved_towards("vanilla", z) < 0.5


def test_online_clustering_pulls_unused_codes_onto_features_and_spares_used_ones():
    """a_k = exp(-sharpness K p_k / (1 - m) - 1e-3) with p_k the EMA (decay m) of code k's batch share:
    a code no feature chose jumps (a_k ~ 1) onto its nearest feature in the training forward, without
    an optimizer; a code holding a large share barely moves. Vanilla moves nothing without a step."""
    q = make("online", dim=4, codebook_size=32).train()
    z = features(64, 4, seed=16, shift=FAR)
    before = q.embedding.detach().clone()
    out = q(z)
    share = torch.bincount(out.indices, minlength=32).float() / 64
    assert torch.allclose(q.usage, (1 - q.options.usage_decay) * share)  # usage: the EMA of the shares
    nearest = z[torch.cdist(before, z).argmin(dim=1)]
    pull = torch.exp(-q.options.sharpness * 32 * q.usage / (1 - q.options.usage_decay) - 1e-3)[:, None]
    assert torch.allclose(q.embedding.detach(), (1 - pull) * before + pull * nearest, atol=1e-6)
    unused = share == 0
    assert unused.any() and torch.allclose(q.embedding.detach()[unused], nearest[unused], atol=1e-2)
    busiest = share.argmax()
    moved = (q.embedding.detach()[busiest] - before[busiest]).norm()
    assert moved < 0.01 * (nearest[busiest] - before[busiest]).norm()
    vanilla = make("vanilla", dim=4, codebook_size=32).train()
    untouched = vanilla.embedding.detach().clone()
    vanilla(z)
    assert torch.equal(vanilla.embedding.detach(), untouched)


def codes_used_after_one_training_forward(name: str) -> int:
    q = make(name, dim=4, codebook_size=32).train()
    z = features(256, 4, seed=17, shift=FAR)
    q(z)
    return int(torch.unique(q.eval()(z).indices).numel())


def test_kmeans_ema_starts_with_every_code_on_the_features():
    """The first training batch's k-means centroids become the codes: all 32 are used at once, where
    vanilla's N(0, 1) codes leave most of them unused by features far from the origin."""
    assert codes_used_after_one_training_forward("kmeans_ema") == 32
    assert codes_used_after_one_training_forward("vanilla") < 16


def test_cosine_codes_ignore_the_feature_norm():
    """On the sphere a feature and any positive multiple of it get the same code; vanilla's
    euclidean search does not."""
    z = features(200, 4, seed=18)
    q, vanilla = make("cosine", dim=4), make("vanilla", dim=4)
    assert torch.equal(q(z).indices, q(5 * z).indices)
    assert not torch.equal(vanilla(z).indices, vanilla(5 * z).indices)


def test_kmeans_ema_codes_follow_the_features_by_ema_and_used_codes_are_never_reset():
    """After the k-means start, the EMA carries the codes to a shifted batch (error falls without an
    optimizer; no code is re-seeded in these 8 steps); a code chosen in a step has its
    steps-without-use counter at 0, so a code in use is never re-seeded."""
    q = make("kmeans_ema", dim=4, codebook_size=16, decay=0.8, dead_after=100).train()
    q(features(256, 4, seed=19))
    shifted = features(256, 4, seed=19, shift=1.5)
    error = lambda: float((q.codebook.detach()[q.search(shifted)] - shifted).pow(2).sum(1).mean())  # noqa: E731
    start = error()
    for _ in range(8):
        out = q(shifted)
        assert (q.unused_steps[torch.unique(out.indices)] == 0).all()
    assert error() < 0.7 * start


def test_cosine_loss_is_the_vq_pair_on_the_sphere():
    """loss = beta ||u - sg(c)||^2 + codebook_weight ||sg(u) - c||^2 with u = z / ||z|| and c the unit
    code (element means): value and gradients to z and the raw codes equal this surrogate's."""
    q = make("cosine", dim=4)
    z = features(40, 4, seed=20).requires_grad_(True)
    out = q(z)
    u = torch.nn.functional.normalize(z, dim=1)
    codes = torch.nn.functional.normalize(q.embedding, dim=1)[out.indices]
    mse = torch.nn.functional.mse_loss
    surrogate = q.options.beta * mse(u, codes.detach()) + q.options.codebook_weight * mse(u.detach(), codes)
    assert float(out.loss.detach()) == pytest.approx(float(surrogate.detach()), rel=1e-5)
    for got, want in zip(torch.autograd.grad(out.loss, (z, q.embedding)), torch.autograd.grad(surrogate, (z, q.embedding))):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)


def test_sinkhorn_training_assignment_spreads_features_over_the_codes():
    """OptVQ assigns by the argmax of a balanced entropic OT plan in training: features far from every
    code still spread over many codes, where vanilla's nearest-code search piles them on a few."""
    z = features(256, 4, seed=21, shift=FAR)
    sinkhorn, vanilla = make("sinkhorn", dim=4, codebook_size=32).train(), make("vanilla", dim=4, codebook_size=32)
    spread, piled = torch.unique(sinkhorn(z).indices).numel(), torch.unique(vanilla(z).indices).numel()
    assert spread >= 2 * piled
    assert torch.equal(sinkhorn.eval()(z).indices, torch.cdist(z, sinkhorn.codebook.detach()).argmin(dim=1))


MULTI = [n for n in methods.available() if methods.get(n).code_structure in ("residual", "grouped")
         and hasattr(methods.get(n).options(), "codebook_weight")]  # a peer adapter without the pair: its own loss


@pytest.mark.parametrize("name", MULTI)
def test_multi_codebook_loss_is_the_vq_pair_per_part(name):
    """grouped: the VQ pair on the concatenated group codes; residual: summed over levels l of the
    pair between the residual r_l (r_0 = z, r_{l+1} = r_l - sg(c_l)) and its code c_l (element
    means). Value and gradients to z and the codebooks equal this surrogate's."""
    assert {"residual", "grouped"} <= set(MULTI)
    q = make(name, dim=4)
    z = features(40, 4, seed=22).requires_grad_(True)
    out = q(z)
    mse, options = torch.nn.functional.mse_loss, q.options
    flat = out.indices.reshape(40, -1)
    if methods.get(name).code_structure == "grouped":
        pairs = [(z, q.indices_to_codes(flat))]
    else:
        pairs, residual = [], z
        for level in range(flat.shape[1]):
            code = q.codebook[level][flat[:, level]]
            pairs.append((residual, code))
            residual = residual - code.detach()
    surrogate = sum(options.beta * mse(r, c.detach()) + options.codebook_weight * mse(r.detach(), c) for r, c in pairs)
    assert float(out.loss.detach()) == pytest.approx(float(surrogate.detach()), rel=1e-5)
    for got, want in zip(torch.autograd.grad(out.loss, (z, q.embedding)), torch.autograd.grad(surrogate, (z, q.embedding))):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)


def test_lfq_loss_rewards_spread_usage_with_its_declared_weights():
    """loss = beta commitment + entropy_weight (per-sample entropy - diversity_gamma codebook entropy),
    weights from the options. Features and their absolute values have the same per-sample entropy
    and commitment (both even in z), so only the codebook entropy tells them apart: the spread
    batch (many codes) costs less than the one-code batch; vanilla has no such term."""
    q = make("lfq", dim=4)
    spread = features(200, 4, seed=23, shift=0.0) * 0.3
    out, options = q(spread), q.options
    parts = out.losses
    assert float(parts["commitment"]) == pytest.approx(float((spread - torch.sign(spread)).pow(2).mean()), rel=1e-6)
    expected = options.beta * parts["commitment"] + options.entropy_weight * (
        parts["per_sample_entropy"] - options.diversity_gamma * parts["codebook_entropy"])
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-6)
    collapsed = q(spread.abs())
    assert float(collapsed.losses["per_sample_entropy"]) == pytest.approx(float(parts["per_sample_entropy"]), rel=1e-6)
    assert float(collapsed.losses["commitment"]) == pytest.approx(float(parts["commitment"]), rel=1e-6)
    assert out.loss < collapsed.loss
    assert torch.unique(out.indices).numel() > 8 and torch.unique(collapsed.indices).numel() == 1


def test_fsq_optional_commitment_is_the_rounding_error_of_the_bounded_features():
    """beta (0 in the paper, so the default loss is 0) weights ||b(z)/w - sg(round(b(z))/w)||^2: the
    gradient pulls each bounded feature towards its grid level."""
    q = make("fsq", dim=4, beta=0.5)
    z = features(60, 4, seed=24).requires_grad_(True)
    out = q(z)
    scaled = q.search_space(z)
    error = (scaled - out.quantized.detach()).pow(2).mean()
    assert float(out.losses["commitment"].detach()) == pytest.approx(float(error.detach()), rel=1e-6)
    assert float(out.loss.detach()) == pytest.approx(0.5 * float(error.detach()), rel=1e-6)
    (got,) = torch.autograd.grad(out.loss, z)
    (want,) = torch.autograd.grad(0.5 * error, z)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-8)
    assert float(make("fsq", dim=4)(z).loss.detach()) == 0.0


# --- every built-in method has its mechanism pinned ------------------------------------------------

import tests.test_methods_extra as extra  # noqa: E402 - module attributes are not collected twice
import tests.test_methods_official as official  # noqa: E402

# Methods whose mechanism a test names (the flag-selected tests above cover the rest).
NAMED_MECHANISMS = {
    "vanilla": test_vanilla_weights_the_commitment_on_z_and_the_codebook_term_on_the_codes,
    "simvq": test_simvq_one_step_moves_every_code_towards_the_features,
    "online": test_online_clustering_pulls_unused_codes_onto_features_and_spares_used_ones,
    "kmeans_ema": test_kmeans_ema_starts_with_every_code_on_the_features,
    "cosine": test_cosine_codes_ignore_the_feature_norm,
    "sinkhorn": test_sinkhorn_training_assignment_spreads_features_over_the_codes,
    "lfq": test_lfq_loss_rewards_spread_usage_with_its_declared_weights,
    "fsq": test_fsq_optional_commitment_is_the_rounding_error_of_the_bounded_features,
    "bsq": official.test_bsq_entropy_term_rewards_spread_usage,
    "ibq": official.test_ibq_matches_the_official_loss_and_both_gradients,
    "rotation_trick": extra.test_rotation_trick_value_is_the_code_and_gradient_is_lambda_r,
}


def test_every_built_in_method_has_a_mechanism_test():
    """A quantizer added to ``methods/`` is not done until a test tells it apart from vanilla VQ:
    by a declared flag that selects it into a test above (relaxed gradient, EMA codebook,
    distribution matching, multi-codebook pair), or by a test naming it here."""
    built_in = {name for name in methods.available() if methods.get(name).module.startswith("methods.")}
    by_flag = set(RELAXED) | set(EMA_LIKE) | set(MATCHING) | set(MULTI)
    missing = sorted(built_in - by_flag - set(NAMED_MECHANISMS))
    assert not missing, f"no test pins the mechanism of {missing}: add one to tests/test_methods_mechanism.py"
    assert set(NAMED_MECHANISMS) <= built_in


def test_the_mutation_check_covers_every_built_in_method_and_still_targets_its_code():
    """``make mutation`` (tools/mutation.py) edits each method's loss or update and runs its tests: every
    built-in method has mutants, and each mutant's text is still in its file exactly once (an edit of
    the code that moved it would otherwise only show when the check runs)."""
    from tools.mutation import MUTANTS, ROOT

    built_in = {name for name in methods.available() if methods.get(name).module.startswith("methods.")}
    assert built_in <= {mutant.method for mutant in MUTANTS}
    for mutant in MUTANTS:
        assert (ROOT / mutant.path).read_text().count(mutant.old) == 1, (mutant.method, mutant.what)
