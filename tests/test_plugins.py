"""Plugins through entry points: found, traced to their distribution, and failing loudly and alone.

Each test installs fake distributions (a ``*.dist-info`` folder with ``entry_points.txt`` and the
plugin's module) in a temporary folder on ``sys.path``, as pip would, and rescans the registries.
Policy: a plugin that cannot be registered is skipped with a ``PluginWarning`` naming its entry
point, the entry point's value and its distribution; every other name keeps working, every call
sees the same table, and ``get`` of the skipped name raises ``PluginError`` saying why.
"""
from __future__ import annotations

import importlib
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import datasets
import methods
import registry
from methods.vanilla import VanillaVQ

# A plugin quantizer: vanilla VQ under another class, as a third-party package would write it.
PLUGIN_VQ = """
    from methods.vanilla import VanillaVQ

    class {cls}(VanillaVQ):
        pass
"""


class Site:
    """A temporary site-packages: ``install`` writes a distribution, ``rescan`` reloads both registries."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: list[str] = []

    def install(self, dist: str, version: str, entry_points: dict[str, list[str]],
                modules: dict[str, str]) -> None:
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(
            "".join(f"[{group}]\n" + "".join(f"{line}\n" for line in lines) + "\n"
                    for group, lines in entry_points.items())
        )
        for module, source in modules.items():
            (self.root / f"{module}.py").write_text(textwrap.dedent(source))
            self.modules.append(module)
        importlib.invalidate_caches()

    def rescan(self) -> list[warnings.WarningMessage]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            methods.reload_entry_points()
            datasets.reload_entry_points()
        return [w for w in caught if issubclass(w.category, registry.PluginWarning)]


@pytest.fixture
def site(tmp_path):
    sys.path.insert(0, str(tmp_path))
    site = Site(tmp_path)
    try:
        yield site
    finally:
        sys.path.remove(str(tmp_path))
        for module in site.modules:
            sys.modules.pop(module, None)
        importlib.invalidate_caches()
        methods.reload_entry_points()
        datasets.reload_entry_points()


def messages(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught]


def test_a_class_plugin_records_its_module_file_and_distribution(site):
    site.install("vq-good", "0.3", {"vqbench.methods": ["good_vq = vq_good_mod:GoodVQ"]},
                 {"vq_good_mod": PLUGIN_VQ.format(cls="GoodVQ")})
    assert site.rescan() == []
    spec = methods.get("good_vq")
    assert spec.cls.__name__ == "GoodVQ"
    assert spec.module == "vq_good_mod" and spec.distribution == "vq-good==0.3"
    assert Path(spec.module_file) == site.root / "vq_good_mod.py"
    builtin = methods.get("vanilla")
    assert builtin.module == "methods.vanilla" and builtin.distribution is None
    assert methods.plugin_errors() == []


def test_a_module_plugin_registers_several_methods(site):
    site.install("vq-pair", "1.0", {"vqbench.methods": ["pair = vq_pair_mod"]}, {"vq_pair_mod": """
        import methods
        from methods.vanilla import VanillaVQ

        @methods.register("pair_a")
        class PairA(VanillaVQ):
            pass

        @methods.register("pair_b")
        class PairB(VanillaVQ):
            pass
    """})
    assert site.rescan() == []
    assert {"pair_a", "pair_b"} <= set(methods.available())
    assert methods.get("pair_b").distribution == "vq-pair==1.0"
    # a second scan cannot import the module again, and still finds both
    assert site.rescan() == [] and {"pair_a", "pair_b"} <= set(methods.available())


def test_a_plugin_whose_import_fails_is_skipped_alone_and_explained(site):
    site.install("vq-broken", "0.1", {"vqbench.methods": ["broken_vq = vq_broken_mod:BrokenVQ"]},
                 {"vq_broken_mod": "import a_module_that_is_not_installed\n"})
    site.install("vq-fine", "0.2", {"vqbench.methods": ["fine_vq = vq_fine_mod:FineVQ"]},
                 {"vq_fine_mod": PLUGIN_VQ.format(cls="FineVQ")})
    caught = site.rescan()
    assert len(caught) == 1
    for part in ("'broken_vq'", "'vq_broken_mod:BrokenVQ'", "vq-broken==0.1", "a_module_that_is_not_installed"):
        assert part in str(caught[0].message)
    # everything else works, on every call, and the broken name says why it is missing
    for _ in range(2):
        assert "fine_vq" in methods.available() and "vanilla" in methods.available()
        assert methods.get("vanilla").cls is VanillaVQ
        with pytest.raises(methods.PluginError, match=r"broken_vq.*vq-broken==0\.1.*ModuleNotFoundError"):
            methods.get("broken_vq")
    assert [str(e) for e in methods.plugin_errors()] == messages(caught)


def test_a_failing_module_leaves_nothing_half_registered(site):
    site.install("vq-half", "0.1", {"vqbench.methods": ["half = vq_half_mod"]}, {"vq_half_mod": """
        import methods
        from methods.vanilla import VanillaVQ

        @methods.register("half_a")
        class HalfA(VanillaVQ):
            pass

        raise RuntimeError("configuration missing")
    """})
    (message,) = messages(site.rescan())
    assert "RuntimeError: configuration missing" in message and "vq-half==0.1" in message
    assert "half_a" not in methods.available()


def test_a_plugin_may_use_the_registry_while_it_loads(site):
    site.install("vq-curious", "0.1", {"vqbench.methods": ["curious = vq_curious_mod"]}, {"vq_curious_mod": """
        import methods
        from methods.vanilla import VanillaVQ

        assert "vanilla" in methods.available()  # the table so far, no second scan

        @methods.register("curious_vq")
        class CuriousVQ(VanillaVQ):
            pass
    """})
    assert site.rescan() == []
    assert methods.get("curious_vq").distribution == "vq-curious==0.1"


def test_a_plugin_cannot_take_a_built_in_name(site):
    site.install("vq-shadow", "2.0", {"vqbench.methods": ["vanilla = vq_shadow_mod:ShadowVQ"]},
                 {"vq_shadow_mod": PLUGIN_VQ.format(cls="ShadowVQ")})
    (message,) = messages(site.rescan())
    # both owners: the built-in class and module, the plugin's class, module and distribution
    for part in ("VanillaVQ", "'methods.vanilla'", "ShadowVQ", "'vq_shadow_mod'", "vq-shadow==2.0"):
        assert part in message
    assert methods.get("vanilla").cls is VanillaVQ


def test_two_plugins_with_one_name_are_both_skipped(site):
    for dist, cls in (("vq-one", "OneVQ"), ("vq-two", "TwoVQ")):
        module = dist.replace("-", "_") + "_mod"
        site.install(dist, "1.0", {"vqbench.methods": [f"twin_vq = {module}:{cls}"]},
                     {module: PLUGIN_VQ.format(cls=cls)})
    (message,) = messages(site.rescan())
    for part in ("twin_vq", "vq-one==1.0", "OneVQ", "vq-two==1.0", "TwoVQ"):
        assert part in message
    assert "twin_vq" not in methods.available()
    with pytest.raises(methods.PluginError, match="vq-one==1.0.*vq-two==1.0|vq-two==1.0.*vq-one==1.0"):
        methods.get("twin_vq")


@pytest.mark.parametrize("value, source, reason", [
    ("vq_odd_mod:make_vq", "def make_vq():\n    return None\n", "neither a method class nor a module"),
    ("vq_odd_mod", "X = 1\n", "registers no method"),
    ("vq_odd_mod:NotVQ", "class NotVQ:\n    pass\n", "Quantizer subclass"),
])
def test_an_entry_point_that_provides_no_quantizer_is_an_error(site, value, source, reason):
    site.install("vq-odd", "0.1", {"vqbench.methods": [f"odd_vq = {value}"]}, {"vq_odd_mod": source})
    (message,) = messages(site.rescan())
    assert reason in message and f"'odd_vq' = '{value}'" in message and "vq-odd==0.1" in message
    with pytest.raises(methods.PluginError, match=reason):
        methods.get("odd_vq")


def test_a_removed_plugin_leaves_the_registry_on_rescan(site):
    site.install("vq-gone", "0.1", {"vqbench.methods": ["gone_vq = vq_gone_mod:GoneVQ"]},
                 {"vq_gone_mod": PLUGIN_VQ.format(cls="GoneVQ")})
    site.rescan()
    assert "gone_vq" in methods.available()
    for path in site.root.glob("vq_gone-*.dist-info/*"):
        path.unlink()
    for path in site.root.glob("vq_gone-*.dist-info"):
        path.rmdir()
    importlib.invalidate_caches()
    site.rescan()
    assert "gone_vq" not in methods.available()


DATASET_PLUGIN = """
    from datasets.gaussian import Gaussian

    class RingOfGaussians(Gaussian):
        source = "a test plugin"
