"""benchmark.pipeline.sweep: spec validation, grid expansion, Ray Tune + MLflow end to end, resume."""
from __future__ import annotations

import copy
import shutil
import dataclasses
import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import ray.cloudpickle as cloudpickle
import pytest
import yaml

from benchmark.pipeline import cluster, code, sweep, tracking
from benchmark.pipeline import recorder as sweep_recorder
from benchmark.pipeline import spec as sweep_spec
from benchmark.experiments.config import ConfigError, RunConfig
from benchmark.paths import REPO_ROOT

DIVERGING_SEED = 13

# Ray workers need not be able to import this test module (tests/ is no package): ship its
# functions (the fake runner) by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclasses.dataclass(frozen=True)
class VanillaOptions:
    beta: float = 0.25


@dataclasses.dataclass(frozen=True)
class WassersteinOptions:
    beta: float = 0.1
    gamma: float = 0.5

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise ValueError(f"gamma: must be >= 0, got {self.gamma}")


FAKE_CATALOG = sweep_spec.Catalog(method_options={"vanilla": VanillaOptions, "wasserstein": WassersteinOptions})


def fake_runner(config: RunConfig, *, on_step: Callable | None = None, progress: bool = False,
                call_dir: str | None = None, artifacts_dir: str | None = None) -> dict[str, float]:
    """Stands in for benchmark.train.run_experiment: a curve, a record, seed 13 diverges."""
    import importlib.util

    if call_dir is not None:  # one file per call, to count (re)runs across processes
        Path(call_dir).mkdir(parents=True, exist_ok=True)
        (Path(call_dir) / f"{config.method}-{config.seed}-{os.getpid()}-{id(config)}").touch()
    for step in range(config.log_every, config.steps + 1, config.log_every):
        if on_step is not None:
            on_step(step, {"loss": 1.0 / step + config.seed})
    if config.seed == DIVERGING_SEED:
        from benchmark.experiments.train import DivergedError

        raise DivergedError(f"step {config.steps}: training loss is nan ({config.method})")
    origin = importlib.util.find_spec("benchmark").origin or ""
    return {
        "quantization_error": 0.5 + config.seed,
        "utilization": 1.0,
        "repo_importable": float(origin.startswith(str(REPO_ROOT))),
        "cwd_is_repo": float(Path.cwd().resolve() == REPO_ROOT),
    }


def make_params(sweep_body: Mapping[str, Any] | None = None, *, name: str = "s", **top: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "tracking": {"uri": "mlflow.db", "results_dir": "results"},
        "base": {"codebook_size": 16, "dim": 2, "steps": 4, "log_every": 2},
        "sweeps": {name: dict(sweep_body or {"grid": {"method": ["vanilla", "wasserstein"], "seed": [0, 1]}})},
    }
    params.update(top)
    return params


def parse(params: Mapping[str, Any], name: str = "s", base_dir: Path | str = "/tmp") -> sweep_spec.SweepSpec:
    return sweep_spec.parse_sweep(params, name, base_dir=base_dir, catalog=FAKE_CATALOG)


# ------------------------------------------------------------------------------ validation


def test_unknown_sweep_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"sweeps.nope: unknown sweep; valid: \['s'\]"):
        parse(make_params(), "nope")


