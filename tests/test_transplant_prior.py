"""The transplant experiment, the memo of trained networks, the downstream token prior and the
classifier-space sample metrics, at tiny sizes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from benchmark import paths
from benchmark.metric_registry import PRIOR_KEYS, TRANSPLANT_KEYS
from benchmark.experiments import sample_quality, transplant
from benchmark.experiments.cache import cached_training
from benchmark.experiments.config import ConfigError, RunConfig
from benchmark.experiments.models import ModelOptions
from benchmark.experiments.prior import PriorSettings, TokenPrior, check_tokens, nll_bits_per_token, sample, train_prior
from benchmark.experiments.sample_quality import frechet_distance, knn_precision_recall
from benchmark.experiments.train import run_experiment

TINY_PRIOR = PriorSettings(steps=60, layers=1, width=16, heads=2, batch_size=32, lr=1e-2)
TINY_TRANSPLANT = RunConfig(
    experiment="transplant",
    dataset="digits",
    method="vanilla",
    codebook_size=16,
    dim=4,
    model_options={"hidden": 8, "downsamples": 1, "res_blocks": 0, "autoencoder_steps": 20},
    steps=8,
    batch_size=32,
    optimizer="adam",
    model_lr=2e-3,
    codebook_lr=1e-2,
    log_every=4,
    device="cpu",
)


@pytest.fixture
def model_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "MODELS_CACHE_DIR", tmp_path / "models")
    monkeypatch.setattr(paths, "KMEANS_CACHE_DIR", tmp_path / "kmeans")
    monkeypatch.setattr(sample_quality, "CLASSIFIER_STEPS", 10)
    return tmp_path / "models"


def _without_timing(record):
    return {k: v for k, v in record.items() if not k.endswith("seconds")}


# --------------------------------------------------------------------------- the prior
def test_prior_on_a_deterministic_sequence_needs_almost_no_bits():
    tokens = (torch.arange(16) % 8).repeat(64, 1)  # every image the same 16 tokens
    prior = train_prior(tokens, 8, TINY_PRIOR, seed=0)
    assert nll_bits_per_token(prior, tokens[:8]) < 0.1


def test_prior_on_uniform_tokens_needs_log2_k_bits():
    g = torch.Generator().manual_seed(0)
    train, held_out = torch.randint(0, 16, (512, 16), generator=g), torch.randint(0, 16, (256, 16), generator=g)
    prior = train_prior(train, 16, TINY_PRIOR.__class__(**{**TINY_PRIOR.__dict__, "steps": 20}), seed=0)
    assert nll_bits_per_token(prior, held_out) == pytest.approx(math.log2(16), abs=0.1)


def test_prior_is_seeded_and_samples_valid_tokens():
    tokens = torch.randint(0, 5, (64, 6), generator=torch.Generator().manual_seed(1))
    settings = PriorSettings(steps=5, layers=1, width=8, heads=2, batch_size=8)
    a, b = train_prior(tokens, 5, settings, seed=3), train_prior(tokens, 5, settings, seed=3)
    assert nll_bits_per_token(a, tokens) == nll_bits_per_token(b, tokens)
    draws = sample(a, 7, torch.Generator().manual_seed(0))
    assert draws.shape == (7, 6) and int(draws.min()) >= 0 and int(draws.max()) < 5
    assert torch.equal(draws, sample(b, 7, torch.Generator().manual_seed(0)))


def test_next_logits_are_the_forward_logits_position_by_position():
    tokens = torch.randint(0, 6, (96, 5), generator=torch.Generator().manual_seed(2))
    prior = train_prior(tokens, 6, PriorSettings(steps=10, layers=2, width=8, heads=2, batch_size=16), seed=0)
    with torch.no_grad():
        full, cache = prior(tokens), prior.empty_cache(tokens.shape[0])
        previous = torch.full((tokens.shape[0],), 6)
        for t in range(tokens.shape[1]):
            torch.testing.assert_close(prior.next_logits(previous, t, cache), full[:, t], rtol=1e-5, atol=1e-5)
            previous = tokens[:, t]


def test_prior_rejects_bad_input():
    with pytest.raises(ValueError, match="tokens"):
        check_tokens(torch.tensor([[0, 5]]), 5)
    with pytest.raises(ValueError, match="tokens"):
        check_tokens(torch.zeros(3), 5)
    with pytest.raises(ValueError, match="tokens"):
        check_tokens(torch.zeros(2, 3), 5)  # float ids
    with pytest.raises(ValueError, match="width"):
        PriorSettings(width=10, heads=4)
    with pytest.raises(ValueError, match="steps"):
        PriorSettings(steps=0)
    with pytest.raises(ValueError, match="tokens"):
        nll_bits_per_token(TokenPrior(4, 3, PriorSettings(width=8, heads=2)), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="count"):
        sample(TokenPrior(4, 3, PriorSettings(width=8, heads=2)), 0, torch.Generator())


# --------------------------------------------------------------------------- sample metrics
def test_frechet_distance_matches_the_scipy_sqrtm_reference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(200, 5)) * 2.0 + 1.0
    mu_a, mu_b, cov_a, cov_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * scipy.linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_knn_precision_recall_on_identical_and_disjoint_sets():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert knn_precision_recall(x, x) == (1.0, 1.0)
    assert knn_precision_recall(x + 100.0, x) == (0.0, 0.0)
    precision, recall = knn_precision_recall(x[:25] * 0.01, x)  # collapsed samples: faithful, not diverse
    assert precision > 0.9 and recall < 0.5


def test_sample_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="real"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="generated"):
        frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="real"):
        frechet_distance(np.zeros((4, 3)), np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match="k"):
        knn_precision_recall(np.zeros((4, 3)), np.zeros((4, 3)), k=0)
    with pytest.raises(ValueError, match="generated"):
        knn_precision_recall(np.zeros((3, 3)), np.zeros((9, 3)), k=3)  # fewer than k + 1 points


# --------------------------------------------------------------------------- the memo
def test_cached_training_trains_once_per_key(tmp_path):
    calls = []

    def train(module):
        calls.append(1)
        with torch.no_grad():
            module.weight.fill_(float(len(calls)))

    def fresh():
        return nn.Linear(2, 2)

    first, second, other = fresh(), fresh(), fresh()
    assert cached_training(first, "toy", ("a", 1), train, tmp_path) is False
    assert cached_training(second, "toy", ("a", 1), train, tmp_path) is True
    assert torch.equal(first.weight, second.weight) and len(calls) == 1
    assert cached_training(other, "toy", ("a", 2), train, tmp_path) is False  # another key: a miss
    assert len(calls) == 2 and len(list(tmp_path.glob("toy-*.pt"))) == 2
    assert not list(tmp_path.glob("*partial*"))
    assert cached_training(nn.Linear(2, 3), "toy", ("a", 1), train, tmp_path) is False  # other architecture


def test_compute_once_computes_a_value_missed_by_two_workers_at_once_once(tmp_path):
    # Two Ray actors starting trials of one setting both miss the memo: the second waits for the
    # first one's lock and loads its file instead of computing the same reference again.
    import sys
    import threading
    import time

    import numpy as np

    from benchmark.experiments.cache import compute_once

    path = tmp_path / "value.npy"
    calls, results, threads = [], {}, {}

    def waiting_for_the_lock(thread):
        frame = sys._current_frames().get(thread.ident)
        while frame is not None:
            if frame.f_code.co_name == "acquire" and "filelock" in frame.f_code.co_filename:
                return True
            frame = frame.f_back
        return False

    def compute():
        calls.append(threading.current_thread().name)
        second = threading.Thread(target=worker, args=("second",), name="second")
        threads["second"] = second
        second.start()  # misses the file (not written yet) and blocks on the lock this worker holds
        deadline = time.monotonic() + 60
        while not waiting_for_the_lock(second) and time.monotonic() < deadline:
            time.sleep(0.01)
        results["second_blocked"] = waiting_for_the_lock(second)
        return np.arange(4.0)

    def worker(name):
        results[name] = compute_once(path, np.load, compute, lambda value, target: np.save(target, value))

    first = threading.Thread(target=worker, args=("first",), name="first")
    first.start()
    first.join(timeout=60)
    threads["second"].join(timeout=60)
    assert results["second_blocked"]
    assert calls == ["first"]
    assert results["first"][1] is False and results["second"][1] is True
    assert np.array_equal(results["second"][0], np.arange(4.0))
    assert not list(tmp_path.glob("*partial*"))


# --------------------------------------------------------------------------- transplant
def test_transplant_tiny_run_reuses_the_autoencoder(model_cache):
    record = run_experiment(TINY_TRANSPLANT)
    assert set(record) == set(TRANSPLANT_KEYS)
    assert 0 < record["utilization"] <= 1 and math.isfinite(record["error_vs_kmeans"])
    assert 0 < record["autoencoder_mse"] < 1 and math.isfinite(record["psnr"])
    files = sorted(model_cache.glob("autoencoder-*.pt"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    assert _without_timing(run_experiment(TINY_TRANSPLANT.replace(method="ema"))) != _without_timing(record)
    assert _without_timing(run_experiment(TINY_TRANSPLANT)) == _without_timing(record)
    assert sorted(model_cache.glob("autoencoder-*.pt")) == files and files[0].stat().st_mtime_ns == stamp
    run_experiment(TINY_TRANSPLANT.replace(seed=1))  # another seed: another autoencoder
    assert len(list(model_cache.glob("autoencoder-*.pt"))) == 2


def test_transplant_every_method_sees_the_same_latents(model_cache):
    import datasets

    config = TINY_TRANSPLANT
    options = ModelOptions.from_mapping(config.model_options)
    dataset = datasets.load("digits")
    model, hit = transplant.pretrained_autoencoder(config, options, dataset, torch.device("cpu"), model_cache)
    again, hit_again = transplant.pretrained_autoencoder(config, options, dataset, torch.device("cpu"), model_cache)
    assert (hit, hit_again) == (False, True)
    assert all(not p.requires_grad for p in again.parameters())
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_transplant_decoder_finetune_changes_only_the_decoding(model_cache):
    plain = run_experiment(TINY_TRANSPLANT)
    tuned = run_experiment(TINY_TRANSPLANT.replace(
        model_options={**TINY_TRANSPLANT.model_options, "decoder_finetune_steps": 5}))
    assert tuned["autoencoder_mse"] == plain["autoencoder_mse"]
    assert tuned["utilization"] == plain["utilization"] and tuned["quantization_error"] == plain["quantization_error"]
    assert tuned["recon_mse"] != plain["recon_mse"]


def test_transplant_with_prior_reports_the_prior_metrics(model_cache):
    config = TINY_TRANSPLANT.replace(model_options={**TINY_TRANSPLANT.model_options, "prior_steps": 3})
    record = run_experiment(config)
    assert set(record) == set(TRANSPLANT_KEYS + PRIOR_KEYS)
    assert 0 <= record["prior_bits_per_token"] and record["prior_bits_per_image"] == pytest.approx(
        record["prior_bits_per_token"] * 16)  # 8x8 digits, one downsample: 4x4 tokens
    assert record["frechet_classifier"] >= 0
    assert 0 <= record["knn_precision"] <= 1 and 0 <= record["knn_recall"] <= 1
    assert len(list(model_cache.glob("classifier-*.pt"))) == 1


def test_vqvae_with_prior_reports_the_prior_metrics(model_cache):
    config = TINY_TRANSPLANT.replace(experiment="vqvae", model_options={"hidden": 8, "downsamples": 1,
                                                                        "res_blocks": 0, "prior_steps": 2})
    record = run_experiment(config)
    assert set(PRIOR_KEYS) <= set(record) and "autoencoder_mse" not in record


@pytest.mark.parametrize("changes, field", [
    ({"dataset": "gaussian"}, "dataset"),
    ({"experiment": "vqvae"}, "model_options.autoencoder_steps"),
    ({"model_options": {"autoencoder_steps": 0}}, "model_options.autoencoder_steps"),
    ({"model_options": {"prior_steps": -1}}, "model_options.prior_steps"),
    ({"model_options": {"decoder_finetune_steps": 1.5}}, "model_options.decoder_finetune_steps"),
    ({"batch_size": 100_000}, "batch_size"),
])
def test_transplant_bad_settings_name_the_field(changes, field, model_cache):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        run_experiment(TINY_TRANSPLANT.replace(**changes))
