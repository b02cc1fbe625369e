"""The vector-quantize-pytorch adapters (plugins/vqbench_vqp) pass the whole conformance suite.

Installed (``make venv`` installs the plugin), they are registered through the ``vqbench.methods``
entry points and ``methods.available()`` lists them; in a venv without the plugin this module
registers the same classes from the repository's plugin folder for the duration of the tests.
"""
from __future__ import annotations

import importlib.util
import sys

import pytest

import methods
from benchmark import paths
from tests.test_methods_conformance import CHECKS

ADAPTERS = {
    "vqp_vector_quantize": "VQPVectorQuantize",
    "vqp_residual": "VQPResidual",
    "vqp_fsq": "VQPFSQ",
    "vqp_lfq": "VQPLFQ",
    "vqp_simvq": "VQPSimVQ",
}
PLUGIN = paths.REPO_ROOT / "plugins" / "vqbench_vqp"


def adapters_module():
    try:
        import vqbench_vqp.adapters as module  # installed distribution
    except ImportError:
        sys.path.insert(0, str(PLUGIN))
        try:
            import vqbench_vqp.adapters as module
        finally:
            sys.path.remove(str(PLUGIN))
    return module


@pytest.fixture(scope="module", autouse=True)
def registered():
    module = adapters_module()
    added = []
    for name, class_name in ADAPTERS.items():
        if name not in methods.available():
            methods.register(name)(getattr(module, class_name))
            added.append(name)
    yield
    for name in added:
        methods.unregister(name)


def test_the_distribution_declares_every_adapter_as_an_entry_point():
    text = (PLUGIN / "pyproject.toml").read_text()
    assert '[project.entry-points."vqbench.methods"]' in text
    for name, class_name in ADAPTERS.items():
        assert f'{name} = "vqbench_vqp.adapters:{class_name}"' in text


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_adapter_conformance(name, check):
    check(name)


# The peer's own total loss for an adapter's module on x (1, N, d), and the adapter's options that
# make every weight differ from 1 (so a dropped, flipped or swapped weight changes the total).
PEER_TOTALS = {
    "vqp_vector_quantize": ({"commitment_weight": 0.7, "decay": 0.9}, lambda q, x: q.module(x)[2]),
    "vqp_residual": ({"commitment_weight": 0.7, "decay": 0.9, "levels": 2}, lambda q, x: q.module(x)[2].sum()),
    "vqp_lfq": ({"entropy_weight": 0.3, "diversity_gamma": 0.5, "commitment_weight": 0.2},
                lambda q, x: q.module(x)[2]),
    # the peer's SimVQ has no overall weight: the adapter's commitment_weight scales its one loss
    "vqp_simvq": ({"commitment_weight": 0.7, "input_to_quantize_weight": 0.4},
                  lambda q, x: q.options.commitment_weight * q.module(x)[2]),
}


@pytest.mark.parametrize("name", sorted(PEER_TOTALS))
def test_adapter_loss_is_the_peers_own_total_loss(name):
    """The adapter re-weights the peer's loss parts itself (``loss_weights``); its total and its
    gradient to the features equal the total the peer computes with the same weights, on a twin
    module in the same state (a training forward may update an EMA codebook)."""
    import copy

    import torch

    options, peer_total = PEER_TOTALS[name]
    dim, size = (4, 16) if name == "vqp_lfq" else (8, 32)
    q = methods.build(name, dim=dim, codebook_size=size, generator=torch.Generator().manual_seed(0), **options).train()
    twin = copy.deepcopy(q)
    z = torch.randn(64, dim, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    z_twin = z.detach().clone().requires_grad_(True)
    out = q(z)
    expected = peer_total(twin, z_twin[None])
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5, abs=1e-7)
    (got,) = torch.autograd.grad(out.loss, z)
    (want,) = torch.autograd.grad(expected, z_twin)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-7)
    assert got.abs().sum() > 0


# Where each adapter option lands in the peer's module (a dotted attribute path).
PEER_ATTRIBUTES = {
    "vqp_vector_quantize": {"commitment_weight": "commitment_weight", "decay": "_codebook.decay"},
    "vqp_residual": {"commitment_weight": "layers.0.commitment_weight", "decay": "layers.1._codebook.decay",
                     "levels": "num_quantizers"},
    "vqp_lfq": {"entropy_weight": "entropy_loss_weight", "diversity_gamma": "diversity_gamma",
                "commitment_weight": "commitment_loss_weight"},
    "vqp_simvq": {"input_to_quantize_weight": "input_to_quantize_commit_loss_weight"},
}


@pytest.mark.parametrize("name", sorted(PEER_ATTRIBUTES))
def test_adapter_options_reach_the_peer_module(name):
    """Every option the adapter hands to the peer is the one the peer runs with (a dropped keyword
    would leave the peer's default in place while the run records the option)."""
    import operator

    options, _ = PEER_TOTALS[name]
    dim, size = (4, 16) if name == "vqp_lfq" else (8, 32)
    q = methods.build(name, dim=dim, codebook_size=size, **options)
    for option, attribute in PEER_ATTRIBUTES[name].items():
        assert float(operator.attrgetter(attribute)(q.module)) == pytest.approx(float(options[option])), option