def _edit(path: str, value: Any, *more: Any) -> Callable[[dict], None]:
    """Set ``path`` (``sweeps/s/grid/seed``) of the params mapping to ``value`` (then more pairs)."""
    def apply(params: dict) -> None:
        pairs = [(path, value), *zip(more[::2], more[1::2])]
        for where, new in pairs:
            *parents, last = where.split("/")
            target = params
            for key in parents:
                target = target.setdefault(key, {})
            target[last] = new

    return apply


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_edit("sweeps/s/grid", {}), r"sweeps.s.grid: empty grid"),
        (_edit("sweeps/s/grid/seed", []), r"sweeps.s.grid.seed: empty list"),
        (_edit("sweeps/s/grid/seed", 3), r"sweeps.s.grid.seed: must be a list"),
        (_edit("sweeps/s/grid/seed", [1, 1]), r"sweeps.s.grid.seed: duplicate value 1"),
        (_edit("sweeps/s/grid/colour", [1]), r"sweeps.s.grid.colour: unknown run setting 'colour'"),
        (_edit("sweeps/s/grid/seed.x", [1]), r"sweeps.s.grid.seed.x: dotted keys"),
        (_edit("sweeps/s/base/colour", 1), r"sweeps.s.base.colour: unknown key"),
        (_edit("base/colour", 1), r"base.colour: unknown key"),
        (_edit("sweeps/s/oops", 1), r"sweeps.s.oops: unknown key"),
        (_edit("extra", 1), r"params.extra: unknown key"),
        (_edit("sweeps/s/grid/method", ["vanilla", "nope"]),
         r"sweeps.s.grid.method: unknown method 'nope'. Valid methods: \['vanilla', 'wasserstein'\]"),
        (_edit("sweeps/s/grid", {"seed": [0]}, "sweeps/s/base/method", "nope"), r"sweeps.s.base.method: unknown method 'nope'"),
        (_edit("sweeps/s/grid/method_options.gamma", [1.0]),
         r"sweeps.s.grid.method_options.gamma: unknown option for VanillaOptions. Valid options: .* \(method 'vanilla'\)"),
        (_edit("sweeps/s/method_options", {"vanilla": {"gamma": 1.0}}),
         r"sweeps.s.method_options.vanilla.gamma: unknown option for VanillaOptions"),
        (_edit("sweeps/s/method_options", {"nope": {"gamma": 1.0}}), r"sweeps.s.method_options.nope: unknown method"),
        (_edit("sweeps/s/method_options", {"wasserstein": {"gamma": -1.0}}),
         r"sweeps.s.method_options.wasserstein.gamma: must be .* \(method 'wasserstein'\)"),
        (_edit("sweeps/s/grid/codebook_size", [16, 0]), r"sweeps.s.grid.codebook_size: must be an integer >= 1"),
        (_edit("sweeps/s/base/optimizer", "rmsprop"), r"sweeps.s.base.optimizer: unknown optimizer"),
        (_edit("base/steps", -1), r"base.steps: must be an integer >= 1"),
        (_edit("sweeps/s/max_trials", 3), r"sweeps.s.max_trials: the grid expands to 4 trials"),
        (_edit("ray/cpus_per_trial", 0), r"ray.cpus_per_trial: must be a number > 0"),
        (_edit("ray/gpu", 1), r"ray.gpu: unknown key"),
        (_edit("ray/early_stopping", "yes"), r"ray.early_stopping: must be true or false"),
        (_edit("tracking/url", "x"), r"tracking.url: unknown key"),
        (_edit("sweeps", []), r"sweeps: must be a mapping"),
    ],
)
def test_invalid_specs_name_the_field(edit: Callable[[dict], None], message: str) -> None:
    params = copy.deepcopy(make_params())
    edit(params)
    with pytest.raises(ConfigError, match=message):
        parse(params)


def test_missing_grid() -> None:
    with pytest.raises(ConfigError, match=r"sweeps.s.grid: missing"):
        parse(make_params({"base": {"seed": 1}}))


