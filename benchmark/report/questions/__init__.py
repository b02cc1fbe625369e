"""The open questions of Wasserstein VQ (arXiv 2506.15078), answered from the sweep tables: "Open questions".

``benchmark.report.build`` calls :func:`open_questions_section` with the tables it has read (filtered to
the current sweep specs) and puts the returned markdown into ``reports/ablation.md``. Nothing is
retrained. The questions are the open questions of Wasserstein VQ (arXiv 2506.15078):

1. Non-Gaussian features (sweep ``non_gaussian``): does the closed-form Gaussian W loss
   (``wasserstein``) fall behind the non-parametric matching losses (the methods flagged
   ``nonparametric_matching``: sliced W, exact OT, MMD) when the features are not Gaussian (bimodal mixture, uniform cube),
   and not when they are (the Gaussian control)?
2. The error-optimal codebook density. Sweep ``density_map``: E / k-means of the W loss aimed at
   N(mu, c S) (``wasserstein_density`` with ``covariance_scale`` c) over a grid of c x d x K, z ~ N(0, I);
   per (d, K) the best c and its bracket, against d/(d+2) (Theorem 2 as Wasserstein VQ states it),
   (d+2)/d (Gersho 1979) and the finite-K centroid shrinkage 1 - E_kmeans / (d var). Sweeps ``low_d`` and
   ``low_d_paper``: the three-point comparison (plain f, Gersho's f^(d/(d+2)), Theorem 2's f^((d+2)/d)).
3. Downstream autoregressive generation (the ``vqvae`` and ``transplant`` sweeps with
   ``model_options.prior_steps`` > 0): does utilization matter for generation? Spearman
   correlations across methods of the prior's held-out NLL and of the samples' Frechet distance
   (classifier features) with U and with PSNR, exact permutation p-values, n methods.

Plus the ablation on the atomic mean shift (sweep ``dead_codes``): dead-code strategies
vs distribution matching.

Every conclusion is computed from the tables: means and half-widths of the 95% t-interval over
seeds (``benchmark.report.stats.t_interval``, as in every table of the report). All the tests of one
question form one family (``benchmark.report.stats.compare_pairs``): paired t-tests over seeds (trials
with the same seed share their training stream, held-out features and k-means reference),
Holm-corrected together. Default and tuned rows are never pooled into one cell. With n = 1 nothing
is resolved.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from benchmark.pipeline.spec import QuestionSweeps
from benchmark.report.stats import done_rows
from benchmark.report.questions._common import (
    DEFAULT_SWEEPS, GAUSSIAN_W, GAUSSIAN_CONTROL, DENSITY_METHOD, DEFAULT_EXPONENT, TARGET_LABELS, FULL_USE,
    COLLAPSED, DATASET_LABELS, KEY_METRIC, nonparametric, _gap_text, _values, _finite_groups, _cells, _reordered,
    _table_block, _setting, _missing, _join, merged_table, _figure_lines,
)  # noqa: F401
from benchmark.report.questions.non_gaussian import (
    non_gaussian_findings, _non_gaussian_text, non_gaussian_answer, _non_gaussian_lines,
)  # noqa: F401
from benchmark.report.questions.density import (
    density_target, target_scale, low_d_table, low_d_pairs, low_d_findings, _low_d_text, low_d_answer, trial_scale,
    feature_variance, shrinkage_scale, density_map_table, _map_cells, density_map_pairs, question_two_family,
    best_scale_findings, REFERENCE_LABELS, _diff_text, _bound, best_scale_table, _plain_words, density_map_answer,
    density_map_lines, _low_d_lines,
)  # noqa: F401
from benchmark.report.questions.dead_codes import (
    dead_code_findings, _dead_code_text, dead_code_answer, _dead_code_lines,
)  # noqa: F401
from benchmark.report.questions.generation import (
    PRIOR_COLUMN, PRIOR_COLUMNS, PRIOR_PAIRS, spearman, prior_findings, _prior_table, _correlation_text, _where,
    prior_answer, ar_generation_text,
)  # noqa: F401
from benchmark.report.tables import sort_key  # noqa: F401  (the order the questions list methods in)


def open_questions_section(tables: Mapping[str, pd.DataFrame], confidence: float = 0.95,
                           figures: Path | None = None, sweeps: QuestionSweeps = DEFAULT_SWEEPS) -> str:
    """Markdown of the "Open questions" section from the sweep tables (missing sweeps are said so).

    ``figures``: folder for the section's figures (``open_questions_*.png``), None = tables only;
    ``sweeps``: the sweeps each question reads (params.yaml ``questions:``)."""
    lines = _preamble_lines(tables, confidence, sweeps)
    lines += ["", "### 1. Non-Gaussian features: Gaussian W vs non-parametric matching", ""]
    lines += _non_gaussian_lines(merged_table(tables, sweeps.non_gaussian), confidence, figures, sweeps.non_gaussian)
    lines += ["", "### 2. The error-optimal codebook density: a map over c, d and K", ""]
    density = merged_table(tables, sweeps.density_map)
    family = question_two_family(density, low_d_table(tables, sweeps.three_point), confidence)
    lines += [f"The {len(family)} tests of this question (every c against the best c of its cell, every density "
              "target against plain matching) are one family: paired t-tests over seeds, Holm-corrected together.",
              ""]
    lines += density_map_lines(density, confidence, figures, family, sweeps.density_map)
    lines += ["", "#### Three-point comparison: plain matching, Gersho, Theorem 2", ""]
    lines += _low_d_lines(tables, confidence, figures, family, sweeps.three_point)
    lines += ["", "### 3. Downstream autoregressive generation", ""]
    lines += ar_generation_text(tables, confidence, sweeps.generation)
    lines += ["", "### Related ablation: dead-code strategies vs distribution matching", ""]
    lines += _dead_code_lines(merged_table(tables, sweeps.dead_codes), confidence, sweeps.dead_codes)
    return "\n".join(lines) + "\n"


def _preamble_lines(tables: Mapping[str, pd.DataFrame], confidence: float, sweeps: QuestionSweeps) -> list[str]:
    """The section's heading and how a difference counts as resolved."""
    return [
        "## Open questions of Wasserstein VQ (arXiv 2506.15078)",
        "",
        f"What our measurements say on each open question, computed from the tables below (mean ± "
        f"half-width of the {confidence:.0%} t-interval over seeds). The tests of one question (every candidate "
        "against its reference, at every setting) are one family: paired t-tests over seeds (same seed = same "
        "training stream, held-out features and k-means reference), Holm-corrected together (unpaired: "
        "t-intervals widened to the Bonferroni level); a difference counts as resolved when its corrected p "
        "is below 0.05. Default and tuned rows are never pooled. Scale: "
        "small CPU runs (see each setting); they answer for that setting, not for the paper's."
        + _t_note(tables, confidence, sweeps),
    ]


def _t_note(tables: Mapping[str, pd.DataFrame], confidence: float, sweeps: QuestionSweeps = DEFAULT_SWEEPS) -> str:
    """How wide the intervals are for the seed counts of the question sweeps (t quantile)."""
    names = [*sweeps.non_gaussian, *sweeps.density_map, *sweeps.three_point, *sweeps.dead_codes]
    counts = sorted({len(_values(done_rows(tables[n]), "seed")) for n in names if n in tables and len(tables[n])})
    counts = [n for n in counts if n >= 2]
    if not counts:
        return ""
    from scipy import stats

    quantiles = ", ".join(f"{stats.t.ppf((1 + confidence) / 2, n - 1):.1f} with {n} seeds" for n in counts)
    more = counts[-1] + 1
    return (f" The t quantile of these intervals is {quantiles} ({stats.t.ppf((1 + confidence) / 2, more - 1):.1f} "
            f"with {more}): with few seeds only large or very consistent differences are resolved, and "
            "'not resolved' means exactly that, not 'equal'.")
