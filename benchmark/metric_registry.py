"""The metric registry: one :class:`Metric` per key a trial records, declared once.

Everything the suite knows about a metric is here: who produces it, which experiments record it,
which way is better, its unit, digits and label, its definition, the space it is measured in and
whether it can be ranked across methods. The key lists of the experiments' records, the report's
table columns, the headline metrics of ``reports/metrics.json``, the validation of ``tune.metric``
and ``tune.mode`` and the metric section of ``reports/README.md`` are derived from it.

No experiment imports this module (``tests/test_metric_registry.py`` checks it against every
trial's code, :mod:`benchmark.pipeline.code`): a label, a definition or a direction edited here
retrains no trial. The formulas live with their producers (``producer``: ``module:function``).
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Iterable

FIT, VQVAE, TRANSPLANT = "fit", "vqvae", "transplant"
IMAGE_EXPERIMENTS = (VQVAE, TRANSPLANT)
ALL_EXPERIMENTS = (FIT, *IMAGE_EXPERIMENTS)
DIRECTIONS = ("max", "min")
SPACES = ("data", "search")
# When a metric is recorded (``Metric.when``): always; only by multi-codebook quantizers (one key per
# level, ``<name>_<level>``); only with a downstream prior (``model_options.prior_steps`` > 0, test runs).
ALWAYS, PER_LEVEL, WITH_PRIOR = "always", "per level", "with prior"
CONDITIONS = (ALWAYS, PER_LEVEL, WITH_PRIOR)


@dataclass(frozen=True)
class Metric:
    """One metric of a trial's final record.

    ``better``: ``"max"``, ``"min"`` or None (shown, never ranked or tuned on).
    ``space``: ``"data"`` (the value means the same for every method) or ``"search"`` (measured in
    each quantizer's own search space: the sphere for cosine codes, FSQ's bounded cube), so it is
    ranked only among methods of the same ``error_space`` (:attr:`comparable` is False).
    ``scale``: stored value x scale = displayed value (utilization is stored as a fraction).
    ``limits``: the (lowest, highest) displayed value the metric can take (U in [0, 100] %, perplexity
    >= 1, SSIM <= 1); a figure clips a seed interval to them.
    ``table``: a column of the report's tables (their order is the registry's);
    ``headline``: in ``reports/metrics.json``; ``short``: its name in running text.
    """

    name: str
    label: str
    producer: str
    experiments: tuple[str, ...]
    better: str | None
    digits: int
    definition: str
    unit: str = ""
    scale: float = 1.0
    space: str = "data"
    when: str = ALWAYS
    table: bool = False
    headline: bool = False
    short: str = ""
    limits: tuple[float, float] = (-math.inf, math.inf)

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> None:
            raise ValueError(f"metric {self.name!r}: {field}: {why}")

        if not self.name or not self.name.isidentifier():
            bad("name", "must be an identifier")
        if self.better not in (*DIRECTIONS, None):
            bad("better", f"must be one of {list(DIRECTIONS)} or None, got {self.better!r}")
        if self.space not in SPACES:
            bad("space", f"must be one of {list(SPACES)}, got {self.space!r}")
        if self.when not in CONDITIONS:
            bad("when", f"must be one of {list(CONDITIONS)}, got {self.when!r}")
        if not self.experiments or any(e not in ALL_EXPERIMENTS for e in self.experiments):
            bad("experiments", f"must be a non-empty subset of {list(ALL_EXPERIMENTS)}, got {self.experiments!r}")
        if ":" not in self.producer:
            bad("producer", f"must be 'module:function', got {self.producer!r}")
        if len(self.limits) != 2 or not self.limits[0] < self.limits[1]:
            bad("limits", f"must be (lowest, highest) with lowest < highest, got {self.limits!r}")
        if not isinstance(self.digits, int) or self.digits < 0:
            bad("digits", f"must be an integer >= 0, got {self.digits!r}")
        if not self.definition or self.definition.endswith("."):
            bad("definition", "must be a sentence without its final period")

    @property
    def column(self) -> str:
        """The metric's column in a trials table (its record key)."""
        return self.name

    @property
    def comparable(self) -> bool:
        """Ranked across every method (True), or only among methods of one ``error_space``."""
        return self.space == "data"

    @property
    def ranked(self) -> bool:
        return self.better is not None

    @property
    def words(self) -> str:
        """Its name in running text (``short``, else the label)."""
        return self.short or self.label


_EVALUATE = "benchmark.experiments.metrics:evaluate"
_TOKENIZER = "benchmark.experiments.images:evaluate_tokenizer"
_PRIOR = "benchmark.experiments.images:prior_record"
_TRAINING = "benchmark.experiments.training:timed_training"

