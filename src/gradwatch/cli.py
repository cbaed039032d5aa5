"""The ``gradwatch`` command line (typer + rich, from the ``cli`` extra). No logic of its own."""

from __future__ import annotations

import sys

_MISSING = "gradwatch: the command line needs the 'cli' extra: pip install 'gradwatch[cli]'"


def _app():  # type: ignore[no-untyped-def]
    import typer
    from rich.console import Console
    from rich.table import Table

    app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="Make the learning signal of a PyTorch model visible.")
    console = Console()

    @app.callback()
    def root() -> None:
        """gradwatch: where gradients vanish or explode, why, and what to change."""

    @app.command()
    def demo(
        depth: int = typer.Option(30, min=3, help="Layers in each network."),
        seed: int = typer.Option(0, help="Random seed."),
    ) -> None:
        """Per-layer gradients of a deep sigmoid MLP, a ReLU+He MLP and a residual stack."""
        from gradwatch._demo import depth_demo, sigmoid_bound

        rows = depth_demo(depth=depth, seed=seed)
        table = Table(title=f"Gradient norm reaching each Linear layer ({depth} layers, at init)")
        table.add_column("layer", justify="right")
        for r in rows:
            table.add_column(r.model, justify="right")
        norms = [[s.grad_norm for s in r.probe.layers if s.kind == "Linear"] for r in rows]
        picks = sorted({0, *range(4, depth, 5), depth - 1})
        for i in picks:
            table.add_row(str(i + 1), *(f"{n[i]:.2e}" if n[i] is not None else "absent"
                                        for n in norms))
        table.add_row("first / last", *(f"{r.first_over_last:.2e}" for r in rows), style="bold")
        table.add_row("per-layer factor", *(f"{r.per_layer:.3f}" for r in rows))
        table.add_row("weight gain sigma_w", *(f"{r.weight_gain:.3f}" for r in rows))
        console.print(table)
        bound = sigmoid_bound(depth)
        sig = rows[0]
        console.print(
            f"Chain rule: {depth} sigmoid derivatives, each <= 0.25, give at most 0.25^{depth} = "
            f"{bound}. With the weights' gain the per-layer factor is at most 0.25 x "
            f"{sig.weight_gain:.3f} = {0.25 * sig.weight_gain:.3f}; measured {sig.per_layer:.3f}."
        )

    return app


def main() -> None:
    """Entry point of the ``gradwatch`` script and ``python -m gradwatch``."""
    try:
        app = _app()
    except ImportError:
        print(_MISSING, file=sys.stderr)
        raise SystemExit(2) from None
    app()
