"""Specification of the datasets package: registry, synthetic distributions, image datasets, and
the CIFAR-10 / SVHN readers on small fixture files in the official formats. A user's own data
(features_file, image_folder) and check_data are specified in tests/test_datasets_files.py."""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import datasets
from datasets import cifar10, svhn
from datasets._common import FeatureDistribution, ImageDataset
from benchmark.paths import REPO_ROOT

FEATURES = [name for name in datasets.available() if datasets.get(name).kind == "features"]
OFFLINE_IMAGES = ["digits", "image_patches"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def load_feature(name: str, folder: Path):
    """Feature dataset ``name`` with default options; one that reads a file (option ``path``) gets
    a small fixture file of standard-normal (200, 8) float32 features written in ``folder``."""
    if "path" not in datasets.get(name).option_names():
        return datasets.load(name)
    path = folder / "features.npy"
    if not path.exists():
        np.save(path, np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32))
    return datasets.load(name, path=str(path))


# ---------------------------------------------------------------- package identity


def test_import_resolves_to_repo_package():
    assert Path(datasets.__file__).resolve() == REPO_ROOT / "datasets" / "__init__.py"
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("datasets")  # Hugging Face datasets must not be installed


# ---------------------------------------------------------------- registry


def test_available_lists_every_dataset():
    assert datasets.available() == sorted([
        "cifar10", "digits", "disk", "features_file", "gaussian", "gaussian_mixture", "image_folder",
        "image_patches", "low_rank_gaussian", "svhn", "uniform",
    ])


@pytest.mark.parametrize("name", sorted(datasets.DATASETS))
def test_spec_is_frozen_and_consistent(name):
    spec = datasets.get(name)
    assert spec.name == name and spec.kind in datasets.KINDS and spec.source
    assert spec.cls.kind == spec.kind and spec.cls.Options is spec.options
    assert issubclass(spec.cls, FeatureDistribution if spec.kind == "features" else ImageDataset)
    assert dataclasses.is_dataclass(spec.options) and spec.options.__dataclass_params__.frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"


def test_unknown_name_lists_valid_and_close_match():
    with pytest.raises(ValueError) as err:
        datasets.load("gausian")
    message = str(err.value)
    assert message.startswith("dataset: unknown dataset 'gausian'. Did you mean 'gaussian'? Valid datasets: [")
    for name in datasets.available():
        assert name in message
    with pytest.raises(ValueError, match="Valid datasets"):
        datasets.get("nothing_like_it")


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError) as err:
        datasets.load("gaussian", meen=1.0)
    message = str(err.value)
    assert message.startswith("meen: unknown option for dataset 'gaussian'. Did you mean 'mean'?")
    assert "['dim', 'mean', 'scale']" in message


def test_duplicate_registration_fails():
    with pytest.raises(ValueError, match="already registered"):

        @datasets.register("gaussian")
        class Again(datasets.get("gaussian").cls):  # noqa: F811
            pass

    assert datasets.get("gaussian").cls.__name__ == "Gaussian"


def test_register_requires_frozen_options():
    @dataclasses.dataclass
    class Loose:
        dim: int = 2

    with pytest.raises(TypeError, match="frozen"):

        @datasets.register("loose_options_test")
        class Bad(FeatureDistribution):
            Options = Loose
            source = "test"

    assert "loose_options_test" not in datasets.available()


