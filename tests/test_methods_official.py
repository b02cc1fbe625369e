"""Parity of IBQ and BSQ with their official code, on the loss value, the gradient to z and the
gradient to the codebook.

Each reference below restates the official formula as its code computes it, written from the
official repositories (IBQ: TencentARC/SEED-Voken, src/IBQ/modules/vqvae/quantize.py,
``IndexPropagationQuantize.forward``; BSQ: zhaoyue-zephyrus/bsq-vit,
transcoder/models/quantizer/bsq.py, ``BinarySphericalQuantizer`` with group_size 1, analytical
per-sample entropy, l2-normalised input and output, as its ImageNet configs), independently of
our implementation's helpers. Every deliberate difference is pinned by a test here.
"""
from __future__ import annotations

import pytest
import torch

import methods


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def build(name: str, dim: int, codebook_size: int, **options) -> methods.Quantizer:
    q = methods.build(name, dim=dim, codebook_size=codebook_size, generator=torch.Generator().manual_seed(0), **options)
    return q.double()


# --- IBQ ------------------------------------------------------------------------------------------

def official_ibq(z, embedding, beta=0.25, bias=False):
    """IndexPropagationQuantize.forward on flat z (N, d), embedding (K, d): logits <z, e>, a
    straight-through one-hot through the softmax, three squared errors. ``bias`` subtracts
    ||e||^2 / 2 from the logits (our default, the one deliberate change)."""
    logits = z @ embedding.T
    if bias:
        logits = logits - embedding.pow(2).sum(1) / 2
    soft = torch.softmax(logits, dim=1)
    index = soft.max(dim=1, keepdim=True)[1]
    hard = torch.zeros_like(logits).scatter_(1, index, 1.0)
    one_hot = hard - soft.detach() + soft
    z_q = one_hot @ embedding
    z_q_2 = hard @ embedding
    loss = torch.mean((z_q - z) ** 2) + torch.mean((z_q_2.detach() - z) ** 2) + beta * torch.mean((z_q_2 - z.detach()) ** 2)
    return z_q, loss, index.flatten()


def gradients(z, codebook, quantized, loss, weights):
    """d/dz and d/dC of loss + <quantized, w> (w: a downstream gradient, e.g. a decoder's)."""
    return torch.autograd.grad(loss + (quantized * weights).sum(), (z, codebook))


@pytest.mark.parametrize("logits", ["dot", "distance"])
def test_ibq_matches_the_official_loss_and_both_gradients(logits):
    """logits="dot" is the official code exactly; "distance" (the default) is the official formula
    on logits <z, e> - ||e||^2 / 2 (the hard code is the nearest; the pinned deviation)."""
    dim, size = 6, 40
    q = build("ibq", dim, size, logits=logits)
    z = randn(200, dim, seed=1).requires_grad_(True)
    weights = randn(200, dim, seed=2)
    out = q(z)
    grad_z, grad_c = gradients(z, q.embedding, out.quantized, out.loss, weights)
    embedding = q.embedding.detach().clone().requires_grad_(True)
    z_q, loss, index = official_ibq(z, embedding, beta=0.25, bias=logits == "distance")
    ref_z, ref_c = gradients(z, embedding, z_q, loss, weights)
    assert torch.equal(out.indices, index)
    assert torch.allclose(out.quantized, z_q, atol=1e-12)
    assert float(out.loss.detach()) == pytest.approx(float(loss.detach()), rel=1e-12)
    assert torch.allclose(grad_z, ref_z, rtol=1e-9, atol=1e-12)
    assert torch.allclose(grad_c, ref_c, rtol=1e-9, atol=1e-12)
    assert (grad_c.abs().sum(dim=1) > 0).all()  # every code trains through the softmax


@pytest.mark.parametrize("logits", ["dot", "distance"])
def test_ibq_backward_in_row_blocks_matches_the_official_gradients(monkeypatch, logits):
    """The softmax lives only in the backward, recomputed in row blocks: blocks of 7 rows (the last
    one short) give the official gradients, at a temperature, with codes of unequal norms."""
    import methods.ibq

    dim, size, rows = 5, 30, 61
    monkeypatch.setattr(methods.ibq, "SOFT_BLOCK_ELEMENTS", 7 * size)
    q = build("ibq", dim, size, logits=logits, temperature=0.5)
    with torch.no_grad():
        q.embedding.mul_(torch.linspace(0.5, 2.0, size, dtype=torch.float64)[:, None])
    z = randn(rows, dim, seed=11).requires_grad_(True)
    weights = randn(rows, dim, seed=12)
    out = q(z)
    grad_z, grad_c = gradients(z, q.embedding, out.quantized, out.loss, weights)
    embedding = q.embedding.detach().clone().requires_grad_(True)
    z_q, loss, index = official_ibq(z / 0.5 ** 0.5, embedding / 0.5 ** 0.5, bias=logits == "distance")
    # the official code has no temperature: l / T = <z / sqrt(T), e / sqrt(T)> (- ||e / sqrt(T)||^2 / 2)
    # gives its logits; its z_q and loss are then rescaled back to the unscaled z and codes
    z_q, loss = z_q * 0.5 ** 0.5, loss * 0.5
    ref_z, ref_c = gradients(z, embedding, z_q, loss, weights)
    assert torch.equal(out.indices, index)
    assert float(out.loss.detach()) == pytest.approx(float(loss.detach()), rel=1e-12)
    assert torch.allclose(grad_z, ref_z, rtol=1e-9, atol=1e-12)
    assert torch.allclose(grad_c, ref_c, rtol=1e-9, atol=1e-12)


