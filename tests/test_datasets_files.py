"""Specification of a user's own data: ``features_file`` (encoder latents in .npy / .npz /
.safetensors, memory-mapped, split by rows), ``image_folder`` (PNG / JPEG / WebP files) and
``datasets.check_data`` (which local dataset files are present and intact). Every fixture file is
written by the test itself, small."""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from safetensors.numpy import save_file

import datasets
from datasets import features_file


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def features(n: int = 100, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def write(path: Path, array: np.ndarray, name: str = "features") -> Path:
    """``array`` as ``path`` in the format its suffix names (array called ``name`` in .npz / .safetensors)."""
    if path.suffix == ".npy":
        np.save(path, array)
    elif path.suffix == ".npz":
        np.savez(path, **{name: array})
    else:
        save_file({name: np.ascontiguousarray(array)}, str(path))
    return path


FORMATS = [".npy", ".npz", ".safetensors"]


# ---------------------------------------------------------------- features_file: reading


@pytest.mark.parametrize("suffix", FORMATS)
def test_reads_each_format_as_float32_rows(tmp_path, suffix):
    x = features(50, 3)
    data = datasets.load("features_file", path=str(write(tmp_path / f"f{suffix}", x)))
    assert data.kind == "features" and data.dim == 3 and data.n_rows == 50
    # every sampled vector is a row of the file
    sample = data.sample(200, gen()).numpy()
    assert sample.dtype == np.float32 and all((x == row).all(1).any() for row in sample)


def test_array_is_memory_mapped_never_loaded(tmp_path, monkeypatch):
    path = write(tmp_path / "f.npy", features(1000, 8))
    calls = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: calls.append(k.get("mmap_mode")) or real_load(*a, **k))
    data = datasets.load("features_file", path=str(path))
    assert calls == ["r"] and isinstance(data._array, np.memmap)
    for suffix in (".npz", ".safetensors"):
        other = datasets.load("features_file", path=str(write(tmp_path / f"f{suffix}", features(1000, 8))))
        assert isinstance(other._array, np.memmap)  # mapped at the array's offset inside the file
        assert np.array_equal(np.asarray(other._array), features(1000, 8))


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float_dtypes_become_float32(tmp_path, dtype):
    x = features(40, 2).astype(dtype)
    data = datasets.load("features_file", path=str(write(tmp_path / "f.npy", x)))
    sample = data.sample(10, gen())
    assert sample.dtype == torch.float32
    assert all(np.isin(row, x.astype(np.float32)).all() for row in sample.numpy())


def test_bfloat16_safetensors(tmp_path):
    x = features(30, 4)
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation to bfloat16, exactly representable
    as_float = (bits.astype(np.uint32) << 16).view(np.float32)
    path = tmp_path / "f.safetensors"
    torch_bf16 = torch.from_numpy(as_float).to(torch.bfloat16)
    from safetensors.torch import save_file as save_torch

    save_torch({"z": torch_bf16}, str(path))
    data = datasets.load("features_file", path=str(path))
    assert data.dim == 4 and data._array.dtype == np.uint16  # the stored bits, mapped
    sample = data.sample(50, gen()).numpy()
    assert all((as_float == row).all(1).any() for row in sample)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_latent_maps_become_vectors(tmp_path, layout):
    maps = np.random.default_rng(1).normal(size=(6, 3, 5, 4)).astype(np.float32)  # N, H, W, d
    stored = maps if layout == "nhwc" else maps.transpose(0, 3, 1, 2)  # N, d, H, W
    data = datasets.load("features_file", path=str(write(tmp_path / "f.npy", stored)), layout=layout,
                         test_fraction=0.2, validation_fraction=0.0)
    assert data.dim == 4 and data.n_rows == 6 and data.n_vectors("train") == 5 * 15
    vectors = maps.reshape(6, 15, 4)
    for split in ("train", "test"):
        sample = data.sample(300, gen(), split=split).numpy()
        # each vector is one position of one latent map of that split
        own = vectors[data.rows(split)].reshape(-1, 4)
        assert all((own == row).all(1).any() for row in sample)
    train_vectors = vectors[np.sort(data.rows("train"))].reshape(-1, 4).astype(np.float64)
    assert torch.allclose(data.mean, torch.from_numpy(train_vectors.mean(0)))