@pytest.mark.parametrize(
    "name, options, field",
    [
        ("gaussian", {"dim": 0}, "dim"),
        ("gaussian", {"dim": 2.5}, "dim"),
        ("gaussian", {"scale": 0.0}, "scale"),
        ("gaussian", {"mean": float("nan")}, "mean"),
        ("uniform", {"low": 1.0, "high": 1.0}, "high"),
        ("uniform", {"mean": float("inf")}, "mean"),
        ("gaussian_mixture", {"dim": 2, "components": 5}, "components"),
        ("gaussian_mixture", {"separation": -1.0}, "separation"),
        ("disk", {"dim": 3}, "dim"),
        ("disk", {"radius": -1.0}, "radius"),
        ("low_rank_gaussian", {"dim": 4, "rank": 4}, "rank"),
        ("low_rank_gaussian", {"rank": 0}, "rank"),
        ("digits", {"test_fraction": 1.0}, "test_fraction"),
        ("digits", {"validation_fraction": -0.1}, "validation_fraction"),
        ("digits", {"test_fraction": 0.5, "validation_fraction": 0.5}, "validation_fraction"),
        ("cifar10", {"root": "x", "validation_fraction": 1.0}, "validation_fraction"),
        ("svhn", {"root": "x", "split_seed": -1}, "split_seed"),
        ("image_patches", {"images": ["astronaut", "moon"]}, "images"),
        ("image_patches", {"patch_size": 301, "images": ["chelsea"], "patches": 2}, "patch_size"),
        ("cifar10", {}, "root"),
        ("svhn", {"root": None}, "root"),
    ],
)
def test_bad_option_names_the_field(name, options, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        datasets.load(name, **options)


def test_int_options_accepted_for_floats():
    assert datasets.load("gaussian", mean=4, scale=2).options == datasets.get("gaussian").options(
        mean=4.0, scale=2.0
    )
    assert isinstance(datasets.load("gaussian", mean=4).options.mean, float)


# ---------------------------------------------------------------- feature distributions


@pytest.mark.parametrize("name", FEATURES)
def test_sample_shape_dtype_and_n_checks(name, tmp_path):
    dist = load_feature(name, tmp_path)
    assert dist.kind == "features"
    for split in ("train", "validation", "test"):
        x = dist.sample(5, gen(), split=split)
        assert x.shape == (5, dist.dim) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(dist.sample(5, gen()), dist.sample(5, gen(), split="train"))  # the default
    with pytest.raises(ValueError, match="^split:"):
        dist.sample(5, gen(), split="eval")
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="^n:"):
            dist.sample(bad, gen())
    with pytest.raises(TypeError, match="generator"):
        dist.sample(5, 0)
    assert dist.mean.dtype == dist.covariance.dtype == torch.float64
    assert dist.mean.shape == (dist.dim,) and dist.covariance.shape == (dist.dim, dist.dim)


@pytest.mark.parametrize("name", FEATURES)
def test_seeded_only_by_generator(name, tmp_path):
    dist = load_feature(name, tmp_path)
    torch.manual_seed(123)
    a = dist.sample(1000, gen(7))
    torch.manual_seed(456)  # the global RNG must not matter
    b = dist.sample(1000, gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, dist.sample(1000, gen(8)))
    g = gen(7)
    first, second = dist.sample(500, g), dist.sample(500, g)
    assert not torch.equal(first, second)  # the generator's state advances
    state = torch.get_rng_state()
    dist.sample(100, g)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never drawn from


# Every device this machine has: CPU always, CUDA where present (no skipped tests on CPU-only CI).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", FEATURES)
def test_sample_on_generator_device(name, device, tmp_path):
    dist = load_feature(name, tmp_path)
    g = torch.Generator(device=device).manual_seed(3)
    x = dist.sample(4096, g)
    assert x.device.type == device and x.dtype == torch.float32 and x.shape == (4096, dist.dim)
    assert torch.equal(x, dist.sample(4096, torch.Generator(device=device).manual_seed(3)))


@pytest.mark.parametrize(
    "name, options",
    [
        ("gaussian", {}),
        ("gaussian", {"mean": 4.0, "scale": 0.5, "dim": 3}),
        ("uniform", {"low": 2.0, "high": 5.0}),
        ("uniform", {"mean": 4.0, "dim": 3}),
        ("uniform", {"low": 0.0, "high": 2.0, "mean": -3.0}),
        ("gaussian_mixture", {}),
        ("gaussian_mixture", {"dim": 3, "components": 3, "separation": 6.0, "scale": 0.5}),
        ("disk", {"radius": 2.0}),
        ("low_rank_gaussian", {"dim": 6, "rank": 3, "scale": 2.0}),
    ],
)
def test_sample_moments_match_closed_form(name, options):
    dist = datasets.load(name, **options)
    x = dist.sample(200_000, gen(1)).double()
    var = dist.covariance.diagonal().max().item()
    # standard error of a mean: sqrt(var / n) ~ 0.0022 sqrt(var): the bound is about 7 of them
    assert torch.allclose(x.mean(0), dist.mean, atol=0.015 * max(var, 1.0) ** 0.5)
    assert torch.allclose(torch.cov(x.T), dist.covariance, atol=0.03 * max(var, 1.0))


