"""The reproduction report: the authors' numbers as data, paper vs ours per cell, "not run" gaps."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmark import paths
from benchmark.report import reproduce


def test_the_paper_file_holds_every_cell_of_the_profile():
    paper = reproduce.load_paper()
    assert paper.reference == "arXiv:2506.15078" and paper.sweep == "reproduce"
    assert len(paper.results) == 2 * 5 * 5
    # the numbers the paper quotes: Gaussian wasserstein mu 0 / 4 / 8
    for mu, error in ((0.0, 0.987), (4.0, 1.021), (8.0, 1.040)):
        assert paper.results[("gaussian", mu, "wasserstein")]["quantization_error"] == pytest.approx(error, abs=5e-4)
    assert paper.results[("gaussian", 2.0, "vanilla")]["utilization"] == pytest.approx(0.065, abs=5e-4)
    assert paper.tolerance == {"quantization_error": 0.02, "utilization": 0.01}


def _table(rows):
    return pd.DataFrame(rows, columns=["status", "dataset", "dataset_options.mean", "method",
                                       "quantization_error", "utilization"])


def test_render_compares_finished_cells_and_says_not_run_elsewhere():
    paper = reproduce.load_paper()
    table = _table([
        ("finished", "gaussian", 4.0, "wasserstein", 1.031, 0.995),   # within: dE 0.010, dU 0.35 points
        ("finished", "gaussian", 4.0, "vanilla", 5.40, 0.0007),       # outside: dE 0.106
        ("failed", "uniform", 0.0, "ema", float("nan"), float("nan")),
    ])
    text = reproduce.render(paper, table)
    rows = {tuple(cell.strip() for cell in line.split("|")[1:4]): line for line in text.splitlines()
            if line.startswith("| gaussian") or line.startswith("| uniform")}
    assert len(rows) == 50
    assert rows[("gaussian", "4", "wasserstein")].rstrip().endswith("| 0.010 | 99.85% | 99.50% | 0.35 | ok |  |  |")
    assert rows[("gaussian", "4", "vanilla")].rstrip().endswith("| no |  |  |")
    assert "failed" in rows[("uniform", "0", "ema")]
    assert "not run" in rows[("uniform", "8", "simvq")]
    assert "1 within the target, 1 outside (0 of them in our seed range, 0 seed-sensitive), 1 failed, " \
           "0 interrupted, 47 not run (of 50)" in text


def test_a_cell_whose_runs_were_stopped_says_interrupted_not_failed():
    paper = reproduce.load_paper()
    table = pd.DataFrame({"status": ["failed", "running"], "dataset": ["gaussian", "gaussian"],
                          "dataset_options.mean": [6.0, 8.0], "method": ["online", "online"],
                          "quantization_error": [float("nan")] * 2, "utilization": [float("nan")] * 2,
                          "error": ["Interrupted: the sweep stopped before this trial finished", float("nan")]})
    text = reproduce.render(paper, table)
    assert "| gaussian | 6 | online |  | 1.403 | interrupted |" in text and "| gaussian | 8 | online |  | 1.405 | interrupted |" in text
    assert "0 failed, 2 interrupted, 48 not run (of 50)" in text


def test_more_seeds_give_the_range_and_say_whether_the_authors_value_is_in_it():
    # authors: gaussian mu 4 vanilla E 5.294 U 0.067%; ema E 3.005 U 0.79%
    paper = reproduce.load_paper()
    table = _table([("finished", "gaussian", 4.0, "vanilla", 5.40, 0.00067),
                    ("finished", "gaussian", 4.0, "ema", 3.10, 0.0079)])
    seeds = _table([("finished", "gaussian", 4.0, "vanilla", 5.28, 0.00067),   # range 5.28-5.40: theirs inside
                    ("finished", "gaussian", 4.0, "vanilla", 5.35, 0.00073),
                    ("finished", "gaussian", 4.0, "ema", 3.11, 0.0079),        # range 3.10-3.11: theirs outside
                    ("failed", "gaussian", 4.0, "ema", float("nan"), float("nan"))])
    text = reproduce.render(paper, table, seeds=seeds)
    rows = {tuple(cell.strip() for cell in line.split("|")[1:4]): line for line in text.splitlines()
            if line.startswith("| gaussian")}
    assert rows[("gaussian", "4", "vanilla")].rstrip().endswith("| in seed range | 5.280-5.400 (3) | 0.07-0.07 (3) |")
    assert rows[("gaussian", "4", "ema")].rstrip().endswith("| no | 3.100-3.110 (2) | 0.79-0.79 (2) |")
    assert "0 within the target, 2 outside (1 of them in our seed range, 1 seed-sensitive)" in text


def test_malformed_paper_file_names_the_field(tmp_path: Path):
    bad = tmp_path / "paper.yaml"
    bad.write_text("paper: x\nreference: r\ntitle: t\nsource: s\nsweep: r\ntolerance: {quantization_error: 0.02, utilization: 0.01}\n"
                   "results: {gaussian: {vanilla: {0.0: {quantization_error: 1.0}}}}\n")
    with pytest.raises(ValueError, match=r"results.gaussian.vanilla.0.0: must give exactly"):
        reproduce.load_paper(bad)


def test_the_claims_loader_passes_over_the_file():
    from benchmark.report import papers

    loaded = {paper.reference: paper for paper in papers.load_papers() if paper.name.endswith("atomic experiment")}
    assert loaded["arXiv:2506.15078"].groups == () and loaded["arXiv:2506.15078"].thresholds == {}


def test_cli_writes_the_report_without_a_table(tmp_path: Path):
    from benchmark.report import build

    profile = paths.REPO_ROOT / "params-reproduce.yaml"
    assert build.main(["--reproduce", "--params", str(profile), "--results", str(tmp_path / "none"),
                       "--out", str(tmp_path)]) == 0
    text = (tmp_path / "reproduce.md").read_text()
    assert "0 within the target, 0 outside (0 of them in our seed range, 0 seed-sensitive), 0 failed, " \
           "0 interrupted, 50 not run (of 50)" in text


def test_findings_about_cells_outside_the_target_are_rendered():
    import dataclasses

    paper = dataclasses.replace(reproduce.load_paper(), findings=("vanilla at mu 4: seed spread explains dE.",))
    text = reproduce.render(paper, None)
    assert "## What we found" in text and "- vanilla at mu 4: seed spread" in text


def test_a_variant_sweep_gets_its_own_table_against_the_same_numbers():
    import dataclasses

    paper = dataclasses.replace(reproduce.load_paper(), variants={"script_weights": "the script's weights"})
    variant = _table([("finished", "gaussian", 0.0, "wasserstein", 1.027, 0.9957)])  # paper: 0.987, 99.79%
    text = reproduce.render(paper, None, variants={"script_weights": variant})
    section = text.split("## Variant `script_weights`: the script's weights")[1]
    assert "| gaussian | 0 | wasserstein |  | 0.987 | 1.027 | 0.040 | 99.79% | 99.57% | 0.22 | no |" in section
    # the variant's rows are not the main table's: the main cell is still "not run"
    assert "0 within the target, 0 outside" in text
    assert "## Variant `script_weights`" in reproduce.render(paper, None) and "Not run." in reproduce.render(paper, None)


def test_only_the_profiles_trials_count_one_row_each_finished_first():
    pool = pd.DataFrame({"trial": ["a", "a", "b", "stale"], "status": ["failed", "finished", "finished", "finished"],
                         "quantization_error": [float("nan"), 1.0, 2.0, 9.0]})
    rows = reproduce.sweep_rows(pool, {"a", "b"})
    assert rows["trial"].tolist() == ["a", "b"] and rows["quantization_error"].tolist() == [1.0, 2.0]
    assert reproduce.sweep_rows(pool, {"missing"}) is None and reproduce.sweep_rows(None, {"a"}) is None


def test_each_cell_says_whose_random_draws_its_runs_saw():
    paper = reproduce.load_paper()
    table = _table([
        ("finished", "gaussian", 4.0, "wasserstein", 1.021, 0.9985),   # replayed, within
        ("finished", "uniform", 2.0, "vanilla", 1.60, 0.0008),         # own draws, outside (dE 0.065)
        ("finished", "uniform", 4.0, "vanilla", 2.667, 0.00006),       # own draws, within
    ]).assign(random_stream=["single", "per_purpose", "per_purpose"])
    text = reproduce.render(paper, table)
    assert "| gaussian | 4 | wasserstein | theirs | 1.021 | 1.021 |" in text
    assert "| uniform | 2 | vanilla | ours | 1.665 | 1.600 |" in text
    assert "By draws: theirs: 1 of 1 within the target; ours: 1 of 2 within the target." in text
    assert "| uniform | 8 | vanilla |  | 2.667 | not run |" in text
