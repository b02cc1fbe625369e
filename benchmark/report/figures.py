"""Figures of the report (seaborn / matplotlib, Agg backend): a sweep's metrics against its main
factor, codebooks over data, code-usage curves, grouped bars for the open questions."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import math

import numpy as np
import pandas as pd

from benchmark.report.stats import ci_bounds, done_rows
from benchmark.report.tables import FACTOR_LABELS, Summary, as_object_strings, method_order, sort_key

ERROR_METRIC = "error_vs_kmeans"  # what the open-question figures compare

# One colour and one marker per method, defined here once and used by every figure. Methods of one
# family share a hue (Okabe-Ito, colour-blind safe; Okabe & Ito 2008), lighter / darker shades tell
# them apart, and every method has its own marker. The family is read from the registry's flags.
FAMILY_COLOURS = {
    "codebook gradient": "#0072B2",      # blue: vanilla-style codebooks moved by gradients
    "running average": "#E69F00",        # orange: EMA / online / k-means updates (not by gradient)
    "distribution matching": "#009E73",  # green: a codebook-vs-features distribution loss
    "fixed grid": "#CC79A7",             # purple: FSQ / LFQ / BSQ, no learnable codebook
    "multi-codebook": "#D55E00",         # vermillion: residual / grouped levels
    "normalised": "#56B4E9",             # sky blue: codes on the sphere
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")
SHADES = (0.0, 0.45, -0.35, 0.7, -0.6, 0.25, -0.15, 0.85)  # + lighter, - darker


def method_family(name: str) -> str:
    """The family of a registered method, from its flags (never from its name)."""
    import methods

    spec = methods.get(name)
    if spec.code_structure != "single":
        return "multi-codebook"
    if not spec.learnable_codebook:
        return "fixed grid"
    if spec.distribution_matching:
        return "distribution matching"
    if spec.error_space == "sphere":
        return "normalised"
    if not spec.trainable_by_gradient:
        return "running average"
    return "codebook gradient"


def _shade(colour: str, amount: float) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    rgb = np.asarray(to_rgb(colour))
    target = np.ones(3) if amount > 0 else np.zeros(3)
    return tuple(float(v) for v in rgb + (target - rgb) * abs(amount))


def method_styles() -> dict[str, tuple[tuple[float, float, float], str]]:
    """name -> (colour, marker) for every registered method, in the registry's display order."""
    import methods

    styles: dict[str, tuple[tuple[float, float, float], str]] = {}
    seen: dict[str, int] = {}
    for i, name in enumerate(methods.display_order()):
        family = method_family(name)
        shade = SHADES[seen.get(family, 0) % len(SHADES)]
        seen[family] = seen.get(family, 0) + 1
        styles[name] = (_shade(FAMILY_COLOURS[family], shade), MARKERS[i % len(MARKERS)])
    return styles


def method_palette(names: Sequence[str]) -> dict[str, Any]:
    """Colours of ``names`` (unknown names: grey), for seaborn's ``palette``."""
    styles = method_styles()
    return {n: styles[n][0] if n in styles else (0.55, 0.55, 0.55) for n in names}


def method_markers(names: Sequence[str]) -> dict[str, str]:
    styles = method_styles()
    return {n: styles[n][1] if n in styles else "o" for n in names}


def plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


DPI = 110  # every report figure's resolution


