"""benchmark.experiments.train (fit, vqvae), benchmark.experiments.run (CLI): behaviour at reduced sizes."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from benchmark import metric_registry
from benchmark.experiments import training as train
from benchmark.experiments.config import ConfigError, RunConfig
from benchmark.experiments.train import DivergedError, run_experiment
from benchmark.paths import REPO_ROOT


# A fit run that takes well under a second: K = 32, d = 4.
TINY_FIT = RunConfig(
    experiment="fit",
    dataset="gaussian",
    method="vanilla",
    codebook_size=32,
    dim=4,
    steps=30,
    batch_size=256,
    eval_size=2048,
    codebook_lr=1.0,
    log_every=10,
    device="cpu",
)
TINY_VQVAE = RunConfig(
    experiment="vqvae",
    dataset="digits",
    method="vanilla",
    codebook_size=16,
    dim=4,
    model_options={"hidden": 16, "downsamples": 1, "res_blocks": 1},
    steps=8,
    batch_size=32,
    optimizer="adam",
    model_lr=1e-3,
    codebook_lr=1e-2,
    momentum=0.9,
    grad_clip=1.0,
    log_every=4,
    device="cpu",
)


def _without_timing(record):
    return {k: v for k, v in record.items() if k != "train_seconds"}


# --------------------------------------------------------------------------- config errors
@pytest.mark.parametrize("field, value", [("batch_size", 0), ("steps", 0), ("eval_size", -1), ("codebook_lr", -1.0)])
def test_bad_values_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=field):
        TINY_FIT.replace(**{field: value})


def test_unknown_dataset_and_method_raise_value_errors():
    with pytest.raises(ValueError, match="gausian|unknown dataset"):
        run_experiment(TINY_FIT.replace(dataset="gausian"))
    with pytest.raises(ValueError, match="unknown method|vanila"):
        run_experiment(TINY_FIT.replace(method="vanila"))


def test_dim_mismatch_names_dim_and_values():
    with pytest.raises(ValueError, match=r"dim.*6.*4|dim.*4.*6"):
        run_experiment(TINY_FIT.replace(dataset_options={"dim": 6}))
    with pytest.raises(ValueError, match="dim"):  # the disk is 2-D only
        run_experiment(TINY_FIT.replace(dataset="disk"))


def test_experiment_kind_mismatch():
    with pytest.raises(ValueError, match="feature distribution"):
        run_experiment(TINY_FIT.replace(dataset="digits"))
    with pytest.raises(ValueError, match="image dataset"):
        run_experiment(TINY_VQVAE.replace(dataset="gaussian"))
    with pytest.raises(ConfigError, match="model_options"):
        run_experiment(TINY_FIT.replace(model_options={"hidden": 8}))
    with pytest.raises(ConfigError, match="model_options.hiden"):
        run_experiment(TINY_VQVAE.replace(model_options={"hiden": 8}))


def test_device_resolution():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert train.resolve_device("auto").type == expected
    assert train.resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device"):
            train.resolve_device("cuda")


# --------------------------------------------------------------------------- fit
def test_fit_record_and_determinism():
    state = torch.get_rng_state()
    first = run_experiment(TINY_FIT)
    second = run_experiment(TINY_FIT)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    assert set(first) == set(metric_registry.RESULT_KEYS)
    assert all(type(v) is float for v in first.values())
    assert _without_timing(first) == _without_timing(second)
    assert first["train_seconds"] > 0
    other_seed = run_experiment(TINY_FIT.replace(seed=1))
    assert other_seed["quantization_error"] != first["quantization_error"]
    for key in ("utilization", "error_vs_kmeans", "kmeans_error", "perplexity"):
        assert math.isfinite(first[key]), key
    assert 0 < first["utilization"] <= 1
    assert first["dead_codes"] == pytest.approx(32 * (1 - first["utilization"]))


def test_fit_improves_error_over_initial_codebook():
    config = TINY_FIT.replace(steps=150, dataset_options={"mean": 1.0})
    initial = run_experiment(config.replace(steps=1, codebook_lr=0.0))  # lr 0 = the initial codebook
    trained = run_experiment(config)
    assert trained["quantization_error"] < 0.8 * initial["quantization_error"]
    assert trained["gaussian_w2_sq"] < initial["gaussian_w2_sq"]


def test_fit_on_step_logging():
    calls = []
    run_experiment(TINY_FIT.replace(steps=25), on_step=lambda step, m: calls.append((step, m)))
    assert [step for step, _ in calls] == [10, 20, 25]
    for _, logged in calls:
        assert {"loss", "batch_utilization", "codebook", "commitment"} <= set(logged)
        assert all(type(v) is float for v in logged.values())
        assert 0 < logged["batch_utilization"] <= 1


def test_fit_method_without_gradient_params_and_adam():
    record = run_experiment(TINY_FIT.replace(method="ema", steps=10))
    assert math.isfinite(record["quantization_error"])
    record = run_experiment(TINY_FIT.replace(optimizer="adam", codebook_lr=0.05, grad_clip=1.0, steps=10))
    assert math.isfinite(record["quantization_error"])


def test_diverged_error_on_huge_lr():
    with pytest.raises(DivergedError, match="step"):
        run_experiment(TINY_FIT.replace(codebook_lr=1e30, dataset_options={"mean": 4.0}))


class _NaNAtStep3(nn.Module):
    """A stand-in quantizer whose loss turns NaN at its third call."""

    def __init__(self, dim, codebook_size):
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(codebook_size, dim))
        self.calls = 0

    @property
    def codebook(self):
        return self.embedding

    def forward(self, z):
        import methods

        self.calls += 1
        indices = methods.nearest_code(z.detach(), self.embedding.detach())
        codes = self.embedding[indices]
        loss = (codes - z).pow(2).mean()
        if self.calls == 3:
            loss = loss * float("nan")
        return methods.QuantizerOutput(z + (codes - z).detach(), indices, loss, {"codebook": loss})


def test_diverged_error_names_the_step(monkeypatch):
    from benchmark.experiments import fit

    monkeypatch.setattr(fit, "build_quantizer", lambda config, device, **_: _NaNAtStep3(config.dim, config.codebook_size))
    with pytest.raises(DivergedError, match="step 3"):
        run_experiment(TINY_FIT)
    assert issubclass(DivergedError, RuntimeError)


# --------------------------------------------------------------------------- vqvae
def test_vqvae_digits_tiny_budget():
    logged = []
    record = run_experiment(TINY_VQVAE, on_step=lambda step, m: logged.append(step))
    assert set(record) == set(metric_registry.VQVAE_KEYS)
    assert all(type(v) is float for v in record.values())
    assert math.isfinite(record["psnr"]) and record["psnr"] > 0
    assert -1 <= record["ssim"] <= 1
    assert 0 < record["recon_mse"] < 1
    assert 0 < record["utilization"] <= 1
    assert math.isfinite(record["kmeans_error"])  # 1437 train images x 16 latents >= K
    assert logged == [4, 8]
    again = run_experiment(TINY_VQVAE)
    assert _without_timing(again) == _without_timing(record)


@pytest.mark.parametrize("shape", [(40, 1, 8, 8), (12, 3, 16, 16), (6, 1, 6, 5)])
def test_image_scores_equal_scikit_image_image_by_image(shape):
    # The batch computation against scikit-image's own functions, one call per image: digits (8x8,
    # gray), colour patches, and an image smaller than the default 7x7 window
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from benchmark.experiments.images import image_scores, ssim_window

    gen = torch.Generator().manual_seed(sum(shape))
    images = torch.rand(shape, generator=gen)
    recons = (images + 0.1 * torch.randn(shape, generator=gen)).clamp(0.0, 1.0)
    recons[0] = images[0]  # a perfect reconstruction: PSNR inf, SSIM 1
    psnr, ssim = image_scores(images, recons)
    a, b = (x.permute(0, 2, 3, 1).double().numpy() for x in (images, recons))
    win = ssim_window(shape[2], shape[3])
    with np.errstate(divide="ignore"):
        expected_psnr = [peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in zip(a, b)]
    expected_ssim = [structural_similarity(x, y, data_range=1.0, channel_axis=-1, win_size=win) for x, y in zip(a, b)]
    assert psnr[0] == math.inf and ssim[0] == pytest.approx(1.0)
    assert psnr == pytest.approx(expected_psnr, rel=1e-12)
    assert ssim == pytest.approx(expected_ssim, rel=1e-12, abs=1e-14)
    assert len(set(ssim[1:])) == len(ssim) - 1  # per image, not one batch value


def test_vqvae_rejects_indivisible_downsampling_and_oversized_batches():
    with pytest.raises(ConfigError, match="downsamples"):
        run_experiment(TINY_VQVAE.replace(model_options={"downsamples": 4}))  # 8x8 digits
    with pytest.raises(ConfigError, match="batch_size"):
        run_experiment(TINY_VQVAE.replace(batch_size=100_000))


# --------------------------------------------------------------------------- CLI
def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "benchmark.experiments.run", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_help():
    result = _cli("--help")
    assert result.returncode == 0
    for flag in ("--experiment", "--codebook-size", "--dataset-option", "--method-option", "--progress"):
        assert flag in result.stdout


def test_cli_tiny_json_run():
    result = _cli(
        "--experiment", "fit", "--dataset", "gaussian", "--method", "vanilla", "--codebook-size", "16",
        "--dim", "2", "--steps", "5", "--batch-size", "128", "--eval-size", "512", "--seed", "3",
        "--device", "cpu", "--dataset-option", "mean=2", "--dataset-option", "scale=0.5",
        "--method-option", "beta=0.5",
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert set(record) == set(metric_registry.RESULT_KEYS)
    assert all(isinstance(v, float) for v in record.values())


def test_cli_bad_settings_exit_2():
    result = _cli("--batch-size", "0", "--steps", "1")
    assert result.returncode == 2 and "batch_size" in result.stderr
    result = _cli("--dataset-option", "mean", "--steps", "1")
    assert result.returncode == 2 and "KEY=VALUE" in result.stderr


def test_cli_option_values_are_yaml():
    from benchmark.experiments.run import _parse_options

    assert _parse_options(["a=4", "b=0.1", "c=true", "d=abc", "e=1e-3"], "x") == {
        "a": 4, "b": 0.1, "c": True, "d": "abc", "e": 0.001,
    }


def test_metrics_are_measured_where_the_quantizer_searches():
    """FSQ bounds features into [-1, 1]^d before rounding: E is measured there, not against the
    raw features (which sit near 8 here and would give E of about d * 64)."""
    record = run_experiment(
        RunConfig(method="fsq", codebook_size=16, dim=4, steps=2, batch_size=64, eval_size=512,
                  dataset_options={"mean": 8.0})
    )
    assert record["quantization_error"] < 4 * 1.0
    assert record["utilization"] <= 2 / 16  # saturated tanh: (nearly) every feature in one corner


def test_artifacts_are_the_final_codebook_and_its_usage(tmp_path):
    config = RunConfig(method="vanilla", codebook_size=16, dim=2, steps=3, batch_size=64, eval_size=500)
    record = run_experiment(config, artifacts_dir=tmp_path / "trial")
    codebook = np.load(tmp_path / "trial" / "codebook.npy")
    counts = np.load(tmp_path / "trial" / "code_counts.npy")
    assert codebook.shape == (16, 2) and counts.shape == (16,) and counts.sum() == 500
    assert record["utilization"] == pytest.approx((counts > 0).mean())
    again = run_experiment(config)  # writing artifacts changes nothing else
    assert {k: v for k, v in again.items() if k != "train_seconds"} == {
        k: v for k, v in record.items() if k != "train_seconds"
    }


def test_codebook_grad_clip_clips_the_quantizer_and_the_model_separately():
    quantizer, model = nn.Linear(2, 2), nn.Linear(2, 2)
    optimizer = torch.optim.SGD([{"params": quantizer.parameters()}, {"params": model.parameters()}], lr=0.0)

    def norms(config):
        trainer = train.Trainer(config, quantizer, optimizer, None, False)
        for p in list(quantizer.parameters()) + list(model.parameters()):
            p.grad = torch.full_like(p, 10.0)
        trainer.clip()
        trainer.bar.close()
        return [float(torch.cat([p.grad.flatten() for p in m.parameters()]).norm()) for m in (quantizer, model)]

    q_norm, m_norm = norms(TINY_FIT.replace(grad_clip=1.0, codebook_grad_clip=0.5))
    assert q_norm == pytest.approx(0.5) and m_norm == pytest.approx(1.0)
    # default (0): one global norm over both, as before
    q_norm, m_norm = norms(TINY_FIT.replace(grad_clip=1.0))
    assert q_norm**2 + m_norm**2 == pytest.approx(1.0) and q_norm == pytest.approx(m_norm)
    with pytest.raises(ConfigError, match="codebook_grad_clip"):
        TINY_FIT.replace(codebook_grad_clip=-1.0)


@pytest.mark.parametrize("method, options", [("residual", {"levels": 2}), ("grouped", {"groups": 2})])
def test_multi_codebook_fit_record_has_per_level_columns(tmp_path, method, options):
    config = RunConfig(method=method, codebook_size=8, dim=4, steps=3, batch_size=64, eval_size=300,
                       method_options=options)
    record = run_experiment(config, artifacts_dir=tmp_path / "trial")
    levels = {f"{m}_level_{l}" for m in ("utilization", "perplexity") for l in range(2)}
    assert set(record) == set(metric_registry.RESULT_KEYS) | levels
    assert record["bits_per_token"] == 2 * 3.0  # two levels of log2 8 bits
    assert math.isnan(record["kmeans_error"]) and math.isnan(record["error_vs_kmeans"])
    assert math.isfinite(record["gaussian_w2_sq"]) and record["perplexity"] <= 64
    assert record["utilization"] == pytest.approx((record["utilization_level_0"] + record["utilization_level_1"]) / 2)
    assert record["dead_codes"] == pytest.approx(16 * (1 - record["utilization"]))
    assert np.load(tmp_path / "trial" / "level_codebooks.npy").shape == (2, 8, 4 if method == "residual" else 2)
    counts = np.load(tmp_path / "trial" / "level_code_counts.npz")
    assert [counts[f"level_{l}"].sum() for l in range(2)] == [300, 300]
    assert record["utilization_level_1"] == pytest.approx((counts["level_1"] > 0).mean())
    assert not (tmp_path / "trial" / "codebook.npy").exists()  # the report's single-codebook figures skip it


def test_single_codebook_fit_record_carries_bits_per_token():
    record = run_experiment(TINY_FIT)
    assert set(record) == set(metric_registry.RESULT_KEYS) and record["bits_per_token"] == 5.0  # K = 32


def test_kmeans_reference_can_be_skipped_where_it_is_infeasible():
    record = run_experiment(TINY_FIT.replace(kmeans_reference=False))
    assert math.isnan(record["kmeans_error"]) and math.isnan(record["error_vs_kmeans"])
    assert math.isfinite(record["quantization_error"]) and 0 < record["utilization"] <= 1
    with pytest.raises(ConfigError, match="kmeans_reference"):
        TINY_FIT.replace(kmeans_reference="no")


def global_rng_script(seed: int, k: int, d: int, steps: int, batch: int, eval_size: int, log_every: int,
                      mean: float) -> tuple[float, float]:
    """A script that seeds the global RNG once and draws in program order (the Wasserstein-VQ
    authors' synthetic loop): codes, an nn.Embedding's own default draw (overwritten), an
    evaluation sample, then per step a batch and, at step 1, every log_every and the last step, an
    evaluation sample. Vanilla VQ, SGD lr 1.0 momentum 0.9; returns (E, U) on the last sample."""
    torch.manual_seed(seed)
    initial = torch.randn(k, d)
    embedding = torch.nn.Embedding(k, d)
    embedding.weight.data.copy_(initial)
    optimizer = torch.optim.SGD(embedding.parameters(), lr=1.0, momentum=0.9)
    evaluation = torch.randn(eval_size, d) + mean
    for step in range(1, steps + 1):
        z = torch.randn(batch, d) + mean
        loss = (embedding(torch.cdist(z, embedding.weight.data).argmin(1)) - z).square().sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 1 or step % log_every == 0 or step == steps:
            evaluation = torch.randn(eval_size, d) + mean
    tokens = torch.cdist(evaluation, embedding.weight.data).argmin(1)
    error = (embedding.weight.data[tokens] - evaluation).square().sum(1).mean()
    return float(error), tokens.unique().numel() / k


def test_a_single_random_stream_replays_a_script_that_seeds_the_global_rng():
    config = RunConfig(method="vanilla", codebook_size=64, dim=4, steps=7, batch_size=300, eval_size=500, log_every=3,
                       dataset_options={"mean": 1.0}, seed=12, kmeans_reference=False, random_stream="single",
                       skip_draws_after_init=64 * 4, method_options={"beta": 0.0, "reduction": "sum"})
    record = run_experiment(config)
    error, utilization = global_rng_script(12, 64, 4, steps=7, batch=300, eval_size=500, log_every=3, mean=1.0)
    assert record["quantization_error"] == pytest.approx(error, rel=1e-5)
    assert record["utilization"] == utilization
    # the default streams draw other numbers
    assert run_experiment(config.replace(random_stream="per_purpose", skip_draws_after_init=0))[
        "quantization_error"] != pytest.approx(error, rel=1e-3)


@pytest.mark.parametrize("field, value, message", [
    ("random_stream", "global", "random_stream: unknown random stream 'global'"),
    ("skip_draws_after_init", 5, "skip_draws_after_init: only used with random_stream: single"),
    ("skip_draws_after_init", -1, "skip_draws_after_init: must be an integer >= 0"),
])
def test_random_stream_options_are_checked(field, value, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**{field: value})
    with pytest.raises(ConfigError, match="random_stream: 'single' is only defined for the fit experiment"):
        TINY_VQVAE.replace(random_stream="single")
