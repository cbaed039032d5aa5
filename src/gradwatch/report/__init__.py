"""Render only: figures of a Watch run and one self-contained HTML page.

Nothing here computes a statistic; it draws a :class:`~gradwatch.RunHistory` and the
:class:`~gradwatch.Finding` list that exist. matplotlib comes with the ``plot`` extra.

The package itself is callable, so the design's one-liner works:
``gradwatch.report("run.jsonl", "report.html")`` (see :func:`report_file`).

Nothing here writes over a file that gradwatch did not write (a script, a note, the run file
itself): such a path is refused in one line unless ``force=True`` (``--force``), and the run a
report is drawn from is refused even then.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any, TypeAlias

from gradwatch.core.probe import ProbeResult
from gradwatch.report.figures import run_figures
from gradwatch.report.html import _render_run, _writable, render_run, save_figure, write_html
from gradwatch.report.labreport import render_labs
from gradwatch.watch.history import RunHistory

__all__ = ["render_labs", "render_run", "report_file", "run_figures", "save_figure", "write_html"]

Run: TypeAlias = RunHistory | ProbeResult | str | os.PathLike[str]


def report_file(
    run: Run,
    out: str | os.PathLike[str] = "report.html",
    *,
    png_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """The report of a Watch run or a probe: load it (if a path), diagnose it, render one page.

    ``out`` (and each PNG in ``png_dir``) must be absent or a file gradwatch wrote (it carries
    a generator marker in its head); anything else is refused with a ``FileExistsError``
    unless ``force=True``. The run file the report is drawn from is never overwritten.

    Args:
        run: a :class:`RunHistory` (``watch.history``), a :class:`ProbeResult`
            (``gw.probe(...)``) or a run file from ``Watch.save``.
        out: the HTML file to write; its directory must exist.
        png_dir: also write each figure as a PNG in this folder (created if missing).
        force: replace ``out`` and the PNGs even if gradwatch did not write them (never the
            run file itself).

    Returns:
        The path written.

    Raises:
        TypeError: ``run`` or ``out`` is of the wrong type.
        FileExistsError: ``out`` or a PNG may not be replaced (see above).

    Example:
        >>> watch.save("run.jsonl"); gradwatch.report("run.jsonl", "report.html")  # doctest: +SKIP
        >>> gradwatch.report(gradwatch.probe(model, x, loss_fn), "probe.html")     # doctest: +SKIP

        Over a file that gradwatch did not write, it refuses (``force=True`` overrides):

        >>> gradwatch.report("run.jsonl", "train.py")                              # doctest: +SKIP
        Traceback (most recent call last):
        FileExistsError: out: 'train.py' exists and is not a gradwatch report; refusing to
        overwrite it (pass force=True / --force, or choose another path)
    """
    from gradwatch.diagnose import diagnose

    history, title, inputs = _load(run, out, force=force, name="out")
    return _render_run(history, diagnose(history), out, title=title, png_dir=png_dir,
                       force=force, inputs=inputs, names=("out", "png_dir"))


def _load(run: Any, out: Any, *, force: bool, name: str) -> tuple[RunHistory, str, tuple[Any, ...]]:
    """Check ``run``, then ``out`` (before a long load), then the history, a title, the inputs.

    Shared with the ``gradwatch report`` command, whose errors name ``--out``.
    """
    from gradwatch.watch import load_run

    if isinstance(run, (RunHistory, ProbeResult)):
        inputs: tuple[Any, ...] = ()
    elif isinstance(run, (str, os.PathLike)):
        inputs = (run,)
    else:
        raise TypeError(
            "run: expected a RunHistory (watch.history), a ProbeResult (gw.probe) or the path "
            f"of a run file (Watch.save), got {type(run).__name__}"
        )
    _writable(name, out, force=force, inputs=inputs)
    if isinstance(run, RunHistory):
        return run, "gradwatch run", inputs
    if isinstance(run, ProbeResult):
        return RunHistory.from_probe(run), "gradwatch probe", inputs
    return load_run(run), f"gradwatch: {Path(run).name}", inputs


class _CallableModule(types.ModuleType):
    """``gradwatch.report(...)`` calls :func:`report_file`; the package stays a package."""

    def __call__(
        self,
        run: Run,
        out: str | os.PathLike[str] = "report.html",
        *,
        png_dir: str | os.PathLike[str] | None = None,
        force: bool = False,
    ) -> Path:
        return report_file(run, out, png_dir=png_dir, force=force)


sys.modules[__name__].__class__ = _CallableModule