def test_ibq_distance_logits_choose_the_nearest_code_where_the_official_dot_may_not():
    """The pinned deviation: the official argmax <z, e> is not the nearest code when norms differ
    (it equals it when every code has the same norm)."""
    dim, size = 4, 64
    z = randn(500, dim, seed=3)
    ours, official = build("ibq", dim, size), build("ibq", dim, size, logits="dot")
    nearest = torch.cdist(z, ours.embedding.detach()).argmin(dim=1)
    assert torch.equal(ours(z).indices, nearest) and torch.equal(ours.search(z), nearest)
    assert (official(z).indices != nearest).float().mean() > 0.1
    with torch.no_grad():
        official.embedding.copy_(torch.nn.functional.normalize(official.embedding, dim=1))
        ours.embedding.copy_(official.embedding)
    assert torch.equal(official(z).indices, ours(z).indices)


def test_ibq_beta_weights_the_codebook_term_on_the_hard_code():
    """The official beta weights ||h C - sg(z)||^2 (0.25 by default), the commitment ||sg(h C) - z||^2
    and the soft term have weight 1."""
    q = build("ibq", 4, 16)
    assert q.loss_weights() == {"soft": 1.0, "commitment": 1.0, "codebook": 0.25}
    z = randn(50, 4, seed=4)
    out = q(z)
    codes = q.embedding.detach()[out.indices]
    assert float(out.losses["codebook"]) == pytest.approx(float((codes - z).pow(2).mean()))
    assert float(out.losses["soft"]) == pytest.approx(float((codes - z).pow(2).mean()))


# --- BSQ ------------------------------------------------------------------------------------------

def official_bsq(z, beta=0.0, gamma0=1.0, gamma=1.0, zeta=1.0, inv_temperature=1.0):
    """BinarySphericalQuantizer.forward (group_size 1, analytical per-sample entropy, post-quantizer
    l2 norm) on z (N, d) after the model's F.normalize: returns (z_q, loss)."""
    dim = z.shape[1]
    u = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
    zhat = torch.where(u > 0, 1.0, -1.0).to(u.dtype)
    z_q = u + (zhat - u).detach()
    p = torch.sigmoid(-4 * u / dim**0.5 * inv_temperature)
    prob = torch.stack([p, 1 - p], dim=-1)
    per_sample = (-(prob * torch.log(prob + 1e-8)).sum(-1)).sum(-1).mean()
    group_codebook = torch.tensor([[-1.0], [1.0]], dtype=u.dtype) / dim**0.5
    distance = -2 * torch.einsum("ngc,kc->ngk", u[..., None], group_codebook)
    group_prob = (-distance * inv_temperature).softmax(dim=-1)
    avg_prob = group_prob.mean(dim=0)
    codebook_entropy = (-(avg_prob * torch.log(avg_prob + 1e-8)).sum(-1)).sum()
    z_q = z_q / dim**0.5
    commit = beta * torch.mean(((z_q.detach() - u) ** 2).sum(dim=-1))
    return z_q, commit + zeta * (gamma0 * per_sample - gamma * codebook_entropy) / inv_temperature


@pytest.mark.parametrize("options", [{}, {"beta": 0.25, "gamma0": 0.5, "inv_temperature": 2.0}])
def test_bsq_matches_the_official_loss_and_gradient(options):
    """entropy_weight = 1 is the official quantizer's zeta = 1 (our default 0.1 adds the official
    training loss's codebook_weight 0.1); the codebook is fixed, so z is the only gradient."""
    dim = 8
    q = build("bsq", dim, 2**dim, entropy_weight=1.0, **options)
    z = (randn(300, dim, seed=5) * 0.3).requires_grad_(True)
    weights = randn(300, dim, seed=6)
    out = q(z)
    (grad,) = torch.autograd.grad(out.loss + (out.quantized * weights).sum(), z)
    z_q, loss = official_bsq(z, **options)
    (ref,) = torch.autograd.grad(loss + (z_q * weights).sum(), z)
    # BSQ holds no state, so it computes in float32 (the working dtype); the official p log(p + 1e-8)
    # against our 0 log 0 = 0 differs by ~1e-8 relative
    assert torch.allclose(out.quantized.detach(), z_q.detach(), atol=1e-7)
    assert float(out.loss) == pytest.approx(float(loss), rel=1e-5)
    assert torch.allclose(grad, ref, rtol=1e-4, atol=1e-6)
    assert not list(q.parameters())


def test_bsq_straight_through_is_scaled_onto_the_sphere_and_the_defaults_are_official():
    dim = 9
    q = build("bsq", dim, 2**dim)
    assert q.options.beta == 0.0 and q.options.entropy_weight == pytest.approx(0.1)
    z = randn(20, dim, seed=7).requires_grad_(True)
    (grad,) = torch.autograd.grad(q(z).quantized.sum(), z)
    (unit,) = torch.autograd.grad(torch.nn.functional.normalize(z, dim=1).sum(), z)
    assert torch.allclose(grad, unit / dim**0.5, rtol=1e-4, atol=1e-6)  # float32 against float64


def test_bsq_entropy_term_rewards_spread_usage():
    """The codebook entropy enters with a minus sign: features all of one sign (one code) cost
    more than features spread over the bits."""
    dim = 6
    q = build("bsq", dim, 2**dim)
    spread = randn(400, dim, seed=8)
    collapsed = spread.abs() + 0.1
    assert q(spread).loss < q(collapsed).loss
    assert float(q(spread).losses["codebook_entropy"]) > float(q(collapsed).losses["codebook_entropy"])
