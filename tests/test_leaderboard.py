"""The leaderboard on small synthetic trial tables (the exported format, docs/contracts.md)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from benchmark.report import build as report
from benchmark.report import leaderboard as lb

SEEDS = (0, 1, 2)


def _row(sweep, method, seed, *, experiment="fit", u=1.0, e=2.0, ratio=None, seconds=1.0, bits=8.0, **extra):
    row = dict(sweep=sweep, trial=f"{sweep}-{method}-{seed}-{sorted(extra.items())}", run_id=f"r{seed}",
               status="finished", error="", git_commit="0123456789ab", git_dirty=False, experiment=experiment,
               dataset="gaussian", method=method, codebook_size=256, dim=8, steps=10, batch_size=32,
               eval_size=100, seed=seed, utilization=u, quantization_error=e,
               error_vs_kmeans=e / 2.0 if ratio is None else ratio, bits_per_token=bits, train_seconds=seconds)
    row.update(extra)
    return row


def _table(rows) -> pd.DataFrame:
    return report.as_object_strings(pd.DataFrame(rows))


def _atomic() -> pd.DataFrame:
    """wasserstein best and full at mu 4; vanilla lowest E but collapsed; ema close to wasserstein."""
    rng = np.random.default_rng(0)
    rows = []
    for mu in (0.0, 4.0):
        for seed in SEEDS:
            noise = rng.normal(0, 0.005, 4)
            rows += [
                _row("atomic", "wasserstein", seed, u=0.99, e=2.10 + noise[0], seconds=2.0,
                     **{"dataset_options.mean": mu}),
                _row("atomic", "ema", seed, u=0.98, e=2.11 + noise[1], seconds=1.0, **{"dataset_options.mean": mu}),
                _row("atomic", "simvq", seed, u=0.95, e=2.60 + noise[2], seconds=0.5,
                     **{"dataset_options.mean": mu}),
                _row("atomic", "vanilla", seed, u=0.95 if mu == 0 else 0.01, e=2.0 + noise[3],
                     **{"dataset_options.mean": mu}),
            ]
    return _table(rows)


def _field() -> pd.DataFrame:
    rows = []
    for seed in SEEDS:
        rows += [_row("field", "vanilla", seed, e=2.5 + seed * 0.01), _row("field", "ibq", seed, e=2.4),
                 _row("field", "fsq", seed, e=0.08),
                 _row("field", "cosine", seed, e=0.33), _row("field", "bsq", seed, e=0.35 + seed * 0.001),
                 _row("field", "residual", seed, e=1.1, ratio=math.nan, bits=16.0),
                 _row("field", "grouped", seed, e=0.85 + seed * 0.001, ratio=math.nan, bits=16.0)]
    return _table(rows)


def _vqvae() -> pd.DataFrame:
    rows = []
    for seed in SEEDS:
        for method, psnr in (("vanilla", 20.0), ("ema", 19.8), ("simvq", 22.8), ("wasserstein", 22.5)):
            rows.append(_row("vqvae", method, seed, experiment="vqvae", u=0.95, psnr=psnr + 0.1 * seed))
    return _table(rows)


def test_comparison_groups_keep_error_spaces_and_bits_apart():
    found = {s.group: s for s in lb.sweep_scenarios("field", _field())}
    # fsq: alone in its own bounded box; the 16-bit codes apart from the 8-bit ones
    assert set(found) == {"euclidean, 8 bits", "sphere, 8 bits", "euclidean, 16 bits"}
    assert set(found["sphere, 8 bits"].methods) == {"cosine", "bsq"}
    assert set(found["euclidean, 8 bits"].methods) == {"vanilla", "ibq"}
    assert found["euclidean, 16 bits"].metric == "quantization_error"  # no k-means reference at 16 bits
    assert found["euclidean, 8 bits"].metric == "error_vs_kmeans"


def test_utilization_constraint_ranks_before_the_metric():
    by_mu = {s.setting: s.ranks.set_index("method") for s in lb.sweep_scenarios("atomic", _atomic())}
    assert by_mu["mu 0"].loc["vanilla", "rank"] == 1  # lowest E, U >= 90%
    collapsed = by_mu["mu 4"]
    assert collapsed.loc["vanilla", "rank"] == 4 and not collapsed.loc["vanilla", "meets"]  # lowest E, U 1%
    assert collapsed.loc["wasserstein", "rank"] == 1
    for _, row in collapsed.iterrows():
        assert row["low"] <= row["rank"] <= row["high"]
    assert collapsed.loc["simvq", "low"] == collapsed.loc["simvq", "high"] == 3  # never near the others
    # the direction follows the registry: PSNR is maximised
    vq = lb.sweep_scenarios("vqvae", _vqvae())[0].ranks.set_index("method")["rank"]
    assert vq.idxmin() == "simvq" and vq.idxmax() == "ema"


def test_bootstrap_is_reproducible_and_paired():
    a = lb.sweep_scenarios("atomic", _atomic())
    b = lb.sweep_scenarios("atomic", _atomic())
    pd.testing.assert_frame_equal(a[1].ranks, b[1].ranks)


def test_constrained_ranks_ties_share_the_average_rank():
    ranks = lb.constrained_ranks(np.array([1.0, 1.0, 3.0, 0.5]), np.array([1.0, 1.0, 1.0, 0.1]), "min")
    assert ranks.tolist() == [1.5, 1.5, 3.0, 4.0]


def test_which_quantizer_when_keeps_the_unresolved_and_drops_the_resolved():
    mu4 = [s for s in lb.sweep_scenarios("atomic", _atomic()) if s.setting == "mu 4"][0]
    best, tied = lb.not_resolved_from_best(mu4)
    assert best == "wasserstein"
    assert "simvq" not in tied and "vanilla" not in tied  # resolved (E), other side of the constraint


def test_friedman_nemenyi_and_critical_difference_match_the_textbook():
    found = lb.scenarios({"atomic": _atomic(), "vqvae": _vqvae(), "atomic2": _atomic().assign(sweep="atomic2")})
    block = lb.complete_block(found)
    assert block is not None and len(block.methods) == 4 and len(block.scenarios) == 5
    matrix = block.ranks.to_numpy()
    assert block.friedman[1] == pytest.approx(stats.friedmanchisquare(*matrix.T).pvalue)
    # Demsar 2006, Table 5: q_0.05 = 2.569 for k = 4 classifiers
    assert block.cd == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 5)), rel=1e-3)
    assert block.nemenyi.shape == (4, 4)


def test_rliable_iqm_and_probability_of_improvement():
    found = lb.scenarios({"atomic": _atomic(), "atomic2": _atomic().assign(sweep="atomic2")})
    agg = lb.rliable_aggregates(lb.complete_block(found), bootstrap=200)
    iqm = agg.iqm.set_index("method")
    scores = np.concatenate([1.0 / s.values["simvq"].to_numpy() for s in found])
    assert iqm.loc["simvq", "iqm"] == pytest.approx(stats.trim_mean(scores, 0.25))
    assert agg.best == "vanilla"  # lowest E everywhere: rliable scores ignore the U constraint
    improvement = agg.improvement.set_index("method")
    assert improvement.loc["simvq", "p"] == pytest.approx(1.0)
    for _, row in agg.iqm.iterrows():
        assert row["low"] <= row["iqm"] <= row["high"]


def test_batched_probability_of_improvement_is_rliables():
    from rliable import metrics as rl

    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 4, (5, 3, 4)).astype(float), rng.integers(0, 4, (5, 3, 4)).astype(float)
    y[0, :, 1] = x[0, :, 1]  # an identical column: 0.5 by rliable's rule
    expected = [rl.probability_of_improvement(x[b], y[b]) for b in range(len(x))]
    assert lb._improvement_probability(x, y) == pytest.approx(expected)


def test_report_opens_with_the_leaderboard(tmp_path: Path):
    tables = {"atomic": _atomic(), "field": _field(), "vqvae": _vqvae()}
    figures = tmp_path / "figures"
    section = lb.leaderboard_section(tables, figures)
    assert "### Which quantizer when" in section and "Friedman" in section and "IQM" in section
    assert (figures / "leaderboard_cd.png").exists() and (figures / "leaderboard_profiles.png").exists()
    results = tmp_path / "results"
    for name, table in tables.items():
        (results / name).mkdir(parents=True)
        table.to_csv(results / name / "trials.csv", index=False)
    params = {"tracking": {"uri": "mlflow.db", "results_dir": "results"}, "base": {"steps": 10},
              "sweeps": {name: {"grid": {"seed": list(SEEDS)}} for name in tables}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    config = report.report_config(report.load_params(tmp_path / "params.yaml"), tmp_path / "params.yaml")
    config.filter_to_spec, config.figures = False, False
    text = report.build_report(config, params).read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Leaderboard" and "## Metrics" in headings[1:]


def _rung(name: str, order: Sequence[str], k: int) -> pd.DataFrame:
    """One rung: methods' E in the given order (best first), seeds with a little noise."""
    rng = np.random.default_rng(k)
    return _table([_row(name, m, seed, e=1.0 + i + rng.normal(0, 0.01), codebook_size=k, **{"dataset_options.mean": 4.0})
                   for i, m in enumerate(order) for seed in SEEDS])