def test_gaussian_closed_form_values():
    dist = datasets.load("gaussian", dim=3, mean=4.0, scale=2.0)
    assert torch.equal(dist.mean, torch.full((3,), 4.0, dtype=torch.float64))
    assert torch.equal(dist.covariance, 4.0 * torch.eye(3, dtype=torch.float64))


def test_synthetic_splits_are_fresh_draws_of_one_distribution():
    dist = datasets.load("gaussian", dim=2, mean=3.0)
    train, test = dist.sample(1000, gen(), split="train"), dist.sample(1000, gen(), split="test")
    assert torch.equal(train, test)  # the split does not change the stream: same generator, same draw
    g = gen()
    assert not torch.equal(dist.sample(1000, g, split="train"), dist.sample(1000, g, split="test"))


def test_uniform_mean_shift_is_the_papers_shifted_cube():
    mu = 4.0
    shifted = datasets.load("uniform", dim=3, mean=mu)
    x = shifted.sample(10_000, gen())
    assert x.min() >= mu - 1 and x.max() <= mu + 1  # U[-1, 1]^d + mu
    assert torch.equal(shifted.mean, torch.full((3,), mu, dtype=torch.float64))
    # mean = 0 is today's cube, draw for draw; a shift moves every draw by exactly mu
    plain = datasets.load("uniform", dim=3).sample(100, gen())
    assert torch.equal(plain, datasets.load("uniform", dim=3, mean=0.0).sample(100, gen()))
    assert torch.allclose(shifted.sample(100, gen()), plain + mu)
    assert torch.equal(datasets.load("uniform", dim=3, low=-1.0 + mu, high=1.0 + mu).mean, shifted.mean)


def test_gaussian_mixture_placement_and_bimodality():
    dist = datasets.load("gaussian_mixture", dim=3, components=3, separation=4.0)
    expected = torch.tensor([[2.0, 0, 0], [-2.0, 0, 0], [0, 2.0, 0]], dtype=torch.float64)
    assert torch.equal(dist.means, expected)
    bimodal = datasets.load("gaussian_mixture", dim=2, separation=6.0, scale=0.5)
    x = bimodal.sample(20_000, gen())
    # mass sits near +-3 on axis 0, almost none near 0: a Gaussian would peak there
    near_modes = ((x[:, 0].abs() - 3.0).abs() < 1.0).float().mean()
    near_zero = (x[:, 0].abs() < 1.0).float().mean()
    assert near_modes > 0.9 and near_zero < 0.01
    assert abs((x[:, 0] > 0).float().mean().item() - 0.5) < 0.02  # equal weights


def test_disk_within_radius_and_uniform():
    radius = 2.0
    x = datasets.load("disk", radius=radius).sample(100_000, gen()).double()
    r = x.norm(dim=1)
    assert r.max() <= radius * (1 + 1e-6)
    # uniform on the disk: P(r <= t) = (t / R)^2, and the angle is uniform
    for t in (0.5, 1.0, 1.5):
        assert abs((r <= t).double().mean().item() - (t / radius) ** 2) < 0.01
    angle_bins = torch.histc(torch.atan2(x[:, 1], x[:, 0]), bins=8, min=-torch.pi, max=torch.pi)
    assert (angle_bins / len(x) - 1 / 8).abs().max() < 0.01


def test_low_rank_covariance_rank_and_support():
    dist = datasets.load("low_rank_gaussian", dim=8, rank=3, scale=1.5)
    assert torch.linalg.matrix_rank(dist.covariance).item() == 3
    basis = dist.basis
    assert torch.allclose(basis.T @ basis, torch.eye(3, dtype=torch.float64), atol=1e-12)
    x = dist.sample(10_000, gen()).double()
    assert torch.linalg.matrix_rank(torch.cov(x.T), rtol=1e-4).item() == 3
    off_subspace = x - x @ basis @ basis.T
    assert off_subspace.abs().max() < 1e-4
    eig = torch.linalg.eigvalsh(dist.covariance)
    assert torch.allclose(eig[-3:], torch.full((3,), 1.5**2, dtype=torch.float64), atol=1e-10)
    # the subspace is fixed by basis_seed only
    assert torch.equal(datasets.load("low_rank_gaussian", dim=8, rank=3).basis, basis)
    assert not torch.equal(datasets.load("low_rank_gaussian", dim=8, rank=3, basis_seed=1).basis, basis)


# ---------------------------------------------------------------- offline image datasets


