"""The tuning stage of a sweep: the ``tune:`` schema, a tuning objective that never reads test features, and a
tuning that cannot lose to the default (the default is the first candidate, the scored budget is equal under
failures, the tuning seed is none of the reported seeds)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark.experiments.config import ConfigError, RunConfig
from benchmark.pipeline import spec as sweep_spec

CATALOG = sweep_spec.Catalog.from_registries()
TUNE = {"budget": 2, "metric": "error_vs_kmeans", "mode": "min", "lr": [1e-3, 3.0],
        "optimizers": ["sgd", "adam"]}


def make_params(**tune: Any) -> dict[str, Any]:
    return {
        "base": {"codebook_size": 8, "dim": 2, "steps": 4, "batch_size": 64, "eval_size": 256, "log_every": 2},
        "sweeps": {"s": {"grid": {"method": ["vanilla", "wasserstein"], "seed": [0, 1]},
                         "tune": {**TUNE, **tune}}},
    }


def test_a_valid_tune_section_is_parsed() -> None:
    spec = sweep_spec.parse_sweep(make_params(tunables=["gamma"]), "s", catalog=CATALOG)
    assert spec.tune == sweep_spec.TuneSettings(budget=2, lr=(1e-3, 3.0), optimizers=("sgd", "adam"),
                                                tunables=("gamma",))


def test_no_tune_section_means_no_tuning() -> None:
    params = make_params()
    del params["sweeps"]["s"]["tune"]
    assert sweep_spec.parse_sweep(params, "s", catalog=CATALOG).tune is None


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ({"budget": 0}, r"sweeps.s.tune.budget: must be >= 1"),
        ({"budget": True}, r"sweeps.s.tune.budget: must be >= 1"),
        ({"mode": "lowest"}, r"sweeps.s.tune.mode: must be 'min' or 'max'"),
        ({"lr": [3.0, 1e-3]}, r"sweeps.s.tune.lr: must satisfy 0 < low < high"),
        ({"lr": [0.0, 1.0]}, r"sweeps.s.tune.lr: must satisfy 0 < low < high"),
        ({"lr": [1.0]}, r"sweeps.s.tune.lr: must be \[low, high\]"),
        ({"optimizers": []}, r"sweeps.s.tune.optimizers: must be a non-empty list"),
        ({"optimizers": ["rmsprop"]}, r"sweeps.s.tune.optimizers: unknown optimizer 'rmsprop'"),
        ({"tunables": ["decay"]}, r"sweeps.s.tune.tunables: unknown tunable 'decay'"),
        ({"tunables": []}, r"sweeps.s.tune.tunables: must be null or a non-empty list"),
        ({"grace_steps": 100}, r"sweeps.s.tune.grace_steps: unknown key"),  # no early stopping of tuning
        ({"patience": 3}, r"sweeps.s.tune.patience: unknown key"),
        # the tuning seed is none of the reported seeds
        ({"seed": 1}, r"sweeps.s.tune.seed: 1 is also a reported seed of the grid \[0, 1\]"),
        # the search space contains every trial's default point
        ({"lr": [1e-3, 0.5]}, r"sweeps.s.tune.lr: \[0.001, 0.5\] does not contain the default codebook_lr 1.0"),
        ({"optimizers": ["adam"]}, r"sweeps.s.tune.optimizers: \['adam'\] does not contain the default optimizer"),
    ],
)
def test_invalid_tune_sections_name_the_dotted_key(tune: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sweep_spec.parse_sweep(make_params(**tune), "s", catalog=CATALOG)


# ------------------------------------------------------------------------------ objective


class _NoTestSplit:
    """A feature dataset whose test split raises: proves what an evaluation reads."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.kind, self.dim = inner.kind, inner.dim
        self.splits: list[str] = []

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> torch.Tensor:
        self.splits.append(split)
        if split == "test":
            raise AssertionError("the test split was sampled")
        return self._inner.sample(n, generator, split)


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> list[_NoTestSplit]:
    import datasets

    made: list[_NoTestSplit] = []
    load = datasets.load

    def guarded_load(name: str, **options: Any) -> _NoTestSplit:
        made.append(_NoTestSplit(load(name, **options)))
        return made[-1]

    monkeypatch.setattr(datasets, "load", guarded_load)
    return made


