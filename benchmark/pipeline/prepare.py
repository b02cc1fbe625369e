"""Data preparation stage: pin the data every sweep trains on, so DVC reruns a sweep when it changes.

``python -m benchmark prepare --params params.yaml --all`` (the ``prepare`` stage of dvc.yaml: every
sweep of params.yaml in one process, so the imports are paid once) or ``--sweep NAME`` (one sweep)
writes, per sweep, ``data/prepared/NAME/``:

- ``manifest.json``: one entry per distinct dataset configuration of the sweep's trials
  (dataset name + options exactly as the trials build them). Feature distributions are sampled
  on the fly by the trials, so the entry pins the generator instead: the SHA-256 of a fixed-seed
  sample of ``--samples`` points, its empirical mean/covariance next to the closed forms.
  Image datasets are loaded and their content hashed (train/test arrays and labels, shapes).
  CIFAR-10 / SVHN appear only when a sweep uses them, and then need ``dataset_options.root``
  (a local copy; their loaders verify the official checksums).
- ``sample_<i>.npy`` for manifest entry i: the pinned feature sample or, for an image dataset,
  its first 64 test images; the report draws the 2-D disk under its codebooks from it.
- ``code.json``: every source file the sweep's trials run, with the hash of its syntax tree
  (:func:`benchmark.pipeline.code.sweep_code`), and the plugin distributions they use.

The sweeps stage depends on ``data/prepared`` instead of the ``datasets/`` and ``methods/`` code: a
refactor that leaves the data and the trials' code unchanged reruns nothing, a change of either
reruns it, and there each sweep whose own folder is unchanged is skipped
(:func:`benchmark.pipeline.sweep.inputs_stamp`).
The trials' own sampling is not replaced: the sweep never reads these files.

``python -m benchmark prepare --check-data ROOT`` only checks that the official files of the
datasets that read them (CIFAR-10, SVHN) are under ROOT and intact (``datasets.check_data``):
it prints one block per dataset and exits 1 when one is not ready.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from benchmark import paths
from benchmark.pipeline import code

PREPARED_DIR = paths.PREPARED_DIR
CODE_FILE = "code.json"
SAMPLE_SEED = 0
IMAGE_PREVIEW = 64


def dataset_configs(configs: Sequence[Any]) -> list[tuple[str, dict[str, Any]]]:
    """Distinct (dataset, options) pairs of ``configs`` (RunConfigs), options as the trial builds them.

    For a feature dataset that takes ``dim``, the run's ``dim`` is filled in (benchmark.experiments.train does
    the same), so the pin covers the dimension the trials actually sample.
    """
    import datasets

    seen: list[tuple[str, dict[str, Any]]] = []
    for config in configs:
        options = dict(config.dataset_options)
        spec = datasets.get(config.dataset)
        if spec.kind == "features" and "dim" in spec.option_names():
            options.setdefault("dim", config.dim)
        item = (config.dataset, dict(sorted(options.items())))
        if item not in seen:
            seen.append(item)
    return seen


def _sha256(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str(array.dtype).encode() + str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _to_numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def pin_dataset(name: str, options: Mapping[str, Any], samples: int) -> tuple[dict[str, Any], np.ndarray]:
    """Manifest entry and the array to keep for one dataset configuration."""
    import datasets
    import torch

    dataset = datasets.load(name, **dict(options))
    entry: dict[str, Any] = {"dataset": name, "options": dict(options), "kind": dataset.kind}
    if dataset.kind == "features":
        generator = torch.Generator().manual_seed(SAMPLE_SEED)
        sample = _to_numpy(dataset.sample(samples, generator)).astype(np.float32)
        entry.update(
            dim=int(dataset.dim), samples=int(samples), seed=SAMPLE_SEED, sha256=_sha256(sample),
            empirical_mean=[round(float(v), 4) for v in sample.mean(0)],
            empirical_cov_trace=round(float(np.trace(np.cov(sample, rowvar=False).reshape(dataset.dim, -1))), 4),
        )
        try:
            entry["mean"] = [round(float(v), 4) for v in _to_numpy(dataset.mean)]
            entry["cov_trace"] = round(float(np.trace(_to_numpy(dataset.covariance))), 4)
        except (AttributeError, NotImplementedError):
            pass
        if hasattr(dataset, "file_sha256"):  # a user's file: pinned whole, not only through the sample
            entry["file_sha256"] = dataset.file_sha256()
        return entry, sample
    splits = [_to_numpy(getattr(dataset, key)) for key in ("train", "validation", "test") if hasattr(dataset, key)]
    labels = [_to_numpy(getattr(dataset, key)) for key in ("train_labels", "validation_labels", "test_labels")
              if hasattr(dataset, key)]
    train, test = _to_numpy(dataset.train), _to_numpy(dataset.test)
    entry.update(
        train_shape=list(train.shape), test_shape=list(test.shape),
        sha256=_sha256(*splits, *labels),
        pixel_mean=round(float(train.mean()), 4),
    )
    if hasattr(dataset, "manifest"):  # a folder of files: every file with its split and SHA-256
        entry["files"] = dataset.manifest()
    return entry, test[:IMAGE_PREVIEW].astype(np.float32)


def prepare(params_path: str | Path, sweep: str, *, out_root: str | Path | None = None,
            samples: int = 4096) -> Path:
    """Write ``<out_root>/<sweep>/manifest.json``, ``code.json`` and ``sample_<i>.npy``; returns the folder."""
    from benchmark.pipeline.spec import load_sweep  # the one parser of params.yaml sweeps

    params_path = Path(params_path).resolve()
    spec = load_sweep(params_path, sweep)
    root = Path(out_root) if out_root is not None else params_path.parent / PREPARED_DIR
    folder = root / sweep
    folder.mkdir(parents=True, exist_ok=True)
    entries, arrays = [], {}
    for index, (name, options) in enumerate(dataset_configs([t.config for t in spec.trials])):
        entry, array = pin_dataset(name, options, samples)
        entries.append(entry)
        arrays[f"sample_{index}"] = array
    manifest = {"sweep": sweep, "trials": len(spec.trials), "datasets": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    trial_code = code.sweep_code(t.config for t in spec.trials)
    (folder / CODE_FILE).write_text(json.dumps(trial_code, indent=1, sort_keys=True) + "\n")
    for stale in folder.glob("sample_*.npy"):
        stale.unlink()
    for key, array in arrays.items():  # .npy, not .npz: zip members carry a timestamp
        np.save(folder / f"{key}.npy", array)
    return folder


def prepare_all(params_path: str | Path, *, out_root: str | Path | None = None, samples: int = 4096) -> list[Path]:
    """:func:`prepare` for every sweep of the params file, in its order; returns the folders."""
    from benchmark.pipeline.spec import load_params, sweep_names

    return [prepare(params_path, name, out_root=out_root, samples=samples)
            for name in sweep_names(load_params(params_path))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep", default=None, help="sweep name under `sweeps:`")
    which.add_argument("--all", action="store_true", help="every sweep of the params file, in one process")
    parser.add_argument("--check-data", metavar="ROOT", default=None,
                        help="only check the local files of the datasets that read them (CIFAR-10, SVHN) "
                             "under ROOT: print datasets.check_data(ROOT), exit 1 when not ready")
    parser.add_argument("--out", default=None, help="output root (default data/prepared beside params)")
    parser.add_argument("--samples", type=int, default=4096, help="points per pinned feature sample")
    parser.add_argument("--plugins", metavar="FILE", default=None,
                        help="only write FILE: the code of every installed plugin, wherever it lives "
                             "(the dvc stage `plugins`, a dependency of every prepare stage)")
    args = parser.parse_args(argv)
    if args.plugins is not None:
        from benchmark.pipeline.code import plugin_code

        target = Path(args.plugins)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(plugin_code(), indent=1, sort_keys=True) + "\n"
        if not target.exists() or target.read_text() != text:  # unchanged: the file is left as it is
            target.write_text(text)
        return 0
    if args.check_data is not None:
        import datasets

        report = datasets.check_data(args.check_data)
        print(report)
        return 0 if report.ok else 1
    if args.sweep is None and not args.all:
        parser.error("--sweep NAME or --all is required (unless --check-data ROOT)")
    from benchmark.experiments.config import ConfigError

    try:
        if args.all:
            folders = prepare_all(args.params, out_root=args.out, samples=args.samples)
        else:
            folders = [prepare(args.params, args.sweep, out_root=args.out, samples=args.samples)]
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text())
        for entry in manifest["datasets"]:
            print(f"{manifest['sweep']}: {entry['dataset']} {entry['options']} sha256 {entry['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