@pytest.fixture(scope="module")
def offline_images():
    return {name: datasets.load(name) for name in OFFLINE_IMAGES}


@pytest.mark.parametrize("name, channels, size", [("digits", 1, 8), ("image_patches", 3, 16)])
def test_offline_images_shapes_and_ranges(offline_images, name, channels, size):
    data = offline_images[name]
    assert data.kind == "images" and data.channels == channels and data.size == size
    for x, y in ((data.train, data.train_labels), (data.validation, data.validation_labels),
                 (data.test, data.test_labels)):
        assert x.dtype == torch.float32 and x.shape[1:] == (channels, size, size)
        assert x.min() >= 0 and x.max() <= 1 and y.dtype == torch.long and y.shape == x.shape[:1]
    assert data.train.max() == 1.0 and data.train.min() == 0.0


def test_digits_split(offline_images):
    data = offline_images["digits"]
    assert len(data.test) == round(1797 * 0.2) and len(data.validation) == round(1797 * 0.1)
    assert len(data.train) + len(data.validation) + len(data.test) == 1797
    assert set(data.train_labels.tolist()) == set(range(10))
    # values are multiples of 1/16
    assert torch.equal(data.train * 16, (data.train * 16).round())
    again = datasets.load("digits")
    assert torch.equal(again.train, data.train) and torch.equal(again.test_labels, data.test_labels)
    other = datasets.load("digits", split_seed=1, test_fraction=0.5)
    assert len(other.test) == round(1797 * 0.5) and not torch.equal(other.test[:359], data.test)
    # train and test are disjoint: together they are the whole dataset, each image once
    from sklearn.datasets import load_digits

    whole = load_digits().images.reshape(-1, 64) / 16
    union = torch.cat([data.train, data.validation, data.test]).flatten(1).double().numpy()
    assert np.array_equal(union[np.lexsort(union.T)], whole[np.lexsort(whole.T)])
    # the validation set is held out of the training images; the test set of a seed stays put
    whole_train = datasets.load("digits", validation_fraction=0.0)
    assert len(whole_train.validation) == 0 and whole_train.validation.shape[1:] == (1, 8, 8)
    assert torch.equal(whole_train.test, data.test)
    assert len(whole_train.train) == len(data.train) + len(data.validation)


def test_image_patches_deterministic_and_from_images(offline_images):
    import skimage.data

    data = offline_images["image_patches"]
    assert len(data.test) == len(data.validation) == round(4096 * 0.1)
    assert len(data.train) + len(data.validation) + len(data.test) == 4096
    small = dict(patch_size=8, patches=64, images=["chelsea", "coffee"])
    a, b = datasets.load("image_patches", **small), datasets.load("image_patches", **small)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert a.options.images == ("chelsea", "coffee")
    c = datasets.load("image_patches", **small, crop_seed=1)
    assert not torch.equal(a.train, c.train)
    # every patch is an actual crop of its source image (labels = index in `images`)
    sources = [skimage.data.chelsea(), skimage.data.coffee()]
    for patch, label in zip(a.train[:10], a.train_labels[:10]):
        image, crop = sources[label], (patch * 255).round().byte().permute(1, 2, 0).numpy()
        corners = np.argwhere((image[:-7, :-7] == crop[0, 0]).all(-1))  # candidate top-left pixels
        assert any(np.array_equal(image[y : y + 8, x : x + 8], crop) for y, x in corners)