def test_the_tuning_objective_never_reads_test_features(guarded: list[_NoTestSplit]) -> None:
    from benchmark.experiments.train import run_experiment

    config = RunConfig(codebook_size=8, dim=2, steps=3, batch_size=64, eval_size=256, log_every=1)
    record = run_experiment(config, evaluation_split="validation")
    assert set(guarded[0].splits) == {"train", "validation"} and record["error_vs_kmeans"] > 0
    with pytest.raises(AssertionError, match="the test split was sampled"):
        run_experiment(config)  # a plain trial is evaluated on the test split


def test_evaluation_split_is_checked() -> None:
    from benchmark.experiments.train import run_experiment

    with pytest.raises(ValueError, match="evaluation_split: must be 'test' or 'validation'"):
        run_experiment(RunConfig(steps=1), evaluation_split="train")


# ------------------------------------------------------------------------------ search space


def test_the_search_space_is_lr_optimizer_and_the_methods_tunables() -> None:
    import methods
    from benchmark.pipeline import tuning

    settings = sweep_spec.TuneSettings(lr=(1e-3, 3.0), optimizers=("sgd", "adam"))
    space = tuning.search_space(methods.get("wasserstein").tunables, settings)
    assert set(space) == {"codebook_lr", "optimizer", "method_options.gamma", "method_options.beta"}
    assert (space["codebook_lr"].lower, space["codebook_lr"].upper) == (1e-3, 3.0)
    assert space["optimizer"].categories == ["sgd", "adam"]
    only_gamma = tuning.search_space(methods.get("wasserstein").tunables,
                                     dataclasses.replace(settings, tunables=("gamma",)))
    assert set(only_gamma) == {"codebook_lr", "optimizer", "method_options.gamma"}


def test_a_point_is_applied_to_the_setting() -> None:
    from benchmark.pipeline import tuning

    base = RunConfig(method="wasserstein", method_options={"beta": 0.1})
    tuned = tuning.apply(base, {"codebook_lr": 0.5, "optimizer": "adam", "method_options.gamma": 2.0})
    assert (tuned.codebook_lr, tuned.optimizer, dict(tuned.method_options)) == (
        0.5, "adam", {"beta": 0.1, "gamma": 2.0})
    with pytest.raises(ValueError, match="point: unknown key 'colour'"):
        tuning.apply(base, {"colour": 1})


def test_the_search_space_must_contain_a_methods_own_default_option() -> None:
    params = make_params()
    params["sweeps"]["s"]["method_options"] = {"wasserstein": {"gamma": 50.0}}
    with pytest.raises(ConfigError, match=r"sweeps.s.tune.tunables: the search range \[0.001, 10.0\] of "
                                          r"wasserstein's gamma does not contain its default 50.0"):
        sweep_spec.parse_sweep(params, "s", catalog=CATALOG)
    params["sweeps"]["s"]["tune"]["tunables"] = ["beta"]  # gamma not searched: its value is not a candidate
    assert sweep_spec.parse_sweep(params, "s", catalog=CATALOG).tune.tunables == ("beta",)


def test_the_default_point_is_the_settings_own_values() -> None:
    import methods
    from benchmark.pipeline import tuning

    setting = RunConfig(method="wasserstein", codebook_lr=0.3, optimizer="adam", method_options={"gamma": 2.0})
    space = tuning.search_space(methods.get("wasserstein").tunables, sweep_spec.TuneSettings())
    point = tuning.default_point(setting, space)
    assert point == {"codebook_lr": 0.3, "optimizer": "adam", "method_options.gamma": 2.0,
                     "method_options.beta": methods.get("wasserstein").options().beta}
    assert tuning.apply(setting, point).to_dict() == setting.replace(
        method_options={"gamma": 2.0, "beta": point["method_options.beta"]}).to_dict()


def test_the_sampler_is_sobol_below_tpes_start_up_and_tpe_above() -> None:
    import optuna

    from benchmark.pipeline import tuning

    name, sampler = tuning.sampler_for(6, seed=3)
    assert name == tuning.SOBOL and isinstance(sampler, optuna.samplers.QMCSampler)
    assert tuning.sampler_for(tuning.TPE_STARTUP + 1, 3)[0] == tuning.SOBOL  # default + 10 start-up points
    name, sampler = tuning.sampler_for(tuning.TPE_STARTUP + 2, 3)
    assert name == tuning.TPE and isinstance(sampler, optuna.samplers.TPESampler)


