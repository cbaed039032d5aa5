"""The mean-field phase diagram: chi1 over (sigma_w, sigma_b) with the edge of chaos."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradwatch.core.meanfield import PhaseDiagram
from gradwatch.report.figures import new_figure, style

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def phase_figure(pd: PhaseDiagram) -> Figure:
    """log10 chi1 over the grid, the critical line chi1 = 1 drawn on top.

    Example:
        >>> phase_figure(phase_diagram("tanh", torch.linspace(0.5, 3, 40),
        ...                            torch.linspace(0, 1, 20)))           # doctest: +SKIP
    """
    with style():
        fig, axes = new_figure(4.2)
        _draw(axes[0, 0], fig, pd)
    return fig


def _draw(ax: Axes, fig: Figure, pd: PhaseDiagram) -> None:
    sw, sb = pd.sigma_w.numpy(), pd.sigma_b.numpy()
    img = ax.pcolormesh(
        sw, sb, pd.chi1.log10().numpy(), cmap="RdBu_r", vmin=-1, vmax=1, shading="nearest"
    )
    fig.colorbar(img, ax=ax, label="log10 chi1  (<0 ordered, >0 chaotic)")
    crit = pd.critical_sigma_w.numpy()
    ax.plot(crit, sb, "k-", lw=2, label="edge of chaos (chi1 = 1)")
    ax.set_xlabel("sigma_w (weight std x sqrt(fan_in))")
    ax.set_ylabel("sigma_b (bias std)")
    ax.set_title(f"{pd.act}: mean-field phase diagram")
    ax.legend(loc="upper left")
