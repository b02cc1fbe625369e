"""Reliability of the data and the code a run is handed: images of every mode converted faithfully or
refused, features files checked early (what a path is, a bound on d) and scanned without holding the
file in memory, and a plugin that returns the wrong shape or raises named in one line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
import methods
from benchmark.experiments.config import RunConfig
from benchmark.experiments.train import run_experiment
from benchmark.experiments.training import QuantizerOutputError
from datasets import features_file, image_folder
from tests.test_plugins import Site, site  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(codebook_size=16, dim=2, steps=4, batch_size=64, eval_size=256, log_every=2, device="cpu")


# ------------------------------------------------------------------------------ images
def test_a_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    """0..62930 in a 16-bit PNG used to decode with 98.8% of the pixels at 255."""
    values = np.linspace(0, 62930, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode in image_folder.SIXTEEN_BIT_MODES + ("I",)
    pixels = image_folder.decode(tmp_path / "deep.png", 32)
    assert pixels.shape == (3, 32, 32) and (pixels[0] == pixels[1]).all()
    expected = np.round(values.astype(np.float64) * 255 / 65535)
    assert np.abs(pixels[0].astype(np.float64) - expected).max() <= 1  # bicubic at scale 1 is the identity
    assert (pixels == 255).mean() < 0.01


@pytest.mark.parametrize("mode, suffix", [("1", ".png"), ("L", ".png"), ("LA", ".png"), ("P", ".png"),
                                          ("RGB", ".png"), ("RGBA", ".webp"), ("CMYK", ".jpg"), ("I;16", ".png")])
def test_every_mode_pillow_writes_is_decoded_as_rgb(mode: str, suffix: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8), "RGB")
    image = (Image.fromarray((np.asarray(base.convert("L")).astype(np.uint16) * 257)) if mode == "I;16"
             else base.convert(mode))
    image.save(tmp_path / f"x{suffix}")
    pixels = image_folder.decode(tmp_path / f"x{suffix}", 8)
    assert pixels.dtype == np.uint8 and pixels.shape == (3, 8, 8)
    if mode in ("L", "I;16"):  # grey kept: 8-bit grey and its 16-bit copy decode alike
        grey = image_folder.decode(tmp_path / f"x{suffix}", 8)[0]
        base.convert("L").save(tmp_path / "grey.png")
        assert np.abs(grey.astype(int) - image_folder.decode(tmp_path / "grey.png", 8)[0]).max() <= 1


def test_float_and_out_of_range_pixels_are_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"f.tif: mode F \(float pixels\) has no stated range"):
        image_folder.to_rgb(Image.fromarray(np.ones((4, 4), np.float32)), tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"i.png: mode I with values in \[-5, 70000\], outside the 16-bit range"):
        image_folder.to_rgb(Image.fromarray(np.array([[-5, 70000]], np.int32)), tmp_path / "i.png")


# ------------------------------------------------------------------------------ features files
def test_a_folder_a_symlink_loop_or_a_dangling_link_is_named(tmp_path: Path) -> None:
    (tmp_path / "latents.npy").mkdir()
    os.symlink(tmp_path / "loop_b.npy", tmp_path / "loop_a.npy")
    os.symlink(tmp_path / "loop_a.npy", tmp_path / "loop_b.npy")
    os.symlink(tmp_path / "gone.npy", tmp_path / "dangling.npy")
    for name, message in (("latents.npy", "a folder, not a file"), ("loop_a.npy", "a symbolic link loop"),
                          ("dangling.npy", "a dangling symbolic link"), ("nope.npy", "no such file")):
        with pytest.raises(datasets.DatasetNotFoundError, match=f"path: {tmp_path / name}: {message}"):
            datasets.load("features_file", path=str(tmp_path / name))


def test_a_transposed_array_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(3, 10^6): d = 10^6 would ask for 7.28 TiB at the first covariance; refused from the header."""
    path = tmp_path / "wide.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(3, 10**6)).flush()

    def no_scan(self: object) -> None:
        pytest.fail("the file was scanned before its shape was checked")

    monkeypatch.setattr(features_file.FeaturesFile, "_check_finite", no_scan)
    with pytest.raises(ValueError, match=r"d = 1000000 features per vector in \(3, 1000000\) exceeds 16384 .*7.28 "
                                         r"TiB.*save its transpose"):
        datasets.load("features_file", path=str(path))


