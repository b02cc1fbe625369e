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
