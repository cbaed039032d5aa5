"""Figures of a Watch run: one function per figure, each drawing a RunHistory as it is.

Nothing here computes a statistic. The only transformations are for display: choosing which
rows to draw, log10 for a colour scale, and placing values a log axis cannot show (0, inf) at
its edges with a legend entry, so nothing is dropped silently. matplotlib is imported lazily
(extra ``plot``) and figures are built on the Agg canvas, never through pyplot.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec

import numpy as np

from gradwatch.watch.history import RunHistory

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "NamedFigure",
    "activation_shares",
    "grad_flow",
    "grad_norms",
    "recurrent_lags",
    "run_figures",
    "update_ratios",
]

P = ParamSpec("P")

PLOT_EXTRA = "gradwatch: figures need the 'plot' extra: pip install 'gradwatch[plot]'"

# One style for every figure (and for saving them: svg.* keys are read at save time).
STYLE: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],  # DejaVu ships with matplotlib
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "0.9",
    "grid.linewidth": 0.6,
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "svg.fonttype": "none",  # real <text> elements: searchable, escaped by matplotlib's writer
    "svg.hashsalt": "gradwatch",  # deterministic ids: the same run gives the same bytes
    "svg.image_inline": True,
}
WIDTH = 8.0  # inches
NAME_MAX = 40  # longer names are shortened in tick and legend labels (middle elided)
LEGEND_MAX = 10  # more series than this get a colour bar keyed by position instead of a legend
ABSENT_COLOR = "#d9d9d9"  # no gradient reached the layer
ZERO_COLOR = "#000000"  # exactly 0 (underflow): below any log scale
NONFINITE_COLOR = "#e4007c"  # inf or a NaN/Inf entry in the gradient
REFERENCE_UPDATE_RATIO = 1e-3


@dataclass(frozen=True)
class NamedFigure:
    """A figure with the id it is saved under, its title and a one-line caption."""

    id: str
    title: str
    caption: str
    figure: Figure


def _mpl() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(PLOT_EXTRA) from None
    return matplotlib


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The rc settings every gradwatch figure is drawn and saved under."""
    with _mpl().rc_context(STYLE):
        yield


def new_figure(height: float, ncols: int = 1, nrows: int = 1) -> tuple[Figure, Any]:
    _mpl()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _check(history: Any) -> RunHistory:
    if not isinstance(history, RunHistory):
        raise TypeError(
            f"history: expected a RunHistory (Watch.history or gradwatch.load_run), got "
            f"{type(history).__name__}"
        )
    return history


def _plain(text: str) -> str:
    """A model's name as matplotlib text: '$' would start mathtext (and can fail to parse)."""
    return text.replace("$", r"\$")


def _labels(names: Sequence[str]) -> list[str]:
    """Names as tick or legend labels. When some are longer than NAME_MAX, a dotted prefix
    shared by all becomes '…', and what is still too long keeps its head and tail."""
    parts = [n.split(".") for n in names]
    k = 0  # leading dotted components shared by all names (never a whole name)
    long = any(len(n) > NAME_MAX for n in names)
    while (
        long
        and len(parts) > 1
        and all(len(p) > k + 1 for p in parts)
        and len({p[k] for p in parts}) == 1
    ):
        k += 1
    cut = sum(len(c) + 1 for c in parts[0][:k]) if parts else 0
    out = []
    for name in names:
        if cut:
            name = "…" + name[cut:]
        if len(name) > NAME_MAX:
            head = NAME_MAX // 3
            name = name[:head] + "…" + name[-(NAME_MAX - head - 1) :]
        out.append(_plain(name))
    return out


def _table(history: RunHistory, stat: str) -> np.ndarray | None:
    if stat not in history.layer_stats and stat not in history.activation_stats:
        return None
    out: np.ndarray = history[stat].detach().cpu().double().numpy()
    return out


def _flagged(history: RunHistory) -> np.ndarray:
    """(S, L) True where the Watch counted NaN/Inf entries in the layer's gradient."""
    bad = _table(history, "nonfinite")
    if bad is None:
        return np.zeros((len(history), len(history.layers)), dtype=bool)
    out: np.ndarray = np.nan_to_num(bad, nan=0.0) > 0
    return out