METRICS: tuple[Metric, ...] = (
    Metric("utilization", "U (%)", _EVALUATE, ALL_EXPERIMENTS, "max", 1,
           "fraction of the K codes that are the nearest code of at least one held-out feature",
           unit="%", scale=100.0, table=True, headline=True, short="U", limits=(0.0, 100.0)),
    Metric("quantization_error", "E", _EVALUATE, ALL_EXPERIMENTS, "min", 3,
           "mean over held-out features of the squared L2 distance ||z - q(z)||^2 (summed over dims), "
           "in the quantizer's search space", space="search", table=True, limits=(0.0, math.inf)),
    Metric("error_vs_kmeans", "E / k-means", _EVALUATE, ALL_EXPERIMENTS, "min", 3,
           "E divided by the held-out error of faiss k-means (Lloyd, to convergence) with the same K on "
           "the same data: 1.0 is the practical optimum, below 1 beats it", space="search", table=True,
           headline=True, limits=(0.0, math.inf)),
    Metric("perplexity", "perplexity", _EVALUATE, ALL_EXPERIMENTS, "max", 1,
           "exp(entropy of the code-usage histogram on held-out features); at most K", table=True,
           limits=(1.0, math.inf)),
    Metric("dead_codes", "dead codes", _EVALUATE, ALL_EXPERIMENTS, "min", 0,
           "K minus the number of used codes on held-out features"),
    Metric("gaussian_w2_sq", "Gaussian W2^2", _EVALUATE, ALL_EXPERIMENTS, "min", 3,
           "squared W2 between Gaussians fitted to the held-out features and to the code vectors",
           space="search"),
    Metric("kmeans_error", "k-means E", _EVALUATE, ALL_EXPERIMENTS, None, 3,
           "held-out E of the k-means reference (the denominator of E / k-means; NaN for multi-codebook "
           "quantizers, whose k-means reference is infeasible)", space="search"),
    Metric("bits_per_token", "bits / token", _EVALUATE, ALL_EXPERIMENTS, None, 1,
           "sum over levels of log2 K_l: the bits one token's indices carry (log2 K for one codebook)"),
    Metric("utilization_level", "U level (%)", "benchmark.experiments.metrics:evaluate_levels", ALL_EXPERIMENTS,
           "max", 1, "utilization of one level's codebook (multi-codebook quantizers; key utilization_level_<l>)",
           unit="%", scale=100.0, when=PER_LEVEL, limits=(0.0, 100.0)),
    Metric("perplexity_level", "perplexity level", "benchmark.experiments.metrics:evaluate_levels",
           ALL_EXPERIMENTS, "max", 1,
           "perplexity of one level's code usage (multi-codebook quantizers; key perplexity_level_<l>)",
           when=PER_LEVEL, limits=(1.0, math.inf)),
    Metric("recon_mse", "recon MSE", _TOKENIZER, IMAGE_EXPERIMENTS, "min", 4,
           "mean squared error of the held-out reconstructions (pixels in [0, 1])"),
    Metric("psnr", "PSNR (dB)", _TOKENIZER, IMAGE_EXPERIMENTS, "max", 2,
           "peak signal-to-noise ratio of the held-out reconstructions", unit="dB", table=True, headline=True,
           short="PSNR"),
    Metric("ssim", "SSIM", _TOKENIZER, IMAGE_EXPERIMENTS, "max", 3,
           "structural similarity of the held-out reconstructions (scikit-image)", table=True,
           limits=(-1.0, 1.0)),
    Metric("autoencoder_mse", "AE MSE", "benchmark.experiments.transplant:run", (TRANSPLANT,), None, 4,
           "held-out reconstruction MSE of the frozen autoencoder without a quantizer (the floor of recon MSE; "
           "the same for every method of one seed)"),
    Metric("prior_bits_per_token", "prior bits/token", _PRIOR, IMAGE_EXPERIMENTS, None, 3,
           "held-out NLL of the downstream autoregressive prior (same transformer and budget for every "
           "tokenizer) in bits per token; lower = the tokens are easier to model, which a tokenizer also gets "
           "by using fewer codes, so it is not ranked across tokenizers: read it next to U and PSNR",
           unit="bits", when=WITH_PRIOR, table=True, short="NLL bits/token"),
    Metric("prior_bits_per_image", "prior bits/image", _PRIOR, IMAGE_EXPERIMENTS, None, 1,
           "the prior's held-out NLL per image: bits per token x tokens per image (not ranked, as above)",
           unit="bits", when=WITH_PRIOR, table=True),
    Metric("frechet_classifier", "Frechet (classifier)", _PRIOR, IMAGE_EXPERIMENTS, "min", 2,
           "Frechet distance between Gaussians fitted to the features of decoded prior samples and of the "
           "held-out images, in the penultimate layer of a small classifier trained in the suite on the "
           "dataset's labels (digits: the digit class); a domain-feature proxy, not FID",
           when=WITH_PRIOR, table=True),
    Metric("knn_precision", "k-NN precision", _PRIOR, IMAGE_EXPERIMENTS, "max", 3,
           "share of decoded prior samples inside the k-NN manifold (k = 3) of the held-out images' "
           "classifier features (Kynkaanniemi et al. 2019, arXiv:1904.06991): sample fidelity",
           when=WITH_PRIOR, table=True, short="precision"),
    Metric("knn_recall", "k-NN recall", _PRIOR, IMAGE_EXPERIMENTS, "max", 3,
           "share of held-out images inside the k-NN manifold (k = 3) of the samples' classifier features: "
           "sample diversity / coverage", when=WITH_PRIOR, table=True, short="recall"),
    Metric("final_loss", "final loss", _TRAINING, ALL_EXPERIMENTS, None, 4,
           "mean training loss over the last min(log_every, steps) steps (scales with each trial's own loss "
           "weights, so it is never compared across trials)"),
    Metric("train_seconds", "train s", _TRAINING, ALL_EXPERIMENTS, None, 1, "wall time of the trial's training",
           unit="s", table=True),
    Metric("prior_seconds", "prior s", _PRIOR, IMAGE_EXPERIMENTS, None, 1,
           "wall time of the prior: tokenizing, training, scoring, sampling and decoding", unit="s",
           when=WITH_PRIOR),
)
BY_NAME: dict[str, Metric] = {}
for _metric in METRICS:
    if _metric.name in BY_NAME:
        raise ValueError(f"metric {_metric.name!r}: registered twice")
    BY_NAME[_metric.name] = _metric