def test_moments_are_those_of_the_training_rows(tmp_path):
    x = features(300, 3) * np.array([1.0, 2.0, 0.5], np.float32) + 1e3  # offset: a naive E[xx]-mm loses digits
    data = datasets.load("features_file", path=str(write(tmp_path / "f.npy", x)))
    train = x[np.sort(data.rows("train"))].astype(np.float64)
    assert data.mean.dtype == data.covariance.dtype == torch.float64
    assert torch.allclose(data.mean, torch.from_numpy(train.mean(0)), rtol=0, atol=1e-9)
    assert torch.allclose(data.covariance, torch.from_numpy(np.cov(train.T)), rtol=0, atol=1e-9)


def test_moments_and_finite_scan_stream_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(features_file, "CHUNK_BYTES", 64)  # 4 rows of 4 float32 per chunk
    x = features(103, 4)
    data = datasets.load("features_file", path=str(write(tmp_path / "f.npy", x)))
    train = x[np.sort(data.rows("train"))].astype(np.float64)
    assert torch.allclose(data.covariance, torch.from_numpy(np.cov(train.T)))
    x[101, 2] = np.inf  # in the last chunk
    with pytest.raises(ValueError, match="row 101"):
        datasets.load("features_file", path=str(write(tmp_path / "g.npy", x)))


# ---------------------------------------------------------------- features_file: split


def test_split_is_a_seeded_partition_of_rows(tmp_path):
    path = str(write(tmp_path / "f.npy", features(100)))
    data = datasets.load("features_file", path=path, validation_fraction=0.2, test_fraction=0.1)
    train, validation, test = (set(data.rows(s).tolist()) for s in ("train", "validation", "test"))
    assert (len(train), len(validation), len(test)) == (70, 20, 10)
    assert train | validation | test == set(range(100))
    assert not (train & test or train & validation or validation & test)
    again = datasets.load("features_file", path=path, validation_fraction=0.2, test_fraction=0.1)
    assert np.array_equal(again.rows("test"), data.rows("test"))
    other = datasets.load("features_file", path=path, validation_fraction=0.2, test_fraction=0.1, split_seed=1)
    assert set(other.rows("test").tolist()) != test


def test_evaluation_never_sees_training_rows(tmp_path):
    x = np.arange(200, dtype=np.float32).reshape(100, 2)  # row i = (2i, 2i + 1): identifiable
    data = datasets.load("features_file", path=str(write(tmp_path / "f.npy", x)))
    ids = {split: set((data.sample(2000, gen(), split=split)[:, 0] / 2).long().tolist())
           for split in ("train", "validation", "test")}
    assert ids["test"] <= set(data.rows("test").tolist()) and ids["test"] == set(data.rows("test").tolist())
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["validation"]
    # seeded only by the generator; the split picks the rows, not the stream
    assert torch.equal(data.sample(64, gen(3), split="test"), data.sample(64, gen(3), split="test"))


def test_empty_validation_split_is_an_error_to_sample(tmp_path):
    data = datasets.load("features_file", path=str(write(tmp_path / "f.npy", features(10))), validation_fraction=0.0)
    assert len(data.rows("validation")) == 0
    with pytest.raises(ValueError, match="^split: 'validation'.*empty"):
        data.sample(4, gen(), split="validation")


def test_sha256_streams_the_file(tmp_path, monkeypatch):
    path = write(tmp_path / "f.npy", features(500))
    data = datasets.load("features_file", path=str(path))
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(datasets._common, "CHUNK_BYTES", 1000)  # many chunks; the same digest
    assert data.file_sha256() == datasets.sha256_file(path) == expected


# ---------------------------------------------------------------- features_file: bad input


def test_missing_file(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match=f"path: {tmp_path / 'nope.npy'}: no such file"):
        datasets.load("features_file", path=str(tmp_path / "nope.npy"))