def _colors(n: int) -> list[Any]:
    cmap = _mpl().colormaps["viridis"]
    return [cmap(0.9 * i / max(n - 1, 1)) for i in range(n)]


def _key(fig: Figure, ax: Axes, labels: Sequence[str], what: str, bar: bool = True) -> None:
    """Legend for few series; for many, a colour bar keyed by position with some names.

    Series beyond LEGEND_MAX carry labels starting with "_", which legends leave out, so the
    legend then holds only the reference line and the edge markers.
    """
    mpl = _mpl()
    n = len(labels)
    if n > LEGEND_MAX and bar:
        cmap = mpl.colors.ListedColormap(_colors(n))
        sm = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(-0.5, n - 0.5), cmap=cmap)
        cbar = fig.colorbar(sm, ax=ax, pad=0.01)
        ticks = sorted({round(t) for t in np.linspace(0, n - 1, min(n, 8))})
        shown = _labels(labels)
        cbar.set_ticks(ticks, labels=[shown[t] for t in ticks])
        cbar.set_label(what)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", frameon=False)


def _series(
    ax: Axes,
    x: np.ndarray,
    y: np.ndarray,
    *,
    color: Any,
    label: str,
    log: bool,
    flagged: np.ndarray | None = None,
    marker: str | None = None,
) -> set[str]:
    """Draw y against x: NaN is a gap; values an axis cannot show go to its edges.

    On a log axis, 0 is drawn as a down-triangle on the bottom edge; +-inf and points the
    Watch flagged as non-finite as an up-triangle on the top edge. Returns which of
    {"zero", "nonfinite"} occurred, for the legend.
    """
    bad = ~np.isfinite(y) & ~np.isnan(y)
    if flagged is not None:
        bad |= flagged
    zero = (y <= 0) & ~bad if log else np.zeros_like(bad)
    shown = np.where(bad | zero, np.nan, y)  # (N,)
    ax.plot(x, shown, color=color, label=label, marker=marker, ms=3, lw=1.2)
    edge = ax.get_xaxis_transform()  # x in data, y in axes coordinates
    seen = set()
    if zero.any():
        ax.plot(
            x[zero],
            np.zeros(int(zero.sum())),
            "v",
            color=color,
            ms=5,
            transform=edge,
            clip_on=False,
        )
        seen.add("zero")
    if bad.any():
        ax.plot(
            x[bad], np.ones(int(bad.sum())), "^", color=color, ms=5, transform=edge, clip_on=False
        )
        seen.add("nonfinite")
    return seen


def _edge_proxies(ax: Axes, seen: set[str]) -> None:
    from matplotlib.lines import Line2D

    if "zero" in seen:
        ax.add_line(
            Line2D([], [], marker="v", ls="none", color="0.3", label="exactly 0 (bottom edge)")
        )
    if "nonfinite" in seen:
        ax.add_line(
            Line2D(
                [], [], marker="^", ls="none", color=NONFINITE_COLOR, label="non-finite (top edge)"
            )
        )