def test_scale_ladder_kendall_tau_between_adjacent_rungs():
    from benchmark.report import scale

    methods = ["vanilla", "ema", "simvq", "wasserstein"]
    rungs = {"small": _rung("small", methods, 256), "large": _rung("large", methods, 1024),
             "reversed": _rung("reversed", methods[::-1], 4096)}
    steps = scale.ladder_steps(rungs, bootstrap=200)
    assert [(s.small, s.large) for s in steps] == [("small", "large"), ("large", "reversed")]
    assert steps[0].tau == pytest.approx(1.0) and steps[0].verdict == "alike"
    assert steps[1].tau == pytest.approx(-1.0) and steps[1].verdict == "not alike"
    assert steps[0].tau == pytest.approx(stats.kendalltau([1, 2, 3, 4], [1, 2, 3, 4]).statistic)


def test_scale_section_reads_the_profile_tables(tmp_path: Path):
    from benchmark.report import scale

    methods = ["vanilla", "ema", "simvq"]
    params = {"tracking": {"uri": "mlflow-scale.db", "results_dir": "scale"},
              "sweeps": {"a": {"grid": {"seed": [0]}}, "b": {"grid": {"seed": [0]}}, "c": {"grid": {"seed": [0]}}}}
    (tmp_path / "params-scale.yaml").write_text(yaml.safe_dump(params))
    for name, k in (("a", 256), ("b", 1024)):
        (tmp_path / "scale" / name).mkdir(parents=True)
        _rung(name, methods, k).to_csv(tmp_path / "scale" / name / "trials.csv", index=False)
    text = scale.scale_section(tmp_path / "params-scale.yaml")
    assert "| c | not run (no table) |" in text and "Small runs rank like larger ones here" in text


