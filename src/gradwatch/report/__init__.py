"""Render only: figures of a Watch run and one self-contained HTML page.

Nothing here computes a statistic; it draws a :class:`~gradwatch.RunHistory` and the
:class:`~gradwatch.Finding` list that exist. matplotlib comes with the ``plot`` extra.
"""

from gradwatch.report.figures import run_figures
from gradwatch.report.html import render_run, write_html
from gradwatch.report.labreport import render_labs

__all__ = ["render_labs", "render_run", "run_figures", "write_html"]
