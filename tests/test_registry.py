"""The methods registry: names, errors, and out-of-tree quantizers joining the conformance suite."""
from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import methods
from methods._base import commitment_and_codebook
from methods.testing import CHECKS, ConformanceError, check_indices_are_nearest_codes, run_conformance

BUILT_IN = ["ema", "exact_ot", "simvq", "sliced_wasserstein", "vanilla", "wasserstein"]


def test_available_lists_the_built_in_methods():
    assert set(BUILT_IN) <= set(methods.available())
    assert methods.available() == sorted(methods.available())


def test_unknown_method_lists_valid_names_and_a_close_match():
    with pytest.raises(ValueError, match=r"Did you mean 'wasserstein'.*vanilla"):
        methods.build("wassersten", dim=2, codebook_size=4)


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError, match=r"^gamm: unknown option for method 'wasserstein'\. Did you mean 'gamma'\? Valid options: \[.*'gamma'"):
        methods.build("wasserstein", dim=2, codebook_size=4, gamm=1.0)


def test_spec_exposes_options_paper_and_flags():
    spec = methods.get("wasserstein")
    assert spec.paper == "arXiv:2506.15078" and spec.distribution_matching and spec.trainable_by_gradient
    assert spec.defaults["beta"] == 0.1 and "gamma" in spec.option_names()
    assert not methods.get("ema").trainable_by_gradient


def test_duplicate_name_and_non_quantizer_are_errors():
    with pytest.raises(ValueError, match="already registered"):
        @methods.register("vanilla")
        class Another(methods.Quantizer):  # noqa: F841
            pass
    with pytest.raises(TypeError, match="Quantizer subclass"):
        methods.register("not_a_quantizer")(dict)


@dataclass(frozen=True)
class NudgeOptions:
    beta: float = 0.25
    nudge: float = 0.5

    def __post_init__(self) -> None:
        if self.beta < 0 or self.nudge < 0:
            raise ValueError("beta: and nudge: must be >= 0")


class NudgeVQ(methods.Quantizer):
    """A quantizer defined in a test: vanilla VQ whose codes all drift towards the batch mean."""

    Options = NudgeOptions

    def __init__(self, dim, codebook_size, options, generator=None):
        super().__init__(dim, codebook_size, options, generator)
        self.embedding = nn.Parameter(torch.randn(codebook_size, dim, generator=generator))

    @property
    def codebook(self):
        return self.embedding

    def loss_terms(self, features, codes, codebook):
        losses = commitment_and_codebook(features, codes)
        losses["nudge"] = (codebook.mean(0) - features.detach().mean(0)).pow(2).sum()
        return losses

    def loss_weights(self):
        return {"commitment": self.options.beta, "codebook": 1.0, "nudge": self.options.nudge}


def test_a_quantizer_registered_here_passes_the_same_conformance_suite():
    methods.register("nudge_test")(NudgeVQ)
    try:
        assert "nudge_test" in methods.available()
        run_conformance("nudge_test")
    finally:
        methods.unregister("nudge_test")
    assert "nudge_test" not in methods.available()


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    """An installed package exposing `vqbench.methods` entry points joins the registry."""
    (tmp_path / "vqbench_plugin_demo.py").write_text(textwrap.dedent("""
        import methods
        from tests.test_registry import NudgeVQ

        class PluginVQ(NudgeVQ):
            pass
    """))
    dist = tmp_path / "vqbench_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vqbench-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vqbench.methods]\nplugin_demo = vqbench_plugin_demo:PluginVQ\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        methods.reload_entry_points()
        assert "plugin_demo" in methods.available()
        run_conformance("plugin_demo")
    finally:
        methods.unregister("plugin_demo")
        sys.modules.pop("vqbench_plugin_demo", None)


def test_run_conformance_takes_a_class_and_leaves_the_registry_as_it_was():
    before = methods.available()
    run_conformance(NudgeVQ)
    assert methods.available() == before


class FarthestVQ(NudgeVQ):
    """Breaks the contract: it picks the farthest code, not the nearest."""

    def search(self, features):
        flat = self.search_space(features).reshape(-1, self.dim)
        return torch.cdist(flat, self.codebook.detach()).argmax(dim=1).reshape(features.shape[:-1])


def test_run_conformance_names_every_failed_check():
    with pytest.raises(ConformanceError, match="FarthestVQ") as err:
        run_conformance(FarthestVQ, checks=[check_indices_are_nearest_codes])
    assert "1 of 1 conformance checks failed" in str(err.value)
    assert "check_indices_are_nearest_codes: AssertionError" in str(err.value)
    assert "conformance_farthestvq" not in methods.available()


def test_run_conformance_rejects_what_is_not_a_quantizer():
    with pytest.raises(TypeError, match="name_or_class"):
        run_conformance(dict)
    with pytest.raises(ValueError, match="unknown method 'no_such_vq'"):
        run_conformance("no_such_vq")
    assert len(CHECKS) >= 10