def _styled(draw: Callable[P, Figure | None]) -> Callable[P, Figure | None]:
    """Draw under the house style, whoever calls the figure function."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Figure | None:
        with style():
            return draw(*args, **kwargs)

    return wrapper


def _step_ticks(ax: Axes, steps: np.ndarray) -> None:
    """Integer step ticks; a single step gets its own tick and room either side."""
    if len(np.unique(steps)) == 1:
        ax.set_xticks([float(steps[0])])
        ax.set_xlim(float(steps[0]) - 1, float(steps[0]) + 1)
    else:
        ax.xaxis.set_major_locator(_mpl().ticker.MaxNLocator(nbins="auto", integer=True))


def _name_ticks(axis: Any, names: Sequence[str], limit: int) -> None:
    """Label positions 0..n-1 with names, at most ``limit`` of them (evenly spread)."""
    n = len(names)
    every = max(1, math.ceil(n / limit))
    pos = list(range(0, n, every))
    shown = _labels(names)
    axis.set_ticks(pos, labels=[shown[i] for i in pos])
    axis.set_tick_params(which="minor", length=0)


@_styled
def grad_flow(history: RunHistory) -> Figure | None:
    """Heatmap of log10 gradient norms: layers (rows, model order) x recorded steps.

    Grey cells got no gradient (absent layer), black ones exactly 0 (underflow below any log
    scale), magenta ones a non-finite gradient. The colour range is the range of the data.

    Args:
        history: a :class:`~gradwatch.RunHistory` (``watch.history`` or ``load_run(path)``).

    Returns:
        A matplotlib Figure, or None when the run recorded no step.

    Example:
        >>> fig = grad_flow(watch.history); fig.savefig("flow.svg")   # doctest: +SKIP

    Paper: Bengio, Simard & Frasconi 1994 (the per-layer picture of a vanishing gradient).
    """
    h = _check(history)
    g = _table(h, "grad_norm")
    if g is None or len(h) == 0 or not h.layers:
        return None
    mpl = _mpl()
    steps = h.steps.detach().cpu().numpy().astype(np.float64)  # (S,)
    flagged = _flagged(h).T  # (L, S)
    gl = g.T  # (L, S)
    positive = np.isfinite(gl) & (gl > 0) & ~flagged
    zero = (gl == 0) & ~flagged
    nonfinite = flagged | np.isinf(gl)
    absent = ~(positive | zero | nonfinite)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(positive, np.log10(np.where(positive, gl, 1.0)), np.nan)  # (L, S)
    if positive.any():
        lo, hi = float(np.nanmin(logs)), float(np.nanmax(logs))
    else:
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    shown = logs.copy()
    shown[zero] = lo - 1.0  # drawn in the "under" colour
    shown[nonfinite] = hi + 1.0  # drawn in the "over" colour
    cmap = mpl.colormaps["viridis"].with_extremes(
        bad=ABSENT_COLOR, under=ZERO_COLOR, over=NONFINITE_COLOR
    )
    # Cell edges halfway between recorded steps, so uneven strides stay honest.
    if len(steps) > 1:
        mid = (steps[1:] + steps[:-1]) / 2
        edges = np.concatenate([[2 * steps[0] - mid[0]], mid, [2 * steps[-1] - mid[-1]]])
    else:
        edges = np.array([steps[0] - 0.5, steps[0] + 0.5])
    n_layers = len(h.layers)
    fig, axes = new_figure(min(max(3.0, 0.16 * n_layers + 1.6), 14.0))
    ax = axes[0, 0]
    mesh = ax.pcolormesh(
        edges,
        np.arange(n_layers + 1) - 0.5,
        np.ma.masked_invalid(shown),
        cmap=cmap,
        norm=mpl.colors.Normalize(lo, hi),
        rasterized=True,
    )
    ax.set_ylim(n_layers - 0.5, -0.5)  # first layer on top
    ax.grid(False)
    _name_ticks(ax.yaxis, h.layers, limit=40)
    _step_ticks(ax, steps)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("recorded step")
    ax.set_ylabel("layer (model order)")
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max"}.get(
        (bool(zero.any()), bool(nonfinite.any())), "both"
    )
    bar = fig.colorbar(mesh, ax=ax, extend=extend, pad=0.01)
    bar.set_label("log10 ||grad||")
    from matplotlib.patches import Patch

    keys = [
        (absent, ABSENT_COLOR, "no gradient"),
        (zero, ZERO_COLOR, "exactly 0"),
        (nonfinite, NONFINITE_COLOR, "non-finite"),
    ]
    handles = [Patch(color=c, label=lab) for mask, c, lab in keys if mask.any()]
    if handles:
        fig.legend(handles=handles, loc="outside lower left", ncols=len(handles), frameon=False)
    title = "Gradient flow: log10 ||grad|| per layer and step"
    if nonfinite.any():
        title += " (non-finite cells in magenta)"
    ax.set_title(title)
    return fig


@_styled
def grad_norms(history: RunHistory, steps: Sequence[int] | None = None) -> Figure | None:
    """Per-layer gradient norms at a few recorded steps, on a log axis, layers in model order.

    The honest version of the forum's ``plot_grad_flow``: the norm itself on a log scale (a
    linear axis clipped at 0.02 hides vanishing), absent layers as gaps, zeros on the bottom
    edge and non-finite values on the top edge, never as 0.

    Args:
        history: a :class:`~gradwatch.RunHistory`.
        steps: recorded step numbers to draw; default the first, middle and last recorded.

    Returns:
        A matplotlib Figure, or None when the run recorded no step.

    Raises:
        ValueError: a step in ``steps`` was not recorded.

    Example:
        >>> fig = grad_norms(watch.history, steps=[1, 100])   # doctest: +SKIP

    Paper: Glorot & Bengio 2010 (per-layer gradient norms at initialisation and in training).
    """
    h = _check(history)
    g = _table(h, "grad_norm")
    if g is None or len(h) == 0 or not h.layers:
        return None
    recorded = h.steps.tolist()
    if steps is None:
        rows = sorted({0, (len(recorded) - 1) // 2, len(recorded) - 1})
    else:
        if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
            raise TypeError(f"steps: expected a non-empty sequence of ints, got {steps!r}")
        rows = []
        for s in steps:
            if isinstance(s, bool) or not isinstance(s, int):
                raise TypeError(f"steps: expected ints, got {type(s).__name__} {s!r}")
            if s not in recorded:
                raise ValueError(
                    f"steps: step {s} was not recorded; recorded steps run {recorded[0]}.."
                    f"{recorded[-1]} ({len(recorded)} in all), see history.steps"
                )
            rows.append(recorded.index(s))
        rows = sorted(set(rows))
    flagged = _flagged(h)  # (S, L)
    n_layers = len(h.layers)
    longest = max(len(n) for n in _labels(h.layers))
    fig, axes = new_figure(3.2 + 0.07 * longest)  # room for the rotated layer names
    ax = axes[0, 0]
    ax.set_yscale("log")
    x = np.arange(n_layers, dtype=np.float64)
    seen: set[str] = set()
    for r, color in zip(rows, _colors(len(rows)), strict=True):
        seen |= _series(
            ax,
            x,
            g[r],
            color=color,
            label=f"step {recorded[r]}",
            log=True,
            flagged=flagged[r],
            marker="o",
        )
    _edge_proxies(ax, seen)
    _name_ticks(ax.xaxis, h.layers, limit=40)
    ax.tick_params(axis="x", labelrotation=90)
    ax.set_xlabel("layer (model order)")
    ax.set_ylabel("||grad|| (L2 norm)")
    title = "Gradient norm per layer"
    if "nonfinite" in seen:
        title += " (non-finite values present)"
    ax.set_title(title)
    _key(fig, ax, [f"step {recorded[r]}" for r in rows], "recorded step")
    return fig


@_styled
def update_ratios(history: RunHistory) -> Figure | None:
    """Update/weight ratio ||dW||/||W|| of every layer over time, on a log axis.

    Steps where the ratio was not sampled (NaN rows, see ``detail_every``) are skipped; a
    dashed line marks the usual ~1e-3.

    Args:
        history: a :class:`~gradwatch.RunHistory`.

    Returns:
        A matplotlib Figure, or None when the run holds no update ratio.

    Example:
        >>> fig = update_ratios(watch.history)   # doctest: +SKIP

    Paper: Karpathy, CS231n notes (update/weight ratio ~1e-3 as a learning-rate check).
    """
    h = _check(history)
    r = _table(h, "update_ratio")
    if r is None or len(h) == 0 or not h.layers:
        return None
    rows = (~np.isnan(r)).any(axis=1)  # (S,) steps where a ratio was sampled
    if not rows.any():
        return None
    steps = h.steps.detach().cpu().numpy().astype(np.float64)[rows]
    r = r[rows]  # (S', L)
    fig, axes = new_figure(4.0)
    ax = axes[0, 0]
    ax.set_yscale("log")
    seen: set[str] = set()
    labels = _series_labels(h.layers)
    for j, color in enumerate(_colors(len(h.layers))):
        if np.isnan(r[:, j]).all():
            continue
        seen |= _series(
            ax,
            steps,
            r[:, j],
            color=color,
            label=labels[j],
            log=True,
            marker="." if len(steps) < 50 else None,
        )
    ax.axhline(REFERENCE_UPDATE_RATIO, ls="--", color="0.35", lw=1, label="typical ~1e-3")
    _edge_proxies(ax, seen)
    _step_ticks(ax, steps)
    ax.set_xlabel("recorded step")
    ax.set_ylabel("||dW|| / ||W||")
    title = "Update/weight ratio per layer"
    if "nonfinite" in seen:
        title += " (non-finite values present)"
    ax.set_title(title)
    _key(fig, ax, h.layers, "layer (model order)")
    return fig


def _series_labels(names: Sequence[str]) -> list[str]:
    # Many series get a colour bar; labels starting with "_" stay out of the legend.
    if len(names) > LEGEND_MAX:
        return [f"_series{j}" for j in range(len(names))]
    return _labels(names)


_MEANING = {
    "saturated": "phi' under 1% of its maximum",
    "inactive": "ReLU-like, x <= 0 (about half in a healthy net)",
    "dead": "ReLU-like, inactive for the whole batch",
}


@_styled
def activation_shares(history: RunHistory) -> Figure | None:
    """Saturated, inactive and dead shares of every activation module over time (0..100%).

    Saturated: phi' under 1% of its maximum (sigmoid, tanh, GELU, ...; not defined for ReLU).
    Inactive: ReLU-like units on their flat side (about half in a healthy net). Dead: ReLU-like
    units inactive for the whole batch. Only the panels whose statistic applies to some
    module are drawn.

    Args:
        history: a :class:`~gradwatch.RunHistory`.

    Returns:
        A matplotlib Figure, or None when the run watched no activation module.

    Example:
        >>> fig = activation_shares(watch.history)   # doctest: +SKIP

    Paper: Glorot & Bengio 2010 (saturation); Lu et al. 2019 (dying ReLU).
    """
    h = _check(history)
    if len(h) == 0 or not h.activations:
        return None
    # (statistic, its (S, A) table): only those that apply to some module and were measured
    panels = [
        (what, t)
        for what in ("saturated", "inactive", "dead")
        if (t := _table(h, what)) is not None and not np.isnan(t).all()
    ]
    if not panels:
        return None
    rows = np.zeros(len(h), dtype=bool)  # (S,) sampled steps
    for _, t in panels:
        rows |= (~np.isnan(t)).any(axis=1)
    mpl = _mpl()
    steps = h.steps.detach().cpu().numpy().astype(np.float64)[rows]
    fig, axes = new_figure(2.5 * len(panels) + 0.6, nrows=len(panels))
    for ax in axes[1:, 0]:
        ax.sharex(axes[0, 0])
    names = [f"{n} ({k})" for n, k in zip(h.activations, h.activation_kinds, strict=True)]
    colors = _colors(len(names))
    labels = _series_labels(names)
    any_bad = False
    for ax, (what, full) in zip(axes[:, 0], panels, strict=True):
        table = full[rows]
        seen: set[str] = set()
        for j, color in enumerate(colors):
            if np.isnan(table[:, j]).all():
                continue  # the statistic does not apply to this module
            seen |= _series(
                ax,
                steps,
                table[:, j],
                color=color,
                label=labels[j],
                log=False,
                marker="." if len(steps) < 50 else None,
            )
        _edge_proxies(ax, seen)
        any_bad |= "nonfinite" in seen
        ax.set_ylim(-0.03, 1.03)
        ax.yaxis.set_major_formatter(mpl.ticker.PercentFormatter(xmax=1))
        _step_ticks(ax, steps)
        ax.set_ylabel(f"{what} share")
        ax.set_title(f"{what.capitalize()} units: {_MEANING[what]}", fontsize="medium")
        _key(fig, ax, names, "activation module (model order)", bar=what == panels[-1][0])
        if ax.get_legend() is not None:  # beside the axes, never over the curves
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                      fontsize="small")
    axes[-1, 0].set_xlabel("recorded step")
    fig.suptitle(
        "Activation saturation, inactive and dead units"
        + (" (non-finite values present)" if any_bad else "")
    )
    return fig


@_styled
def recurrent_lags(history: RunHistory) -> Figure | None:
    """Gradient against lag for each recurrent module, one curve per sampled step, log axis.

    Lag counts the steps back from the last state; a straight falling line is a per-step
    factor below one (vanishing through time), a rising one a factor above one.

    Args:
        history: a :class:`~gradwatch.RunHistory` with ``recurrent`` samples
            (``Watch(..., recurrent_every=N)``).

    Returns:
        A matplotlib Figure, or None when the run holds no recurrent sample.

    Example:
        >>> fig = recurrent_lags(watch.history)   # doctest: +SKIP

    Paper: Bengio, Simard & Frasconi 1994; Pascanu, Mikolov & Bengio 2013.
    """
    h = _check(history)
    modules = list(dict.fromkeys(s.module for s in h.recurrent))
    if not modules:
        return None
    ncols = min(2, len(modules))
    nrows = math.ceil(len(modules) / ncols)
    fig, axes = new_figure(3.6 * nrows, ncols=ncols, nrows=nrows)
    any_bad = False
    for i, ax in enumerate(axes.flat):
        if i >= len(modules):
            ax.set_visible(False)
            continue
        samples = h.profiles(modules[i])
        ax.set_yscale("log")
        seen: set[str] = set()
        labels = []
        for s, color in zip(samples, _colors(len(samples)), strict=True):
            p = s.profile
            lag = p.lag.detach().cpu().numpy().astype(np.float64)  # (T,)
            g = p.grad_norm.detach().cpu().double().numpy()  # (T,)
            order = np.argsort(lag)
            label = f"step {s.step}"
            if math.isfinite(p.decay_factor):
                label += f": x{p.decay_factor:.3g}/step"
            labels.append(label)
            seen |= _series(
                ax,
                lag[order],
                g[order],
                color=color,
                label=label if len(samples) <= LEGEND_MAX else f"_series{s.step}",
                log=True,
            )
        _edge_proxies(ax, seen)
        any_bad |= "nonfinite" in seen
        ax.xaxis.set_major_locator(_mpl().ticker.MaxNLocator(nbins="auto", integer=True))
        ax.set_xlabel("lag (steps back from the last)")
        ax.set_ylabel("||dL/dh_t||")
        ax.set_title(_plain(f"Gradient through time: {modules[i]}"))
        _key(fig, ax, labels, "sampled step")
    if any_bad:
        fig.suptitle("Gradient against lag (non-finite values present)")
    return fig


_FIGURES = (
    (
        "grad-flow",
        "Gradient flow",
        grad_flow,
        "log10 of each layer's gradient norm (rows, model order) at each recorded step; grey: no "
        "gradient, black: exactly 0, magenta: non-finite.",
    ),
    (
        "grad-norms",
        "Gradient norm per layer",
        grad_norms,
        "Each layer's gradient norm at the first, middle and last recorded step, log scale; "
        "absent layers are gaps.",
    ),
    (
        "update-ratios",
        "Update/weight ratios",
        update_ratios,
        "||dW||/||W|| of each layer at the steps where it was sampled, log scale; dashed: the "
        "usual ~1e-3.",
    ),
    (
        "activations",
        "Saturation, inactive and dead units",
        activation_shares,
        "Share of saturated units (phi' under 1% of its maximum: sigmoid, tanh, GELU, ...), and "
        "of ReLU-like units that are inactive (x <= 0; about half in a healthy net) or dead "
        "(inactive for the whole batch) in each activation module.",
    ),
    (
        "recurrent",
        "Gradient through time",
        recurrent_lags,
        "||dL/dh_t|| against the lag back from the last step, one curve per sampled step, log "
        "scale.",
    ),
)


def run_figures(history: RunHistory) -> list[NamedFigure]:
    """Every figure that applies to a run, in reading order; figures without data are left out.

    Args:
        history: a :class:`~gradwatch.RunHistory` (``watch.history`` or ``load_run(path)``).

    Returns:
        ``NamedFigure(id, title, caption, figure)`` for each of grad-flow, grad-norms,
        update-ratios, activations and recurrent that the run has data for.

    Raises:
        ImportError: matplotlib is missing (install the ``plot`` extra).

    Example:
        >>> for f in run_figures(watch.history):            # doctest: +SKIP
        ...     f.figure.savefig(f"{f.id}.png")

    Paper: none of its own; see each figure's function.
    """
    h = _check(history)
    out = []
    with style():
        for fid, title, draw, caption in _FIGURES:
            fig = draw(h)
            if fig is not None:
                out.append(NamedFigure(fid, title, caption, fig))
    return out
