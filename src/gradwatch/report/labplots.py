"""Draw a lab's Plot specs (measured series) as matplotlib figures. Computes nothing."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gradwatch.labs.base import Plot
from gradwatch.report.figures import new_figure, style

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def plot_figure(plot: Plot) -> Figure:
    """A figure from a lab's :class:`Plot`: lines, points or a heatmap, axes autoscaled.

    Non-finite and (on log axes) non-positive points are left out, and the legend says how
    many were.

    Example:
        >>> fig = plot_figure(result.plots[0])            # doctest: +SKIP
    """
    with style():
        fig, axes = new_figure(4.2)
        _draw(axes[0, 0], fig, plot)
    return fig


def _draw(ax: Axes, fig: Figure, plot: Plot) -> None:
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
    ax.set_title(plot.title)
