"""Ablation report: exported sweep tables -> ``reports/ablation.md`` + ``reports/figures/*.png``.

``python -m benchmark report [--params params.yaml]`` is the last stage of ``dvc repro``. It reads
only the tidy tables ``<results_dir>/<sweep>/trials.csv`` that ``benchmark.pipeline.sweep`` exports from
the MLflow store (one row per trial, ``benchmark.pipeline.tracking.export_table``) and never trains anything. With
``--export`` it first rebuilds those tables from the MLflow store itself
(``benchmark.pipeline.tracking.export_table``), so the report can be regenerated from the store alone.

Per sweep (in the order of ``sweeps:`` in params.yaml) the report holds: a table of
mean +/- 95% t-interval over seeds for every factor combination, best per column in bold, the
count and list of failed trials, the exact sweep spec and the code version (git commits of its
trials); a figure of the metrics against the sweep's main numeric factor, one line per method.
Then the paper-vs-ours tables for the papers' claims (benchmark/report/papers/*.yaml) that the CPU defaults can
check, and ``reports/metrics.json`` (headline means for ``dvc metrics show``).

Which columns are factors is read from the table: ``method`` when it takes several values,
plus every param that takes several values within one method, ``seed`` excluded (seeds are the
replicates). Bold marks a resolved best among comparable rows (:mod:`benchmark.report.tables`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from benchmark import paths
from benchmark.experiments.config import ConfigError
from benchmark.metric_registry import HEADLINE_METRICS, METRICS
from benchmark.pipeline.spec import check_sweep_name, load_params, load_sweep, parse_questions
from benchmark.report import papers as paper_claims
from benchmark.report.figures import codebook_figure, figure_caption, sweep_figure, usage_figure
from benchmark.report.leaderboard import leaderboard_section
from benchmark.report.questions import open_questions_section
from benchmark.report.scale import scale_section
from benchmark.report.tuning import load_tuning, tuning_block, worse_rows
from benchmark.report.tables import (
    PROTOCOL, with_protocol, FACTOR_LABELS, NOT_RUN_ERROR, STATUS_INTERRUPTED, STATUS_NOT_RUN, Summary, as_object_strings, failed_list,
    fmt_value, read_table, sort_key, summarize, summary_table,
)


def _setting_text(table: pd.DataFrame) -> str:
    parts = []
    for column, label in (("dataset", "data"), ("dataset_options.mean", "mu"), ("codebook_size", "K"),
                          ("dim", "d"), ("steps", "steps"),
                          ("batch_size", "batch"), ("eval_size", "eval"), ("seed", "seeds")):
        if column == "eval_size" and "experiment" in table.columns and (table["experiment"] != "fit").all():
            continue  # only fit draws eval_size features; the image experiments evaluate the whole test split
        if column in table.columns:
            values = sorted({v for v in table[column].dropna()}, key=sort_key)
            if column == "seed":
                parts.append(f"{len(values)} seed" + ("s" if len(values) != 1 else ""))
            else:
                parts.append(f"{label} " + "/".join(fmt_value(v) for v in values))
    return ", ".join(parts)


LEADERBOARD_AFTER = 4  # the leaderboard follows the title and the paragraph saying where the numbers come from
CODEBOOK_SWEEP = "disk"  # its saved codebooks are drawn over its prepared data sample


@dataclass
class ReportConfig:
    params_path: Path
    results_dir: Path
    out_dir: Path
    prepared_dir: Path
    confidence: float = 0.95
    titles: Mapping[str, str] = dataclasses.field(default_factory=dict)  # sweep -> section title (params)
    codebook_sweep: str | None = CODEBOOK_SWEEP
    filter_to_spec: bool = True  # drop table rows whose trial is not in the current sweep spec
    figures: bool = True  # False: tables only (quick look; the pipeline always draws them)


def report_config(params: Mapping[str, Any], params_path: Path, out_dir: Path | None = None,
                  results_dir: Path | None = None) -> ReportConfig:
    root = params_path.resolve().parent
    tracking = params.get("tracking") or {}
    return ReportConfig(
        params_path=params_path,
        results_dir=Path(results_dir or root / tracking.get("results_dir", paths.RESULTS_DIR)),
        out_dir=Path(out_dir or root / paths.REPORTS_DIR.name),
        prepared_dir=root / paths.PREPARED_DIR,
        titles={name: (spec or {}).get("title") or name for name, spec in (params.get("sweeps") or {}).items()},
    )


def current_trials(params_path: Path, name: str) -> dict[str, Any] | None:
    """``{trial id: Trial}`` of sweep ``name`` as params.yaml defines it now (None when unparsable)."""
    try:
        return {trial.trial_id: trial for trial in load_sweep(params_path, name).trials}
    except Exception:  # noqa: BLE001 - current_trial_ids says why
        return None


def not_run_rows(trials: Mapping[str, Any], absent: Sequence[str], sweep: str) -> pd.DataFrame:
    """Rows for the spec's trials that have none in the table: status ``not run``, their params."""
    rows = []
    for trial_id in absent:
        trial = trials.get(trial_id)
        params = trial.config.flat_params() if trial is not None else {}
        rows.append({"sweep": sweep, "trial": trial_id, "status": STATUS_NOT_RUN, "error": NOT_RUN_ERROR, **params})
    return as_object_strings(pd.DataFrame(rows))


