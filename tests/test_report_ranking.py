"""What the report ranks against what: comparable groups, resolved bests, fixed grids, wide intervals."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmark.report import stats as report_stats
from benchmark.report import tables


def _table(cells: dict[tuple[str, float], list[float]], *, experiment: str = "fit",
           bits: dict[str, float] | None = None) -> pd.DataFrame:
    """A trials table: (method, mu) -> E per seed; U follows E so both metrics rank the same way."""
    rows = []
    for (method, mu), errors in cells.items():
        for seed, error in enumerate(errors):
            rows.append(dict(trial=f"{method}-{mu}-{seed}", status="finished", error="", experiment=experiment,
                             method=method, seed=seed, **{"dataset_options.mean": mu},
                             quantization_error=error, utilization=1.0 / error,
                             bits_per_token=(bits or {}).get(method, 8.0)))
    return tables.as_object_strings(pd.DataFrame(rows))


def _marks(table: pd.DataFrame, column: str) -> dict[tuple[str, float], str]:
    summary = tables.summarize(table, "t")
    marks = tables.best_marks(summary, tables.metric(column))
    return {(row["method"], row.get("dataset_options.mean", 0.0)): marks.loc[i] for i, row in summary.rows.iterrows()}


def test_only_rows_of_the_same_bits_per_token_are_ranked_together() -> None:
    # a 16-bit residual code has the lowest E by far, yet the 8-bit methods are ranked among themselves
    table = _table({("vanilla", 0.0): [2.0, 2.01, 2.02], ("wasserstein", 0.0): [1.0, 1.01, 1.02],
                    ("residual", 0.0): [0.1, 0.11, 0.12]}, bits={"residual": 16.0})
    marks = _marks(table, "quantization_error")
    assert marks[("wasserstein", 0.0)] == tables.BEST and marks[("residual", 0.0)] == ""
    summary = tables.summarize(table, "t")
    groups = tables.comparable_groups(summary.rows, summary.factors, tables.metric("utilization"))
    assert groups.nunique() == 2  # even U: 8 and 16 bits are never one group


def test_error_is_ranked_within_one_error_space_and_a_bounded_box_is_each_methods_own() -> None:
    table = _table({("vanilla", 0.0): [2.0, 2.01, 2.02], ("fsq", 0.0): [0.05, 0.051, 0.052],
                    ("vqp_fsq", 0.0): [0.5, 0.51, 0.52], ("cosine", 0.0): [0.3, 0.31, 0.32],
                    ("bsq", 0.0): [0.4, 0.41, 0.42]})
    summary = tables.summarize(table, "t")
    groups = tables.comparable_groups(summary.rows, summary.factors, tables.metric("quantization_error"))
    by_method = dict(zip(summary.rows["method"], groups))
    assert by_method["cosine"] == by_method["bsq"]  # the same unit sphere
    assert len({by_method["vanilla"], by_method["fsq"], by_method["vqp_fsq"], by_method["cosine"]}) == 4
    u_groups = tables.comparable_groups(summary.rows, summary.factors, tables.metric("utilization"))
    assert u_groups.nunique() == 1  # U is comparable across spaces


def test_a_best_not_resolved_from_the_next_is_marked_as_a_tie_not_bold() -> None:
    table = _table({("vanilla", 0.0): [1.00, 1.30, 0.90], ("wasserstein", 0.0): [1.05, 1.20, 0.99],
                    ("ema", 0.0): [3.0, 3.01, 3.02],
                    ("vanilla", 4.0): [5.0, 5.01, 5.02], ("wasserstein", 4.0): [1.0, 1.01, 1.02],
                    ("ema", 4.0): [3.0, 3.01, 3.02]})
    marks = _marks(table, "quantization_error")
    assert (marks[("vanilla", 0.0)], marks[("wasserstein", 0.0)], marks[("ema", 0.0)]) == (
        tables.TIED, tables.TIED, "")
    assert (marks[("wasserstein", 4.0)], marks[("vanilla", 4.0)]) == (tables.BEST, "")
    text = tables.summary_table(tables.summarize(table, "t"))
    assert "≈ " in text and "**" in text


def test_a_method_with_nothing_to_train_is_marked_a_fixed_grid_where_the_features_are_fixed() -> None:
    import methods

    assert tables.fixed_grid("fsq", "fit") and tables.fixed_grid("lfq", "transplant")
    assert not tables.fixed_grid("fsq", "vqvae") and not tables.fixed_grid("vanilla", "fit")
    for name in methods.available():  # read from the capability flag, for every registered method
        assert tables.fixed_grid(name, "fit") == (not methods.get(name).learnable_codebook)
    text = tables.summary_table(tables.summarize(
        _table({("vanilla", 0.0): [2.0, 2.1, 2.2], ("fsq", 0.0): [0.05, 0.06, 0.07]}), "t"))
    assert f"| fsq ({tables.FIXED_GRID}) |" in text and "| vanilla |" in text


def test_compare_pairs_widens_unpaired_intervals_as_its_docstring_says() -> None:
    # no common seeds: 95% intervals are disjoint, the Bonferroni-widened ones (m = 3) are not
    reference = report_stats.Estimate(1.0, 0.10, 3)
    candidate = report_stats.Estimate(0.78, 0.10, 3)
    others = {"a": candidate, "b": report_stats.Estimate(1.0, 0.1, 3), "c": report_stats.Estimate(1.0, 0.1, 3)}
    assert report_stats.separated(candidate, reference)
    assert report_stats.compare_pairs({m: (e, reference) for m, e in others.items()})["a"][0] == "unresolved"
    assert report_stats.compare_pairs({"a": (candidate, reference)})["a"][0] == "lower"  # m = 1: 95%
    wide = report_stats.rescaled(candidate, 0.95, 1 - 0.05 / 3)
    from scipy import stats

    assert wide.half == pytest.approx(0.10 * stats.t.ppf(1 - 0.05 / 6, 2) / stats.t.ppf(0.975, 2))
    assert math.isnan(report_stats.rescaled(report_stats.Estimate(1.0, math.nan, 1), 0.95, 0.99).half)
    assert np.isfinite(wide.mean)


def test_a_tuned_row_is_compared_with_its_default_and_a_default_pick_is_a_row_of_both_protocols() -> None:
    from benchmark.report import tuning as report_tuning

    cells = {("vanilla", 0.0): [1.0, 1.01, 1.02], ("ema", 0.0): [2.0, 2.01, 2.02]}
    table = _table(cells)
    tuned_rows = _table({("vanilla", 0.0): [1.5, 1.52, 1.51]}).assign(
        trial=lambda t: "tuned-" + t["trial"].astype(str))
    table = tables.as_object_strings(pd.concat([table, tuned_rows], ignore_index=True))
    ids = {method: " ".join(table["trial"][(table["method"] == method) & ~table["trial"].str.startswith("tuned")])
           for method in ("vanilla", "ema")}
    tuning = pd.DataFrame([
        {"method": "vanilla", "metric": "quantization_error", "mode": "min", "best_is_default": False,
         "default_trials": ids["vanilla"], "tuned_trials": " ".join(tuned_rows["trial"])},
        {"method": "ema", "metric": "quantization_error", "mode": "min", "best_is_default": True,
         "default_trials": ids["ema"], "tuned_trials": ids["ema"]},
    ])
    with_protocol, _ = tables.with_protocol(table, tuning)
    counts = with_protocol.groupby(["method", tables.PROTOCOL]).size().to_dict()
    assert counts == {("ema", "default"): 3, ("ema", "tuned"): 3, ("vanilla", "default"): 3, ("vanilla", "tuned"): 3}
    verdicts = [report_tuning.tuned_vs_default(with_protocol, row, 0.95) for _, row in tuning.iterrows()]
    assert verdicts == [report_tuning.WORSE, report_tuning.SAME_POINT]
    summary = tables.summarize(with_protocol, "t")
    notes = report_tuning.worse_rows(summary, with_protocol, tuning, 0.95)
    noted = summary.rows.loc[list(notes)]
    assert list(zip(noted["method"], noted[tables.PROTOCOL])) == [("vanilla", "tuned")]
    assert f"| vanilla | tuned ({report_tuning.WORSE}) |" in tables.summary_table(summary, 0.95, notes)


def test_a_claim_outside_the_papers_setting_gets_no_verdict_and_tuned_rows_are_selectable() -> None:
    from benchmark.report import papers

    paper = papers.Paper("P", "arXiv:0", {"full_use": {"value": 90.0, "side": "above"}})
    rows = []
    for k, u in ((64, 0.3), (1024, 0.95)):
        for protocol, shift in (("default", 0.0), ("tuned", 0.04)):
            for seed in (0, 1, 2):
                rows.append(dict(trial=f"{k}-{protocol}-{seed}", status="finished", error="", method="simvq",
                                 seed=seed, codebook_size=k, dim=8, utilization=u + shift + 0.001 * seed,
                                 protocol=protocol))
    table = tables.as_object_strings(pd.DataFrame(rows))
    summaries = {"k": tables.summarize(table, "k")}
    claims = [papers.Claim("k", "simvq", {"codebook_size": size}, "utilization", setting=setting,
                           protocol=protocol, expect="full_use")
              for size, setting, protocol in ((64, {"codebook_size": [1024, 262144]}, "default"),
                                              (1024, {"codebook_size": [1024, 262144]}, "default"),
                                              (1024, {"codebook_size": [1024, 262144], "dim": 16}, "tuned"))]
    group = papers.ClaimGroup("g", "", ("paper",), tuple(claims))
    text = papers.render_group(paper, group, summaries, {}, {"k": table})
    lines = [line for line in text.splitlines() if line.startswith("| simvq")]
    assert lines[0].endswith(f"| {papers.DIFFERENT_SETTING}: K 64 (paper 1024-262144) |")
    assert "| ours |" in lines[1] and lines[1].endswith("| agrees |")
    assert "| ours, tuned |" in lines[2] and "99.1" in lines[2]  # the tuned row: 0.95 + 0.04 + 0.001
    assert lines[2].endswith(f"| {papers.DIFFERENT_SETTING}: d 8 (paper 16) |")  # d read from the table
    with pytest.raises(ValueError, match="setting.steps: unknown"):
        papers.Claim("k", "simvq", {}, "utilization", setting={"steps": 5})


def test_paired_p_value_takes_the_t_tests_limits_without_spread() -> None:
    def diff(values):
        return report_stats.Estimate(float(np.mean(values)), 0.0, len(values), dict(enumerate(values)))

    assert report_stats.paired_p_value(diff([0.1, 0.1, 0.1])) == 0.0  # the same gain on every seed
    assert report_stats.paired_p_value(diff([0.0, 0.0, 0.0])) == 1.0
    assert math.isnan(report_stats.paired_p_value(diff([0.1])))
    spread = [0.1, 0.3, 0.2]
    from scipy import stats

    assert report_stats.paired_p_value(diff(spread)) == pytest.approx(stats.ttest_1samp(spread, 0.0).pvalue)