def test_batched_kendall_tau_b_is_scipys_with_ties():
    from benchmark.report import scale

    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 3, size=(50, 6)).astype(float), rng.integers(0, 4, size=(50, 6)).astype(float)
    ours = scale.kendall_tau_b(x, y)
    for row in range(50):
        expected = stats.kendalltau(x[row], y[row]).statistic
        assert (math.isnan(ours[row]) and math.isnan(expected)) or ours[row] == pytest.approx(expected)


def _published(order: Sequence[str], mu: float = 4.0, u: float = 0.99):
    """A paper file's cells at one mean: E in the given order (best first), every U the same."""
    from benchmark.report.reproduce import Paper

    results = {("gaussian", mu, m): {"quantization_error": 1.0 + i, "utilization": u} for i, m in enumerate(order)}
    return Paper(paper="p", reference="ref", title="t", source="s", sweep="reproduce",
                 tolerance={"quantization_error": 0.02, "utilization": 0.01}, results=results)


def test_paper_scale_tau_per_published_cell_only_over_shared_methods():
    from benchmark.report import scale

    methods = ["vanilla", "ema", "simvq", "wasserstein"]
    ours = _rung("rung", methods, 256)  # mu 4 only; sliced_wasserstein below is not published
    ours = _table([*ours.to_dict("records"), *[_row("rung", "sliced_wasserstein", seed, e=0.5, codebook_size=256,
                                                  **{"dataset_options.mean": 4.0}) for seed in SEEDS]])
    same = scale.paper_steps({"rung": ours}, _published(methods), bootstrap=200)
    assert [(s.small, s.setting, s.methods) for s in same] == [("rung", "gaussian, mu 4", tuple(methods))]
    assert same[0].tau == pytest.approx(1.0) and same[0].verdict == "alike"
    assert same[0].close_pairs == 0  # published E 1, 2, 3, 4: no pair within 0.02
    near = _published(methods)
    near.results["gaussian", 4.0, "ema"]["quantization_error"] = 1.01  # within 0.02 of vanilla's 1.0 ...
    assert scale.paper_steps({"rung": ours}, near, bootstrap=50)[0].close_pairs == 1
    near.results["gaussian", 4.0, "ema"]["utilization"] = 0.5  # ... unless the U floor orders them
    assert scale.paper_steps({"rung": ours}, near, bootstrap=50)[0].close_pairs == 0
    flipped = scale.paper_steps({"rung": ours}, _published(methods[::-1]), bootstrap=200)
    assert flipped[0].tau == pytest.approx(-1.0) and flipped[0].verdict == "not alike"
    # the U floor ranks first on both sides: the paper's collapsed best-E method goes last
    collapsed = scale.paper_steps({"rung": ours}, _published(["wasserstein", *methods[:3]], u=0.5), bootstrap=200)
    assert collapsed[0].tau == pytest.approx(stats.kendalltau([1, 2, 3, 4], [2, 3, 4, 1]).statistic)
    assert scale.paper_steps({"rung": ours}, _published(methods, mu=2.0), bootstrap=200) == []