def test_params_file_errors(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("sweeps: {s: [\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        sweep_spec.load_sweep(bad_yaml, "s", catalog=FAKE_CATALOG)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping, got list"):
        sweep_spec.load_sweep(not_mapping, "s", catalog=FAKE_CATALOG)
    with pytest.raises(ConfigError, match="cannot read params file"):
        sweep_spec.load_sweep(tmp_path / "missing.yaml", "s", catalog=FAKE_CATALOG)


def test_real_registries_validate_methods_and_dataset_options() -> None:
    catalog = sweep_spec.Catalog.from_registries()
    import methods

    params = make_params({"grid": {"method": ["nope"]}})
    with pytest.raises(ConfigError, match=r"unknown method 'nope'. Valid methods: " + repr(sorted(methods.available()))
                       .replace("[", r"\[").replace("]", r"\]")):
        sweep_spec.parse_sweep(params, "s", catalog=catalog)
    params = make_params({"grid": {"method": ["wasserstein", "vanilla"], "method_options.gamma": [1.0]}})
    with pytest.raises(ConfigError, match=r"grid.method_options.gamma: unknown option .* \(method 'vanilla'\)"):
        sweep_spec.parse_sweep(params, "s", catalog=catalog)
    params = make_params({"base": {"dataset_options": {"colour": 1}}, "grid": {"seed": [0]}})
    with pytest.raises(ConfigError, match=r"sweeps.s.base.dataset_options.colour: unknown option .* \(dataset 'gaussian'\)"):
        sweep_spec.parse_sweep(params, "s", catalog=catalog)
    ok = make_params({"base": {"codebook_size": 4}, "grid": {"method": methods.available(), "seed": [0, 1]}})
    assert len(sweep_spec.parse_sweep(ok, "s", catalog=catalog).trials) == 2 * len(methods.available())


def test_cases_set_values_on_the_matching_trials_only() -> None:
    params = make_params({
        "grid": {"method": ["vanilla", "wasserstein"], "dataset_options.mean": [0.0, 4.0]},
        "method_options": {"wasserstein": {"gamma": 10.0}},
        "cases": [
            {"when": {"method": "wasserstein"}, "set": {"codebook_lr": 3.0}},
            {"when": {"method": "wasserstein", "dataset_options.mean": 4.0}, "set": {"method_options.beta": 0.0}},
            {"when": {"dataset": "gaussian"}, "set": {"steps": 6}},
        ],
    })
    configs = {(t.config.method, t.config.dataset_options["mean"]): t.config for t in parse(params).trials}
    assert configs[("vanilla", 0.0)].codebook_lr == RunConfig.codebook_lr
    assert configs[("wasserstein", 0.0)].codebook_lr == 3.0
    assert dict(configs[("wasserstein", 0.0)].method_options) == {"gamma": 10.0}
    assert dict(configs[("wasserstein", 4.0)].method_options) == {"gamma": 10.0, "beta": 0.0}
    assert {config.steps for config in configs.values()} == {6}  # the dataset default matches too


@pytest.mark.parametrize("cases, message", [
    ({"when": {}}, r"sweeps.s.cases: must be a list"),
    ([{"when": {"method": "vanilla"}}], r"sweeps.s.cases\[0\].set: must be a mapping"),
    ([{"when": {"method": "vanilla"}, "set": {}}], r"sweeps.s.cases\[0\].set: must not be empty"),
    ([{"when": {"nope": 1}, "set": {"steps": 2}}], r"sweeps.s.cases\[0\].when.nope: not a RunConfig field"),
    ([{"when": {"method": "vanilla"}, "set": {"seed": 2}}], r"sweeps.s.cases\[0\].set.seed: also a grid key"),
    ([{"when": {"method": "vanilla"}, "set": {"codebook_lr": -1.0}}], r"sweeps.s.cases\[0\].set.codebook_lr"),
    ([{"when": {"method": "vanilla"}, "set": {"steps": 2}, "then": 1}], r"sweeps.s.cases\[0\].then: unknown key"),
])
def test_bad_cases_name_the_field(cases: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(make_params({"grid": {"method": ["vanilla", "wasserstein"], "seed": [0, 1]}, "cases": cases}))


def test_the_reproduction_profile_maps_the_authors_settings() -> None:
    """params-reproduce.yaml: 2 distributions x 5 means x 5 methods, the authors' lr and init per cell."""
    trials = sweep_spec.load_sweep(REPO_ROOT / "params-reproduce.yaml", "reproduce").trials
    assert len(trials) == 50
    lr = {"vanilla": 1.0, "ema": 1.0, "online": 3.0, "simvq": 0.02, "wasserstein": 1.0}
    script_weights = {"codebook_weight": 0.1, "gamma": 10.0}  # 0.1 commit_loss + 10 W at lr 3.0
    for trial in trials:
        config = trial.config
        assert (config.codebook_size, config.dim, config.steps, config.batch_size, config.eval_size) == (
            16384, 8, 2000, 50000, 200000)
        script = config.method == "wasserstein" and config.dataset == "gaussian" and config.dataset_options["mean"] >= 6
        w_alone = config.method == "wasserstein" and config.dataset == "uniform" and config.dataset_options["mean"] >= 6
        uniform_0 = config.method == "wasserstein" and config.dataset == "uniform" and config.dataset_options["mean"] == 0
        assert config.codebook_lr == (3.0 if script or w_alone else lr[config.method]) and config.momentum == 0.9
        assert config.method_options["init"] == {"gaussian": "normal", "uniform": "uniform"}[config.dataset]
        if config.method == "wasserstein":
            # the published runs' weights: lr x commit weight 2.0 (Gaussian) / 1.0 (uniform), lr x W weight
            # 20, except the Gaussian mu 6 and 8 runs, which took the script's, and the uniform mu 6 and 8
            # runs, which took W alone at lr x W weight 30; uniform mu 0 (not pinned) takes 2.0 / 20
            weights = script_weights if script else {"codebook_weight": 0.0, "gamma": 10.0} if w_alone else {
                "codebook_weight": 2.0 if uniform_0 else {"gaussian": 2.0, "uniform": 1.0}[config.dataset],
                "gamma": 20.0}
            assert dict(config.method_options) == {"beta": 0.0, **weights,
                "reduction": "sum", "statistics": "batch", "normalize": False, "squared": False,
                "init": config.method_options["init"], "init_scale": 1.0}
        # their script draws everything from one global stream; our uniform sampling cannot replay it
        assert config.random_stream == {"gaussian": "single", "uniform": "per_purpose"}[config.dataset]
        if config.method == "simvq" and config.dataset == "gaussian":  # their Linear draws after the embedding's block
            assert config.method_options["draws_before_projection"] == 16384 * 8 and config.skip_draws_after_init == 0
        if config.method == "online":  # the pull after the optimizer step, as their loop does it
            assert config.method_options["pull"] == "after_step" and config.method_options["usage_decay"] == 0.9


def test_the_reproduction_variant_swaps_the_two_sets_of_wasserstein_weights() -> None:
    trials = sweep_spec.load_sweep(REPO_ROOT / "params-reproduce.yaml", "reproduce_other_weights").trials
    main = {(t.config.dataset_options["mean"]): t.config for t in sweep_spec.load_sweep(
        REPO_ROOT / "params-reproduce.yaml", "reproduce").trials if t.config.method == "wasserstein"
        and t.config.dataset == "gaussian"}
    script, files = (3.0, 0.1, 10.0), (1.0, 2.0, 20.0)  # (lr, commit weight, W weight)
    for trial in trials:
        config, mu = trial.config, trial.config.dataset_options["mean"]

        def weights(c):
            return c.codebook_lr, c.method_options["codebook_weight"], c.method_options["gamma"]

        assert {weights(config), weights(main[mu])} == {script, files}
        assert config.random_stream == "single" and config.skip_draws_after_init == 16384 * 8
    assert sorted(t.config.dataset_options["mean"] for t in trials) == [0.0, 2.0, 6.0, 8.0]


def test_the_documented_example_is_valid() -> None:
    """The example of docs/params.md (benchmark.pipeline.reference) parses against the real registries."""
    from benchmark.pipeline import reference

    params = yaml.safe_load(reference.EXAMPLE)
    spec = sweep_spec.parse_sweep(params, "NAME", base_dir="/tmp", catalog=sweep_spec.Catalog.from_registries())
    assert len(spec.trials) == 8 and spec.ray == sweep_spec.RaySettings()
    wasserstein = [t.config for t in spec.trials if t.config.method == "wasserstein"]
    assert all(config.method_options["gamma"] == 10.0 for config in wasserstein)


# ------------------------------------------------------------------------------ expansion


def test_grid_expansion_and_layering() -> None:
    params = make_params(
        {
            "base": {"dataset_options": {"mean": 4.0}, "steps": 8},
            "grid": {"method": ["vanilla", "wasserstein"], "seed": [0, 1], "method_options.beta": [0.1, 0.3]},
            "method_options": {"wasserstein": {"gamma": 3.0, "beta": 0.2}},
        },
        base={"codebook_size": 16, "dim": 2, "steps": 4, "dataset_options": {"mean": 1.0, "scale": 2.0}},
    )
    spec = parse(params)
    assert len(spec.trials) == 8
    assert [dict(t.point) for t in spec.trials[:3]] == [
        {"method": "vanilla", "seed": 0, "method_options.beta": 0.1},
        {"method": "vanilla", "seed": 0, "method_options.beta": 0.3},
        {"method": "vanilla", "seed": 1, "method_options.beta": 0.1},
    ]
    last = spec.trials[-1].config
    assert last.method == "wasserstein" and last.seed == 1
    assert dict(last.method_options) == {"gamma": 3.0, "beta": 0.3}  # grid beats the per-method block
    assert dict(last.dataset_options) == {"mean": 4.0, "scale": 2.0}  # sweep base merged over top base
    assert last.steps == 8 and last.codebook_size == 16
    assert dict(spec.trials[0].config.method_options) == {"beta": 0.1}  # wasserstein's block not applied
    ids = [t.trial_id for t in spec.trials]
    assert len(set(ids)) == 8 and ids == [t.trial_id for t in parse(params).trials]  # deterministic
    assert spec.trials[0].trial_id == code.trial_id_of(spec.trials[0].config)


def test_expand_grid_is_the_cartesian_product() -> None:
    points = sweep_spec.expand_grid([("a", [1, 2, 3]), ("b", ["x", "y"])])
    assert len(points) == 6 and points[0] == {"a": 1, "b": "x"} and points[-1] == {"a": 3, "b": "y"}


def test_paths_are_relative_to_the_params_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "params.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(make_params(ray={"storage_path": "ray"})))
    spec = sweep_spec.load_sweep(path, "s", catalog=FAKE_CATALOG)
    assert spec.tracking.uri == f"sqlite:///{tmp_path}/conf/mlflow.db"
    assert spec.table_path == tmp_path / "conf" / "results" / "s" / "trials.csv"
    assert spec.ray.storage_path == str(tmp_path / "conf" / "ray")


def _node(cpus: float, gpus: float = 0.0) -> dict[str, Any]:
    return {"Alive": True, "NodeID": f"n{cpus}-{gpus}", "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


def test_gpus_requested_only_on_nodes_that_have_them() -> None:
    plan = cluster.plan_resources
    assert [plan(1, 0.5, [_node(2)]).resources(i) for i in range(2)] == [{"cpu": 1.0, "gpu": 0.0}] * 2
    assert [plan(1, 0.5, [_node(2, 1)]).resources(i) for i in range(2)] == [{"cpu": 1.0, "gpu": 0.5}] * 2
    # a GPU node holding 4 trials (gpus_per_trial 0.25) and a CPU node holding 2: 2 of every 3 to the GPUs,
    # GPUs first
    mixed = plan(0.5, 0.25, [_node(2, 2), _node(1)])
    assert (mixed.gpu_slots, mixed.cpu_slots) == (4, 2)
    assert [mixed.on_gpu(i) for i in range(7)] == [True, True, False, True, True, False, True]
    assert mixed.request(0).bundles == [{"CPU": 0.5, "GPU": 0.25}]
    assert mixed.request(2).bundles == [{"CPU": 0.5}]  # and kept off the GPU node (tests/test_cluster.py)
    with pytest.raises(ConfigError, match="ray.cpus_per_trial"):
        plan(4, 0, [_node(2), _node(3)])
    with pytest.raises(ConfigError, match="ray.gpus_per_trial"):
        plan(1, 2, [_node(2, 1)])


def test_keys_share_one_request_per_pool() -> None:
    """Tune unpickles the trainable, and the key -> request mapping with it, at every lookup of a
    trial's trainable: one shared request per pool keeps that O(distinct requests), not O(trials)."""
    import pickle

    mixed = cluster.plan_resources(0.5, 0.25, [_node(2, 2), _node(1)])
    keys = [f"s/{index}" for index in range(7)]
    requests = mixed.by_key(keys)
    assert [requests[key].bundles for key in keys] == [mixed.request(index).bundles for index in range(7)]
    assert len({id(request) for request in requests.values()}) == 2
    many = cluster.plan_resources(1, 0, [_node(2)]).by_key([f"s/{index}" for index in range(1000)])
    few = cluster.plan_resources(1, 0, [_node(2)]).by_key([f"s/{index}" for index in range(10)])
    per_key = (len(pickle.dumps(many)) - len(pickle.dumps(few))) / 990
    assert per_key < 20  # the key's string and a reference, not a pickled request


# ------------------------------------------------------------------------------ Ray + MLflow


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow SQLite store for the module's sweeps (creating the schema takes seconds)."""
    return tracking.resolve_tracking_uri("mlflow.db", tmp_path_factory.mktemp("mlflow"))


def _active_runs(spec: sweep_spec.SweepSpec) -> list[Any]:
    client = tracking.make_client(spec.tracking.uri)
    experiment = client.get_experiment_by_name(spec.name)
    return tracking.search_sweep_runs(client, experiment.experiment_id)


def test_sweep_end_to_end_failure_and_resume(ray_cluster: None, store_uri: str, tmp_path: Path) -> None:
    params = make_params(
        {"grid": {"method": ["vanilla", "wasserstein"], "seed": [0, DIVERGING_SEED]}},
        name="e2e",
        tracking={"uri": store_uri, "results_dir": "results"},
        # 2 trials run (and report) at once on the 2 CPUs; GPUs asked for on a GPU-less cluster.
        ray={"cpus_per_trial": 1, "gpus_per_trial": 0.5, "storage_path": str(tmp_path / "ray")},
    )
    spec = parse(params, "e2e", base_dir=tmp_path)
    calls = tmp_path / "calls"
    runner = functools.partial(fake_runner, call_dir=str(calls))

    outcome = sweep.run_sweep(spec, runner=runner)
    assert (outcome.finished, outcome.failed, outcome.skipped) == (2, 2, 0)
    assert "2 finished, 2 failed" in outcome.summary()
    table = outcome.table
    assert outcome.table_path == tmp_path / "results" / "e2e" / "trials.csv" and outcome.table_path.exists()
    assert sorted(table["trial"]) == sorted(t.trial_id for t in spec.trials)
    failed = table[table["status"] == "failed"]
    assert set(failed["seed"]) == {DIVERGING_SEED}
    assert all(error.startswith("DivergedError: step 4: training loss is nan") for error in failed["error"])
    finished = table[table["status"] == "finished"]
    assert list(finished["quantization_error"]) == [0.5 + seed for seed in finished["seed"]]
    assert (finished["repo_importable"] == 1.0).all() and (finished["cwd_is_repo"] == 0.0).all()
    assert set(RunConfig().flat_params()) <= set(table.columns)
    assert (table["git_commit"].str.len() == 40).all()

    runs = _active_runs(spec)  # exactly one MLflow run per trial, all params, the curve
    assert sorted(run.data.tags["trial"] for run in runs) == sorted(table["trial"])
    client = tracking.make_client(spec.tracking.uri)
    run = client.get_run(finished["run_id"].iloc[0])
    assert set(run.data.params) == set(spec.trials[0].config.flat_params())
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [2, 4]
    assert len(list(calls.iterdir())) == 4

    # Resume: finished trials are skipped (same runs), failed ones retried (old run replaced).
    again = sweep.run_sweep(spec, runner=runner)
    assert (again.finished, again.failed, again.skipped) == (0, 2, 2)
    assert len(list(calls.iterdir())) == 6
    rerun_table = again.table.set_index("trial")
    for row in table.itertuples():
        same = rerun_table.loc[row.trial, "run_id"] == row.run_id
        assert same == (row.status == "finished")
    assert len(_active_runs(spec)) == 4
    assert pd_equal_csv(again.table_path, again.table)


def pd_equal_csv(path: Path, table: Any) -> bool:
    import pandas as pd

    return len(pd.read_csv(path)) == len(table) and list(pd.read_csv(path).columns) == list(table.columns)


def test_resume_reruns_interrupted_trials_only(ray_cluster: None, store_uri: str, tmp_path: Path) -> None:
    params = make_params({"grid": {"seed": [0, 1]}}, name="resume", tracking={"uri": store_uri},
                         ray={"storage_path": str(tmp_path / "ray")})
    spec = parse(params, "resume", base_dir=tmp_path)
    done, interrupted = spec.trials
    client = tracking.make_client(store_uri)
    experiment_id = tracking.get_or_create_experiment(client, "resume")
    git = tracking.GitState("0" * 40, False)
    done_run = tracking.log_trial(client, experiment_id, sweep="resume", trial_id=done.trial_id,
                                  config=done.config, git=git, status="finished", metrics={"x": 1.0})
    stale_run = tracking.start_trial_run(client, experiment_id, sweep="resume", trial_id=interrupted.trial_id,
                                         config=interrupted.config, git=git)  # driver died mid-trial
    calls = tmp_path / "calls"
    first = sweep.run_sweep(spec, runner=functools.partial(fake_runner, call_dir=str(calls)))
    assert (first.finished, first.failed, first.skipped) == (1, 0, 1)
    assert [path.name.split("-")[:2] for path in calls.iterdir()] == [["vanilla", "1"]]
    table = first.table.set_index("trial")
    assert table.loc[done.trial_id, "run_id"] == done_run
    assert table.loc[interrupted.trial_id, "status"] == "finished"
    assert client.get_run(stale_run).info.lifecycle_stage == "deleted"
    assert len(_active_runs(spec)) == 2
    second = sweep.run_sweep(spec, runner=functools.partial(fake_runner, call_dir=str(calls)))
    assert (second.finished, second.failed, second.skipped, len(second.table)) == (0, 0, 2, 2)
    assert len(list(calls.iterdir())) == 1


def _early_runner(config: RunConfig, *, on_step: Callable | None = None, progress: bool = False,
                  artifacts_dir: str | None = None) -> dict:
    """Loss ordered by seed: ASHA keeps the best (seed 0) and may stop the others."""
    for step in range(1, config.steps + 1):
        on_step(step, {"loss": config.seed + 1.0 / step})
    return {"quantization_error": float(config.seed)}


def test_early_stopping_records_stopped_trials(ray_cluster: None, store_uri: str, tmp_path: Path) -> None:
    params = make_params({"grid": {"seed": [0, 1, 2, 3, 4, 5]}, "base": {"steps": 12, "log_every": 1}},
                         name="asha", tracking={"uri": store_uri},
                         ray={"early_stopping": True, "max_concurrent": 1, "storage_path": str(tmp_path / "ray")})
    outcome = sweep.run_sweep(parse(params, "asha", base_dir=tmp_path), runner=_early_runner)
    table = outcome.table.set_index("seed")
    assert len(table) == 6 and set(table["status"]) <= {"finished", "stopped"}
    assert table.loc[0, "status"] == "finished" and table.loc[0, "quantization_error"] == 0.0
    assert outcome.stopped >= 1 and outcome.finished + outcome.stopped == 6
    stopped = table[table["status"] == "stopped"]
    assert stopped["error"].str.startswith("stopped early by ASHA at step").all()


def test_cli_real_runner_end_to_end(ray_cluster: None, store_uri: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    params = {
        "tracking": {"uri": store_uri, "results_dir": "results"},
        "ray": {"storage_path": "ray"},
        "base": {"experiment": "fit", "dataset": "gaussian", "codebook_size": 16, "dim": 2, "steps": 20,
                 "batch_size": 256, "eval_size": 1024, "log_every": 10, "device": "cpu"},
        "sweeps": {"tiny": {"grid": {"method": ["vanilla", "wasserstein"], "seed": [0]},
                            "method_options": {"wasserstein": {"gamma": 1.0}}}},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    assert sweep.main(["--params", str(path), "--sweep", "tiny", "--max-concurrent", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    table_path = tmp_path / "results" / "tiny" / "trials.csv"
    assert out[-1] == f"sweep tiny: 2 finished, 0 failed (0 already done, not rerun) -> {table_path}"
    import pandas as pd

    table = pd.read_csv(table_path)
    record_keys = ["quantization_error", "utilization", "perplexity", "dead_codes", "gaussian_w2_sq",
                   "kmeans_error", "error_vs_kmeans", "final_loss", "train_seconds"]
    assert set(record_keys) <= set(table.columns) and table[record_keys].notna().all().all()
    assert sorted(table["method"]) == ["vanilla", "wasserstein"]
    assert table.loc[table["method"] == "wasserstein", "method_options.gamma"].item() == 1.0
    # each trial leaves its final codebook and usage histogram, also logged to its MLflow run
    for trial, run_id in zip(table["trial"], table["run_id"]):
        folder = tmp_path / "results" / "tiny" / "artifacts" / trial
        assert (folder / "codebook.npy").exists() and (folder / "code_counts.npy").exists()
        logged = {a.path for a in tracking.make_client(store_uri).list_artifacts(run_id)}
        assert {"codebook.npy", "code_counts.npy"} <= logged
    # DVC clears a stage's outputs before rerunning it: the export restores them from the MLflow runs
    saved = (tmp_path / "results" / "tiny" / "artifacts" / table["trial"][0] / "codebook.npy").read_bytes()
    shutil.rmtree(tmp_path / "results" / "tiny")
    assert sweep.main(["--params", str(path), "--sweep", "tiny", "--export-only"]) == 0
    assert "exported 2 trials" in capsys.readouterr().out
    assert (tmp_path / "results" / "tiny" / "artifacts" / table["trial"][0] / "codebook.npy").read_bytes() == saved
    assert sweep.main(["--params", str(path), "--sweep", "nope"]) == 2
    assert "sweeps.nope: unknown sweep" in capsys.readouterr().err


ERROR_SEED = 7


def _erroring_runner(config: RunConfig, **kwargs: Any) -> dict[str, float]:
    """fake_runner, except that seed 7 raises as a bug would (an error, not a divergence)."""
    if config.seed == ERROR_SEED:
        raise RuntimeError("a bug in seed 7")
    return fake_runner(config, **kwargs)


def test_every_sweep_runs_in_one_grid_errors_named_unchanged_sweeps_kept(ray_cluster: None, tmp_path: Path) -> None:
    """`sweep --all`: the trials of all sweeps in ONE Tune run, each recorded in its own experiment; a
    sweep with errors fails alone; a rerun skips the sweeps whose inputs did not change, even without
    the MLflow store (results/ restored by `dvc pull`), and reruns those whose prepared data changed."""
    params = make_params(name="a", ray={"storage_path": str(tmp_path / "ray")})
    params["sweeps"]["b"] = {"grid": {"method": ["vanilla"], "seed": [0, ERROR_SEED]}}
    specs = [parse(params, name, base_dir=tmp_path) for name in ("a", "b")]
    prepared = tmp_path / "prepared"
    for name in ("a", "b"):
        (prepared / name).mkdir(parents=True)
        (prepared / name / "manifest.json").write_text(f"{name} pinned\n")
    calls = tmp_path / "calls"
    run = functools.partial(sweep.run_sweeps, runner=functools.partial(_erroring_runner, call_dir=str(calls)),
                            prepared_root=prepared, skip_up_to_date=True)

    first = run(specs)
    assert [r.name for r in first] == ["a", "b"] and len(list(calls.iterdir())) == 5  # seed 7 raises first
    assert len(list((tmp_path / "ray").iterdir())) == 1, "one Tune run for both sweeps"
    a, b = (r.outcome for r in first)
    assert (a.finished, a.failed, a.exit_status()) == (4, 0, 0)
    assert (b.finished, b.errors, b.exit_status()) == (1, 1, sweep.EXIT_TRIAL_ERRORS)
    assert set(a.table["sweep"]) == {"a"} and set(b.table["sweep"]) == {"b"}  # each in its own experiment
    assert (tmp_path / "results" / "a" / sweep.STAMP_FILE).exists()
    assert not (tmp_path / "results" / "b" / sweep.STAMP_FILE).exists(), "a failed sweep is not up to date"

    params["tracking"]["uri"] = "fresh.db"  # results/ without their store, as after `dvc pull`
    specs = [parse(params, name, base_dir=tmp_path) for name in ("a", "b")]
    second = run(specs)  # a: up to date, not run; b: not up to date, and its store is gone: both trials again
    assert second[0].up_to_date and second[0].exit_status() == 0 and "up to date" in second[0].line()
    assert (second[1].outcome.skipped, second[1].outcome.errors) == (0, 1) and len(list(calls.iterdir())) == 6
    (prepared / "a" / "manifest.json").write_text("a pinned anew\n")  # new data: a runs again
    assert not sweep._is_up_to_date(specs[0], sweep.inputs_stamp(specs[0], prepared / "a"))
    edited = dataclasses.replace(specs[0], trials=specs[0].trials[:1])  # a trial less (or another id)
    assert not sweep._is_up_to_date(edited, sweep.inputs_stamp(edited, prepared / "a"))


def test_sweep_all_cli_runs_every_sweep_and_names_each_failing_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    params = make_params(name="a")
    params["sweeps"].update(b={"grid": {"seed": [0]}}, c={"grid": {"seed": [1]}})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    seen: list[list[str]] = []

    def fake_run_sweeps(specs: Any, **kwargs: Any) -> list[sweep.SweepsResult]:
        seen.append([spec.name for spec in specs])
        assert kwargs["skip_up_to_date"] and kwargs["prepared_root"] == tmp_path / "data" / "prepared"
        outcome = functools.partial(sweep.SweepOutcome, stopped=0, skipped=0, not_run=0, table=pd.DataFrame(),
                                    table_path=tmp_path / "t.csv")
        return [sweep.SweepsResult("a", outcome=outcome(name="a", finished=2, failed=1, errors=1)),
                sweep.SweepsResult("b", up_to_date=True),
                sweep.SweepsResult("c", error=sweep_recorder.IncompleteError("tuning incomplete (interrupted)"))]

    monkeypatch.setattr(sweep, "run_sweeps", fake_run_sweeps)
    assert sweep.main(["--params", str(path), "--all"]) == sweep.EXIT_TRIAL_ERRORS
    assert seen == [["a", "b", "c"]]
    out, err = capsys.readouterr()
    assert "sweep b: up to date" in out
    assert "error: sweep a: 1 trials failed with an error" in err and "error: sweep c: tuning incomplete" in err
    assert "2 of 3 sweeps failed: a, c" in err.splitlines()[-1]
    with pytest.raises(SystemExit):
        sweep.main(["--params", str(path), "--all", "--sweep", "a"])


@dataclasses.dataclass
class _FakeTuneTrial:
    """What the MLflow recorder reads from a ray.tune Trial."""

    trial_id: str
    config: dict
    last_result: dict = dataclasses.field(default_factory=dict)


def test_recorder_fails_trials_cut_off_by_an_interruption(store_uri: str) -> None:
    """Ctrl-C: started trials end failed (retried on resume), whether Tune reports them or not."""
    spec = parse(make_params({"grid": {"seed": [0, 1, 2]}}, name="cut", tracking={"uri": store_uri}), "cut")
    client = tracking.make_client(store_uri)
    experiment_id = tracking.get_or_create_experiment(client, "cut")
    recorder = sweep_recorder.MlflowRecorder(client, experiment_id, spec, tracking.GitState("0" * 40, False), {})
    done, completed_early, open_ = (_FakeTuneTrial(f"t{i}", {sweep_recorder.TRIAL_KEY: sweep_recorder.grid_key("cut", t.trial_id)})
                                    for i, t in enumerate(spec.trials))
    for trial in (done, completed_early, open_):
        recorder.on_start(trial)
    recorder.on_result(done, {sweep_recorder.KIND_KEY: "final", "metrics": {"quantization_error": 1.0}})
    completed_early.last_result = {sweep_recorder.STEP_KEY: 2}
    recorder.on_complete(completed_early)  # no final result and no ASHA: not a success
    recorder.close_open_runs()
    status = tracking.export_table(store_uri, "cut").set_index("trial")[["status", "error"]]
    assert status.loc[spec.trials[0].trial_id, "status"] == "finished"
    assert status.loc[spec.trials[1].trial_id, "error"].startswith("Interrupted: trial ended at step 2")
    assert status.loc[spec.trials[2].trial_id, "error"].startswith("Interrupted: the sweep stopped")
    assert list(status["status"]).count("failed") == 2


def test_trials_that_train_a_network_launch_first_in_grid_order() -> None:
    fits = sweep_spec.load_sweep(REPO_ROOT / "params.yaml", "atomic")
    images = sweep_spec.load_sweep(REPO_ROOT / "params.yaml", "vqvae")
    grid = [sweep._Pending(spec=fits, todo=list(fits.trials[:3])), sweep._Pending(spec=images, todo=list(images.trials[:2]))]
    order = [(item.spec.name, trial.trial_id) for item, trial in sweep.longest_first(grid)]
    assert order == ([("vqvae", trial.trial_id) for trial in images.trials[:2]]
                     + [("atomic", trial.trial_id) for trial in fits.trials[:3]])