def current_trial_ids(params_path: Path, name: str) -> set[str] | None:
    """Trial ids of sweep ``name`` as params.yaml defines it now (None when it cannot be parsed).

    The MLflow store keeps the trials of earlier specs of the same sweep; the exported table holds
    them all. The report describes the current spec only.
    """
    try:
        return {trial.trial_id for trial in load_sweep(params_path, name).trials}
    except Exception as err:  # an unparsable spec must not stop the report: say so instead
        print(f"note: sweep {name}: cannot expand the spec ({err}); reporting every trial in the table")
        return None


def _trial_artifacts(config: ReportConfig) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Final codebooks and code-usage histograms of the 2-D sweep's lowest-seed trial per method.

    Both are the artifacts each trial wrote (and logged to its MLflow run):
    ``<results>/<sweep>/artifacts/<trial>/codebook.npy`` and ``code_counts.npy``, the latter the
    usage on the trial's held-out evaluation features.
    """
    if not config.codebook_sweep:
        return {}, {}
    folder = config.results_dir / config.codebook_sweep
    table_path = folder / paths.TABLE_FILE
    if not table_path.exists():
        return {}, {}
    table = pd.read_csv(table_path)
    current = current_trial_ids(config.params_path, config.codebook_sweep) if config.filter_to_spec else None
    table = table[table["status"] == "finished"]
    if current is not None:
        table = table[table["trial"].isin(current)]
    codebooks, usage = {}, {}
    for method, rows in table.sort_values("seed").groupby("method", sort=False):
        trial_dir = folder / paths.ARTIFACTS_DIR / str(rows.iloc[0]["trial"])
        if (trial_dir / "codebook.npy").exists() and (trial_dir / "code_counts.npy").exists():
            codebooks[str(method)] = np.load(trial_dir / "codebook.npy")
            usage[str(method)] = np.load(trial_dir / "code_counts.npy")
    return codebooks, usage


def _prepared_sample(config: ReportConfig, sweep: str) -> np.ndarray | None:
    """The pinned data sample of ``sweep`` written by benchmark.pipeline.prepare (first dataset config)."""
    path = config.prepared_dir / sweep / "sample_0.npy"
    return np.load(path) if path.exists() else None


def headline_metrics(summaries: Mapping[str, Summary]) -> dict[str, Any]:
    """Nested means for ``dvc metrics show``: sweep -> row label -> metric -> mean (table units,
    utilization as a fraction)."""
    out: dict[str, Any] = {}
    for name, summary in summaries.items():
        section: dict[str, Any] = {}
        for _, row in summary.rows.iterrows():
            label = "_".join(
                f"{FACTOR_LABELS.get(f, f)}{fmt_value(row[f])}" if f != "method" else str(row[f])
                for f in summary.factors
            ) or "all"
            values = {m.column: round(float(row[f"{m.column}_mean"]) / m.scale, 4) for m in summary.metrics
                      if m.column in HEADLINE_METRICS and math.isfinite(row[f"{m.column}_mean"])}
            if row["failed"]:
                values["failed"] = int(row["failed"])
            section[label] = values
        out[name] = section
    return out


def load_sweep_table(config: ReportConfig, name: str) -> tuple[pd.DataFrame, list[str], pd.DataFrame | None] | None:
    """The trials of sweep ``name`` under its current spec (stale trials dropped, trials with no row
    added as not run), the columns that are not factors, and its tuning table (None without one)."""
    path = config.results_dir / name / paths.TABLE_FILE
    if not path.exists():
        return None
    table = read_table(path)
    tuning = load_tuning(path.parent)
    exclude: list[str] = []
    if tuning is not None:
        table, exclude = with_protocol(table, tuning)
    stale = 0
    if config.filter_to_spec and "trial" in table.columns:
        ids = current_trial_ids(config.params_path, name)
        if ids is not None:
            tuned = set(table.loc[table[PROTOCOL] == "tuned", "trial"].astype(str)) if tuning is not None else set()
            keep = table["trial"].astype(str).isin(ids | tuned)
            stale = int((~keep).sum())
            table = table[keep].reset_index(drop=True)
            absent = sorted(set(ids) - set(table["trial"].astype(str)))
            if absent:
                extra = not_run_rows(current_trials(config.params_path, name) or {}, absent, name)
                if tuning is not None:
                    extra[PROTOCOL] = "default"
                table = as_object_strings(pd.concat([table, extra], ignore_index=True))
    table.attrs["stale"] = stale
    table.attrs["not_factors"] = list(exclude)
    return table, exclude, tuning


def build_report(config: ReportConfig, params: Mapping[str, Any]) -> Path:
    """Write ``ablation.md``, ``figures/*.png`` and ``metrics.json`` under ``config.out_dir``."""
    out_dir = config.out_dir
    figures = _fresh_figures_dir(out_dir)
    tables, summaries, sections, missing = _sweep_sections(config, params.get("sweeps") or {}, figures)
    intro = _intro_lines(config)
    board = leaderboard_section(tables, figures if config.figures else None)
    ladder = scale_section(config.params_path.resolve().parent / paths.SCALE_PARAMS_FILE, tables)
    lines = [*intro[:LEADERBOARD_AFTER], board, *([ladder] if ladder else []), *intro[LEADERBOARD_AFTER:]]
    lines += ["", "## Paper vs ours", ""]
    setting = {name: _setting_text(table) for name, table in tables.items()}
    papers = paper_claims.load_papers()
    paper_claims.check_claims(papers)
    lines.append(paper_claims.papers_section(papers, summaries, setting, tables))

    lines += ["", open_questions_section(tables, config.confidence, figures if config.figures else None,
                                         parse_questions(params))]
    lines += ["", *sections]
    extra = _extra_figures(config, figures) if config.figures else []
    if extra:
        lines += ["", *extra]
    lines += _not_run_lines(tables, missing)
    lines += _code_version_lines(summaries, params)
    report_path = out_dir / "ablation.md"
    report_path.write_text("\n".join(lines))
    (out_dir / "metrics.json").write_text(json.dumps(headline_metrics(summaries), indent=1, sort_keys=True) + "\n")
    return report_path


SWEEP_REPORTS_DIR = "sweeps"  # <out>/sweeps/<sweep>.md: a report of one sweep alone


def build_sweep_reports(config: ReportConfig, params: Mapping[str, Any], names: Sequence[str]) -> list[Path]:
    """One report per named sweep, ``<out>/sweeps/<sweep>.md``, its figures in ``<out>/sweeps/figures/``:
    the sweep's section (table, failed trials, tuning, figure, spec) and its code version. Nothing
    else is read or written: ``ablation.md``, ``figures/`` and ``metrics.json`` stay as they are.
    ValueError naming the sweep when it is not in params.yaml or has no results table yet."""
    sweeps = params.get("sweeps") or {}
    for name in names:
        check_sweep_name(name)
        if name not in sweeps:
            raise ValueError(f"--sweep {name}: not a sweep of {config.params_path}; valid: {sorted(sweeps)}")
        if not (config.results_dir / name / paths.TABLE_FILE).exists():
            raise ValueError(f"--sweep {name}: no results table {config.results_dir / name / paths.TABLE_FILE}; "
                             f"run the sweep first (python -m benchmark report --sweep {name} --run)")
    out_dir = config.out_dir / SWEEP_REPORTS_DIR
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        for stale in [*figures.glob(f"{name}.png"), *figures.glob(f"{name}_*.png")]:
            stale.unlink()
        tables, summaries, sections, _ = _sweep_sections(config, {name: sweeps[name]}, figures)
        lines = [f"# vqbench report: sweep `{name}`", *_intro_lines(config)[1:], "", *sections]
        lines += _not_run_lines(tables, [])
        lines += _code_version_lines(summaries, params)
        path = out_dir / f"{name}.md"
        path.write_text("\n".join(lines))
        written.append(path)
    return written


def _fresh_figures_dir(out_dir: Path) -> Path:
    """``out_dir/figures``, created, without the figures of an earlier build."""
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for stale in figures.glob("*.png"):
        stale.unlink()
    return figures


def _sweep_sections(
    config: ReportConfig, sweeps: Mapping[str, Any], figures: Path,
) -> tuple[dict[str, pd.DataFrame], dict[str, Summary], list[str], list[str]]:
    """Per sweep with a results table: its table, summary and section; the names of those without one."""
    summaries: dict[str, Summary] = {}
    tables: dict[str, pd.DataFrame] = {}
    sections: list[str] = []
    missing: list[str] = []
    for name, spec in sweeps.items():
        loaded = load_sweep_table(config, name)
        if loaded is None:
            missing.append(name)
            continue
        table, exclude, tuning = loaded
        tables[name] = table
        summary = summarize(table, name, config.confidence, exclude)
        summaries[name] = summary
        sections.append(_sweep_section(config, name, spec, table, summary, figures, tuning))
    return tables, summaries, sections, missing


def _intro_lines(config: ReportConfig) -> list[str]:
    """The title, where the numbers come from, how a cell reads, and the metrics' definitions."""
    lines = [
        "# vqbench ablation report",
        "",
        "Generated by `python -m benchmark report` (last stage of `dvc repro`) from the exported "
        "trial tables `" + _rel(config.results_dir) + "/<sweep>/trials.csv` (MLflow store -> table); "
        "nothing here was retrained to write it. How to read it: reports/README.md.",
        "",
        f"Each cell: mean ± half-width of the {config.confidence:.0%} t-interval over seeds "
        "(t quantile with n-1 degrees of freedom; no interval when n = 1). **Bold**: the best mean in the "
        "column among comparable rows (the methods at the same setting, among all rows when the sweep has "
        "one method, with the same bits per token and, for E and E / k-means, the same error space), "
        "resolved from each of them (disjoint intervals, or a paired difference over the seeds that "
        "excludes 0); `≈`: the best and the rows it is not resolved from (a tie). Max for U, perplexity, "
        "PSNR, SSIM, min for E and E / k-means. `(fixed grid)` after a method: it has nothing to train in "
        "this experiment (a codebook that is not learned, on features that are not learned either), so "
        "its row measures a fixed grid. `n`: finished trials, "
        "`failed`: failed trials (not in the means, listed under each table).",
        "",
        "## Metrics",
        "",
    ]
    for m in METRICS:
        ranked = "" if m.comparable else " Ranked only among methods quantizing in the same space."
        lines.append(f"- **{m.label}** (`{m.column}`): {m.definition}.{ranked}")
    return lines


def _not_run_lines(tables: Mapping[str, pd.DataFrame], missing: list[str]) -> list[str]:
    """Sweeps without a results table and sweeps with trials not run or interrupted (none: no lines)."""
    lines: list[str] = []
    incomplete = {name: _status_counts(table) for name, table in tables.items()}
    incomplete = {name: c for name, c in incomplete.items() if c[STATUS_NOT_RUN] or c[STATUS_INTERRUPTED]}
    if missing or incomplete:
        lines += ["", "## Not run", ""]
        if missing:
            lines.append("No results table for: " + ", ".join(f"`{n}`" for n in missing) + ".")
        if incomplete:
            lines.append("Incomplete sweeps (rerun them to resume; their means cover the finished trials "
                         "only): " + ", ".join(f"`{n}` ({c[STATUS_NOT_RUN]} trials not run, "
                                              f"{c[STATUS_INTERRUPTED]} interrupted)"
                                              for n, c in incomplete.items()) + ".")
    return lines


def _code_version_lines(summaries: Mapping[str, Summary], params: Mapping[str, Any]) -> list[str]:
    """The trials' git commits and the shared ``base:`` params."""
    lines = ["", "## Code version and base params", ""]
    commits = sorted({c for s in summaries.values() for c in s.commits})
    lines.append("Git commits of the trials: " + (", ".join(f"`{c}`" for c in commits) or "unknown")
                 + " (`+dirty`: the work tree had uncommitted or untracked files when the trial ran; "
                 "the dvc.lock that `dvc repro` rewrites does not count).")
    lines += ["", "Shared `base:` of every sweep (params.yaml):", "", "```yaml",
              yaml.safe_dump({"base": params.get("base") or {}}, sort_keys=False).rstrip(), "```", ""]
    return lines


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path, Path.cwd())
    except ValueError:
        return str(path)


def _sweep_section(config: ReportConfig, name: str, spec: Any, table: pd.DataFrame,
                   summary: Summary, figures: Path, tuning: pd.DataFrame | None = None) -> str:
    title = config.titles.get(name, name)
    lines = [f"## {title} (`{name}`)", ""]
    stale = table.attrs.get("stale", 0)
    counts = _status_counts(table)
    cut_off = "".join(f", {counts[status]} {status}" for status in (STATUS_INTERRUPTED, STATUS_NOT_RUN)
                      if counts[status])
    lines.append(f"Setting: {_setting_text(table)}. Trials: {len(table)} "
                 f"({counts['failed']} failed{cut_off})."
                 + (f" {stale} trials of earlier specs of this sweep in the table are not shown." if stale else ""))
    lines += _warning_lines(table)
    notes = worse_rows(summary, table, tuning, config.confidence) if tuning is not None else None
    lines += ["", summary_table(summary, config.confidence, notes), "", failed_list(summary), ""]
    if tuning is not None:
        lines += [tuning_block(name, table, tuning, config.confidence, figures if config.figures else None)]
    figure = (sweep_figure(table, summary, figures / f"{name}.png", config.confidence, title)
              if config.figures else None)
    if figure is not None:
        lines += [f"![{name}](figures/{figure.name})", "", figure_caption(summary, table), ""]
    lines += ["Code version: " + (", ".join(f"`{c[:12]}{'+dirty' if c.endswith('+dirty') else ''}`"
                                          for c in summary.commits) or "unknown") + ".", ""]
    lines += ["<details><summary>Sweep spec (params.yaml)</summary>", "", "```yaml",
              yaml.safe_dump({"sweeps": {name: spec}}, sort_keys=False).rstrip(), "```", "", "</details>", ""]
    return "\n".join(lines)


def _warning_lines(table: pd.DataFrame) -> list[str]:
    """The trials' recorded warnings (what limits their numbers), each once with its trial count."""
    if "warning" not in table.columns:
        return []
    counts: dict[str, int] = {}
    for text in table["warning"].dropna().astype(str):
        for message in filter(None, (part.strip() for part in text.split(" | "))):
            counts[message] = counts.get(message, 0) + 1
    return ["", *(f"**Warning** ({n} trials): {message}." for message, n in counts.items())] if counts else []


def _status_counts(table: pd.DataFrame) -> dict[str, int]:
    """Trials per status among failed, interrupted and not run (see benchmark.report.tables)."""
    statuses = table["status"].astype(str) if "status" in table.columns else pd.Series([], dtype=object)
    return {status: int((statuses == status).sum()) for status in ("failed", STATUS_INTERRUPTED, STATUS_NOT_RUN)}


def _extra_figures(config: ReportConfig, figures: Path) -> list[str]:
    lines: list[str] = []
    codebooks, usage = _trial_artifacts(config)
    sample = _prepared_sample(config, config.codebook_sweep) if config.codebook_sweep else None
    title = config.titles.get(config.codebook_sweep or "", config.codebook_sweep or "")
    if codebooks:
        path = codebook_figure(codebooks, sample, figures / "disk_codebooks.png")
        lines += ["## Codebook over data (2-D disk)", "", f"![disk codebooks](figures/{path.name})", "",
                  f"Final code vectors (red) of each method of `{config.codebook_sweep}` (lowest seed) over "
                  "a sample of the data (grey).", ""]
        path = usage_figure(usage, figures / "disk_code_usage.png", f"code usage: {title}")
        lines += ["## Code usage", "", f"![code usage](figures/{path.name})", "",
                  "Codes sorted by use; y = share of the trial's held-out evaluation features whose "
                  "nearest code it is (the trial's saved usage histogram). A curve that ends early = "
                  "dead codes.", ""]
    else:
        lines += ["## Codebook over data (2-D disk)", "",
                  "Left out: no saved trial artifacts found"
                  + (f" under `{_rel(config.results_dir / config.codebook_sweep / 'artifacts')}`"
                     if config.codebook_sweep else "")
                  + "; the code-usage histogram needs them too.", ""]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv) if argv is not None else None
    if argv is not None and "--reproduce" in argv:  # the paper-vs-ours reproduction report
        from benchmark.report import reproduce

        return reproduce.main([arg for arg in argv if arg != "--reproduce"])
    parser = argparse.ArgumentParser(prog="python -m benchmark report", description=__doc__.split("\n")[0],
                                     epilog="--reproduce: write reports/reproduce.md instead "
                                            "(python -m benchmark report --reproduce --help)")
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    parser.add_argument("--results", default=None, help="results dir (default tracking.results_dir)")
    parser.add_argument("--out", default=None, help="output dir (default reports)")
    parser.add_argument("--no-figures", action="store_true", help="tables only (no seaborn figures)")
    parser.add_argument("--export", action="store_true",
                        help="first rebuild results/<sweep>/trials.csv from the MLflow store")
    parser.add_argument("--sweep", action="append", default=None, metavar="NAME",
                        help="report only this sweep (repeatable): reports/sweeps/NAME.md and its figures; "
                             "the full report (ablation.md, figures/, metrics.json) is left untouched")
    parser.add_argument("--run", action="store_true",
                        help="with --sweep: first run the sweep (python -m benchmark sweep; finished trials "
                             "are not rerun)")
    args = parser.parse_args(argv)
    if args.run and not args.sweep:
        parser.error("--run needs --sweep NAME")
    params_path = Path(args.params)
    try:
        params = load_params(params_path)
        config = report_config(params, params_path, Path(args.out) if args.out else None,
                               Path(args.results) if args.results else None)
    except (ConfigError, ValueError, TypeError, AttributeError) as err:
        message = str(err) if str(err).startswith(str(params_path)) else f"{params_path}: {err}"
        print(f"error: {message}", file=sys.stderr)
        return 2
    status = 0
    if args.run:
        from benchmark.pipeline import sweep

        for name in args.sweep:
            status = sweep.main(["--params", str(params_path), "--sweep", name]) or status
            if status not in (0, sweep.EXIT_TRIAL_ERRORS, sweep.EXIT_ALL_FAILED):
                return status  # nothing (complete) to report: the sweep said why
    if args.export:
        from benchmark.pipeline import tracking

        uri = tracking.resolve_tracking_uri((params.get("tracking") or {}).get("uri", paths.TRACKING_DB),
                                            params_path.resolve().parent)
        for name in args.sweep or params.get("sweeps") or {}:
            try:
                table = tracking.export_table(uri, name)
            except ValueError as err:
                print(f"skip {name}: {err}")
                continue
            tracking.write_table(table, config.results_dir / name / paths.TABLE_FILE)
    config.figures = not args.no_figures
    if args.sweep:
        try:
            written = build_sweep_reports(config, params, args.sweep)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print("wrote " + ", ".join(_rel(path) for path in written))
        return status
    path = build_report(config, params)
    print(f"wrote {_rel(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
