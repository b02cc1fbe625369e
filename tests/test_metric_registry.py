"""The metric registry is the one place a metric is declared: its producers exist, no trial's code
imports it (a label edit retrains nothing), the derived lists and documents follow it, and a tuning
objective that is not in it is refused when params.yaml is parsed."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from benchmark import metric_registry, paths
from benchmark.experiments.config import ConfigError, EXPERIMENTS
from benchmark.experiments.train import experiment_module
from benchmark.pipeline import code
from benchmark.pipeline.spec import parse_sweep


@pytest.mark.parametrize("metric", metric_registry.METRICS, ids=lambda m: m.name)
def test_every_producer_exists(metric):
    module, _, function = metric.producer.partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_the_registry_knows_every_experiment():
    assert set(metric_registry.ALL_EXPERIMENTS) == set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_no_trial_imports_the_registry(experiment):
    """Display fields live outside the code hashed into a trial's id."""
    files = code.closure([code._module_file(experiment_module(experiment))])
    registry_file = Path(metric_registry.__file__).resolve()
    assert registry_file not in files
    assert Path(code._module_file(experiment_module(experiment))) in files  # the closure was followed


def test_derived_lists():
    assert metric_registry.TABLE_METRICS[0] == "utilization"
    assert set(metric_registry.HEADLINE_METRICS) == {"utilization", "error_vs_kmeans", "psnr"}
    assert set(metric_registry.RESULT_KEYS) < set(metric_registry.VQVAE_KEYS) < set(metric_registry.TRANSPLANT_KEYS)
    assert set(metric_registry.TRANSPLANT_KEYS) - set(metric_registry.VQVAE_KEYS) == {"autoencoder_mse"}
    assert not set(metric_registry.PRIOR_KEYS) & set(metric_registry.VQVAE_KEYS)  # only with a prior
    assert metric_registry.LEVEL_METRIC_PREFIXES == ("utilization_level_", "perplexity_level_")
    assert all(metric_registry.get(k).ranked for k in metric_registry.tunable(["fit", "vqvae"]))
    assert "psnr" not in metric_registry.tunable(["fit"]) and "psnr" in metric_registry.tunable(["vqvae"])


def test_unknown_metric_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown metric 'utilisation'.*Did you mean 'utilization'"):
        metric_registry.get("utilisation")


def test_a_bad_entry_names_its_field():
    with pytest.raises(ValueError, match="metric 'x': better"):
        metric_registry.Metric("x", "x", "m:f", ("fit",), "up", 1, "a definition")
    with pytest.raises(ValueError, match="metric 'x': experiments"):
        metric_registry.Metric("x", "x", "m:f", ("fitt",), "max", 1, "a definition")


def test_reports_readme_holds_the_generated_metric_table():
    text = (paths.REPO_ROOT / "reports" / "README.md").read_text()
    block = re.search(r"<!-- metrics -->\n(.*?)\n<!-- /metrics -->", text, re.S)
    assert block is not None
    assert block.group(1) == metric_registry.readme_section(), "run python -m benchmark.metric_registry"


def _params(tune):
    return {"sweeps": {"s": {"base": {"steps": 2, "codebook_size": 4, "dim": 2},
                             "grid": {"method": ["vanilla"], "seed": [0]}, "tune": tune}}}


def test_a_tuning_metric_typo_fails_at_parse_time():
    with pytest.raises(ConfigError, match=r"sweeps\.s\.tune\.metric: 'error_vs_kmean'.*Did you mean "
                                          r"'error_vs_kmeans'.*Valid: \["):
        parse_sweep(_params({"metric": "error_vs_kmean"}), "s")


def test_a_tuning_metric_the_experiment_does_not_record_is_refused():
    with pytest.raises(ConfigError, match=r"tune\.metric: 'psnr'"):
        parse_sweep(_params({"metric": "psnr", "mode": "max"}), "s")
    with pytest.raises(ConfigError, match=r"tune\.metric: 'train_seconds'"):  # never ranked
        parse_sweep(_params({"metric": "train_seconds"}), "s")


def test_tuning_mode_follows_the_metric():
    assert parse_sweep(_params({"metric": "utilization"}), "s").tune.mode == "max"
    with pytest.raises(ConfigError, match=r"tune\.mode: error_vs_kmeans is better when minimised"):
        parse_sweep(_params({"metric": "error_vs_kmeans", "mode": "max"}), "s")