"""


def test_datasets_join_through_their_own_group_with_the_same_rules(site):
    site.install("ds-plugin", "0.5", {"vqbench.datasets": ["ring = ds_plugin_mod:RingOfGaussians",
                                                           "gaussian = ds_plugin_mod:RingOfGaussians",
                                                           "broken_ds = ds_missing_mod:Nothing"]},
                 {"ds_plugin_mod": DATASET_PLUGIN})
    caught = messages(site.rescan())
    assert len(caught) == 2
    assert any("'gaussian'" in m and "Gaussian from module 'datasets.gaussian'" in m for m in caught)
    assert any("'broken_ds'" in m and "ds-plugin==0.5" in m for m in caught)
    spec = datasets.get("ring")
    assert spec.distribution == "ds-plugin==0.5" and spec.module == "ds_plugin_mod" and spec.kind == "features"
    assert datasets.load("ring", dim=3).sample(5, torch.Generator().manual_seed(0)).shape == (5, 3)
    assert datasets.get("gaussian").cls.__module__ == "datasets.gaussian"
    with pytest.raises(datasets.PluginError, match="ds_missing_mod"):
        datasets.get("broken_ds")
    assert "ring" not in methods.available()  # one group per registry


# --- the one options helper, for callers that are not a registry --------------------------------

@dataclass(frozen=True)
class StepOptions:
    rate: float
    steps: int = 10

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps: must be >= 1, got {self.steps}")


def test_make_options_names_the_dotted_key():
    assert registry.make_options(StepOptions, {"rate": 0.5}) == StepOptions(rate=0.5)
    with pytest.raises(ValueError, match=r"^train\.stepz: unknown option for StepOptions\. Did you mean 'steps'\? "
                                         r"Valid options: \['rate', 'steps'\]$"):
        registry.make_options(StepOptions, {"rate": 0.5, "stepz": 3}, where="train")
    with pytest.raises(ValueError, match=r"^train\.rate: required option of StepOptions is missing$"):
        registry.make_options(StepOptions, {}, where="train")
    with pytest.raises(ValueError, match=r"^train\.steps: must be >= 1, got 0$"):
        registry.make_options(StepOptions, {"rate": 0.5, "steps": 0}, where="train")
    with pytest.raises(ValueError, match=r"^train: must be a mapping"):
        registry.make_options(StepOptions, [0.5], where="train")


def test_make_options_on_a_spec_is_what_build_uses():
    spec = methods.get("wasserstein")
    assert registry.make_options(spec, {"gamma": 2.0}) == methods.make_options("wasserstein", gamma=2.0)
    with pytest.raises(ValueError, match=r"^sweeps\.a\.method_options\.beta: must be"):
        registry.make_options(spec, {"beta": -1.0}, where="sweeps.a.method_options")
    with pytest.raises(ValueError, match=r"^sweeps\.a\.dataset_options\.meen: unknown option for dataset 'gaussian'"):
        registry.make_options(datasets.get("gaussian"), {"meen": 1.0}, where="sweeps.a.dataset_options")