def test_scale_section_compares_the_report_sweeps_with_the_paper_cells(tmp_path: Path):
    from benchmark.report import scale
    from benchmark.report.reproduce import load_paper

    paper = load_paper()
    published = sorted((m for d, mu, m in paper.results if (d, mu) == ("gaussian", 4.0)),
                       key=lambda m: (paper.results[("gaussian", 4.0, m)]["utilization"] < lb.UTILIZATION_FLOOR,
                                      paper.results[("gaussian", 4.0, m)]["quantization_error"]))
    params = {"tracking": {"uri": "mlflow-scale.db", "results_dir": "scale"}, "sweeps": {"a": {"grid": {"seed": [0]}}}}
    (tmp_path / "params-scale.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "scale" / "a").mkdir(parents=True)
    _rung("a", published, 256).to_csv(tmp_path / "scale" / "a" / "trials.csv", index=False)
    text = scale.scale_section(tmp_path / "params-scale.yaml", {"atomic": _rung("atomic", published[::-1], 64)},
                               bootstrap=200)
    assert "### Against the paper-scale cells" in text
    cells = [paper.results[("gaussian", 4.0, m)] for m in published]
    close = sum(abs(a["quantization_error"] - b["quantization_error"]) <= paper.tolerance["quantization_error"]
                and (a["utilization"] >= lb.UTILIZATION_FLOOR) == (b["utilization"] >= lb.UTILIZATION_FLOOR)
                for i, a in enumerate(cells) for b in cells[i + 1:])
    assert f"| a | paper scale | gaussian, mu 4 | 5 | {close} of 10 | 1.00 [1.00, 1.00] | alike |" in text
    assert f"| atomic | paper scale | gaussian, mu 4 | 5 | {close} of 10 | -1.00 [-1.00, -1.00] | not alike |" in text
    assert "Our runs do not rank like the paper-scale cells everywhere here: atomic -> paper scale" in text


def test_one_colour_and_marker_per_method_families_share_a_hue():
    import methods
    from benchmark.report import figures

    styles = figures.method_styles()
    assert set(styles) == set(methods.display_order())
    assert len({(colour, marker) for colour, marker in styles.values()}) == len(styles)  # each method its own
    assert figures.method_family("wasserstein") == figures.method_family("sliced_wasserstein")
    assert figures.method_family("fsq") == figures.method_family("lfq") != figures.method_family("vanilla")
    assert set(figures.FAMILY_COLOURS) == {figures.method_family(name) for name in styles}


def test_two_settings_or_many_methods_are_dots_not_lines():
    from benchmark.report import figures
    from benchmark.report.tables import summarize

    two = _atomic()
    assert figures.line_axis(summarize(two, "atomic"), two) is None  # mu 0 and 4: categories
    three = pd.concat([two, _atomic().assign(**{"dataset_options.mean": 8.0})], ignore_index=True)
    assert figures.line_axis(summarize(three, "atomic"), three) == "dataset_options.mean"


def test_scenarios_follow_the_settings_not_the_row_order_of_the_table():
    """Settings in ascending order of their factors (numbers, then names), whatever order the trials
    (their ids) come in: the report's scenario lists read mu 0, 4, then 10, and stay put when ids change."""
    rows = []
    for mu in (10.0, 0.0, 4.0):
        for seed in SEEDS:
            rows += [_row("atomic", method, seed, e=2.0 + 0.1 * index + 0.01 * seed, **{"dataset_options.mean": mu})
                     for index, method in enumerate(("vanilla", "ema"))]
    table = _table(rows)
    labels = [s.setting for s in lb.sweep_scenarios("atomic", table)]
    assert labels == ["mu 0", "mu 4", "mu 10"]
    shuffled = _table(table.sample(frac=1.0, random_state=3).to_dict("records"))
    assert [s.setting for s in lb.sweep_scenarios("atomic", shuffled)] == labels
