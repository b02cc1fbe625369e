"""Reference tests of the quantizers the field uses: residual, grouped, cosine, lfq, bsq, ibq, and
the per-level code-usage helper, against brute-force computations written out here."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import methods


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def build(name: str, dim: int, codebook_size: int, seed: int = 0, **options) -> methods.Quantizer:
    return methods.build(name, dim=dim, codebook_size=codebook_size, generator=torch.Generator().manual_seed(seed), **options)


# --- code usage -----------------------------------------------------------------------------------

def test_code_usage_counts_each_level_and_the_joint_tuple():
    indices = torch.tensor([[0, 1], [0, 1], [2, -1], [1, 3]])
    usage = methods.code_usage(indices, (4, 4))
    assert [c.tolist() for c in usage.counts] == [[2, 1, 1, 0], [0, 2, 0, 1]]
    assert usage.utilization == (0.75, 0.5)
    assert usage.perplexity[0] == pytest.approx(math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))
    assert usage.perplexity[1] == pytest.approx(math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))))
    assert usage.overall_utilization == 5 / 8
    assert usage.joint_perplexity == pytest.approx(math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))
    with pytest.raises(ValueError, match="indices"):
        methods.code_usage(indices, (4,))
    with pytest.raises(ValueError, match="indices"):
        methods.code_usage(torch.tensor([[5]]), (4,))


def test_quantizers_describe_their_code_structure():
    assert build("vanilla", 4, 256).bits_per_token == 8
    residual = build("residual", 4, 256, levels=3)
    assert residual.level_codebook_sizes == (256,) * 3 and residual.bits_per_token == 24
    grouped = build("grouped", 6, 16, groups=3)
    assert grouped.num_levels == 3 and grouped.bits_per_token == 12
    out = grouped(randn(10, 6))
    usage = grouped.code_usage(out.indices)
    assert len(usage.counts) == 3 and all(int(c.sum()) == 10 for c in usage.counts)
    assert methods.get("cosine").error_space == methods.get("bsq").error_space == "sphere"
    assert methods.get("vanilla").error_space == methods.get("lfq").error_space == "euclidean"


# --- residual -------------------------------------------------------------------------------------

def test_residual_quantizes_the_residual_level_by_level():
    q = build("residual", 3, 8, levels=3).eval()
    z = randn(100, 3, seed=1)
    out = q(z)
    residual, total = z.clone(), torch.zeros_like(z)
    for level in range(3):
        codebook = q.embedding[level].detach()
        index = torch.cdist(residual, codebook).argmin(dim=1)
        assert torch.equal(out.indices[:, level], index)
        total, residual = total + codebook[index], residual - codebook[index]
    assert torch.allclose(out.quantized, total, atol=1e-6)
    errors = [(z - q.indices_to_codes(torch.cat([out.indices[:, :n], -torch.ones(100, 3 - n, dtype=torch.long)], 1))).pow(2).sum(1).mean() for n in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]  # each level refines (nearest codes include ~0 here)


def test_residual_with_one_level_is_vanilla_vq():
    q = build("residual", 4, 16, levels=1, seed=3)
    vanilla = build("vanilla", 4, 16, seed=3)
    z = randn(64, 4, seed=2)
    out, reference = q(z), vanilla(z)
    assert torch.equal(q.embedding[0], vanilla.embedding)
    assert torch.equal(out.indices[:, 0], reference.indices) and torch.allclose(out.loss, reference.loss)


def test_residual_shared_codebook_and_quantizer_dropout():
    shared = build("residual", 4, 16, levels=3, shared_codebook=True)
    assert shared.embedding.shape == (1, 16, 4) and torch.equal(shared.codebook[0], shared.codebook[2])
    q = build("residual", 4, 16, levels=4, quantizer_dropout=1.0, seed=1)
    z = randn(500, 4, seed=4)
    train = q.train()(z).indices
    assert (train[:, 0] >= 0).all()  # the first level is always used
    used = (train >= 0).sum(dim=1)
    assert set(used.tolist()) == {1, 2, 3, 4}
    assert ((train >= 0).long().diff(dim=1) <= 0).all()  # a prefix of the levels
    assert (q.eval()(z).indices >= 0).all()  # no dropout in evaluation
    with pytest.raises(ValueError, match="levels"):
        build("residual", 4, 16, levels=0)
    with pytest.raises(ValueError, match="quantizer_dropout"):
        build("residual", 4, 16, quantizer_dropout=1.5)


# --- grouped --------------------------------------------------------------------------------------

def test_grouped_is_the_nearest_code_of_the_product_codebook():
    q = build("grouped", 4, 5, groups=2).eval()
    z = randn(200, 4, seed=5)
    out = q(z)
    product = torch.stack([torch.cat([q.codebook[0, a], q.codebook[1, b]]) for a, b in itertools.product(range(5), range(5))])
    nearest = torch.cdist(z, product.detach()).argmin(dim=1)
    assert torch.equal(out.indices[:, 0] * 5 + out.indices[:, 1], nearest)
    assert torch.allclose(out.quantized, product.detach()[nearest])
    with pytest.raises(ValueError, match="groups"):
        build("grouped", 6, 8, groups=4)


# --- cosine ---------------------------------------------------------------------------------------

def test_cosine_searches_by_cosine_similarity_with_an_optional_factorised_space():
    q = build("cosine", 6, 32).eval()
    z = randn(100, 6, seed=6) * 5
    out = q(z)
    similarity = F.normalize(z, dim=1) @ F.normalize(q.embedding.detach(), dim=1).T
    assert torch.equal(out.indices, similarity.argmax(dim=1))
    assert torch.allclose(out.quantized.norm(dim=1), torch.ones(100))
    low = build("cosine", 6, 32, code_dim=2).eval()
    out = low(z)
    u = F.normalize(low.project_in(z), dim=1)
    assert torch.equal(out.indices, (u @ low.sphere_codebook.T).argmax(dim=1))
    assert torch.allclose(out.quantized, low.project_out(low.sphere_codebook[out.indices]))
    assert out.quantized.shape == z.shape and low.sphere_codebook.shape == (32, 2)


# --- lfq and bsq ----------------------------------------------------------------------------------

def test_lfq_is_the_sign_with_the_exact_entropy_penalty():
    dim, tau = 5, 100.0
    q = build("lfq", dim, 2**dim)
    z = randn(300, dim, seed=7) * 0.02
    out = q(z)
    assert torch.equal(out.quantized, torch.where(z > 0, 1.0, -1.0))
    assert torch.equal(q.codebook[out.indices], out.quantized)
    # brute force: softmax over all 2^d codes of 2 tau <z, c>
    p = (2 * tau * z.double() @ q.codebook.double().T).softmax(dim=1)
    per_sample = -(p * p.log()).sum(1).mean()
    mean = p.mean(0)
    codebook_entropy = -(mean * mean.log()).sum()
    assert float(out.losses["per_sample_entropy"]) == pytest.approx(float(per_sample), rel=1e-4)
    assert float(out.losses["codebook_entropy"]) == pytest.approx(float(codebook_entropy), rel=1e-4)
    with pytest.raises(ValueError, match="codebook_size"):
        build("lfq", 4, 24)


def test_bsq_is_the_sign_on_the_sphere_with_the_factorised_entropy():
    dim = 6
    q = build("bsq", dim, 2**dim)
    z = randn(300, dim, seed=8) * 3
    out = q(z)
    u = F.normalize(z, dim=1)
    assert torch.equal(out.quantized, torch.where(u > 0, 1.0, -1.0) / dim**0.5)
    assert torch.allclose(out.quantized.norm(dim=1), torch.ones(300))
    p = torch.sigmoid(4 * u.double() / dim**0.5)
    h = lambda x: -(x * x.log() + (1 - x) * (1 - x).log())  # noqa: E731
    assert float(out.losses["per_sample_entropy"]) == pytest.approx(float(h(p).sum(1).mean()), rel=1e-5)
    assert float(out.losses["codebook_entropy"]) == pytest.approx(float(h(p.mean(0)).sum()), rel=1e-5)
    with pytest.raises(ValueError, match="codebook_size"):
        build("bsq", 6, 63)


# --- ibq ------------------------------------------------------------------------------------------

def test_ibq_passes_gradient_to_every_code_through_the_softmax():
    q = build("ibq", 4, 12)
    z = randn(50, 4, seed=9).requires_grad_(True)
    out = q(z)
    assert torch.equal(out.indices, torch.cdist(z.detach(), q.codebook.detach()).argmin(dim=1))
    (out.quantized * randn(50, 4, seed=10)).sum().backward()
    assert (q.embedding.grad.abs().sum(dim=1) > 0).all()  # every code, chosen or not
    soft = (z.detach() @ q.codebook.detach().T - q.codebook.detach().pow(2).sum(1) / 2).softmax(dim=1)
    assert torch.allclose(q.relaxation(z).detach(), soft @ q.codebook.detach(), atol=1e-6)
