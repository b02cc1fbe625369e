"""The "Open questions" section (benchmark/report/questions/) on small synthetic trial tables.

Conclusions must follow the numbers: the same code must say "non-parametric better" on one table
and "Gaussian W better" on another. Nothing is trained here.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark.report import build as report
from benchmark.report import questions as rq
from benchmark.report import stats, tables

SEEDS = (0, 1, 2)


def _row(sweep, seed, **values):
    row = dict(sweep=sweep, trial=f"{sweep}-{len(values)}-{seed}-{sorted(values.items())}", run_id=f"r{seed}",
               status="finished", error="", git_commit="0123456789abcdef", git_dirty=False, experiment="fit",
               dataset="gaussian", method="vanilla", codebook_size=256, dim=4, steps=200, batch_size=1024,
               eval_size=16384, seed=seed, utilization=1.0, quantization_error=1.0, error_vs_kmeans=1.0,
               perplexity=200.0, dead_codes=0, gaussian_w2=0.1, kmeans_error=1.0, final_loss=1.0,
               train_seconds=0.5)
    row.update(values)
    return row


def _non_gaussian(errors, seeds=SEEDS, noise=0.002):
    """errors: {(dataset, method): E / k-means}; a shared per-seed offset (as the shared k-means
    reference gives) plus small independent noise."""
    rng = np.random.default_rng(0)
    offset = {s: rng.normal(0, 0.05) for s in seeds}
    rows = []
    for (dataset, method), value in errors.items():
        for seed in seeds:
            v = value + offset[seed] + rng.normal(0, noise)
            rows.append(_row("non_gaussian", seed, dataset=dataset, method=method, error_vs_kmeans=v,
                             quantization_error=v, utilization=1.0))
    return pd.DataFrame(rows)


def _errors(w_mixture, sw_mixture):
    return {
        ("gaussian", "vanilla"): 1.10, ("gaussian", "wasserstein"): 1.02, ("gaussian", "sliced_wasserstein"): 1.05,
        ("gaussian", "mmd"): 1.06,
        ("gaussian_mixture", "vanilla"): 1.20, ("gaussian_mixture", "wasserstein"): w_mixture,
        ("gaussian_mixture", "sliced_wasserstein"): sw_mixture, ("gaussian_mixture", "mmd"): 1.04,
    }


# --------------------------------------------------------------------------------------------
# Intervals
# --------------------------------------------------------------------------------------------
def test_estimate_matches_report_t_interval_and_skips_failed():
    table = pd.DataFrame([_row("s", s, error_vs_kmeans=v) for s, v in zip(SEEDS, (1.0, 1.1, 1.3))]
                         + [_row("s", 9, status="failed", error_vs_kmeans=np.nan)])
    est = stats.estimate(table, "error_vs_kmeans")
    mean, half, n = stats.t_interval([1.0, 1.1, 1.3])
    assert (est.mean, est.half, est.n) == pytest.approx((mean, half, n))
    assert est.per_seed == pytest.approx({0: 1.0, 1: 1.1, 2: 1.3})


def test_separated_and_paired_difference():
    a = stats.Estimate(1.0, 0.1, 3, {0: 0.9, 1: 1.0, 2: 1.1})
    b = stats.Estimate(1.05, 0.1, 3, {0: 0.95, 1: 1.05, 2: 1.15})  # overlaps a, but always 0.05 above it
    c = stats.Estimate(1.5, 0.1, 3, {0: 1.4, 1: 1.5, 2: 1.6})
    assert not stats.separated(a, b) and stats.separated(a, c)
    diff = stats.paired_difference(a, b)
    assert diff.mean == pytest.approx(-0.05) and diff.half == pytest.approx(0.0, abs=1e-9)
    assert stats.compare_lower(a, b) == "lower" and stats.compare_lower(b, a) == "higher"
    assert stats.compare_lower(c, a) == "higher"
    noisy = stats.Estimate(1.0, 0.3, 3, {0: 1.2, 1: 0.8, 2: 1.0})
    assert stats.compare_lower(noisy, b) == "unresolved"
    one = stats.Estimate(1.0, math.nan, 1, {0: 1.0})
    assert stats.compare_lower(one, c) == "unresolved"  # n = 1: no interval, nothing is resolved
    assert stats.relative_gap(c, a) == pytest.approx(50.0)


# --------------------------------------------------------------------------------------------
# Question 1
# --------------------------------------------------------------------------------------------
def test_non_gaussian_answer_follows_the_numbers():
    table = _non_gaussian(_errors(w_mixture=1.15, sw_mixture=1.03))
    findings = {f.dataset: f for f in rq.non_gaussian_findings(table)}
    assert findings["gaussian_mixture"].best == "sliced_wasserstein"
    assert findings["gaussian_mixture"].np_vs_w == "lower"
    assert findings["gaussian_mixture"].mmd_vs_w == "lower"
    assert findings["gaussian"].np_vs_w == "higher"  # control: W (1.02) beats SW (1.05)
    answer = rq.non_gaussian_answer(list(findings.values()))
    assert "on every non-Gaussian feature distribution measured (`gaussian_mixture`)" in answer
    assert "So yes" in answer

    flipped = _non_gaussian(_errors(w_mixture=0.98, sw_mixture=1.03))
    findings = rq.non_gaussian_findings(flipped)
    answer = rq.non_gaussian_answer(findings)
    assert "the Gaussian W loss is better on `gaussian_mixture`" in answer and "So yes" not in answer

    tied = _non_gaussian(_errors(w_mixture=1.03, sw_mixture=1.03), noise=0.05)
    answer = rq.non_gaussian_answer(rq.non_gaussian_findings(tied))
    assert "no difference is resolved on `gaussian_mixture`" in answer


def test_non_gaussian_without_gaussian_w_says_it_cannot_tell():
    table = _non_gaussian({("uniform", "mmd"): 1.1, ("uniform", "vanilla"): 1.3})
    assert "cannot tell" in rq.non_gaussian_answer(rq.non_gaussian_findings(table))


# --------------------------------------------------------------------------------------------
# Question 2
# --------------------------------------------------------------------------------------------
def _low_d(values):
    """values: {(dim, target): E / k-means} -> (low_d, low_d_paper) tables as the sweeps export them."""
    main, paper = [], []
    for (dim, target), value in values.items():
        for seed in SEEDS:
            v = value + 0.01 * seed
            if target == "plain":
                main.append(_row("low_d", seed, method="wasserstein", dim=dim, error_vs_kmeans=v,
                                 **{"method_options.gamma": 10.0}))
            elif target == "gersho":
                main.append(_row("low_d", seed, method="wasserstein_density", dim=dim, error_vs_kmeans=v,
                                 **{"method_options.gamma": 10.0, "method_options.exponent": "gersho"}))
            else:
                paper.append(_row("low_d_paper", seed, method="wasserstein_density", dim=dim, error_vs_kmeans=v,
                                  **{"method_options.gamma": 10.0, "method_options.exponent": "paper"}))
    return {"low_d": pd.DataFrame(main), "low_d_paper": pd.DataFrame(paper)}


def test_density_target_and_scale():
    assert rq.density_target({"method": "wasserstein"}) == "plain"
    assert rq.density_target({"method": "wasserstein_density", "method_options.exponent": np.nan}) == "gersho"
    assert rq.density_target({"method": "wasserstein_density", "method_options.exponent": "paper"}) == "paper"
    assert rq.density_target({"method": "wasserstein_density", "method_options.covariance_scale": 1.2}) == "c=1.2"
    assert rq.target_scale("gersho", 2) == 2.0 and rq.target_scale("paper", 2) == 0.5
    assert rq.target_scale("plain", 3) == 1.0 and rq.target_scale("c=1.2", 3) == 1.2


def test_low_d_merges_both_sweeps_and_answers():
    tables = _low_d({(2, "plain"): 1.20, (2, "gersho"): 0.97, (2, "paper"): 2.1,
                     (4, "plain"): 1.00, (4, "gersho"): 1.04, (4, "paper"): 1.15})
    merged = rq.low_d_table(tables)
    assert set(merged["method"]) == {"wasserstein", "wasserstein_density (gersho)", "wasserstein_density (paper)"}
    assert "method_options.exponent" not in merged.columns
    findings = {f.dim: f for f in rq.low_d_findings(merged)}
    assert findings[2].best == "gersho" and findings[4].best == "plain"
    assert findings[2].vs_plain == {"gersho": "lower", "paper": "higher"}
    assert findings[4].vs_plain == {"gersho": "higher", "paper": "higher"}
    answer = rq.low_d_answer(list(findings.values()))
    assert "Gersho f^(d/(d+2)) lowers E / k-means vs plain matching at d = 2, raises it at d = 4" in answer
    assert "Theorem 2's exponent, as stated, makes the codebook worse than plain matching at every d" in answer


def test_low_d_without_paper_sweep():
    tables = _low_d({(2, "plain"): 1.2, (2, "gersho"): 1.0})
    tables.pop("low_d_paper")
    answer = rq.low_d_answer(rq.low_d_findings(rq.low_d_table(tables)))
    assert "Theorem 2" not in answer and "lowers E / k-means" in answer


# --------------------------------------------------------------------------------------------
# Question 2 as a map: best c per (d, K), its bracket, the shrinkage prediction
# --------------------------------------------------------------------------------------------
GRID_C = (0.6, 0.8, 1.0, 1.25, 1.5, 2.0)


def _density_map(optimum, kmeans_error, grid=GRID_C, curvature=0.5, seeds=SEEDS, noise=0.001, **extra):
    """optimum: {(dim, K): c*}; E / k-means = 1 + curvature * log(c / c*)^2 plus a shared per-seed offset
    (the shared k-means reference) and small noise; kmeans_error: {(dim, K): E_km per seed}."""
    rng = np.random.default_rng(1)
    rows = []
    for (dim, size), best in optimum.items():
        offset = {s: rng.normal(0, 0.03) for s in seeds}
        for c in grid:
            for seed in seeds:
                v = 1.0 + curvature * math.log(c / best) ** 2 + offset[seed] + rng.normal(0, noise)
                rows.append(_row("density_map", seed, method="wasserstein_density", dim=dim, codebook_size=size,
                                 error_vs_kmeans=v, kmeans_error=kmeans_error[dim, size][seed],
                                 **{"method_options.covariance_scale": c, "method_options.gamma": 10.0}, **extra))
    return pd.DataFrame(rows)


def test_shrinkage_prediction_is_one_minus_error_per_coordinate():
    assert rq.shrinkage_scale(2.4, 8, 1.0) == pytest.approx(0.7)
    assert rq.shrinkage_scale(2.4, 8, 4.0) == pytest.approx(0.925)
    assert rq.feature_variance({"dataset": "gaussian"}) == 1.0
    assert rq.feature_variance({"dataset": "gaussian", "dataset_options.scale": 2.0}) == 4.0
    assert math.isnan(rq.feature_variance({"dataset": "uniform"}))


def test_trial_scale_reads_override_exponent_and_plain_matching():
    assert rq.trial_scale({"method": "wasserstein", "dim": 4}) == 1.0
    assert rq.trial_scale({"method": "wasserstein_density", "dim": 4, "method_options.covariance_scale": 0.7}) == 0.7
    assert rq.trial_scale({"method": "wasserstein_density", "dim": 4,
                           "method_options.exponent": "paper"}) == pytest.approx(4 / 6)
    assert rq.trial_scale({"method": "wasserstein_density", "dim": 4}) == pytest.approx(6 / 4)  # gersho default
    assert math.isnan(rq.trial_scale({"method": "vanilla", "dim": 4}))


def test_best_scale_bracket_and_references():
    kmeans = {(8, 256): (2.4, 2.6, 2.5), (2, 256): (0.02, 0.02, 0.02)}
    table = _density_map({(8, 256): 0.65, (2, 256): 1.9}, kmeans)
    findings = {f.dim: f for f in rq.best_scale_findings(table)}
    low = findings[8]
    assert low.best == 0.6 and low.edge  # the grid point nearest the true optimum 0.65
    assert low.bracket[1] <= 1.0 and low.bracket[0] < 0.65 < low.bracket[1]
    assert low.shrinkage.mean == pytest.approx(1 - 2.5 / 8) and low.shrinkage.n == 3  # one value per seed
    assert low.references["paper"] == pytest.approx(0.8) and low.references["gersho"] == pytest.approx(1.25)
    assert "shrinkage" in low.inside and "gersho" not in low.inside
    assert low.closest == "shrinkage" and low.plain == "higher" and low.codes_per_dim == pytest.approx(2.0)
    high = findings[2]
    assert high.best == 2.0 and high.edge and high.bracket == (1.5, math.inf)
    assert high.closest == "gersho" and high.inside == ["gersho"]


def test_best_scale_keeps_unresolved_values_and_flat_curves_span_the_grid():
    # a flat curve: nothing is resolved from the best, the bracket is the whole line
    table = _density_map({(4, 256): 1.0}, {(4, 256): (0.4, 0.4, 0.4)}, curvature=0.0, noise=0.01)
    (f,) = rq.best_scale_findings(table)
    assert (f.low, f.high) == (0.6, 2.0) and f.bracket == (-math.inf, math.inf)
    assert set(f.inside) == {"paper", "gersho", "shrinkage"}
    # one seed: no interval, nothing resolved either
    one = _density_map({(4, 256): 1.0}, {(4, 256): (0.4, 0.4, 0.4)}, seeds=(0,))
    (f,) = rq.best_scale_findings(one)
    assert f.best == 1.0 and f.bracket == (-math.inf, math.inf)


def test_density_map_answer_follows_the_numbers():
    kmeans = {(8, 256): (2.6, 2.6, 2.6), (4, 256): (0.4, 0.4, 0.4), (2, 256): (0.016, 0.016, 0.016)}
    findings = rq.best_scale_findings(_density_map({(8, 256): 0.675, (4, 256): 1.0, (2, 256): 2.0}, kmeans))
    answer = rq.density_map_answer(findings)
    assert "narrower than the features (its bracket lies below c = 1) at d = 8, K = 256" in answer
    assert "wider (bracket above c = 1) at d = 2, K = 256" in answer
    assert "the bracket contains c = 1 (plain matching) at d = 4, K = 256" in answer
    assert "Best c by resolution (codes per dimension K^(1/d)): 2.0 -> 0.6, 4.0 -> 1, 16.0 -> 2." in answer
    assert "grows with the number of codes per dimension" in answer and "Spearman 1.00" in answer
    assert "centroid shrinkage 1 - E_km/(d var) accounts for it" in answer
    assert "d/(d+2) is outside the bracket of the optimum in every cell" in answer
    # the same code on a map where one scale wins everywhere says so
    same = rq.density_map_answer(rq.best_scale_findings(_density_map({(8, 256): 1.0, (2, 256): 1.0}, kmeans)))
    assert "one target scale, c = 1, is best in every cell measured" in same
    assert "narrower" not in same and "grows with" not in same
    assert rq.density_map_answer([]).startswith("**Answer:** cannot tell")


def test_density_map_table_lines_and_figure(tmp_path):
    kmeans = {(d, k): (0.5, 0.5, 0.5) for d in (4, 8) for k in (256, 1024)}
    table = _density_map({(4, 256): 1.0, (8, 256): 0.8, (4, 1024): 1.25, (8, 1024): 0.8}, kmeans)
    lines = rq.density_map_lines(table, figures=tmp_path)
    text = "\n".join(lines)
    assert (tmp_path / "open_questions_density_map.png").stat().st_size > 1000
    assert "(figures/open_questions_density_map.png)" in text
    assert "| K | d | K^(1/d) | best c |" in text and text.count("\n| 1024 | ") == 2
    assert "as Wasserstein VQ states it (Gersho 1979" in text
    assert rq.density_map_lines(None) == [rq._missing(rq.DEFAULT_SWEEPS.density_map)]


# --------------------------------------------------------------------------------------------
# Dead codes, question 3, the whole section
# --------------------------------------------------------------------------------------------
def _dead_codes():
    rows = []
    for mu in (0.0, 8.0):
        for method, (u, e) in {"vanilla": (1.0, 1.05) if mu == 0 else (0.004, 3.0),
                               "kmeans_ema": (1.0, 1.02), "wasserstein": (0.99, 1.07)}.items():
            for seed in SEEDS:
                rows.append(_row("dead_codes", seed, method=method, dim=8, utilization=u,
                                 error_vs_kmeans=e + 0.001 * seed, **{"dataset_options.mean": mu}))
    return pd.DataFrame(rows)


def test_dead_codes_findings():
    findings = rq.dead_code_findings(_dead_codes())
    assert [f.mu for f in findings] == [0.0, 8.0]
    assert findings[1].collapsed == ["vanilla"] and findings[1].best == "kmeans_ema"
    summary = rq.dead_code_answer(findings)
    assert "full codebook use at every mu measured: `kmeans_ema` and `wasserstein`" in summary
    assert ("collapsed at some mu: `vanilla`; partly used (between 10% and 90%) at some mu, never collapsed: "
            "none") in summary


def test_section_with_no_tables_says_what_is_missing():
    text = rq.open_questions_section({})
    assert text.startswith("## Open questions")
    assert "no results table for `non_gaussian`" in text
    assert "no results table for `low_d`, `low_d_paper`" in text
    assert "no results table for `density_map`" in text
    assert "no results table for `dead_codes`" in text
    assert "not measured yet: no `vqvae` or `transplant` table has prior results" in text


def _prior_rows(sweep, experiment, values):
    """values: method -> (U, perplexity, PSNR, bits/token, Frechet), the same for every seed."""
    return pd.DataFrame([_row(sweep, s, experiment=experiment, dataset="digits", method=m, utilization=u,
                              perplexity=p, psnr=psnr, prior_bits_per_token=bits, prior_bits_per_image=16 * bits,
                              frechet_classifier=fd, knn_precision=0.5, knn_recall=0.5)
                         for s in SEEDS for m, (u, p, psnr, bits, fd) in values.items()])


PRIOR_VALUES = {"vanilla": (0.10, 16.0, 20.0, 2.0, 90.0), "ema": (0.50, 60.0, 22.0, 4.0, 50.0),
                "simvq": (0.80, 100.0, 23.0, 5.0, 40.0), "wasserstein": (0.95, 128.0, 21.0, 6.0, 30.0)}


def test_spearman_is_exact_for_few_methods():
    rho, p, n = rq.spearman([1, 2, 3, 4], [10, 20, 30, 40])
    assert (rho, n) == (1.0, 4) and p == pytest.approx(2 / 24)  # only the two extreme pairings
    rho, p, n = rq.spearman([1, 2, float("nan")], [3, 2, 1])
    assert n == 2 and math.isnan(rho) and math.isnan(p)


def test_prior_findings_correlate_across_methods():
    tables = {"vqvae": _prior_rows("vqvae", "vqvae", PRIOR_VALUES), "dead_codes": _dead_codes()}
    [finding] = rq.prior_findings(tables)
    assert finding.sweep == "vqvae" and finding.methods == sorted(PRIOR_VALUES, key=rq.sort_key)
    rho, p, n = finding.correlations[("prior_bits_per_token", "utilization")]
    assert (rho, n) == (1.0, 4) and p == pytest.approx(2 / 24)
    assert finding.correlations[("frechet_classifier", "utilization")][0] == -1.0
    assert finding.correlations[("prior_bits_per_token", "psnr")][0] == pytest.approx(0.4)
    answer = rq.prior_answer([finding])
    assert "no across-method correlation reaches p < 0.05" in answer and "2/4! = 0.083" in answer


def test_section_tables_and_prior():
    tables = {"non_gaussian": _non_gaussian(_errors(1.15, 1.03)), "dead_codes": _dead_codes(),
              "vqvae": _prior_rows("vqvae", "vqvae", PRIOR_VALUES),
              **_low_d({(2, "plain"): 1.2, (2, "gersho"): 1.0, (2, "paper"): 2.0,
                           (3, "plain"): 1.1, (3, "gersho"): 1.05}),
              "density_map": _density_map({(2, 256): 2.0}, {(2, 256): (0.016, 0.016, 0.016)})}
    text = rq.open_questions_section(tables)
    assert "| 256 | 2 | 16.00 | 2 (grid edge) |" in text
    assert "| dataset | method | n | failed | U (%) |" in text  # dataset first
    assert "| d | method | n | failed |" in text
    assert "| mu | method | n | failed |" in text
    assert "| wasserstein | 95.0 ± 0.0 | 128.0 ± 0.0 | 21.00 ± 0.00 | 6.000 ± 0.000 |" in text
    # four correlations, one Holm family: 0.083 x 4
    assert ("NLL bits/token vs U: Spearman rho = +1.00, exact permutation p = 0.083, Holm-corrected p = 0.333 "
            "(n = 4 methods)") in text
    assert "Not measured yet" not in text


def test_question_one_is_one_holm_family_over_every_distribution():
    """3 non-parametric losses x 2 distributions = 6 tests, corrected together, not 3 per distribution."""
    findings = rq.non_gaussian_findings(_non_gaussian(_errors(1.15, 1.03)))
    assert {f.family_size for f in findings} == {4}  # sliced_wasserstein and mmd on two distributions
    pairs = {(d, m): (stats.estimate(t, "error_vs_kmeans"), stats.estimate(w, "error_vs_kmeans"))
             for d in ("gaussian", "gaussian_mixture") for m in ("sliced_wasserstein", "mmd")
             for t in [_non_gaussian(_errors(1.15, 1.03)).query("dataset == @d and method == @m")]
             for w in [_non_gaussian(_errors(1.15, 1.03)).query("dataset == @d and method == 'wasserstein'")]}
    family = stats.compare_pairs(pairs)
    mixture = next(f for f in findings if f.dataset == "gaussian_mixture")
    assert mixture.np_vs_w_p == pytest.approx(family["gaussian_mixture", mixture.best_np][1])
    raw = stats.paired_p_value(stats.paired_difference(*pairs["gaussian_mixture", mixture.best_np]))
    assert mixture.np_vs_w_p >= raw  # corrected, never smaller


def test_tuned_and_default_rows_are_never_pooled():
    default = _prior_rows("vqvae", "vqvae", PRIOR_VALUES).assign(protocol="default")
    tuned = _prior_rows("vqvae", "vqvae", {m: (0.99, 200.0, 25.0, 7.0, 20.0) for m in PRIOR_VALUES})
    findings = rq.prior_findings({"vqvae": pd.concat([default, tuned.assign(protocol="tuned")], ignore_index=True)})
    assert [f.protocol for f in findings] == ["default", "tuned"]
    assert all(f.cells["utilization"][("ema",)].n == len(SEEDS) for f in findings)  # 3 seeds, not 6
    assert findings[0].cells["utilization"][("ema",)].mean == pytest.approx(50.0)


def test_compare_pairs_without_pairs_widens_intervals_to_bonferroni():
    a = stats.Estimate(1.0, 0.1, 3)
    b = stats.Estimate(1.25, 0.1, 3)  # disjoint at 95%, not at 1 - 0.05 / 2 per test
    assert stats.compare_pairs({"x": (a, b)})["x"][0] == "lower"
    assert stats.compare_pairs({"x": (a, b), "y": (b, a)})["x"][0] == "unresolved"


def test_build_report_has_the_section(tmp_path):
    results = tmp_path / "results" / "non_gaussian"
    results.mkdir(parents=True)
    _non_gaussian(_errors(1.15, 1.03)).to_csv(results / "trials.csv", index=False)
    params = {"tracking": {"uri": "mlflow.db", "results_dir": "results"},
              "sweeps": {"non_gaussian": {"grid": {"method": ["vanilla"]}}}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    config = report.report_config(params, path)
    config.figures = False
    config.filter_to_spec = False
    text = report.build_report(config, params).read_text()
    assert "## Open questions" in text and "So yes" in text


def test_section_figures(tmp_path):
    tables = {"non_gaussian": _non_gaussian(_errors(1.15, 1.03)),
              **_low_d({(2, "plain"): 1.2, (2, "gersho"): 1.0, (3, "plain"): 1.1, (3, "gersho"): 1.05})}
    text = rq.open_questions_section(tables, figures=tmp_path)
    for name in ("open_questions_non_gaussian.png", "open_questions_low_d.png"):
        assert (tmp_path / name).stat().st_size > 1000
        assert f"(figures/{name})" in text
    assert "![" not in rq.open_questions_section(tables)  # no folder: tables only


def test_question_one_picks_its_candidates_by_capability_flag():
    import methods

    flagged = {m for m in methods.available() if methods.get(m).nonparametric_matching}
    assert flagged == {"sliced_wasserstein", "exact_ot", "mmd"}
    assert all(methods.get(m).distribution_matching for m in flagged)
    assert rq.nonparametric("mmd") and not rq.nonparametric("wasserstein") and not rq.nonparametric("no_such")


def test_a_question_sweep_with_no_finished_trial_has_no_figure(tmp_path):
    """A sweep of the current spec not run yet (every row 'not run'): its question says so in words,
    and draws no empty figure."""
    table = _non_gaussian(_errors(1.15, 1.03)).assign(status="not run", error_vs_kmeans=float("nan"))
    lines = rq._non_gaussian_lines(table, 0.95, tmp_path)
    assert not any(line.startswith("![") for line in lines) and not list(tmp_path.iterdir())
    assert "cannot tell" in lines[-1]