def test_tuning_trial_ids_are_deterministic_and_distinct() -> None:
    from benchmark.pipeline import tuning

    settings = sweep_spec.TuneSettings(budget=2)
    setting = RunConfig(codebook_size=8, dim=2)
    ids = [tuning.tuning_trial_id(setting, settings, i) for i in range(2)]
    assert ids == [tuning.tuning_trial_id(setting, settings, i) for i in range(2)] and len(set(ids)) == 2


# ------------------------------------------------------------------------------ the stage, end to end

import sys  # noqa: E402

import ray.cloudpickle as cloudpickle  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def scored_runner(config: RunConfig, *, on_step: Any = None, evaluation_split: str = "test",
                  artifacts_dir: str | None = None) -> dict[str, float]:
    """Stands in for run_experiment: the error is smallest at codebook_lr = 0.1 with adam; the
    test split scores 100 higher than the validation split, so the tables show which was read."""
    import math

    for step in range(config.log_every, config.steps + 1, config.log_every):
        if on_step is not None:
            on_step(step, {"loss": 1.0 / step})
    error = abs(math.log10(config.codebook_lr) + 1.0) + (0.0 if config.optimizer == "adam" else 0.5)
    return {"error_vs_kmeans": error + (100.0 if evaluation_split == "test" else 0.0),
            "utilization": 1.0 if error < 0.5 else 0.0, "train_seconds": 0.01}


def test_tuning_stage_end_to_end_and_resume(ray_cluster: None, tmp_path: Path) -> None:
    import pandas as pd

    import methods
    from benchmark.pipeline import sweep, tracking, tuning

    params = make_params(budget=3)
    params["sweeps"]["s"]["grid"] = {"method": ["vanilla"], "seed": [0, 1]}
    params["tracking"] = {"uri": "mlflow.db", "results_dir": "results"}
    params["ray"] = {"num_cpus": 2, "storage_path": str(tmp_path / "ray"), "max_concurrent": 1}
    spec = sweep_spec.parse_sweep(params, "s", base_dir=tmp_path, catalog=CATALOG)

    outcome = sweep.run_sweep(spec, runner=scored_runner)
    assert outcome.finished == 4  # 2 default + 2 tuned (one per seed)
    table = pd.read_csv(tmp_path / "results" / "s" / tuning.TUNING_FILE)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["method"], row["budget"], row["tuning_trials"], row["scored_trials"]) == ("vanilla", 3, 3, 3)
    assert row["sampler"] == tuning.SOBOL and not row["best_is_default"]
    assert row["validation_best"] < 100 <= row["default"]  # tuned on validation, reported on test
    assert row["tuned"] - 100 == pytest.approx(row["validation_best"])
    assert {"chosen.codebook_lr", "chosen.optimizer", "chosen.method_options.beta"} <= set(table.columns)
    assert 0.0 <= row["robust_share"] <= 1.0

    client = tracking.make_client(spec.tracking.uri)
    experiment = client.get_experiment_by_name("s" + tuning.TUNING_SUFFIX)
    runs = tracking.search_sweep_runs(client, experiment.experiment_id)
    assert len(runs) == 3 and all(run.data.tags[tuning.GROUP_TAG] for run in runs)
    ids = sorted(run.data.tags["trial"] for run in runs)
    group = tuning.groups_of(spec)[0]
    assert ids == sorted(tuning.tuning_trial_id(group.setting, spec.tune, i) for i in range(3))
    # the first candidate is the default point: the setting's own lr, optimizer and options
    first = next(run for run in runs if run.data.tags["trial"] == tuning.tuning_trial_id(group.setting, spec.tune, 0))
    space = tuning.search_space(methods.get("vanilla").tunables, spec.tune)
    assert tuning.same_point(tuning._point_of(first, space), tuning.default_point(group.setting, space))
    assert row["validation_default"] == pytest.approx(first.data.metrics["error_vs_kmeans"])
    assert row["validation_best"] <= row["validation_default"]  # never worse than the default on validation
    assert group.setting.seed == spec.tune.seed not in {trial.config.seed for trial in spec.trials}

    again = sweep.run_sweep(spec, runner=scored_runner)  # resume: nothing reruns
    assert (again.finished, again.skipped) == (0, 4)
    assert len(tracking.search_sweep_runs(client, experiment.experiment_id)) == 3