@pytest.mark.parametrize("suffix, option", [(".npz", "key"), (".safetensors", "tensor")])
def test_wrong_array_name_lists_the_valid_ones(tmp_path, suffix, option):
    path = tmp_path / f"f{suffix}"
    if suffix == ".npz":
        np.savez(path, latents=features(), labels=np.zeros(100))
    else:
        save_file({"latents": features(), "labels": np.zeros(100)}, str(path))
    with pytest.raises(ValueError, match=rf"^{option}: .*no array 'latent'.*\['labels', 'latents'\]"):
        datasets.load("features_file", path=str(path), **{option: "latent"})
    with pytest.raises(ValueError, match=rf"^{option}: .*holds 2 arrays.*\['labels', 'latents'\]"):
        datasets.load("features_file", path=str(path))
    assert datasets.load("features_file", path=str(path), **{option: "latents"}).dim == 4


def test_compressed_npz_member_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "f.npz"
    np.savez_compressed(path, features=features())
    with pytest.raises(ValueError, match="key: .*f.npz.*compressed.*np.savez"):
        datasets.load("features_file", path=str(path))
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("features.npy").compress_type == zipfile.ZIP_DEFLATED


@pytest.mark.parametrize("suffix", FORMATS)
def test_non_float_dtype(tmp_path, suffix):
    path = write(tmp_path / f"f{suffix}", np.arange(20, dtype=np.int32).reshape(10, 2))
    with pytest.raises(ValueError, match=f"{path.name}.*(int32|I32).*float"):
        datasets.load("features_file", path=str(path))


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_row_named(tmp_path, suffix, bad):
    x = features(30)
    x[17, 1], x[25, 0] = bad, bad
    with pytest.raises(ValueError, match=r"f\.\w+: row 17 holds NaN or inf"):
        datasets.load("features_file", path=str(write(tmp_path / f"f{suffix}", x)))


def test_float64_beyond_float32_range_is_not_finite(tmp_path):
    x = features(10).astype(np.float64)
    x[4, 0] = 1e300
    with pytest.raises(ValueError, match="row 4 holds NaN or inf"):
        datasets.load("features_file", path=str(write(tmp_path / "f.npy", x)))


def test_too_few_rows_for_the_split(tmp_path):
    path = write(tmp_path / "f.npy", features(2))
    with pytest.raises(ValueError, match=r"rows of .*f\.npy: too few for the split: 2 in all"):
        datasets.load("features_file", path=str(path))
    assert datasets.load("features_file", path=str(path), validation_fraction=0.0).n_rows == 2


def test_dim_mismatch_and_layout_errors(tmp_path):
    flat = str(write(tmp_path / "flat.npy", features(20, 4)))
    assert datasets.load("features_file", path=flat, dim=4).dim == 4
    with pytest.raises(ValueError, match=r"^dim: 8 does not match .*flat\.npy.*d = 4"):
        datasets.load("features_file", path=flat, dim=8)
    with pytest.raises(ValueError, match="^layout: .*2-D"):
        datasets.load("features_file", path=flat, layout="nhwc")
    maps = str(write(tmp_path / "maps.npy", np.zeros((10, 2, 2, 3), np.float32)))
    with pytest.raises(ValueError, match=r"^layout: .*maps\.npy.*'nhwc'.*'nchw'"):
        datasets.load("features_file", path=maps)
    with pytest.raises(ValueError, match=r"^layout: must be one of \['nhwc', 'nchw'\]"):
        datasets.load("features_file", path=maps, layout="chw")
    cube = str(write(tmp_path / "cube.npy", np.zeros((10, 2, 3), np.float32)))
    with pytest.raises(ValueError, match=r"cube\.npy holds a 3-D array"):
        datasets.load("features_file", path=cube)


