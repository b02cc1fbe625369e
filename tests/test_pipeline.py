"""dvc.yaml is valid and precise: stages match params.yaml, and a param edit reruns only its dependents.

Nothing heavy runs: the pipeline is checked in a temporary git + DVC copy of the repository whose
stage outputs are fake files recorded with ``dvc commit`` (so ``dvc status`` / ``dvc repro --dry``
compare hashes exactly as after a real ``dvc repro``).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from benchmark.paths import REPO_ROOT

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:dvc.*")

COPY = ("dvc.yaml", "params.yaml", "params-paper.yaml", "params-scale.yaml", "params-reproduce.yaml", "reports/scale",
        ".dvcignore", ".gitignore", ".dvc/config", "benchmark", "methods", "datasets", "registry.py", "plugins")


def _params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def _lookup(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"params key {dotted!r} missing in params.yaml"
        node = node[part]
    return node


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def index():
    """The stages of the real dvc.yaml as DVC resolves them (foreach expanded, ${} interpolated)."""
    from dvc.repo import Repo

    with Repo(str(REPO_ROOT)) as repo:
        yield {stage.addressing: stage for stage in repo.index.stages}


SWEEP_STAGE_CODE = {"benchmark/pipeline/sweep.py", "benchmark/pipeline/spec.py", "benchmark/pipeline/tuning.py",
                    "benchmark/pipeline/recorder.py", "benchmark/pipeline/tracking.py"}


def test_one_prepare_and_one_sweeps_stage_for_every_sweep(index):
    """Every sweep of params.yaml is prepared by one process and run by one (one Ray session)."""
    assert set(index) == {"plugins", "prepare", "sweeps", "report"}
    assert index["prepare"].cmd == "python -m benchmark prepare --params params.yaml --all"
    assert index["sweeps"].cmd == "python -m benchmark sweep --params params.yaml --all"


def _module_of(cmd: str) -> str:
    """`python -m benchmark COMMAND ...` -> the module that runs COMMAND."""
    from benchmark.__main__ import COMMANDS

    words = cmd.split()
    assert words[:3] == ["python", "-m", "benchmark"] and words[3] in COMMANDS, cmd
    return COMMANDS[words[3]].replace(".", "/") + ".py"


def _covered(path: str, deps: set[str]) -> bool:
    return any(path == dep or path.startswith(dep + "/") for dep in deps)


def test_stage_declarations_are_consistent(index):
    params = _params()
    outs = {str(out.def_path): name for name, stage in index.items() for out in stage.outs}
    for name, stage in index.items():
        deps = {str(d.def_path) for d in stage.deps}
        assert _covered(_module_of(stage.cmd), deps), f"{name}: its script is not a dep"
        for path in deps:
            produced = any(path == out or path.startswith(out + "/") or out.startswith(path + "/") for out in outs)
            assert produced or (REPO_ROOT / path).exists(), f"{name}: dep {path} neither exists nor is produced"
        for param_dep in stage.params:
            for key in param_dep.params:
                _lookup(params, key)
    stage = index["sweeps"]
    assert {key for dep in stage.params for key in dep.params} == {"base", "tracking", "sweeps"}  # not ray
    assert [str(o.def_path) for o in stage.outs] == ["results"]
    assert stage.outs[0].use_cache, "tables and artifacts are cached: dvc pull restores them"
    assert stage.outs[0].persist, "kept in place on a rerun: the sweeps whose inputs did not change are skipped"
    assert [str(o.def_path) for o in index["prepare"].outs] == ["data/prepared"]
    report_outs = {str(o.def_path): o for o in index["report"].outs}
    assert {"reports/ablation.md", "reports/figures", "reports/metrics.json"} <= set(report_outs)
    assert report_outs["reports/metrics.json"].metric and not report_outs["reports/ablation.md"].use_cache
    assert "results" in {str(d.def_path) for d in index["report"].deps}


def test_sweep_code_deps_have_one_source(index):
    """The sweeps stage depends on exactly the code its trials' fingerprints read (via each sweep's
    prepared code.json) plus the pipeline modules that run it; prepare covers every such file."""
    from benchmark.pipeline import code
    from benchmark.pipeline.spec import load_sweep

    sweep_deps = {str(d.def_path) for d in index["sweeps"].deps} - {"params.yaml"}
    assert sweep_deps == {"data/prepared"} | SWEEP_STAGE_CODE
    prepare_deps = {str(d.def_path) for d in index["prepare"].deps} - {"params.yaml"}
    # a plugin's files outside the repository are followed through data/plugins.json (stage plugins)
    assert "data/plugins.json" in prepare_deps
    for sweep in _params()["sweeps"]:
        trials = load_sweep(REPO_ROOT / "params.yaml", sweep).trials
        read = {unit.path for trial in trials for unit in code.config_code(trial.config)[0]}
        assert read == set(code.sweep_code(trial.config for trial in trials)["files"])
        assert {path for path in read if not _covered(path, prepare_deps) and not Path(path).is_absolute()} == set()


@pytest.mark.parametrize("params_file", ["params.yaml", "params-paper.yaml"])
def test_every_sweep_spec_validates(params_file):
    from benchmark.pipeline.spec import load_sweep

    params = yaml.safe_load((REPO_ROOT / params_file).read_text())
    assert set(params["sweeps"]) == set(_params()["sweeps"]), "both profiles must name the same sweeps"
    for name in params["sweeps"]:
        assert load_sweep(REPO_ROOT / params_file, name).trials


@pytest.fixture(scope="module")
def pristine_copy(tmp_path_factory: pytest.TempPathFactory, index) -> Path:
    """A git + DVC copy of the repo whose every stage output is a fake file committed to dvc.lock,
    made once for the module (committing every stage costs seconds to tens of seconds)."""
    copy = tmp_path_factory.mktemp("pipeline") / "repo"
    for rel in COPY:
        src = REPO_ROOT / rel
        if src.is_dir():
            shutil.copytree(src, copy / rel, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / rel)
    for stage in index.values():
        for out in stage.outs:
            path = copy / str(out.def_path)
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("{}\n" if path.suffix == ".json" else "fake\n")
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "fake.txt").write_text("fake\n")
    _git(copy, "init", "-q")
    _git(copy, "add", "-A")
    _git(copy, "commit", "-qm", "copy")
    from dvc.repo import Repo

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(copy)  # DVC resolves stage targets against the working directory
        with Repo(str(copy)) as repo:
            repo.commit(None, force=True)
    return copy


@pytest.fixture()
def pipeline_copy(pristine_copy: Path, tmp_path: Path, monkeypatch) -> Path:
    """A test's own copy of :func:`pristine_copy` (git history, DVC cache and dvc.lock included),
    the working directory while the test runs."""
    copy = tmp_path / "repo"
    shutil.copytree(pristine_copy, copy, symlinks=True,  # not DVC's own state (.dvc/tmp): it is rebuilt
                    ignore=lambda folder, names: ["tmp"] if Path(folder).name == ".dvc" else [])
    monkeypatch.chdir(copy)
    return copy


ALWAYS_CHANGED = {"plugins"}  # rehashes the installed plugins on every repro (seconds): unchanged, nothing follows


def _changed(copy: Path) -> set[str]:
    from dvc.repo import Repo

    with Repo(str(copy)) as repo:
        return set(repo.status()) - ALWAYS_CHANGED


def _edit_params(copy: Path, edit) -> None:
    path = copy / "params.yaml"
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_param_change_reruns_only_dependents(pipeline_copy: Path):
    from dvc.repo import Repo

    assert _changed(pipeline_copy) == set()  # a second `dvc repro` reruns nothing but the plugins check
    with Repo(str(pipeline_copy)) as repo:
        assert [stage.addressing for stage in repo.reproduce(dry=True)] == ["plugins"]

    # inside the sweeps stage only gamma_sweep runs: the others' inputs stamps are unchanged (test_sweep)
    _edit_params(pipeline_copy, lambda p: p["sweeps"]["gamma_sweep"]["grid"]["seed"].append(7))
    assert _changed(pipeline_copy) == {"prepare", "sweeps", "report"}
    with Repo(str(pipeline_copy)) as repo:  # what `dvc repro --dry` would run, in order
        ran = [stage.addressing for stage in repo.reproduce(dry=True)]
    assert ran == ["plugins", "prepare", "sweeps", "report"]

    _edit_params(pipeline_copy, lambda p: p["sweeps"]["gamma_sweep"]["grid"]["seed"].pop())
    assert _changed(pipeline_copy) == set()
    _edit_params(pipeline_copy, lambda p: p["ray"].update(num_cpus=1))  # parallelism: results unchanged
    assert _changed(pipeline_copy) == set()
    _edit_params(pipeline_copy, lambda p: p["base"].update(steps=p["base"]["steps"] + 1))
    assert _changed(pipeline_copy) == {"prepare", "sweeps", "report"}


def test_code_change_reruns_only_its_users(pipeline_copy: Path):
    from dvc.repo import Repo

    report = pipeline_copy / "benchmark" / "report" / "build.py"
    report.write_text(report.read_text() + "\n# edited\n")
    assert _changed(pipeline_copy) == {"report"}
    sweep_code = pipeline_copy / "benchmark" / "pipeline" / "recorder.py"
    sweep_code.write_text(sweep_code.read_text() + "\n# edited\n")
    assert _changed(pipeline_copy) == {"report", "sweeps"}
    # A method edit reruns prepare (cheap); code.json then tells which sweeps run that method.
    method = pipeline_copy / "methods" / "vanilla.py"
    method.write_text(method.read_text() + "\n# edited\n")
    assert "prepare" in _changed(pipeline_copy)


def test_comment_edit_retrains_nothing_and_real_edit_only_its_sweeps(pipeline_copy: Path, monkeypatch):
    """With the real prepare stage: a comment or docstring edit of a method leaves the sweeps stage up
    to date; a real edit puts it out of date and changes the prepared files of exactly the sweeps that
    run the method (the others keep their inputs stamp, so the sweeps stage skips them)."""
    from dvc.repo import Repo

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # stages run `python`
    users, others = "vqvae", "gamma_sweep"  # vqvae runs ema; gamma_sweep runs wasserstein only
    _edit_params(pipeline_copy, lambda p: p.update(  # two sweeps keep the test short
        sweeps={name: p["sweeps"][name] for name in (users, others)}, questions={}))
    prepared = pipeline_copy / "data" / "prepared"

    def prepare(force: bool = False) -> dict[str, dict[str, bytes]]:
        with Repo(str(pipeline_copy)) as repo:
            repo.reproduce("prepare", single_item=True, force=force)
        return {name: {f.name: f.read_bytes() for f in (prepared / name).iterdir()} for name in (users, others)}

    before = prepare(force=True)
    with Repo(str(pipeline_copy)) as repo:
        repo.commit("sweeps", force=True)
    assert "sweeps" not in _changed(pipeline_copy)
    method = pipeline_copy / "methods" / "ema.py"
    method.write_text(method.read_text().replace('"""', '"""Edited docstring. ', 1) + "\n# a comment\n")
    assert prepare() == before and "sweeps" not in _changed(pipeline_copy)
    method.write_text(method.read_text() + "\n_EDITED = 1\n")
    after = prepare()
    assert "sweeps" in _changed(pipeline_copy)
    assert after[others] == before[others] and after[users]["code.json"] != before[users]["code.json"]


def test_prepare_pins_are_deterministic(tmp_path: Path):
    from benchmark.pipeline import prepare

    params = {"base": {"dim": 2, "steps": 1, "batch_size": 8, "eval_size": 8},
              "sweeps": {"tiny": {"base": {"dataset": "disk", "codebook_size": 4},
                                  "grid": {"method": ["vanilla", "wasserstein"], "seed": [0, 1]}},
                         "two": {"base": {"dataset": "gaussian", "codebook_size": 4},
                                 "grid": {"dataset_options.mean": [0.0, 4.0]}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    first = prepare.prepare(tmp_path / "params.yaml", "tiny", samples=256)
    manifest = json.loads((first / "manifest.json").read_text())
    assert [d["dataset"] for d in manifest["datasets"]] == ["disk"]  # 4 trials, one data config
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    again = prepare.prepare(tmp_path / "params.yaml", "tiny", samples=256)
    assert {p.name: p.read_bytes() for p in again.iterdir()} == before
    two = json.loads((prepare.prepare(tmp_path / "params.yaml", "two", samples=64) / "manifest.json").read_text())
    assert [d["options"]["mean"] for d in two["datasets"]] == [0.0, 4.0]
    assert two["datasets"][1]["empirical_mean"][0] == pytest.approx(4.0, abs=0.5)
    assert two["datasets"][0]["sha256"] != two["datasets"][1]["sha256"]


def test_your_own_latents_and_images_run_from_a_few_lines_of_params(tmp_path: Path):
    """A user's .npy of latents and a folder of PNGs: a sweep of a few params lines validates, the
    prepare stage pins the file (and every image) by SHA-256, and a trial of each runs."""
    from PIL import Image

    from benchmark.experiments.train import run_experiment
    from benchmark.pipeline import prepare
    from benchmark.pipeline.spec import load_sweep

    rng = np.random.default_rng(0)
    latents = tmp_path / "latents.npy"
    np.save(latents, (rng.normal(size=(600, 4)) + 3.0).astype(np.float32))
    images = tmp_path / "images" / "cats"
    images.mkdir(parents=True)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, size=(10, 10, 3), dtype=np.uint8)).save(images / f"{i}.png")
    params = {"base": {"steps": 3, "batch_size": 16, "eval_size": 16, "codebook_size": 8, "dim": 4},
              "sweeps": {"mine": {"base": {"dataset": "features_file", "dataset_options": {"path": str(latents)}},
                                  "grid": {"method": ["vanilla", "wasserstein"], "seed": [0]}},
                         "pics": {"base": {"experiment": "vqvae", "dataset": "image_folder", "batch_size": 4,
                                           "dataset_options": {"root": str(tmp_path / "images"), "size": 8},
                                           "model_options": {"hidden": 8, "downsamples": 1, "res_blocks": 0}},
                                  "grid": {"method": ["vanilla"], "seed": [0]}}}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    manifest = json.loads((prepare.prepare(path, "mine", samples=64) / "manifest.json").read_text())
    pinned = manifest["datasets"][0]["file_sha256"]
    pictures = json.loads((prepare.prepare(path, "pics", samples=64) / "manifest.json").read_text())
    assert len(pictures["datasets"][0]["files"]) == 24
    for name in ("mine", "pics"):
        record = run_experiment(load_sweep(path, name).trials[0].config)
        assert 0 < record["utilization"] <= 1 and math.isfinite(record["quantization_error"])
    np.save(latents, (rng.normal(size=(600, 4))).astype(np.float32))  # new data: a new pin
    again = json.loads((prepare.prepare(path, "mine", samples=64) / "manifest.json").read_text())
    assert again["datasets"][0]["file_sha256"] != pinned
