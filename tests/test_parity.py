"""Parity with vector-quantize-pytorch (1.32.0) and with the papers' formulas written out here.

Same inputs and weights must give the same outputs, indices and gradients within the stated
tolerances (float32 throughout; 1e-5 where both sides evaluate the same expression in a
different order, looser where one side materialises an N x K softmax). Where ours deliberately
differs the test pins the difference:
- residual: the peer's quantized output passes the identity once per level (dq/dz = L I), ours
  the straight-through identity of RQ-VAE; the peer's learnable-codebook loss is one term
  w ||q - r||^2 (value w mse), ours beta * commitment + codebook_weight * codebook (value 2 w mse
  at beta = codebook_weight = w): equal gradients, value twice the peer's.
- lfq: the peer clamps probabilities at 1e-5 inside its entropy, ours is exact (xlogy).
"""
from __future__ import annotations

import torch
from vector_quantize_pytorch import FSQ, LFQ, ResidualVQ, SimVQ
from vector_quantize_pytorch.vector_quantize_pytorch import rotate_to

import methods


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def grad_of(output: torch.Tensor, wrt: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad((output * weights).sum(), wrt, retain_graph=True)
    return grad


# --- fsq ------------------------------------------------------------------------------------------

def test_fsq_matches_the_peer():
    levels = (8, 5, 5, 5)
    ours = methods.build("fsq", dim=4, codebook_size=1000, levels=levels)
    peer = FSQ(levels=list(levels))
    z = (randn(2, 300, 4) * 2).requires_grad_(True)
    weights = randn(2, 300, 4, seed=1)
    out = ours(z)
    peer_q, peer_indices = peer(z)
    assert torch.equal(out.indices, peer_indices.long())
    assert torch.allclose(out.quantized, peer_q, atol=1e-6)
    assert torch.allclose(grad_of(out.quantized, z, weights), grad_of(peer_q, z, weights), rtol=1e-5, atol=1e-6)
    assert torch.allclose(ours.codebook, peer.implicit_codebook, atol=1e-6)


# --- lfq ------------------------------------------------------------------------------------------

def test_lfq_matches_the_peer():
    dim = 6
    ours = methods.build("lfq", dim=dim, codebook_size=2**dim, beta=0.0).train()
    peer = LFQ(dim=dim, codebook_size=2**dim, entropy_loss_weight=0.1, diversity_gamma=1.0).train()
    # small features keep the tau = 100 softmax unsaturated, so the entropies carry gradient
    z = (randn(1, 500, dim) * 0.01).requires_grad_(True)
    weights = randn(1, 500, dim, seed=1)
    out = ours(z)
    (peer_q, peer_indices, peer_loss), parts = peer(z, return_loss_breakdown=True)
    assert torch.equal(out.indices, peer_indices.long())
    assert torch.equal(out.quantized.detach(), peer_q.detach())
    assert torch.allclose(grad_of(out.quantized, z, weights), grad_of(peer_q, z, weights))
    assert torch.allclose(out.losses["per_sample_entropy"], parts.per_sample_entropy, rtol=1e-3, atol=1e-4)
    assert torch.allclose(out.losses["codebook_entropy"], parts.batch_entropy, rtol=1e-4, atol=1e-4)
    assert torch.allclose(out.loss, peer_loss, rtol=1e-3, atol=1e-4)
    (ours_grad,) = torch.autograd.grad(out.loss, z)
    (peer_grad,) = torch.autograd.grad(peer_loss, z)
    assert torch.allclose(ours_grad, peer_grad, rtol=1e-2, atol=1e-6)
    assert torch.equal(ours.codebook, peer.codebook)


# --- residual -------------------------------------------------------------------------------------

def test_residual_matches_the_peer_up_to_the_pinned_differences():
    dim, k, levels, weight = 4, 16, 3, 0.5
    ours = methods.build("residual", dim=dim, codebook_size=k, levels=levels, beta=weight, codebook_weight=weight,
                         generator=torch.Generator().manual_seed(0))
    peer = ResidualVQ(dim=dim, num_quantizers=levels, codebook_size=k, learnable_codebook=True, ema_update=False,
                      rotation_trick=False, commitment_weight=weight)
    with torch.no_grad():
        for level, layer in enumerate(peer.layers):
            layer.codebook = ours.embedding[level]
    z = randn(1, 200, dim, seed=2).requires_grad_(True)
    weights = randn(1, 200, dim, seed=3)
    out = ours(z)
    peer_q, peer_indices, peer_losses = peer(z)
    assert torch.equal(out.indices, peer_indices)
    assert torch.allclose(out.quantized, peer_q, atol=1e-6)
    # pinned: the peer's gradient to z is L x the identity, ours the identity
    assert torch.allclose(grad_of(peer_q, z, weights), levels * grad_of(out.quantized, z, weights))
    assert torch.allclose(grad_of(out.quantized, z, weights), weights)
    # pinned: loss value 2 x the peer's, gradients to z and to every codebook equal
    assert torch.allclose(out.loss, 2 * peer_losses.sum(), rtol=1e-5)
    ours_grads = torch.autograd.grad(out.loss, [z, ours.embedding])
    peer_grads = torch.autograd.grad(peer_losses.sum(), [z] + [layer._codebook.embed for layer in peer.layers])
    assert torch.allclose(ours_grads[0], peer_grads[0], rtol=1e-4, atol=1e-7)
    assert torch.allclose(ours_grads[1], torch.cat(peer_grads[1:]), rtol=1e-4, atol=1e-7)


# --- simvq ----------------------------------------------------------------------------------------

def test_simvq_matches_the_peer():
    dim, k = 6, 32
    ours = methods.build("simvq", dim=dim, codebook_size=k, generator=torch.Generator().manual_seed(0))
    transform = torch.nn.Linear(dim, dim, bias=True)
    peer = SimVQ(dim=dim, codebook_size=k, codebook_transform=transform, rotation_trick=False)
    with torch.no_grad():
        transform.weight.copy_(ours.projection.weight)
        transform.bias.copy_(ours.projection.bias)
        peer.frozen_codebook.copy_(ours.basis)
    z = randn(1, 300, dim, seed=4).requires_grad_(True)
    weights = randn(1, 300, dim, seed=5)
    out = ours(z)
    peer_q, peer_indices, peer_loss = peer(z)
    assert torch.equal(out.indices, peer_indices)
    assert torch.allclose(out.quantized, peer_q, atol=1e-6)
    assert torch.allclose(grad_of(out.quantized, z, weights), grad_of(peer_q, z, weights))
    assert torch.allclose(out.loss, peer_loss, rtol=1e-5)  # codebook + 0.25 commitment on both sides
    ours_grads = torch.autograd.grad(out.loss, [z, ours.projection.weight, ours.projection.bias])
    peer_grads = torch.autograd.grad(peer_loss, [z, transform.weight, transform.bias])
    for a, b in zip(ours_grads, peer_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


# --- rotation trick -------------------------------------------------------------------------------

def rotation_trick_jacobian(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Fifty et al. (arXiv:2410.06424): q = sg(||e|| / ||z|| R) z with
    R = I - 2 r r^T + 2 e^ z^^T, r = (z^ + e^) / ||z^ + e^||; returns lambda R per row (float64)."""
    z, e = z.double(), e.double()
    z_hat = z / z.norm(dim=1, keepdim=True)
    e_hat = e / e.norm(dim=1, keepdim=True)
    r = (z_hat + e_hat) / (z_hat + e_hat).norm(dim=1, keepdim=True)
    eye = torch.eye(z.shape[1], dtype=torch.float64).expand(z.shape[0], -1, -1)
    rotation = eye - 2 * r[:, :, None] * r[:, None, :] + 2 * e_hat[:, :, None] * z_hat[:, None, :]
    return (e.norm(dim=1) / z.norm(dim=1))[:, None, None] * rotation


def test_rotation_trick_is_the_official_formula_and_the_peers():
    dim = 5
    q = methods.build("rotation_trick", dim=dim, codebook_size=16, generator=torch.Generator().manual_seed(0))
    z = randn(40, dim, seed=6).requires_grad_(True)
    out = q(z)
    codes = q.codebook.detach()[out.indices]
    jacobian = torch.stack([torch.autograd.grad(out.quantized[:, i].sum(), z, retain_graph=True)[0] for i in range(dim)], dim=1)
    expected = rotation_trick_jacobian(z.detach(), codes)
    assert torch.allclose(jacobian.double(), expected, rtol=1e-4, atol=1e-5)
    assert torch.allclose(torch.einsum("nij,nj->ni", expected, z.detach().double()), codes.double(), atol=1e-5)
    # the peer's rotate_to: same gradient
    peer = rotate_to(z, codes)
    weights = randn(40, dim, seed=7)
    assert torch.allclose(grad_of(out.quantized, z, weights), grad_of(peer, z, weights), rtol=1e-4, atol=1e-5)


# --- wasserstein ----------------------------------------------------------------------------------

def authors_wasserstein(features: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The authors' loss (VQ-Research/Wasserstein-VQ): both sides divided by the max per-dim
    feature std; sqrt(||dmu||^2 + relu(tr(S_z + S_c) - 2 sum sqrt(eig(S_z^1/2 S_c S_z^1/2))) + 1e-10),
    square roots by eigh with eigenvalues clamped relu(.) + 1e-8. float64; population covariances."""
    features, codebook = features.double(), codebook.double()
    scale = features.std(dim=0, unbiased=False).max()
    features, codebook = features / scale, codebook / scale
    mu_z, mu_c = features.mean(0), codebook.mean(0)
    s_z = (features - mu_z).T @ (features - mu_z) / features.shape[0]
    s_c = (codebook - mu_c).T @ (codebook - mu_c) / codebook.shape[0]
    w, v = torch.linalg.eigh(s_z)
    s_z_half = v @ torch.diag(torch.sqrt(torch.relu(w) + 1e-8)) @ v.T
    cross = torch.linalg.eigvalsh(s_z_half @ s_c @ s_z_half)
    trace = torch.relu(torch.trace(s_z + s_c) - 2 * torch.sqrt(torch.relu(cross) + 1e-8).sum())
    return torch.sqrt((mu_z - mu_c).pow(2).sum() + trace + 1e-10)


def test_wasserstein_matches_the_authors_formula():
    q = methods.build("wasserstein", dim=4, codebook_size=64, queue_size=4096, generator=torch.Generator().manual_seed(0))
    z = randn(512, 4, seed=8) * torch.tensor([1.0, 2.0, 0.5, 1.5]) + 0.7
    out = q.train()(z)
    expected = authors_wasserstein(z, q.codebook.detach())
    # the authors' 1e-8 clamps shift the value by O(d sqrt(1e-8)); ours has none
    assert abs(float(out.losses["wasserstein"].detach()) - float(expected)) < 1e-3 * max(1.0, float(expected))
    codebook = q.codebook.detach().double().requires_grad_(True)
    (expected_grad,) = torch.autograd.grad(authors_wasserstein(z, codebook), codebook)
    (ours_grad,) = torch.autograd.grad(out.losses["wasserstein"], q.embedding)
    assert torch.allclose(ours_grad.double(), expected_grad, rtol=1e-2, atol=1e-5)


# --- vanilla under the authors' synthetic loop ----------------------------------------------------

def authors_vanilla_trajectory(codebook: torch.Tensor, batches: list[torch.Tensor]) -> torch.Tensor:
    """The Wasserstein-VQ authors' synthetic vanilla_quantizer loop, written out: dense squared
    distances by addmm, argmin, loss ||e_k - sg(z)||^2 summed over d and averaged over the batch,
    SGD lr 1.0 momentum 0.9 on an nn.Embedding; returns the codebook after the last batch."""
    embedding = torch.nn.Embedding(*codebook.shape)
    embedding.weight.data.copy_(codebook)
    optimizer = torch.optim.SGD(embedding.parameters(), lr=1.0, momentum=0.9)
    for z in batches:
        weight = embedding.weight.data
        distance = z.square().sum(1, keepdim=True) + weight.square().sum(1)
        distance.addmm_(z, weight.T, alpha=-2, beta=1)
        loss = (embedding(distance.argmin(1)) - z).square().sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return embedding.weight.detach()


def test_vanilla_with_the_reproduction_options_follows_the_authors_loop():
    # the options of the reproduction profile's vanilla cells and our training step (Trainer:
    # forward, backward, SGD with momentum): same initial codes and batches, same codebook after
    # 60 steps, in the collapsing regime (mu 4) where only a few codes move
    from benchmark.experiments.config import RunConfig
    from benchmark.experiments.training import Trainer, make_optimizer

    config = RunConfig(method="vanilla", codebook_size=512, dim=8, steps=60, batch_size=2000, optimizer="sgd",
                       codebook_lr=1.0, momentum=0.9,
                       method_options={"beta": 0.0, "codebook_weight": 1.0, "reduction": "sum"})
    ours = methods.build("vanilla", dim=8, codebook_size=512, generator=torch.Generator().manual_seed(0),
                         **config.method_options)
    start = ours.codebook.detach().clone()
    batches = [randn(2000, 8, seed=100 + step) + 4.0 for step in range(config.steps)]
    trainer = Trainer(config, ours.train(), make_optimizer(config, ours), None, False)
    for step, z in enumerate(batches, start=1):
        out = ours(z)
        trainer.step(step, out.loss, out)
    trainer.close()
    expected = authors_vanilla_trajectory(start, batches)
    moved = (expected - start).norm(dim=1) > 0
    assert 1 <= int(moved.sum()) < 512  # the regime of the cell: a few live codes, the rest never chosen
    assert torch.allclose(ours.codebook.detach(), expected, atol=1e-5)