@pytest.mark.parametrize(
    "options, field",
    [
        ({}, "path"),
        ({"path": "f.csv"}, "path"),
        ({"path": "f.npy", "key": "x"}, "key"),
        ({"path": "f.npz", "tensor": "x"}, "tensor"),
        ({"path": "f.npy", "dim": 0}, "dim"),
        ({"path": "f.npy", "test_fraction": 0.0}, "test_fraction"),
        ({"path": "f.npy", "validation_fraction": 0.5, "test_fraction": 0.5}, "validation_fraction"),
        ({"path": "f.npy", "split_seed": -1}, "split_seed"),
    ],
)
def test_bad_options_name_the_field(options, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        datasets.load("features_file", **options)


def test_not_a_valid_file(tmp_path):
    for suffix in FORMATS:
        for name, content in (("junk", b"not an array at all"), ("empty", b"")):
            (tmp_path / f"{name}{suffix}").write_bytes(content)
            with pytest.raises(ValueError, match=f"^path: .*{name}{suffix}"):
                datasets.load("features_file", path=str(tmp_path / f"{name}{suffix}"))


# ---------------------------------------------------------------- image_folder


def picture(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "RGB")


def make_folder(root: Path, per_class: int = 5) -> list[Path]:
    """Two class subfolders of PNG / JPEG / WebP files of assorted sizes and modes, plus a text file."""
    paths = []
    for c, name in enumerate(("cats", "dogs")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = picture(20 + 3 * i, 16 + 5 * c, seed=10 * c + i)
            suffix = (".png", ".jpg", ".webp", ".JPEG", ".png")[i % 5]
            if i == 4:
                image = image.convert("RGBA" if c == 0 else "L")
            path = root / name / f"{i}{suffix}"
            image.save(path)
            paths.append(path)
    (root / "cats" / "notes.txt").write_text("not an image")
    return paths


def test_image_folder_loads_every_format_resized_and_cropped(tmp_path):
    paths = make_folder(tmp_path)
    data = datasets.load("image_folder", root=str(tmp_path), size=8, test_fraction=0.2, validation_fraction=0.2)
    assert data.kind == "images" and data.channels == 3 and data.size == 8
    assert (len(data.train), len(data.validation), len(data.test)) == (6, 2, 2)
    assert data.classes == ("cats", "dogs")
    everything = [p for split in datasets.SPLITS for p in data.files[split]]
    assert sorted(everything) == sorted(paths)  # the text file is not an image; nothing else is left out
    for split in datasets.SPLITS:
        x, y = getattr(data, split), getattr(data, f"{split}_labels")
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 8, 8) and 0 <= x.min() and x.max() <= 1
        assert y.tolist() == [0 if p.parent.name == "cats" else 1 for p in data.files[split]]
    # identical to Pillow's own resize-shorter-side + center crop of the file
    path = data.files["train"][0]
    with Image.open(path) as image:
        expected = np.array(ImageOps.fit(image.convert("RGB"), (8, 8), Image.Resampling.BICUBIC))
    assert torch.equal(data.train[0] * 255, torch.from_numpy(expected).permute(2, 0, 1).float())


def test_image_folder_center_crop_keeps_the_middle(tmp_path):
    # H = 20, W = 60: red | green | blue; the central 20 x 20 square lies 10 pixels inside the green
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, :10, 0], wide[:, 10:50, 1], wide[:, 50:, 2] = 255, 255, 255
    tall = wide.transpose(1, 0, 2).copy()
    for i, array in enumerate((wide, tall, wide, tall)):
        Image.fromarray(array).save(tmp_path / f"{i}.png")
    data = datasets.load("image_folder", root=str(tmp_path), size=10, test_fraction=0.25, validation_fraction=0.0)
    green = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1).expand(3, 3, 10, 10)
    assert torch.equal(data.train, green)


def test_image_folder_split_is_seeded_by_file(tmp_path):
    make_folder(tmp_path, per_class=10)
    a = datasets.load("image_folder", root=str(tmp_path), size=4)
    b = datasets.load("image_folder", root=str(tmp_path), size=4)
    assert a.files == b.files and torch.equal(a.test, b.test)
    c = datasets.load("image_folder", root=str(tmp_path), size=4, split_seed=1)
    assert set(c.files["test"]) != set(a.files["test"])
    assert len({p for split in datasets.SPLITS for p in a.files[split]}) == 20  # disjoint, complete