def test_the_tuning_stages_of_all_sweeps_share_one_tune_run(ray_cluster: None, tmp_path: Path) -> None:
    """`sweep --all`: every tuned sweep's groups in ONE Tune run (then one grid), each tuning run recorded in
    its own sweep's tuning experiment, each sweep's budget spent in full."""
    import pandas as pd

    from benchmark.pipeline import sweep, tracking, tuning

    params = make_params(budget=2)
    params["sweeps"]["s"]["grid"] = {"method": ["vanilla"], "seed": [0]}
    params["sweeps"]["t"] = {**params["sweeps"]["s"], "base": {"codebook_size": 4}}
    params["tracking"] = {"uri": "mlflow.db", "results_dir": "results"}
    params["ray"] = {"num_cpus": 2, "storage_path": str(tmp_path / "ray")}
    specs = [sweep_spec.parse_sweep(params, name, base_dir=tmp_path, catalog=CATALOG) for name in ("s", "t")]
    results = sweep.run_sweeps(specs, runner=scored_runner)
    assert [r.exit_status() for r in results] == [0, 0]
    assert all(r.outcome.finished == len(r.outcome.table) >= 1 for r in results)  # default (+ tuned unless it won)
    assert len(list((tmp_path / "ray").iterdir())) == 2, "one Tune run for the tuning stages, one for the grid"
    client = tracking.make_client(specs[0].tracking.uri)
    for spec in specs:
        row = pd.read_csv(tmp_path / "results" / spec.name / tuning.TUNING_FILE).iloc[0]
        assert (row["tuning_trials"], row["scored_trials"]) == (2, 2)
        experiment = client.get_experiment_by_name(spec.name + tuning.TUNING_SUFFIX)
        runs = tracking.search_sweep_runs(client, experiment.experiment_id)
        group = tuning.groups_of(spec)[0]
        assert sorted(run.data.tags["trial"] for run in runs) == sorted(
            tuning.tuning_trial_id(group.setting, spec.tune, i) for i in range(2))
        assert {run.data.params["codebook_size"] for run in runs} == {str(spec.trials[0].config.codebook_size)}


def test_a_group_gets_its_next_point_only_after_its_previous_trial_finished():
    # what each group's searcher knows when it suggests must not depend on which concurrent trial
    # happened to finish first: otherwise a rerun tunes to other points
    from ray.tune.search import Searcher

    from benchmark.pipeline.tuning import GROUP_KEY, _grouped_search

    class Counting:
        def __init__(self) -> None:
            self.seen: list[str] = []
            self.asked = 0

        def suggest(self, trial_id: str) -> dict:
            self.asked += 1
            return {"point": self.asked, "results_seen": len(self.seen)}

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            pass

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            self.seen.append(trial_id)

    a, b = Counting(), Counting()
    search = _grouped_search({"a": a, "b": b}, {"a": 2, "b": 1})
    first, second = search.suggest("t1"), search.suggest("t2")
    assert {first[GROUP_KEY], second[GROUP_KEY]} == {"a", "b"}
    assert search.suggest("t3") is None  # a's second point waits for a's first result
    search.on_trial_complete("t1" if first[GROUP_KEY] == "a" else "t2", result={})
    third = search.suggest("t3")
    assert third[GROUP_KEY] == "a" and third["results_seen"] == 1
    search.on_trial_complete("t3", result={})
    search.on_trial_complete("t2" if first[GROUP_KEY] == "a" else "t1", result={})
    assert search.suggest("t4") == Searcher.FINISHED


def test_a_groups_points_do_not_move_when_only_the_code_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    # The searcher's seed comes from the setting's own values, not from its group id (which holds the
    # code's fingerprint): an edit of the code reruns a group's trials at the same points.
    from benchmark.pipeline import code, tuning

    setting = RunConfig(method="wasserstein", codebook_size=256, dim=4, method_options={"gamma": 2.0})
    seed, group_id = tuning.searcher_seed(3, setting), code.trial_id_of(setting)
    monkeypatch.setattr(code, "fingerprint", lambda config: "an edited file")
    assert code.trial_id_of(setting) != group_id
    assert tuning.searcher_seed(3, setting) == seed
    assert tuning.searcher_seed(3, setting.replace(device="cpu")) == seed
    assert tuning.searcher_seed(4, setting) != seed
    assert tuning.searcher_seed(3, setting.replace(codebook_size=512)) != seed
    assert tuning.searcher_seed(3, setting.replace(method_options={"gamma": 1.0})) != seed


