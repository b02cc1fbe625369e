"""The report builder on a small synthetic results table in the exported format (benchmark.pipeline.tracking.export_table)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from benchmark import paths
from benchmark.report import build as report
from benchmark.report import figures, tables
from benchmark.report import stats as report_stats

SEEDS = (0, 1, 2)


def _rows(sweep, methods, factor, values, seeds=SEEDS, base=None, value_fn=None):
    rng = np.random.default_rng(len(sweep))
    rows = []
    for method in methods:
        for value in values:
            for seed in seeds:
                row = dict(sweep=sweep, trial=f"{sweep}-{method}-{value}-{seed}", run_id=f"run{seed}",
                           status="finished", error="", git_commit="0123456789abcdef", git_dirty=False,
                           experiment="fit", dataset="gaussian", method=method, codebook_size=64, dim=8,
                           steps=10, batch_size=32, eval_size=100, seed=seed, **(base or {}))
                row[factor] = value
                u, e = value_fn(method, value, rng)
                row.update(utilization=u, quantization_error=e, error_vs_kmeans=e / 1.9,
                           perplexity=60 * u, dead_codes=round(64 * (1 - u)), gaussian_w2=0.1,
                           kmeans_error=1.9, final_loss=1.0, train_seconds=0.5)
                rows.append(row)
    return rows


def _atomic(method, mu, rng):
    if method == "wasserstein":
        return 0.99 + rng.uniform(0, 0.01), 2.0 + rng.normal(0, 0.02)
    collapsed = mu >= 4
    return (0.02 if collapsed else 1.0) - rng.uniform(0, 0.01), 2.0 + mu + rng.normal(0, 0.02)


def _k(method, k, rng):
    good = method != "vanilla"
    return (0.97 if good else 0.5 / math.log2(k)) + rng.uniform(0, 0.02), 4.0 / math.log2(k) + rng.normal(0, 0.01)


def _make_workspace(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    atomic = pd.DataFrame(_rows("atomic", ["vanilla", "wasserstein"], "dataset_options.mean", [0.0, 4.0, 8.0],
                                value_fn=_atomic))
    failed = atomic.iloc[0].to_dict() | {"trial": "atomic-vanilla-8-9", "seed": 9, "status": "failed",
                                         "dataset_options.mean": 8.0, "utilization": np.nan,
                                         "error": "DivergedError: step 3: loss is nan"}
    atomic = pd.concat([atomic, pd.DataFrame([failed])], ignore_index=True)
    ksweep = pd.DataFrame(_rows("k_sweep", ["vanilla", "ema", "wasserstein"], "codebook_size", [16, 64, 256],
                                value_fn=_k))
    for name, table in (("atomic", atomic), ("k_sweep", ksweep)):
        (results / name).mkdir(parents=True)
        table.to_csv(results / name / "trials.csv", index=False)
    params = {"tracking": {"uri": "mlflow.db", "results_dir": "results"}, "base": {"steps": 10},
              "sweeps": {"atomic": {"grid": {"method": ["vanilla", "wasserstein"], "seed": list(SEEDS)}},
                         "k_sweep": {"grid": {"codebook_size": [16, 64, 256]}},
                         "gamma_sweep": {"grid": {"method_options.gamma": [0.0, 1.0]}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    return _make_workspace(tmp_path)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One full report (tables + figures) of the synthetic workspace, built with training forbidden."""
    import benchmark.experiments.train as train

    def forbidden(*args, **kwargs):
        raise AssertionError("the report must not train")

    workspace = _make_workspace(tmp_path_factory.mktemp("report"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "run_experiment", forbidden)
        text, config = _build(workspace)
    return workspace, text, config


def _build(workspace: Path, **changes) -> tuple[str, report.ReportConfig]:
    params_path = workspace / "params.yaml"
    params = report.load_params(params_path)
    config = report.report_config(params, params_path)
    config.filter_to_spec = False  # the synthetic specs are not runnable sweeps
    for key, value in changes.items():
        setattr(config, key, value)
    path = report.build_report(config, params)
    return path.read_text(), config


def test_t_interval_matches_scipy():
    values = [0.91, 0.95, 0.97, 0.90]
    mean, half, n = report_stats.t_interval(values, 0.95)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert n == 4 and mean == pytest.approx(np.mean(values))
    assert half == pytest.approx((high - low) / 2)
    assert math.isnan(report_stats.t_interval([1.0])[1])
    assert report_stats.t_interval([float("nan"), 2.0, 4.0])[2] == 2


def test_report_tables_ci_bold_and_failures(built):
    workspace, text, config = built
    table = pd.read_csv(workspace / "results" / "atomic" / "trials.csv")
    # Independent CI: wasserstein at mu = 4, U in %.
    u = table[(table.method == "wasserstein") & (table["dataset_options.mean"] == 4.0)
              & (table.status == "finished")]["utilization"].to_numpy() * 100
    low, high = stats.t.interval(0.95, len(u) - 1, loc=u.mean(), scale=stats.sem(u))
    expected = f"{u.mean():.1f} ± {(high - low) / 2:.1f}"
    section = text.split("(`atomic`)", 1)[1].split("## ", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith("| wasserstein | 4 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = next(line for line in section.splitlines() if line.startswith("| method"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:4] == ["method", "mu", "n", "failed"]
    assert cells[columns.index("U (%)")] == f"**{expected}**"  # wasserstein beats collapsed vanilla at mu 4
    # E: lower is better -> wasserstein bold at mu 8, vanilla not.
    vanilla8 = next(line for line in section.splitlines() if line.startswith("| vanilla | 8 |"))
    vcells = [c.strip() for c in vanilla8.strip("|").split("|")]
    assert not vcells[columns.index("E")].startswith("**")
    assert vcells[columns.index("n")] == "3" and vcells[columns.index("failed")] == "1"
    # The failed trial is counted and listed with its error.
    assert "Failed trials: 1." in section and "DivergedError: step 3: loss is nan" in section
    assert "Failed trials: none." in text.split("(`k_sweep`)", 1)[1]
    # Metric definitions, spec, code version, paper-vs-ours, missing sweep.
    assert "## Metrics" in text and "**E / k-means**" in text
    assert "sweeps:\n  atomic:" in text and "`0123456789ab`" in text
    paper = text.split("## Paper vs ours", 1)[1].split("\n## ", 1)[0]
    assert "| wasserstein | mu 8 | ours | U (%) | 99.4 | 99.8 |" in paper
    # the synthetic rows have K 64, the paper's atomic experiment K 16384: no verdict
    assert re.search(r"\| vanilla \| mu 4 \| ours \| U \(%\) \|.*\| different setting: K 64 \(paper 16384\) \|", paper)
    assert "No results table for: `gamma_sweep`" in text


def test_report_figures_and_metrics(built):
    _, _, config = built
    figures = config.out_dir / "figures"
    for name in ("atomic.png", "k_sweep.png"):
        data = (figures / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    metrics = json.loads((config.out_dir / "metrics.json").read_text())
    assert set(metrics) == {"atomic", "k_sweep"}
    assert metrics["atomic"]["wasserstein_mu8"]["utilization"] > 0.98  # a fraction, not %
    assert metrics["atomic"]["vanilla_mu8"]["failed"] == 1 and "failed" not in metrics["atomic"]["vanilla_mu4"]
    assert set(metrics["atomic"]["vanilla_mu4"]) == {"utilization", "error_vs_kmeans"}


def test_disk_codebook_and_usage_figures(workspace: Path):
    """Drawn from each method's lowest-seed trial artifacts (codebook.npy, code_counts.npy)."""
    rng = np.random.default_rng(0)
    disk = pd.DataFrame(_rows("disk", ["vanilla", "wasserstein"], "dim", [2], seeds=(1, 0), value_fn=_atomic))
    (workspace / "results" / "disk").mkdir(parents=True)
    disk.to_csv(workspace / "results" / "disk" / "trials.csv", index=False)
    for trial in disk["trial"]:
        folder = workspace / "results" / "disk" / "artifacts" / trial
        folder.mkdir(parents=True)
        np.save(folder / "codebook.npy", rng.uniform(-0.7, 0.7, (40, 2)))
        np.save(folder / "code_counts.npy", rng.integers(0, 5, 40))
    prepared = workspace / "data" / "prepared" / "disk"
    prepared.mkdir(parents=True)
    np.save(prepared / "sample_0.npy", rng.uniform(-1, 1, (500, 2)).astype(np.float32))
    text, config = _build(workspace)
    assert (config.out_dir / "figures" / "disk_codebooks.png").stat().st_size > 5000
    assert (config.out_dir / "figures" / "disk_code_usage.png").stat().st_size > 5000
    assert "figures/disk_code_usage.png" in text
    codebooks, usage = report._trial_artifacts(config)
    seed0 = workspace / "results" / "disk" / "artifacts" / "disk-vanilla-2-0"
    assert np.array_equal(codebooks["vanilla"], np.load(seed0 / "codebook.npy"))
    assert np.array_equal(usage["vanilla"], np.load(seed0 / "code_counts.npy"))


def test_missing_codebooks_are_reported_not_faked(built):
    _, text, config = built
    assert "Left out: no saved trial artifacts" in text
    assert not (config.out_dir / "figures" / "disk_codebooks.png").exists()


def test_stale_trials_of_older_specs_are_dropped(workspace: Path, monkeypatch):
    table_path = workspace / "results" / "k_sweep" / "trials.csv"
    table = pd.read_csv(table_path)
    keep = set(table["trial"][table["codebook_size"] != 256])
    monkeypatch.setattr(report, "current_trial_ids", lambda path, name: keep if name == "k_sweep" else None)
    text, _ = _build(workspace, filter_to_spec=True, figures=False)
    section = text.split("(`k_sweep`)", 1)[1].split("## ", 1)[0]
    assert "9 trials of earlier specs of this sweep in the table are not shown" in section
    assert "| vanilla | 256 |" not in section and "| vanilla | 64 |" in section


def test_pandas3_string_columns_become_objects(workspace: Path):
    table = tables.read_table(workspace / "results" / "k_sweep" / "trials.csv")
    assert table["method"].dtype == object and table["status"].dtype == object
    summary = tables.summarize(table, "k_sweep")
    assert summary.factors == ["method", "codebook_size"]
    assert list(summary.rows["method"].unique()) == ["vanilla", "ema", "wasserstein"]


def test_categorical_factor_is_not_pooled(tmp_path: Path):
    rows = []
    for dataset in ("gaussian", "uniform"):
        rows += _rows("ng", ["vanilla", "wasserstein"], "dataset", [dataset],
                      value_fn=lambda m, v, rng: (0.5 + 0.4 * (m == "wasserstein") + rng.uniform(0, 0.01),
                                                  1.0 + (v == "uniform") + rng.normal(0, 0.01)))
    table = tables.as_object_strings(pd.DataFrame(rows))
    summary = tables.summarize(table, "ng")
    assert summary.factors == ["method", "dataset"] and figures.main_axis(summary, table) is None
    assert len(summary.rows) == 4  # method x dataset, never pooled over datasets
    gamma = tables.as_object_strings(pd.DataFrame(_rows("g", ["wasserstein"], "method_options.gamma", [0.0, 1.0],
                                                         value_fn=lambda m, v, rng: (0.5 + v / 4, 2.0 - v))))
    header, rule, first, *_ = tables.summary_table(tables.summarize(gamma, "g")).splitlines()
    assert header.startswith("| gamma | n | failed |") and first.startswith("| 0 | 3 | 0 |")
    path = figures.sweep_figure(table, summary, tmp_path / "ng.png", 0.95)
    assert path is not None and path.stat().st_size > 5000


def test_holm_adjusts_like_the_textbook_example():
    # Holm (1979): sorted p 0.01, 0.02, 0.03, 0.04 with m = 4 -> 0.04, 0.06, 0.06, 0.06 (monotone)
    assert report_stats.holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])


def test_a_best_picked_after_the_fact_is_resolved_only_after_holm():
    seeds = range(4)
    reference = report_stats.Estimate(1.0, 0.1, 4, {s: 1.0 + 0.01 * s for s in seeds})
    clear = report_stats.Estimate(0.8, 0.1, 4, {s: 0.8 + 0.011 * s for s in seeds})  # far below, every seed
    marginal = {s: 1.0 + 0.01 * s + d for s, d in zip(seeds, (-0.02, -0.001, -0.03, 0.004))}
    close = report_stats.Estimate(0.99, 0.1, 4, marginal)
    family = report_stats.compare_pairs({"clear": (clear, reference), "close": (close, reference)})
    assert family["clear"][0] == "lower" and family["close"][0] == "unresolved"
    assert family["clear"][1] <= 0.05 < family["close"][1]
    interval = report_stats.interval_verdict
    assert interval(91.0, 99.0, 90.0, "above") == "agrees" and interval(80.0, 89.0, 90.0, "above") == "differs"
    assert interval(85.0, 95.0, 90.0, "above") == "unresolved" and interval(0.0, 5.0, 10.0, "below") == "agrees"


def test_every_paper_claim_names_a_method_and_a_metric():
    from benchmark.report import papers

    papers.check_claims(papers.load_papers())


def test_a_claim_with_a_bad_metric_or_where_value_is_refused():
    from benchmark.report import papers

    claim = papers.Claim(sweep="atomic", method="vanilla", where={"mu": 4.0}, metric="utilisation")
    paper = papers.Paper("P", "arXiv:0", {}, (papers.ClaimGroup("g", "", ("paper",), (claim,)),))
    with pytest.raises(ValueError, match=r"P, 'g', claim 1: metric: unknown metric 'utilisation'"):
        papers.check_claims([paper])
    bad_where = papers.Claim(sweep="atomic", method="vanilla", where={"mu": [4.0]}, metric="utilization")
    with pytest.raises(ValueError, match=r"where\.mu: must be a number or a string"):
        papers.check_claims([papers.Paper("P", "arXiv:0", {}, (papers.ClaimGroup("g", "", ("paper",), (bad_where,)),))])


def test_a_claim_whose_row_is_missing_says_not_measured():
    from benchmark.report import papers

    measured = papers.Claim(sweep="s", method="vanilla", where={}, metric="utilization")
    missing = papers.Claim(sweep="s", method="ema", where={}, metric="utilization")
    elsewhere = papers.Claim(sweep="other", method="ema", where={}, metric="utilization")
    table = pd.DataFrame([{"sweep": "s", "trial": f"t{m}{s}", "status": "finished", "method": m, "seed": s,
                           "utilization": 0.5 + 0.1 * s} for m in ("vanilla", "wasserstein") for s in (0, 1)])
    summary = tables.summarize(table, "s")
    group = papers.ClaimGroup("g", "", ("paper",), (measured, missing, elsewhere))
    text = papers.render_group(papers.Paper("P", "arXiv:0", {}, (group,)), group, {"s": summary}, {"s": ""})
    assert "not measured (no such row in `s`)" in text and "not measured (no results in `other`)" in text
    assert "| vanilla |" in text


def test_rebuilding_the_report_changes_no_number(built, monkeypatch):
    """The same results give the same numbers, also after a display edit of the metric registry."""
    import dataclasses

    from benchmark import metric_registry

    workspace, text, _ = built
    metrics_json = (workspace / "reports" / "metrics.json").read_text()

    def numbers(markdown: str) -> list[str]:
        return re.findall(r"-?\d+\.\d+", markdown.split("## Metrics", 1)[0] + markdown.split("## Metrics", 1)[1]
                          .split("\n## ", 1)[1])  # the metric definitions section is text

    text, _ = _build(workspace, figures=False)  # figures add numbers of their own (captions): compare like with like
    again, _ = _build(workspace, figures=False)
    assert numbers(again) == numbers(text) and numbers(text)
    assert (workspace / "reports" / "metrics.json").read_text() == metrics_json
    relabelled = dataclasses.replace(metric_registry.BY_NAME["utilization"], label="utilisation in percent")
    monkeypatch.setitem(metric_registry.BY_NAME, "utilization", relabelled)
    edited, _ = _build(workspace, figures=False)
    assert "utilisation in percent" in edited
    assert numbers(edited) == numbers(text)
    assert (workspace / "reports" / "metrics.json").read_text() == metrics_json


def test_a_dot_figure_clips_intervals_to_the_metric_and_wraps_one_setting(tmp_path: Path, monkeypatch):
    # U of 100% and 60% over 2 seeds: the t interval reaches far past 100, the drawn bar must not
    rows = _rows("one", [f"m{i}" for i in range(3)], "mu", [4.0], seeds=(0, 1), value_fn=lambda m, v, rng: (0.8, 1.0))
    for row in rows:  # an image tokenizer's metrics: more panels than one row holds
        row.update(experiment="vqvae", dataset="digits", utilization=1.0 if row["seed"] == 0 else 0.6, psnr=20.0 + row["seed"], ssim=0.9, recon_mse=0.01)
    table = tables.as_object_strings(pd.DataFrame(rows))
    summary = tables.summarize(table, "one")
    drawn = {}
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    metrics = [m for m in summary.metrics if m.better is not None]
    assert len(metrics) > figures.DOT_PANELS_PER_ROW  # the case that wraps
    figures._dot_figure(table.copy(), summary, metrics, tmp_path / "one.png", 0.95, None)
    fig = drawn["fig"]
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(metrics)
    assert fig.axes[0].get_subplotspec().get_gridspec().get_geometry()[1] == figures.DOT_PANELS_PER_ROW
    u_panel = next(ax for ax in panels if ax.get_xlabel() == "U (%)")
    ends = [x for collection in u_panel.collections for segment in collection.get_segments() for x, _ in segment]
    assert ends and max(ends) == pytest.approx(100.0) and min(ends) >= 0.0
    import matplotlib.pyplot as pyplot

    pyplot.close(fig)


def test_critical_difference_figure_is_the_same_bytes_in_every_process(tmp_path):
    """The report reruns byte-identically: scikit-posthocs draws each crossbar through a set of
    method names, whose order follows the string hash of the process (PYTHONHASHSEED)."""
    import os
    import subprocess
    import sys

    script = (
        "import sys, numpy as np, pandas as pd\n"
        "from pathlib import Path\n"
        "from benchmark.report import figures\n"
        "names = ['vanilla', 'ema', 'simvq', 'wasserstein', 'online', 'cosine']\n"
        "ranks = pd.Series([3.1, 3.2, 3.3, 3.4, 1.0, 5.9], index=names)\n"
        "p = pd.DataFrame(np.ones((6, 6)), index=names, columns=names)\n"
        "p.loc['online', ['simvq', 'wasserstein', 'cosine']] = p.loc[['simvq', 'wasserstein', 'cosine'], 'online'] = 0.0\n"
        "p.loc['cosine', names[:4]] = p.loc[names[:4], 'cosine'] = 0.0\n"
        "figures.cd_figure(ranks, p, Path(sys.argv[1]), alpha=0.05)\n"
    )
    outputs = []
    for seed in ("1", "2", "3"):
        path = tmp_path / f"cd_{seed}.png"
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, cwd=paths.REPO_ROOT,
                       env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(paths.REPO_ROOT)})
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
