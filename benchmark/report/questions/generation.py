"""Question 3: downstream autoregressive generation. Spearman correlations across methods of the
token prior's held-out NLL and of its samples' Frechet distance with U and PSNR; default and tuned
rows apart; every correlation in one Holm family."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd

from benchmark import metric_registry
from benchmark.metric_registry import SHORT
from benchmark.report.stats import Estimate, done_rows, holm
from benchmark.report.tables import PROTOCOL, sort_key
from benchmark.report.questions._common import _cells, _setting, _values


PRIOR_COLUMN = "prior_bits_per_token"
PRIOR_COLUMNS = tuple(metric_registry.get(name) for name in (
    "utilization", "perplexity", "psnr", "prior_bits_per_token", "prior_bits_per_image", "frechet_classifier",
    "knn_precision", "knn_recall"))
# (x, y) pairs correlated across methods: does the prior's NLL / sample quality follow U or reconstruction?
PRIOR_PAIRS = (("prior_bits_per_token", "utilization"), ("prior_bits_per_token", "psnr"),
               ("frechet_classifier", "utilization"), ("frechet_classifier", "psnr"))


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int]:
    """Spearman's rho, its two-sided p-value and n; the p-value is exact (all pairings permuted,
    ``scipy.stats.permutation_test``) for n <= 8, scipy's t approximation above. NaN for n < 3."""
    from scipy import stats

    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    n = len(pairs)
    if n < 3:
        return math.nan, math.nan, n
    a, b = (list(v) for v in zip(*pairs))
    rho = float(stats.spearmanr(a, b).statistic)
    if not math.isfinite(rho):  # a constant column
        return math.nan, math.nan, n
    if n <= 8:
        test = stats.permutation_test((a,), lambda u: stats.spearmanr(u, b).statistic,
                                      permutation_type="pairings", n_resamples=math.inf)  # all n! pairings
        return rho, float(test.pvalue), n
    return rho, float(stats.spearmanr(a, b).pvalue), n


@dataclass
class PriorFinding:
    """One (sweep, dataset, protocol) with prior results: per-method cells and the across-method
    correlations of :data:`PRIOR_PAIRS`, each (rho, p, n); ``adjusted``: the Holm-corrected p of each
    correlation over every correlation of the question (set once all findings are known)."""

    sweep: str
    dataset: Any  # None: the sweep has one dataset
    protocol: Any  # None: no tuning stage (no default / tuned rows)
    experiment: str
    methods: list[str]
    cells: dict[str, dict[tuple, Estimate]]  # column -> (method,) -> estimate
    correlations: dict[tuple[str, str], tuple[float, float, int]]
    setting: str
    adjusted: dict[tuple[str, str], float] = field(default_factory=dict)


def prior_findings(tables: Mapping[str, pd.DataFrame], confidence: float = 0.95,
                   names: Sequence[str] | None = None) -> list[PriorFinding]:
    """Per (sweep, dataset, protocol) with prior results: per-method estimates and the across-method
    Spearman correlations of ``PRIOR_PAIRS`` (method means over seeds). Default and tuned rows of a tuned
    sweep are two configs of each method, never pooled into one cell. ``adjusted``: each correlation's
    p-value Holm-corrected over every correlation of the question."""
    findings = []
    for sweep in sorted(tables if names is None else [n for n in names if n in tables], key=sort_key):
        table = done_rows(tables[sweep])
        if PRIOR_COLUMN not in table.columns or "method" not in table.columns:
            continue
        table = table[pd.to_numeric(table[PRIOR_COLUMN], errors="coerce").notna()]
        if not len(table):
            continue
        datasets = _values(table, "dataset") or [None]
        protocols = _values(table, PROTOCOL) or [None]
        for dataset, protocol in itertools.product(datasets, protocols):
            rows = table if dataset is None else table[table["dataset"] == dataset]
            rows = rows if protocol is None else rows[rows[PROTOCOL] == protocol]
            if not len(rows):
                continue
            cells = {m.name: _cells(rows, ["method"], m.name, confidence, m.scale) for m in PRIOR_COLUMNS}
            methods = sorted({key[0] for key in cells[PRIOR_COLUMN]}, key=sort_key)
            means = {column: [cells[column].get((m,), Estimate(math.nan, math.nan, 0)).mean for m in methods]
                     for column in (m.name for m in PRIOR_COLUMNS)}
            correlations = {pair: spearman(means[pair[0]], means[pair[1]]) for pair in PRIOR_PAIRS}
            experiment = _values(rows, "experiment")
            findings.append(PriorFinding(sweep, dataset, protocol, "/".join(map(str, experiment)), methods, cells,
                                         correlations, _setting(rows)))
    tests = [(i, pair) for i, f in enumerate(findings) for pair, (_, p, _) in f.correlations.items()
             if math.isfinite(p)]
    adjusted = holm([findings[i].correlations[pair][1] for i, pair in tests]) if tests else []
    for (i, pair), p in zip(tests, adjusted):
        findings[i].adjusted[pair] = p
    return findings


