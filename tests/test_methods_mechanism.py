"""Each method's mechanism, on a tiny setting where it tells the method apart from vanilla VQ.

Selected by declared flags and loss terms, never by names: a relaxed gradient trains codes no
feature chose; an EMA codebook moves to the features without an optimizer. (An entropy term's
preference for spread usage: tests/test_methods_official.py for BSQ, test_methods_field for LFQ.)
"""
from __future__ import annotations

import pytest
import torch

import methods
from methods.testing import features, make

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