# ---------------------------------------------------------------- CIFAR-10 / SVHN fixtures


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cifar_images(n: int, offset: int) -> np.ndarray:
    """Distinct uint8 images (n, 3, 32, 32): pixel (c, h, w) of image i encodes i, c, h, w."""
    i, c, h, w = np.meshgrid(np.arange(n) + offset, np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((i * 37 + c * 85 + h * 7 + w * 3) % 256).astype(np.uint8)


def make_cifar(root: Path, archive: bool = False, per_batch: int = 3, n_test: int = 2) -> dict[str, bytes]:
    """Official layout with tiny batches; returns {file name: bytes} (archive included if made)."""
    files: dict[str, bytes] = {}
    offset = 0
    for name in cifar10.TRAIN_FILES + cifar10.TEST_FILES:
        n = n_test if name == "test_batch" else per_batch
        images = cifar_images(n, offset)
        batch = {
            b"batch_label": name.encode(),
            b"data": images.reshape(n, 3072),  # R plane, G plane, B plane; each row-major
            b"labels": [int((offset + k) % 10) for k in range(n)],
            b"filenames": [f"{offset + k}.png".encode() for k in range(n)],
        }
        files[name] = pickle.dumps(batch, protocol=2)
        offset += n
    if archive:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"{cifar10.FOLDER}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        files[cifar10.ARCHIVE] = buffer.getvalue()
        (root / cifar10.ARCHIVE).write_bytes(files[cifar10.ARCHIVE])
    else:
        (root / cifar10.FOLDER).mkdir(parents=True)
        for name, data in files.items():
            (root / cifar10.FOLDER / name).write_bytes(data)
    return files


@pytest.fixture
def no_unpickling(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("unpickled an unverified file")

    monkeypatch.setattr(pickle, "load", fail)
    monkeypatch.setattr(pickle, "loads", fail)


def test_official_md5_table():
    assert cifar10.MD5[cifar10.ARCHIVE] == "c58f30108f718f92721af3b95e74349a"
    assert set(cifar10.MD5) == {cifar10.ARCHIVE, *cifar10.TRAIN_FILES, *cifar10.TEST_FILES}
    assert svhn.MD5 == {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
                        "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"}
    with pytest.raises(TypeError):
        cifar10.MD5["data_batch_1"] = "0" * 32  # read-only: tests cannot weaken it by accident


@pytest.mark.parametrize("archive", [False, True])
def test_cifar10_fixture_loads(tmp_path, monkeypatch, archive):
    files = make_cifar(tmp_path, archive=archive)
    monkeypatch.setattr(cifar10, "MD5", {name: md5(data) for name, data in files.items()})
    data = datasets.load("cifar10", root=str(tmp_path), validation_fraction=0.0)
    assert data.train.shape == (15, 3, 32, 32) and data.test.shape == (2, 3, 32, 32)
    assert data.channels == 3 and data.size == 32
    assert torch.equal(data.train * 255, torch.from_numpy(cifar_images(15, 0)).float())  # batch order 1..5
    assert torch.equal(data.test * 255, torch.from_numpy(cifar_images(2, 15)).float())
    assert data.train_labels.tolist() == [k % 10 for k in range(15)]
    assert data.test_labels.tolist() == [15 % 10, 16 % 10]
    # CHW from the row-major 3072 layout: byte 1024 c + 32 h + w of a row is pixel (c, h, w)
    row = pickle.loads(files["data_batch_2"])[b"data"][1]
    for c, h, w in [(0, 0, 0), (1, 5, 30), (2, 31, 1)]:
        assert data.train[4, c, h, w] * 255 == row[1024 * c + 32 * h + w]
    # by default a seeded tenth of the official training images is held out as validation
    held = datasets.load("cifar10", root=str(tmp_path))
    assert len(held.validation) == 2 and len(held.train) == 13 and torch.equal(held.test, data.test)
    together = torch.cat([held.train, held.validation])
    assert sorted(map(tuple, together.flatten(1).tolist())) == sorted(map(tuple, data.train.flatten(1).tolist()))
    other = datasets.load("cifar10", root=str(tmp_path), split_seed=1)
    assert not torch.equal(other.validation, held.validation)


def test_cifar10_wrong_checksum_raises_before_unpickling(tmp_path, monkeypatch, no_unpickling):
    files = make_cifar(tmp_path)
    table = {name: md5(data) for name, data in files.items()}
    table["data_batch_3"] = "0" * 32
    with pytest.raises(datasets.ChecksumError) as err:
        cifar10.read_cifar10(tmp_path, checksums=table)
    message = str(err.value)
    assert "data_batch_3" in message and "0" * 32 in message and md5(files["data_batch_3"]) in message
    # the official table rejects the fixture's first file, again before any unpickling
    with pytest.raises(datasets.ChecksumError, match="data_batch_1.*c99cafc152244af753f735de768cd75f"):
        datasets.load("cifar10", root=tmp_path)


def test_cifar10_wrong_archive_checksum(tmp_path, no_unpickling):
    make_cifar(tmp_path, archive=True)
    with pytest.raises(datasets.ChecksumError, match=r"cifar-10-python\.tar\.gz.*c58f30108f718f92721af3b95e74349a"):
        datasets.load("cifar10", root=tmp_path)


def test_cifar10_missing_files_clear_error(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match="does not exist") as err:
        datasets.load("cifar10", root=tmp_path / "nowhere")
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in str(err.value)
    files = make_cifar(tmp_path)
    (tmp_path / cifar10.FOLDER / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError) as err:
        cifar10.read_cifar10(tmp_path, checksums={name: md5(data) for name, data in files.items()})
    message = str(err.value)
    assert str(tmp_path / cifar10.FOLDER / "data_batch_4") in message
    assert str(tmp_path / cifar10.ARCHIVE) in message and "cifar-10-python.tar.gz" in message
    assert isinstance(err.value, ValueError)


def svhn_images(n: int, offset: int) -> np.ndarray:
    i, c, h, w = np.meshgrid(np.arange(n) + offset, np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((i * 11 + c * 90 + h * 5 + w) % 256).astype(np.uint8)  # (n, 3, 32, 32)


def make_svhn(root: Path, n_train: int = 4, n_test: int = 3) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name, n, offset in (("train_32x32.mat", n_train, 0), ("test_32x32.mat", n_test, 100)):
        x = svhn_images(n, offset).transpose(2, 3, 1, 0)  # official (H, W, C, N)
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10, 10 = digit 0
        buffer = io.BytesIO()
        scipy.io.savemat(buffer, {"X": x, "y": y})
        files[name] = buffer.getvalue()
        (root / name).write_bytes(files[name])
    return files


def test_svhn_fixture_loads(tmp_path, monkeypatch):
    files = make_svhn(tmp_path, n_train=12)
    monkeypatch.setattr(svhn, "MD5", {name: md5(data) for name, data in files.items()})
    data = datasets.load("svhn", root=tmp_path, validation_fraction=0.0)
    assert data.train.shape == (12, 3, 32, 32) and data.test.shape == (3, 3, 32, 32)
    assert torch.equal(data.train * 255, torch.from_numpy(svhn_images(12, 0)).float())
    assert torch.equal(data.test * 255, torch.from_numpy(svhn_images(3, 100)).float())
    assert data.train_labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]  # label 10 -> 0
    assert data.test_labels.tolist() == [1, 2, 3]
    held = datasets.load("svhn", root=tmp_path)  # default: a seeded tenth of train held out
    assert len(held.validation) == 1 and len(held.train) == 11
    assert any(torch.equal(held.validation[0], image) for image in data.train)
    assert not any(torch.equal(held.validation[0], image) for image in held.train)


def test_svhn_wrong_checksum_and_missing_file(tmp_path, monkeypatch):
    files = make_svhn(tmp_path)
    monkeypatch.setattr(scipy.io, "loadmat", lambda *a, **k: pytest.fail("parsed an unverified file"))
    with pytest.raises(datasets.ChecksumError, match="train_32x32.mat.*e26dedcc434d2e4c54c9b2d4a06d8373"):
        datasets.load("svhn", root=tmp_path)
    monkeypatch.undo()
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(datasets.DatasetNotFoundError) as err:
        svhn.read_svhn(tmp_path, checksums={name: md5(data) for name, data in files.items()})
    message = str(err.value)
    assert str(tmp_path / "test_32x32.mat") in message
    assert "http://ufldl.stanford.edu/housenumbers/test_32x32.mat" in message


def test_cifar10_archive_members_verified_and_partial_folder_falls_back(tmp_path, no_unpickling):
    files = make_cifar(tmp_path, archive=True)
    table = {name: md5(data) for name, data in files.items()}
    (tmp_path / cifar10.FOLDER).mkdir()
    (tmp_path / cifar10.FOLDER / "data_batch_1").write_bytes(b"partial extraction")  # no other files
    with pytest.raises(datasets.ChecksumError, match=r"tar\.gz:cifar-10-batches-py/test_batch"):
        cifar10.read_cifar10(tmp_path, checksums={**table, "test_batch": "f" * 32})


def test_cifar10_archive_missing_member(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{cifar10.FOLDER}/data_batch_1")
        tar.addfile(info, io.BytesIO(b""))
    (tmp_path / cifar10.ARCHIVE).write_bytes(buffer.getvalue())
    table = {cifar10.ARCHIVE: md5(buffer.getvalue()), "data_batch_1": md5(b"")}
    with pytest.raises(datasets.DatasetNotFoundError, match="data_batch_2 is missing from the archive"):
        cifar10.read_cifar10(tmp_path, checksums=table)