def test_image_folder_manifest_has_per_file_sha256(tmp_path):
    make_folder(tmp_path)
    data = datasets.load("image_folder", root=str(tmp_path), size=4)
    manifest = data.manifest()
    assert len(manifest) == 10
    for entry in manifest:
        path = tmp_path / entry["file"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert path in data.files[entry["split"]] and entry["label"] == data.classes.index(path.parent.name)


def test_image_folder_lists_every_unreadable_file(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "dogs" / "empty.jpg").write_bytes(b"")
    good = tmp_path / "dogs" / "1.jpg"
    (tmp_path / "dogs" / "truncated.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ValueError) as err:
        datasets.load("image_folder", root=str(tmp_path))
    message = str(err.value)
    assert message.startswith("root: 3 of 13 image files")
    for name in ("cats/broken.png", "dogs/empty.jpg", "dogs/truncated.jpg"):
        assert str(tmp_path / name) in message
    assert "1.jpg:" not in message


def test_image_folder_empty_or_missing(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match="no such folder"):
        datasets.load("image_folder", root=str(tmp_path / "nowhere"))
    with pytest.raises(datasets.DatasetNotFoundError, match="holds no image file"):
        datasets.load("image_folder", root=str(tmp_path))
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(datasets.DatasetNotFoundError, match=r"holds no image file \(.*\.png, \.jpg, \.jpeg, \.webp"):
        datasets.load("image_folder", root=str(tmp_path))


def test_image_folder_too_few_files_and_bad_options(tmp_path):
    picture(8, 8, 0).save(tmp_path / "only.png")
    with pytest.raises(ValueError, match="image files in .*too few for the split: 1 in all"):
        datasets.load("image_folder", root=str(tmp_path))
    for options, field in (({}, "root"), ({"root": str(tmp_path), "size": 0}, "size"),
                           ({"root": str(tmp_path), "test_fraction": 1.5}, "test_fraction")):
        with pytest.raises(ValueError, match=rf"^{field}:"):
            datasets.load("image_folder", **options)


# ---------------------------------------------------------------- check_data


def test_check_data_reports_missing_files_and_where_to_get_them(tmp_path):
    report = datasets.check_data(tmp_path)
    assert not report.ok and report.not_ready == ["cifar10", "svhn"]
    assert [check.dataset for check in report.datasets] == ["cifar10", "svhn"]  # every dataset with official files
    text = str(report)
    for url in ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                "http://ufldl.stanford.edu/housenumbers/test_32x32.mat"):
        assert url in text
    assert str(tmp_path / "train_32x32.mat") in text and "c58f30108f718f92721af3b95e74349a" in text
    svhn_check = report.datasets[1]
    assert [(Path(f.path).name, f.status) for f in svhn_check.files] == [
        ("train_32x32.mat", "missing"), ("test_32x32.mat", "missing")]


def test_check_data_verifies_checksums_where_the_loader_reads(tmp_path, monkeypatch):
    from datasets import cifar10, svhn
    from tests.test_datasets import make_cifar, make_svhn, md5

    cifar_files, svhn_files = make_cifar(tmp_path), make_svhn(tmp_path)
    # the official MD5s reject the fixtures: reported corrupt with both hashes, never "ok"
    report = datasets.check_data(tmp_path)
    assert report.not_ready == ["cifar10", "svhn"]
    first = report.datasets[0].files[0]
    assert first.status == "corrupt" and first.expected_md5 == "c99cafc152244af753f735de768cd75f"
    assert first.actual_md5 == md5(cifar_files["data_batch_1"]) and first.actual_md5 in str(report)
    # with the fixtures' own MD5s everything checks out, and the loaders agree
    monkeypatch.setattr(cifar10, "MD5", {name: md5(data) for name, data in cifar_files.items()})
    monkeypatch.setattr(svhn, "MD5", {name: md5(data) for name, data in svhn_files.items()})
    report = datasets.check_data(str(tmp_path))
    assert report.ok and all(f.status == "ok" for check in report.datasets for f in check.files)
    assert len(report.datasets[0].files) == 6 and "all datasets ready" in str(report)
    datasets.load("cifar10", root=tmp_path), datasets.load("svhn", root=tmp_path)
    # one damaged file is named
    (tmp_path / "test_32x32.mat").write_bytes(b"damaged")
    report = datasets.check_data(tmp_path)
    assert report.not_ready == ["svhn"]
    assert [f.status for f in report.datasets[1].files] == ["ok", "corrupt"]


def test_check_data_reads_the_cifar_archive_when_the_folder_is_incomplete(tmp_path, monkeypatch):
    from datasets import cifar10
    from tests.test_datasets import make_cifar, md5

    files = make_cifar(tmp_path, archive=True)
    monkeypatch.setattr(cifar10, "MD5", {name: md5(data) for name, data in files.items()})
    check = datasets.check_data(tmp_path).datasets[0]
    assert check.ok and [Path(f.path).name for f in check.files] == ["cifar-10-python.tar.gz"]