def _prior_table(f: PriorFinding) -> list[str]:
    header = "| method | " + " | ".join(m.label for m in PRIOR_COLUMNS) + " |"
    lines = [header, "|---|" + "---|" * len(PRIOR_COLUMNS)]
    for m in f.methods:
        row = [f.cells[c.name].get((m,), Estimate(math.nan, math.nan, 0)).text(c.digits) for c in PRIOR_COLUMNS]
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return lines


def _correlation_text(pair: tuple[str, str], result: tuple[float, float, int], adjusted: float = math.nan) -> str:
    rho, p, n = result
    if not math.isfinite(rho):
        return f"{SHORT[pair[0]]} vs {SHORT[pair[1]]}: undefined (n = {n} methods, or a constant column)"
    exact = "exact permutation " if n <= 8 else ""
    holm_text = f", Holm-corrected p = {adjusted:.3f}" if math.isfinite(adjusted) else ""
    return (f"{SHORT[pair[0]]} vs {SHORT[pair[1]]}: Spearman rho = {rho:+.2f}, {exact}p = {p:.3f}{holm_text} "
            f"(n = {n} methods)")


def _where(f: PriorFinding) -> str:
    """`sweep` (dataset, protocol rows) of one prior finding."""
    details = [str(f.dataset)] if f.dataset else []
    if f.protocol:
        details.append(f"{f.protocol} rows")
    return f"`{f.sweep}`" + (f" ({', '.join(details)})" if details else "")


def prior_answer(findings: Sequence[PriorFinding]) -> str:
    if not findings:
        return ""
    resolved = [(f, pair) for f in findings for pair, p in f.adjusted.items() if p < 0.05]
    tests = sum(len(f.adjusted) for f in findings)
    smallest = min((f.correlations[PRIOR_PAIRS[0]][2] for f in findings), default=0)
    floor = 2.0 / math.factorial(smallest) if smallest >= 3 else math.nan
    text = "**Answer from these measurements:** "
    if resolved:
        text += (f"correlations with p < 0.05 after Holm's correction over the question's {tests} tests: "
                 + "; ".join(_where(f) + ": " + _correlation_text(pair, f.correlations[pair], f.adjusted[pair])
                             for f, pair in resolved) + ". ")
    else:
        text += (f"no across-method correlation reaches p < 0.05 after Holm's correction over the question's "
                 f"{tests} tests. ")
    if math.isfinite(floor):
        text += (f"With {smallest} methods the smallest two-sided p an exact Spearman test can give is "
                 f"2/{smallest}! = {floor:.3f}; ")
        text += ("so a non-significant result here is expected at any true correlation, and needs more methods "
                 "(tokenizers), not more seeds. " if floor >= 0.05 else "")
    text += ("What can be concluded: the sign and size of rho for these tokenizers at this scale. The NLL in bits "
             "per token is bounded by the token entropy log2(perplexity) of a context-free model, so it rises "
             "with U and perplexity by construction: a positive NLL-U correlation says the prior has more to "
             "model, not that generation is worse. Whether utilization helps generation is read from the sample "
             "proxy (Frechet distance in the classifier's feature space, k-NN precision / recall): a negative "
             "Frechet-U correlation would favour high U. What cannot be concluded: causation (the methods differ "
             "in more than U), FID-level sample quality (the feature space is a small in-suite classifier, a "
             "domain proxy), or anything at the paper's scale (CIFAR-10, K >= 1024, large priors).")
    return text


def ar_generation_text(tables: Mapping[str, pd.DataFrame], confidence: float = 0.95,
                       names: Sequence[str] | None = None) -> list[str]:
    findings = prior_findings(tables, confidence, names)
    if not findings:
        return [
            "**Answer:** not measured yet: no `vqvae` or `transplant` table has prior results. Set "
            "`model_options.prior_steps` > 0 in those sweeps: each tokenizer then gets the same small "
            "autoregressive transformer prior (equal budget), scored by held-out NLL in bits per token and per "
            "image and by the Frechet distance and k-NN precision / recall of decoded samples in the feature "
            "space of a classifier trained in the suite (a domain proxy, not FID).",
        ]
    lines = ["Every tokenizer gets the same autoregressive transformer prior trained on its training-split token "
             "grids with an equal budget (`model_options.prior_steps`); held-out NLL on the test tokens; samples "
             "decoded and compared with the test images in the penultimate features of a classifier trained in "
             "the suite on the dataset's labels (`frechet_classifier`, a domain-feature proxy, not FID; k-NN "
             "precision / recall, k = 3). Correlations: Spearman across methods of their seed means.", ""]
    for f in findings:
        where = (f"`{f.sweep}` ({f.experiment}" + (f", `{f.dataset}`" if f.dataset else "")
                 + (f", {f.protocol} rows only" if f.protocol else "") + ")")
        lines += [f"Sweep {where}: {f.setting}.", "", *_prior_table(f), ""]
        lines += [f"- {_correlation_text(pair, result, f.adjusted.get(pair, math.nan))}"
                  for pair, result in f.correlations.items()]
        lines.append("")
    lines.append(prior_answer(findings))
    return lines