del _metric


def get(name: str) -> Metric:
    """The metric ``name``; a ValueError lists the valid names (with a close match) otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}.{_hint(name, BY_NAME)} Valid: {sorted(BY_NAME)}") from None


def _hint(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(names), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def keys(experiment: str, when: Iterable[str] = (ALWAYS,)) -> tuple[str, ...]:
    """The record keys ``experiment`` writes under the conditions ``when`` (registry order)."""
    if experiment not in ALL_EXPERIMENTS:
        raise ValueError(f"experiment: unknown {experiment!r}; valid: {list(ALL_EXPERIMENTS)}")
    when = tuple(when)
    return tuple(m.name for m in METRICS if experiment in m.experiments and m.when in when)


def level_prefixes() -> tuple[str, ...]:
    """Prefixes of the per-level keys (``utilization_level_`` + level number)."""
    return tuple(f"{m.name}_" for m in METRICS if m.when == PER_LEVEL)


def tunable(experiments: Iterable[str]) -> tuple[str, ...]:
    """Metrics a tuning stage can select on for these experiments: ranked, and recorded by every one of
    them on every run (a validation trial never trains the prior)."""
    experiments = tuple(experiments)
    return tuple(m.name for m in METRICS if m.ranked and m.when == ALWAYS
                 and all(e in m.experiments for e in experiments))


def check_objective(metric: str, mode: str | None, experiments: Iterable[str], where: str) -> str:
    """Validate a tuning objective: ``metric`` is tunable for ``experiments``, ``mode`` (None: the
    metric's direction) agrees with its direction. Returns the mode; ValueError naming ``where``."""
    valid = tunable(experiments)
    if not isinstance(metric, str) or metric not in valid:
        raise ValueError(f"{where}.metric: {metric!r} is not a metric to tune on.{_hint(str(metric), valid)} "
                         f"Valid: {list(valid)}")
    better = BY_NAME[metric].better
    if mode is None:
        return better
    if mode not in DIRECTIONS:
        raise ValueError(f"{where}.mode: must be 'min' or 'max', got {mode!r}")
    if mode != better:
        raise ValueError(f"{where}.mode: {metric} is better when {better}imised, got mode {mode!r}")
    return mode


# The derived lists the rest of the suite reads.
METRIC_KEYS = tuple(m.name for m in METRICS if m.producer == _EVALUATE)  # the quantizer's record
RESULT_KEYS = keys(FIT)
VQVAE_KEYS = keys(VQVAE)
TRANSPLANT_KEYS = keys(TRANSPLANT)
PRIOR_KEYS = tuple(m.name for m in METRICS if m.when == WITH_PRIOR)
LEVEL_METRIC_PREFIXES = level_prefixes()
TABLE_METRICS = tuple(m.name for m in METRICS if m.table)
HEADLINE_METRICS = tuple(m.name for m in METRICS if m.headline)
SHORT = {m.name: m.words for m in METRICS}


def readme_section() -> str:
    """The metric section of ``reports/README.md`` (a test keeps the file equal to it)."""
    lines = ["| metric | key | better | unit | recorded by | definition |", "|---|---|---|---|---|---|"]
    for m in METRICS:
        better = {"max": "higher", "min": "lower", None: "not ranked"}[m.better]
        if m.ranked and not m.comparable:
            better += " (within one error space)"
        recorded = ", ".join(m.experiments) + ("" if m.when == ALWAYS else f" ({m.when})")
        lines.append(f"| {m.label} | `{m.name}` | {better} | {m.unit or '-'} | {recorded} | {m.definition} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(readme_section())