def save(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` (PNG at :data:`DPI`, trimmed to its contents) and free it."""
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt().close(fig)
    return path


def main_axis(summary: Summary, table: pd.DataFrame) -> str | None:
    """The numeric factor a sweep is about (the x axis of its figure)."""
    for column in summary.factors:
        if column == "method":
            continue
        if pd.to_numeric(table[column], errors="coerce").notna().all():
            return column
    return None


MIN_LINE_POINTS = 3  # a numeric axis with fewer settings is drawn as categories (dots), never joined by lines
MAX_LINE_METHODS = 8  # more methods than this: dot plots per setting, not overlapping lines
DOT_PANELS_PER_ROW = 4  # a dot figure of one setting wraps its metric panels into rows of this many


def line_axis(summary: Summary, table: pd.DataFrame) -> str | None:
    """The numeric factor a sweep's figure draws lines against, or None for dot plots: None when the
    axis has fewer than :data:`MIN_LINE_POINTS` settings or the sweep more than :data:`MAX_LINE_METHODS`
    methods."""
    x = main_axis(summary, table)
    if x is None or pd.to_numeric(table[x], errors="coerce").nunique() < MIN_LINE_POINTS:
        return None
    if "method" in table.columns and table["method"].nunique() > MAX_LINE_METHODS:
        return None
    return x


def figure_caption(summary: Summary, table: pd.DataFrame) -> str:
    """What a sweep's figure shows (the report's caption)."""
    axis = line_axis(summary, table)
    others = [FACTOR_LABELS.get(f, f) for f in summary.factors if f not in ("method", axis)]
    if axis:
        text = f"metrics against {FACTOR_LABELS.get(axis, axis)}, one line per method"
        if others:
            text += f", line style = {others[0]}"
    else:
        text = "one dot per method and metric" + (f", one row of panels per {' x '.join(others)}" if others else "")
        text += "; methods quantizing in another error space or with other bits per token are labelled so"
    return f"Figure: {text}; error bars = the table's t-interval; method colours and markers as in every figure."


def sweep_figure(table: pd.DataFrame, summary: Summary, path: Path, confidence: float,
                 title: str | None = None) -> Path | None:
    """One panel per ranked metric of a sweep: lines against its numeric axis (:func:`line_axis`), else
    dot plots with intervals, one row of panels per setting."""
    metrics = [m for m in summary.metrics if m.better is not None]
    if not metrics:
        return None
    data = done_rows(table).copy()
    if data.empty:
        return None
    x = line_axis(summary, table)
    if x is None:
        return _dot_figure(data, summary, metrics, path, confidence, title)
    # A categorical factor besides method (dataset): line styles, so that its levels are never pooled.
    others = [f for f in summary.factors if f not in ("method", x)]
    category = others[0] if others else None
    pyplot = plt()
    hue = "method" if "method" in data.columns else None
    if hue:
        data[hue] = data[hue].astype(str).astype(object)
    order = method_order(data[hue]) if hue else None
    fig, axes = _metric_panels(pyplot, len(metrics))
    levels = None
    if category is not None:
        data[category] = data[category].astype(str).astype(object)
        levels = sorted(data[category].unique(), key=sort_key)
    for ax, m in zip(axes, metrics):
        data[m.label] = pd.to_numeric(data[m.column], errors="coerce") * m.scale
        _line_panel(ax, data, x, m, hue, order, category, levels, confidence)
        if m.column == "utilization":
            ax.set_ylim(-3, 103)  # a share: the t-interval of 2 seeds can reach far past [0, 100]
        if ax.get_legend() is not None and ax is not axes[-1]:
            ax.get_legend().remove()
    if axes[-1].get_legend() is not None:
        import seaborn as sns

        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle(title or summary.name)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, path)


def method_label(name: str, bits: float | None = None, common_bits: float | None = None) -> str:
    """A method's axis label, naming its error space when it is not Euclidean and its bits per token
    when they differ from the sweep's usual ones."""
    import methods

    label = name
    if name in methods.available() and methods.get(name).error_space != "euclidean":
        label += f" [{methods.get(name).error_space}]"
    if bits is not None and common_bits is not None and math.isfinite(bits) and bits != common_bits:
        label += f" [{bits:g} bits]"
    return label


def _dot_figure(data: pd.DataFrame, summary: Summary, metrics: Sequence[Any], path: Path, confidence: float,
                title: str | None) -> Path:
    """Dot plots: methods down the y axis, one panel per metric (columns) and setting (rows)."""
    from benchmark.report.stats import t_interval

    pyplot = plt()
    data["method"] = data["method"].astype(str) if "method" in data.columns else "all"
    order = method_order(data["method"].unique())
    palette, markers = method_palette(order), method_markers(order)
    bits = (pd.to_numeric(data["bits_per_token"], errors="coerce").groupby(data["method"]).median()
            if "bits_per_token" in data.columns else pd.Series(dtype=float))
    common = float(bits.mode().iloc[0]) if len(bits.dropna()) else None
    labels = [method_label(m, float(bits.get(m, math.nan)) if len(bits) else None, common) for m in order]
    factors = [f for f in summary.factors if f != "method"]
    groups = (list(data.groupby(factors, sort=False)) if factors else [((), data)])
    groups.sort(key=lambda g: tuple(sort_key(v) for v in (g[0] if isinstance(g[0], tuple) else (g[0],))))
    # One setting: its panels wrap after DOT_PANELS_PER_ROW (8 metrics in one row are unreadable).
    wrap = DOT_PANELS_PER_ROW if len(groups) == 1 else len(metrics)
    rows_per_group = -(-len(metrics) // wrap)
    nrows, ncols = len(groups) * rows_per_group, min(wrap, len(metrics))
    fig, grid = pyplot.subplots(nrows, ncols, figsize=(2.9 * ncols + 1.2, (0.22 * len(order) + 0.9) * nrows),
                                squeeze=False, sharey=True)
    for extra in range(len(metrics), rows_per_group * ncols):  # the empty cells of a wrapped last row
        grid[-1][extra % ncols].set_visible(False)
    for g, (key, rows) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        setting = ", ".join(f"{FACTOR_LABELS.get(f, f)} {v}" for f, v in zip(factors, key))
        for index, m in enumerate(metrics):
            r, c = g * rows_per_group + index // ncols, index % ncols
            ax = grid[r][c]
            means = []
            lowest, highest = m.limits
            for i, name in enumerate(order):
                values = pd.to_numeric(rows.loc[rows["method"] == name, m.column], errors="coerce") * m.scale
                mean, half, _ = t_interval(values, confidence)
                if not math.isfinite(mean):
                    continue
                means.append(mean)
                # the seed interval, clipped to the values the metric can take (U never above 100%)
                xerr = ([[mean - max(mean - half, lowest)], [min(mean + half, highest) - mean]]
                        if math.isfinite(half) else None)
                ax.errorbar(mean, i, xerr=xerr, fmt=markers[name], color=palette[name], ms=5, capsize=2, lw=1)
            positive = [v for v in means if v > 0]
            if m.column != "utilization" and positive and len(positive) == len(means) \
                    and max(positive) / min(positive) > 20:
                ax.set_xscale("log")
            ax.set_xlabel(m.label + (" (own space)" if not m.comparable else ""))
            ax.grid(axis="x", alpha=0.3)
            if r == 0 or setting or rows_per_group > 1:
                ax.set_title(setting if setting else m.label, fontsize=9)
    grid[0][0].set_yticks(range(len(order)), labels)
    grid[0][0].invert_yaxis()
    fig.suptitle(title or summary.name)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, path)


def _metric_panels(pyplot: Any, count: int) -> tuple[Any, list[Any]]:
    """A figure with ``count`` panels, at most 4 in a row (3 a row beyond), the unused ones removed."""
    ncols = count if count <= 4 else 3
    nrows = math.ceil(count / ncols)
    fig, grid = pyplot.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.2 * nrows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[count:]:
        ax.remove()
    return fig, axes[:count]


def _line_panel(ax: Any, data: pd.DataFrame, x: str, m: Any, hue: str | None, order: Any, category: str | None,
                levels: list[Any] | None, confidence: float) -> None:
    """Metric ``m`` against the numeric factor ``x``: one line per method (styles per category)."""
    import seaborn as sns

    data[x] = pd.to_numeric(data[x])
    styles = {} if category else {"style": hue, "style_order": order, "markers": method_markers(order or []),
                                  "dashes": False}
    sns.lineplot(data=data, x=x, y=m.label, hue=hue, hue_order=order, palette=method_palette(order or []),
                 **({"marker": "o", "style": category, "style_order": levels} if category else styles),
                 errorbar=ci_bounds(confidence), err_style="bars", ax=ax)
    _x_scale(ax, x, sorted(data[x].unique()))
    ax.set_xlabel(FACTOR_LABELS.get(x, x))
    y = data[m.label].dropna()
    if m.column != "utilization" and len(y) and y.min() > 0 and y.max() / y.min() > 20:
        ax.set_yscale("log")


def _x_scale(ax: Any, x: str, values: list[Any]) -> None:
    """log2 for K and wide positive ranges, symlog for wide ranges with 0, integer ticks for integers."""
    positive = [v for v in values if v > 0]
    if x == "codebook_size" or (positive and len(positive) == len(values) and values[-1] / values[0] >= 16):
        ax.set_xscale("log", base=2)
    elif positive and len(positive) < len(values) and max(positive) / min(positive) >= 100:
        ax.set_xscale("symlog", linthresh=min(positive))
        ax.set_xlim(-0.3 * min(positive), max(positive) * 1.5)  # no empty negative half
    elif all(float(v).is_integer() for v in values):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def codebook_figure(codebooks: Mapping[str, np.ndarray], data: np.ndarray | None, path: Path) -> Path:
    """2-D scatter: the data (grey) and each method's code vectors, one panel per method."""
    pyplot = plt()
    names = method_order(codebooks)
    fig, axes = pyplot.subplots(1, len(names), figsize=(3.2 * len(names), 3.3), squeeze=False)
    for ax, name in zip(axes[0], names):
        if data is not None:
            ax.scatter(data[:, 0], data[:, 1], s=1, c="0.8", rasterized=True, label="data")
        code = np.asarray(codebooks[name])
        ax.scatter(code[:, 0], code[:, 1], s=4, c="C3", label="codes")
        ax.set_title(name)
        ax.set_aspect("equal")
    axes[0][0].legend(loc="lower left", fontsize=7, markerscale=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, path)


def usage_figure(usage: Mapping[str, np.ndarray], path: Path, title: str) -> Path:
    """Code-usage histograms: codes sorted by use, share of features per code (log y)."""
    import seaborn as sns

    pyplot = plt()
    frames = []
    for name, counts in usage.items():
        counts = np.sort(np.asarray(counts, dtype=float))[::-1]
        share = counts / max(counts.sum(), 1.0)
        frames.append(pd.DataFrame({"rank": np.arange(1, len(counts) + 1), "share": share,
                                    "method": np.array([name] * len(counts), dtype=object)}))
    data = pd.concat(frames, ignore_index=True)
    data["method"] = data["method"].astype(object)
    fig, ax = pyplot.subplots(figsize=(5.5, 3.4))
    sns.lineplot(data=data[data["share"] > 0], x="rank", y="share", hue="method",
                 hue_order=method_order(usage), palette=method_palette(method_order(usage)), drawstyle="steps-post",
                 ax=ax)
    ax.set_yscale("log")
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("share of features")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, path)


def grouped_figure(table: pd.DataFrame, x: str, hue: str, path: Path, confidence: float, title: str,
                   xlabel: str, lines: bool = False) -> Path | None:
    """E / k-means of the finished trials against ``x``, one bar (or line) per ``hue`` value;
    error bars = the tables' t-interval; dashed line at the k-means reference 1.0. None (no figure)
    when no finished trial has a value (e.g. every trial of the current spec is not run yet)."""
    import seaborn as sns

    data = done_rows(table).copy()
    if ERROR_METRIC not in data.columns:
        return None
    data[ERROR_METRIC] = pd.to_numeric(data[ERROR_METRIC], errors="coerce")
    data = data[data[ERROR_METRIC].notna()]
    if data.empty:
        return None
    pyplot = plt()
    data[hue] = data[hue].astype(str).astype(object)
    order = sorted(data[hue].unique(), key=sort_key)
    colours = {"palette": method_palette(order)} if hue == "method" else {}
    fig, ax = pyplot.subplots(figsize=(6.4, 3.4))
    if lines:
        data[x] = pd.to_numeric(data[x])
        sns.lineplot(data=data, x=x, y=ERROR_METRIC, hue=hue, hue_order=order, marker="o", **colours,
                     errorbar=ci_bounds(confidence), err_style="bars", ax=ax)
        ax.set_xticks(sorted(data[x].unique()))
    else:
        data[x] = data[x].astype(str).astype(object)
        sns.barplot(data=data, x=x, y=ERROR_METRIC, hue=hue, hue_order=order, order=sorted(data[x].unique()), **colours,
                    errorbar=ci_bounds(confidence), ax=ax)
        low = float(data[ERROR_METRIC].min())
        ax.set_ylim(max(0.0, min(0.9, low - 0.05)), None)
    ax.axhline(1.0, color="0.4", linestyle="--", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("E / k-means")
    ax.set_title(title)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, path)


def density_map_figure(findings: Sequence[Any], path: Path) -> Path | None:
    """Heat map of mean E / k-means over (c, d), one panel per K (log colour scale, values printed);
    the best c of each column boxed; markers at d/(d+2) (v), (d+2)/d (^) and the centroid shrinkage
    prediction (o), placed on the c axis by log-linear interpolation between grid rows."""
    from matplotlib.colors import LogNorm

    if not findings:
        return None
    sizes = sorted({f.codebook_size for f in findings})
    dims = sorted({f.dim for f in findings})
    scales = sorted({c for f in findings for c in f.cells})
    values = [e.mean for f in findings for e in f.cells.values() if math.isfinite(e.mean) and e.mean > 0]
    if not values:
        return None
    norm = LogNorm(vmin=min(values), vmax=max(values))
    pyplot = plt()
    fig, axes = pyplot.subplots(1, len(sizes), figsize=(0.9 * len(dims) * len(sizes) + 2.2, 0.42 * len(scales) + 1.6),
                                squeeze=False, sharey=True)
    image = None
    for ax, size in zip(axes[0], sizes):
        here = {f.dim: f for f in findings if f.codebook_size == size}
        image = _density_panel(ax, here, dims, scales, norm)
        ax.set_title(f"K = {size}")
    axes[0][0].set_yticks(range(len(scales)), [f"{c:g}" for c in scales])
    axes[0][0].set_ylabel("target covariance scale c")
    fig.colorbar(image, ax=axes[0].tolist(), label="E / k-means")
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, path)


def _density_panel(ax: Any, here: Mapping[int, Any], dims: list[int], scales: list[float],
                   norm: Any) -> Any:
    """One K's map: mean E / k-means over (c, d) with values printed, the best c of each d boxed and
    the reference scales marked; returns the image (for the colour bar)."""
    from matplotlib.patches import Rectangle

    log_grid = np.log(scales)

    def row_of(c: float) -> float:
        return float(np.interp(math.log(c), log_grid, np.arange(len(scales)))) if c > 0 else math.nan

    grid = np.full((len(scales), len(dims)), np.nan)
    for j, dim in enumerate(dims):
        for c, e in (here[dim].cells if dim in here else {}).items():
            grid[scales.index(c), j] = e.mean
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis_r", norm=norm)
    for (i, j), v in np.ndenumerate(grid):
        if math.isfinite(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=6.5,
                    color="white" if norm(v) > 0.6 else "black")
    for j, dim in enumerate(dims):
        f = here.get(dim)
        if f is None:
            continue
        ax.add_patch(Rectangle((j - 0.5, scales.index(f.best) - 0.5), 1, 1, fill=False, color="red", lw=1.5))
        for key, marker in (("paper", "v"), ("gersho", "^"), ("shrinkage", "o")):
            c = f.references[key]
            if math.isfinite(c) and scales[0] <= c <= scales[-1]:
                ax.plot(j + 0.38, row_of(c), marker=marker, color="red", ms=4, ls="none")
    ax.set_xticks(range(len(dims)), [str(d) for d in dims])
    ax.set_xlabel("d")
    return image


def cd_figure(mean_ranks: pd.Series, p_values: pd.DataFrame, path: Path, alpha: float) -> Path:
    """Critical-difference diagram (Demsar 2006): mean ranks on one axis, bars join methods whose
    Nemenyi p-value is >= alpha (``scikit_posthocs.critical_difference_diagram``)."""
    import scikit_posthocs

    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(7.0, 0.4 * len(mean_ranks) + 1.4))
    scikit_posthocs.critical_difference_diagram(
        mean_ranks, p_values, ax=ax, alpha=alpha, color_palette=method_palette(list(mean_ranks.index)))
    for line in ax.lines:  # a crossbar runs through a set of methods in hash order, which changes per process
        x, y = line.get_data()
        if len(y) > 1 and len(set(y)) == 1:
            line.set_data(sorted(x), y)
    ax.set_title("mean rank (1 = best)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, path)


def profile_figure(taus: np.ndarray, profiles: Mapping[str, np.ndarray], path: Path) -> Path:
    """Performance profiles: share of runs with score > tau per method, stratified-bootstrap bands."""
    pyplot = plt()
    names = method_order(profiles)
    palette, markers = method_palette(names), method_markers(names)
    fig, ax = pyplot.subplots(figsize=(6.0, 3.6))
    for name in names:
        share, low, high = profiles[name]
        ax.plot(taus, share, color=palette[name], label=name, marker=markers[name], markevery=max(len(taus) // 8, 1),
                ms=4, lw=1.3)
        ax.fill_between(taus, low, high, color=palette[name], alpha=0.15, lw=0)
    ax.set_xlabel("tau (score = k-means E / E; 1 = the k-means reference)")
    ax.set_ylabel("share of runs with score > tau")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, path)