class FlakyRunner:
    """``scored_runner`` whose calls number 2 and 4 fail (an error, not a score) and 3 diverges (a
    score: the worst); calls are counted in a file, so the order is the sweep's (one trial at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, config: RunConfig, **kwargs: Any) -> dict[str, float]:
        from benchmark.experiments.train import DivergedError

        with open(self.path, "a") as calls:
            calls.write("call\n")
        call = len(self.path.read_text().splitlines())
        if kwargs.get("evaluation_split") == "validation" and call in (2, 4):
            raise RuntimeError(f"call {call}: a crash that scores nothing")
        if kwargs.get("evaluation_split") == "validation" and call == 3:
            raise DivergedError(f"call {call}: step 1: loss is nan")
        return scored_runner(config, **kwargs)


def test_the_scored_budget_is_equal_under_failures_and_the_default_can_win(ray_cluster: None, tmp_path: Path) -> None:
    import pandas as pd

    from benchmark.pipeline import sweep, tracking, tuning

    params = make_params(budget=3, lr=[1e-3, 3.0], optimizers=["adam", "sgd"])
    params["base"].update(codebook_lr=0.1, optimizer="adam")  # the default is the validation optimum
    params["sweeps"]["s"]["grid"] = {"method": ["vanilla"], "seed": [0, 1]}
    params["tracking"] = {"uri": "mlflow.db", "results_dir": "results"}
    params["ray"] = {"num_cpus": 2, "storage_path": str(tmp_path / "ray"), "max_concurrent": 1}
    spec = sweep_spec.parse_sweep(params, "s", base_dir=tmp_path, catalog=CATALOG)

    outcome = sweep.run_sweep(spec, runner=FlakyRunner(tmp_path / "calls.txt"))
    row = pd.read_csv(tmp_path / "results" / "s" / tuning.TUNING_FILE).iloc[0]
    # calls 1 (default), 3 (diverged) and 5 are scored; the crashes 2 and 4 were replaced
    assert (row["scored_trials"], row["tuning_trials"]) == (3, 5)
    assert row["best_is_default"] and row["validation_best"] == row["validation_default"] == pytest.approx(0.0)
    assert row["tuned_trials"] == row["default_trials"]  # the tuned rows are the default rows: nothing reruns
    assert outcome.finished == 2
    client = tracking.make_client(spec.tracking.uri)
    runs = tracking.search_sweep_runs(client, client.get_experiment_by_name("s" + tuning.TUNING_SUFFIX).experiment_id)
    errors = sorted(str(run.data.tags.get("error", ""))[:13] for run in runs if run.data.tags["status"] == "failed")
    assert errors == ["DivergedError", "RuntimeError:", "RuntimeError:"]
    assert len({run.data.tags["trial"] for run in runs}) == 5  # every attempt its own id

    import yaml

    from benchmark.report import build as report

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    config = report.report_config(params, tmp_path / "params.yaml")
    config.figures = False
    text = report.build_report(config, params).read_text()
    tuning_row = next(line for line in text.splitlines() if line.startswith("| vanilla | 100.000"))
    assert "| default point | codebook_lr 0.1, optimizer adam, beta 0.25 | 3 / 5 |" in tuning_row
    assert "| default | 2 | 0 |" in text and "| tuned | 2 | 0 |" in text  # both protocols: the same two trials


def test_a_failed_trial_gives_its_group_another_one_within_its_attempts() -> None:
    from ray.tune.search import Searcher

    from benchmark.pipeline.tuning import GROUP_KEY, _grouped_search

    class Points:
        def __init__(self) -> None:
            self.told: list[tuple[str, bool]] = []

        def suggest(self, trial_id: str) -> dict:
            return {"x": trial_id}

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            pass

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            self.told.append((trial_id, error))

    inner = Points()
    search = _grouped_search({"a": inner}, {"a": 2}, {"a": 3})
    assert search.suggest("t1")[GROUP_KEY] == "a"
    search.on_trial_complete("t1", result={"kind": "failed"})  # not a score: told as an error, retried
    search.suggest("t2")
    search.on_trial_complete("t2", result={"kind": "diverged"})  # a score (the worst)
    search.suggest("t3")
    search.on_trial_complete("t3", result={"kind": "failed"})  # the third and last attempt
    assert search.suggest("t4") == Searcher.FINISHED
    assert inner.told == [("t1", True), ("t2", False), ("t3", True)]
