"""The ``gradwatch`` command line (typer + rich, from the ``cli`` extra). No logic of its own:
each command parses its options, calls the library and prints what came back."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

_MISSING = "gradwatch: the command line needs the 'cli' extra: pip install 'gradwatch[cli]'"
FORCE = "Overwrite files that gradwatch did not write (by default they are refused)."


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise ValueError(f"--input-shape: expected integers like 32,3,32,32, got {text!r}") \
            from None
    if len(dims) < 2 or min(dims) < 1:
        raise ValueError(f"--input-shape: expected a batch size and at least one positive "
                         f"dimension, got {text!r}")
    return dims


def _app():  # type: ignore[no-untyped-def]
    import typer
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="Make the learning signal of a PyTorch model visible.")
    console = Console(emoji=False)
    state = {"verbose": False}

    def guarded(fn: Callable[..., None]) -> Callable[..., None]:
        """Errors become one readable line (the traceback with --verbose) and exit code 1."""
        import functools

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> None:
            try:
                fn(*args, **kwargs)
            except (typer.Exit, typer.Abort):
                raise
            except ImportError as err:
                _fail(str(err) if "gradwatch" in str(err) else f"missing dependency: {err}")
            except Exception as err:  # one line per failure is the contract
                _fail(f"{type(err).__name__}: {err}")

        return run

    def _fail(message: str) -> None:
        if state["verbose"]:
            traceback.print_exc()
        console.print(f"[red]gradwatch: error:[/red] {escape(message)}", highlight=False,
                      soft_wrap=True)
        console.print("(run with --verbose for the traceback)", style="dim")
        raise typer.Exit(1)

    def findings_table(findings: list[Any]) -> None:
        if not findings:
            console.print("[green]No findings: the learning signal looks healthy.[/green]")
            return
        table = Table(title="Findings", show_lines=True)
        for col in ("kind", "severity", "what", "cause", "fix"):
            table.add_column(col, overflow="fold")
        for f in findings:
            table.add_row(f.kind, f.severity, f.summary, f.cause, f.fix)
        console.print(table)

    @app.callback()
    def root(
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks."),
    ) -> None:
        """gradwatch: where gradients vanish or explode, why, and what to change."""
        state["verbose"] = verbose

    @app.command()
    @guarded
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

    @app.command()
    @guarded
    def labs(
        names: list[str] | None = typer.Argument(None, help="Labs to run (default: all)."),
        smoke: bool = typer.Option(False, "--smoke", help="Seconds per lab: mechanics only."),
        quick: bool = typer.Option(False, "--quick", help="Minutes in all (the default)."),
        full: bool = typer.Option(False, "--full", help="The papers' sizes (hours in all)."),
        out: Path = typer.Option(Path("gradwatch-report"), "--out", "-o", help="Report folder."),
        seed: int = typer.Option(0, help="Seed of every random draw."),
        png: bool = typer.Option(False, "--png", help="Also write each figure as PNG."),
        force: bool = typer.Option(False, "--force", help=FORCE),
    ) -> None:
        """Rerun the classic claims as experiments; print the verdicts; write index.html."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from gradwatch.labs import LabConfig, available, listening, run_lab
        from gradwatch.report.html import _writable_in
        from gradwatch.report.labreport import FILES, _render_labs

        if smoke + quick + full > 1:
            raise ValueError("--smoke/--quick/--full: choose one size")
        _writable_in("--out", out, FILES, force=force)  # before minutes of labs, not after
        size = "smoke" if smoke else "full" if full else "quick"
        known = available()
        chosen = list(names or known)
        unknown = [n for n in chosen if n not in known]
        if unknown:
            raise ValueError(f"NAME: unknown lab(s) {', '.join(unknown)}; expected "
                             f"{', '.join(known)}")
        cfg = LabConfig(size=size, seed=seed)
        results, crashed = [], []
        columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("labs", total=len(chosen))
            loop = progress.add_task("", total=1, visible=False)

            def training(label: str, done: int, total: int) -> None:  # each lab's loops
                progress.update(loop, description=f"  {label}", completed=done, total=total,
                                visible=True)

            for name in chosen:
                progress.update(task, description=f"lab {name} ({size})")
                try:
                    with listening(training):
                        results.append(run_lab(name, cfg))
                except Exception as err:  # a crashed lab is reported, the others still run
                    crashed.append((name, f"{type(err).__name__}: {err}"))
                    if state["verbose"]:
                        traceback.print_exc()
                progress.advance(task)
        table = Table(title=f"gradwatch labs ({size}, seed {seed})", show_lines=True)
        for col in ("lab", "claim", "measured", "rule", "verdict"):
            table.add_column(col, overflow="fold")
        colour = {"holds": "green", "does not hold": "red", "inconclusive": "yellow"}
        for r in results:
            for c in r.claims:
                table.add_row(r.name, c.statement, f"{c.value:.4g}", c.rule,
                              f"[{colour[c.verdict]}]{c.verdict}[/{colour[c.verdict]}]")
        console.print(table)
        index = _render_labs(results, out, crashed=crashed, png=png, force=force, name="--out")
        console.print(f"report: {index}")
        for name, message in crashed:
            console.print(f"[red]lab {escape(name)} crashed:[/red] {escape(message)}",
                          soft_wrap=True)
        if crashed:
            raise typer.Exit(1)

    @app.command()
    @guarded
    def report(
        run: Path = typer.Argument(..., help="A run file written by Watch.save (.jsonl)."),
        out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write."),
        png: Path | None = typer.Option(None, "--png", help="Also write each figure as PNG here."),
        force: bool = typer.Option(False, "--force", help=FORCE + " Never the run file."),
    ) -> None:
        """The HTML report of a saved Watch run: findings first, then the figures."""
        from gradwatch.diagnose import diagnose
        from gradwatch.report import _load
        from gradwatch.report.html import _render_run

        history, title, inputs = _load(run, out, force=force, name="--out")
        findings = diagnose(history)
        findings_table(findings)
        path = _render_run(history, findings, out, title=title, png_dir=png, force=force,
                           inputs=inputs, names=("--out", "--png"))
        console.print(f"report: {path}")

    @app.command()
    @guarded
    def probe(
        factory: str = typer.Argument(..., help="MODULE:FACTORY returning an nn.Module."),
        input_shape: str = typer.Option(..., "--input-shape", help="e.g. 32,3,32,32"),
        loss: str = typer.Option("mse", help="mse (0.5 mean y^2), sum, or ce (random labels)."),
        seed: int = typer.Option(0, help="Random seed for the input."),
        html: Path | None = typer.Option(None, "--html", help="Also write an HTML report."),
        force: bool = typer.Option(False, "--force", help=FORCE),
    ) -> None:
        """Probe a model at init on random input: per-layer gradients, saturation, findings."""
        import torch
        from torch import nn

        from gradwatch._factory import load_factory
        from gradwatch.core.probe import probe as run_probe
        from gradwatch.diagnose import diagnose
        from gradwatch.report.html import _render_run, _writable
        from gradwatch.watch import RunHistory

        if loss not in ("mse", "sum", "ce"):
            raise ValueError(f"--loss: expected mse, sum or ce, got {loss!r}")
        if html is not None:
            _writable("--html", html, force=force)  # before the model is built and probed
        model = load_factory(factory)
        torch.manual_seed(seed)
        x = torch.randn(*_shape(input_shape))
        loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        if loss == "sum":
            loss_fn = torch.sum
        elif loss == "ce":
            def loss_fn(out: torch.Tensor) -> torch.Tensor:
                labels = torch.randint(0, out.shape[1], (out.shape[0],))
                return nn.functional.cross_entropy(out, labels)
        result = run_probe(model, x, loss_fn)
        console.print(str(result), highlight=False, markup=False)
        history = RunHistory.from_probe(result)
        findings = diagnose(history)
        findings_table(findings)
        if html is not None:
            path = _render_run(history, findings, html, title=factory, force=force,
                               names=("--html", "--png"))
            console.print(f"report: {path}")

    @app.command()
    @guarded
    def meanfield(
        act: str = typer.Option("tanh", help="Activation name (tanh, relu, erf, ...)."),
        sigma_b: float = typer.Option(0.0, "--sigma-b", help="Bias standard deviation."),
        sigma_w: float | None = typer.Option(None, "--sigma-w", help="Default: critical."),
        out: Path | None = typer.Option(None, "--out", "-o",
                                        help="Write the phase diagram (.png, .svg or .pdf)."),
        force: bool = typer.Option(False, "--force", help=FORCE),
    ) -> None:
        """Edge-of-chaos init, depth scales, and the phase diagram (Schoenholz et al. 2017)."""
        import torch

        from gradwatch.core import meanfield as mf
        from gradwatch.report.html import _figure_path, _save_figure

        if out is not None:
            _figure_path("--out", out, force=force)  # before the phase diagram is computed
        critical = mf.critical_sigma_w(act, sigma_b)
        console.print(f"critical sigma_w for {act} at sigma_b={sigma_b:g}: {critical:.6g}")
        sw = critical if sigma_w is None else sigma_w
        ds = mf.depth_scales(act, sw, sigma_b)
        table = Table(title=f"{act}, sigma_w={sw:.4g}, sigma_b={sigma_b:g}")
        for col in ("q*", "c*", "chi1", "xi_q", "xi_c", "xi_grad"):
            table.add_column(col, justify="right")
        table.add_row(*(f"{v:.4g}" for v in (ds.q_star, ds.c_star, ds.chi1, ds.xi_q, ds.xi_c,
                                             ds.xi_grad)))
        console.print(table)
        if out is not None:
            from gradwatch.report.phase import phase_figure

            pd = mf.phase_diagram(act, torch.linspace(0.25, max(4.0, 1.5 * critical), 40),
                                  torch.linspace(0.0, max(1.0, 2 * sigma_b), 20))
            path = _save_figure(phase_figure(pd), out, force=force, name="--out")
            console.print(f"phase diagram: {path}")

    @app.command()
    @guarded
    def lyapunov(
        factory: str | None = typer.Argument(None, help="MODULE:FACTORY of an RNN or cell."),
        random_rnn: bool = typer.Option(False, "--random-rnn",
                                        help="h <- tanh(W h), W_ij ~ N(0, g^2/N)."),
        g: float = typer.Option(1.5, "--g", help="Gain of the random RNN."),
        n: int = typer.Option(500, "--n", min=2, help="Size of the random RNN."),
        k: int = typer.Option(8, "--k", min=1, help="Exponents to compute."),
        steps: int = typer.Option(1000, min=1, help="Steps accumulated."),
        warmup: int = typer.Option(100, min=0, help="Steps before accumulating."),
        states: int = typer.Option(4, min=1, help="Initial states (for standard errors)."),
        seed: int = typer.Option(0),
    ) -> None:
        """Lyapunov exponents (QR method) of a recurrent module or a random tanh RNN."""
        import torch
        from torch import nn

        from gradwatch._factory import load_factory
        from gradwatch.core.lyapunov import lyapunov_spectrum

        if (factory is None) == (not random_rnn):
            raise ValueError("give either MODULE:FACTORY or --random-rnn (one of them)")
        torch.manual_seed(seed)
        if random_rnn:
            W = torch.randn(n, n, dtype=torch.float64) * g / n**0.5
            step: Any = lambda h: torch.tanh(h @ W.T)  # noqa: E731
            h0: Any = torch.randn(states, n, dtype=torch.float64)
            what = f"random tanh RNN, N={n}, g={g:g}"
        else:
            step = load_factory(str(factory))
            size = getattr(step, "hidden_size", None)
            if size is None:
                raise ValueError("MODULE:FACTORY: expected an nn.RNN/LSTM/GRU or one of their "
                                 "cells (with hidden_size)")
            layers = getattr(step, "num_layers", None)
            shape = (states, size) if layers is None else (layers, states, size)
            h0 = torch.randn(*shape)
            if isinstance(step, (nn.LSTM, nn.LSTMCell)):
                h0 = (h0, torch.randn(*shape))
            what = f"{type(step).__name__} from {factory}"
        res = lyapunov_spectrum(step, h0, k=k, steps=steps, warmup=warmup)
        table = Table(title=f"Lyapunov exponents (nats/step): {what}")
        table.add_column("i", justify="right")
        table.add_column("lambda_i", justify="right")
        table.add_column("std. error", justify="right")
        for i, (lam, se) in enumerate(zip(res.exponents.tolist(), res.stderr.tolist(),
                                          strict=True)):
            table.add_row(str(i + 1), f"{lam:+.4f}", f"{se:.4f}")
        console.print(table)
        verdict = "chaotic: gradients through time explode" if res.max_exponent > 0 else \
            "ordered: gradients through time vanish"
        console.print(f"lambda_max = {res.max_exponent:+.4f} -> {verdict}")

    return app


def main() -> None:
    """Entry point of the ``gradwatch`` script and ``python -m gradwatch``."""
    try:
        app = _app()
    except ImportError:
        print(_MISSING, file=sys.stderr)
        raise SystemExit(2) from None
    app()
