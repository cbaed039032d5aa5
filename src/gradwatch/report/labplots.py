"""Draw a lab's Plot specs (measured series) as matplotlib figures. Computes nothing."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gradwatch.labs.base import Plot

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "gradwatch: figures need the 'plot' extra: pip install 'gradwatch[plot]'"
        ) from None
    matplotlib.rcParams["svg.hashsalt"] = "gradwatch"  # deterministic SVG ids
    return plt


def plot_figure(plot: Plot) -> Figure:
    """A figure from a lab's :class:`Plot`: lines, points or a heatmap, axes autoscaled.

    Non-finite and (on log axes) non-positive points are left out, and the legend says how
    many were.

    Example:
        >>> fig = plot_figure(result.plots[0])            # doctest: +SKIP
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    if plot.kind == "heatmap":
        import numpy as np

        grid = np.array([s.y for s in plot.series], dtype=float)
        x = np.array(plot.series[0].x, dtype=float)
        img = ax.imshow(
            np.ma.masked_invalid(grid),
            aspect="auto",
            origin="lower",
            extent=(x.min(), x.max(), 0, len(plot.series)),
            cmap="RdBu_r",
        )
        ax.set_yticks(
            [i + 0.5 for i in range(len(plot.series))], [s.label for s in plot.series], fontsize=7
        )
        fig.colorbar(img, ax=ax, label=plot.ylabel)
        ax.set_xlabel(plot.xlabel)
    else:
        dropped = 0
        for s in plot.series:
            pts = [
                (x, y)
                for x, y in zip(s.x, s.y, strict=True)
                if math.isfinite(x)
                and math.isfinite(y)
                and (not plot.logy or y > 0)
                and (not plot.logx or x > 0)
            ]
            dropped += len(s.x) - len(pts)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            if plot.kind == "scatter":
                ax.scatter(xs, ys, label=s.label, s=14)
            else:
                ax.plot(xs, ys, marker="o", ms=3, lw=1.4, label=s.label)
        for label, y in plot.reference.items():
            if math.isfinite(y) and (not plot.logy or y > 0):
                ax.axhline(y, ls="--", lw=1, color="0.4", label=label)
        ax.set_xscale("log" if plot.logx else "linear")
        ax.set_yscale("log" if plot.logy else "linear")
        ax.set_xlabel(plot.xlabel)
        ax.set_ylabel(plot.ylabel)
        if dropped:
            ax.plot([], [], " ", label=f"({dropped} non-finite or non-positive points omitted)")
        if plot.series or plot.reference:
            ax.legend(fontsize=7)
        ax.grid(True, which="major", alpha=0.3)
    ax.set_title(plot.title, fontsize=10)
    return fig