def test_the_finite_scan_releases_the_pages_it_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan of a 20 GB memmap used to keep every page resident (9.6 GB of RSS, unfinished)."""
    monkeypatch.setattr(features_file, "CHUNK_BYTES", 4096)  # 16 rows of 64 float32 a chunk
    path = tmp_path / "big.npy"
    rows = 2 * features_file.RELEASE_EVERY * 16 + 5
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, 64))
    array[:] = 1.0
    array.flush()
    del array
    released: list[int] = []
    real = features_file._release_pages
    monkeypatch.setattr(features_file, "_release_pages", lambda a: (released.append(1), real(a)))
    data = datasets.load("features_file", path=str(path))
    chunks = -(-rows // 16)
    assert len(released) == chunks // features_file.RELEASE_EVERY + 1 >= 2
    assert data.n_rows == rows


# ------------------------------------------------------------------------------ plugins
FLAT_VQ = """
    from methods.vanilla import VanillaVQ

    class FlatVQ(VanillaVQ):
        def forward(self, z):
            out = super().forward(z)
            return type(out)(out.quantized, out.indices.unsqueeze(-1), out.loss, out.losses)
"""

RAISING_VQ = """
    from methods.vanilla import VanillaVQ

    class RaisingVQ(VanillaVQ):
        def forward(self, z):
            raise RuntimeError("CUDA kernel not built for this card")
"""


def test_a_plugin_returning_the_wrong_shape_fails_the_run(site: Site) -> None:
    site.install("vq-flat", "0.1", {"vqbench.methods": ["flat_vq = vq_flat_mod:FlatVQ"]},
                 {"vq_flat_mod": FLAT_VQ})
    assert site.rescan() == []
    quantizer = methods.build("flat_vq", dim=2, codebook_size=4)
    assert quantizer(torch.zeros(3, 5, 2)).indices.shape == (3, 5, 1)  # what the plugin does
    with pytest.raises(QuantizerOutputError, match=r"method: FlatVQ from module 'vq_flat_mod' \(distribution "
                                                   r"vq-flat==0.1\) returned indices of shape \(64, 1\) for "
                                                   r"features of shape \(64, 2\); expected \(64,\)"):
        run_experiment(RunConfig.from_dict({**TINY, "method": "flat_vq"}))


def test_a_raising_plugin_is_one_line_naming_it(site: Site, capsys: pytest.CaptureFixture) -> None:
    from benchmark.experiments import run

    site.install("vq-raise", "2.0", {"vqbench.methods": ["raise_vq = vq_raise_mod:RaisingVQ"]},
                 {"vq_raise_mod": RAISING_VQ})
    assert site.rescan() == []
    with pytest.raises(methods.PluginError, match=r"method: 'raise_vq' from the plugin vq-raise==2.0 raised "
                                                  r"RuntimeError: CUDA kernel not built for this card \(.*vq_raise_mod"
                                                  r".py:\d+\)"):
        run_experiment(RunConfig.from_dict({**TINY, "method": "raise_vq"}))
    args = ["--method", "raise_vq", "--dim", "2", "--codebook-size", "16", "--steps", "4", "--batch-size", "64",
            "--eval-size", "256", "--device", "cpu"]
    assert run.main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "vq-raise==2.0 raised RuntimeError" in err


def test_a_plugins_files_outside_the_repository_are_a_dvc_dependency(site: Site, tmp_path: Path) -> None:
    """A plugin edited outside the repository left `dvc status` up to date: the prepare stages
    depended only on the in-repo plugins/ folder."""
    import yaml

    from benchmark.pipeline import code, prepare

    site.install("vq-out", "0.1", {"vqbench.methods": ["out_vq = vq_out_mod:OutVQ"]},
                 {"vq_out_mod": "from methods.vanilla import VanillaVQ\n\nclass OutVQ(VanillaVQ):\n    pass\n"})
    out = tmp_path / "plugins.json"
    assert prepare.main(["--plugins", str(out)]) == 0
    entry = code.plugin_code()["vqbench.methods"]["out_vq"]
    module = str((site.root / "vq_out_mod.py").resolve())
    assert entry["distribution"] == "vq-out==0.1" and list(entry["files"]) == [module]
    before = out.read_text()
    (site.root / "vq_out_mod.py").write_text("# a comment only\n" + (site.root / "vq_out_mod.py").read_text())
    code.file_digest.cache_clear()
    assert prepare.main(["--plugins", str(out)]) == 0 and out.read_text() == before  # comments retrain nothing
    (site.root / "vq_out_mod.py").write_text((site.root / "vq_out_mod.py").read_text().replace(
        "pass", "tunables = {}"))
    code.file_digest.cache_clear()
    assert prepare.main(["--plugins", str(out)]) == 0 and out.read_text() != before

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["plugins"]["always_changed"] is True
    produced = [next(iter(o)) if isinstance(o, dict) else o for o in stages["plugins"]["outs"]]
    assert produced == ["data/plugins.json"] and "data/plugins.json" in stages["prepare"]["deps"]
    assert "--plugins data/plugins.json" in stages["plugins"]["cmd"]
