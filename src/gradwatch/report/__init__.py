"""Render only: figures of a Watch run and one self-contained HTML page.

Nothing here computes a statistic; it draws a :class:`~gradwatch.RunHistory` and the
:class:`~gradwatch.Finding` list that exist. matplotlib comes with the ``plot`` extra.

The package itself is callable, so the design's one-liner works:
``gradwatch.report("run.jsonl", "report.html")`` (see :func:`report_file`).
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

from gradwatch.report.figures import run_figures
from gradwatch.report.html import render_run, write_html
from gradwatch.report.labreport import render_labs
from gradwatch.watch.history import RunHistory

__all__ = ["render_labs", "render_run", "report_file", "run_figures", "write_html"]


def report_file(
    run: RunHistory | str | os.PathLike[str],
    out: str | os.PathLike[str] = "report.html",
    *,
    png_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The report of a Watch run: load it (if a path), diagnose it, render one HTML page.

    Args:
        run: a :class:`RunHistory` (``watch.history``) or a run file from ``Watch.save``.
        out: the HTML file to write.
        png_dir: also write each figure as a PNG in this folder.

    Returns:
        The path written.

    Example:
        >>> watch.save("run.jsonl"); gradwatch.report("run.jsonl", "report.html")  # doctest: +SKIP
    """
    from gradwatch.diagnose import diagnose
    from gradwatch.watch import load_run

    history = run if isinstance(run, RunHistory) else load_run(run)
    title = "gradwatch run" if isinstance(run, RunHistory) else f"gradwatch: {Path(run).name}"
    return render_run(history, diagnose(history), out, title=title, png_dir=png_dir)


class _CallableModule(types.ModuleType):
    """``gradwatch.report(...)`` calls :func:`report_file`; the package stays a package."""

    def __call__(
        self,
        run: RunHistory | str | os.PathLike[str],
        out: str | os.PathLike[str] = "report.html",
        *,
        png_dir: str | os.PathLike[str] | None = None,
    ) -> Path:
        return report_file(run, out, png_dir=png_dir)


sys.modules[__name__].__class__ = _CallableModule
