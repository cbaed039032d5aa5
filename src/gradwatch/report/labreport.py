"""The labs report: one section per lab (claim, setup, numbers, verdict, figures) in one page."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradwatch.labs.base import LabResult
from gradwatch.report.html import (
    _atomic_write,
    _esc,
    _figure_bytes,
    _page,
    _writable_in,
    inline_svg,
)
from gradwatch.report.labplots import plot_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# What a labs folder holds before any figure: (file name, what it is), for the overwrite rule.
FILES = (("index.html", "report"), ("results.json", "labs results file"))

_COLOUR = {"holds": "#1b7f3b", "does not hold": "#b3261e", "inconclusive": "#8a6d00"}


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(r: LabResult, index: int, pngs: dict[str, Figure] | None) -> str:
    parts = []
    verdicts = [c.verdict for c in r.claims]
    parts.append(f"<p>{_esc(r.name)} · size {_esc(r.config.size)} · seed {r.config.seed} · "
                 f"{r.seconds:.1f} s · {verdicts.count('holds')} of {len(verdicts)} claims "
                 "hold</p>")
    rows = []
    for c in r.claims:
        colour = _COLOUR.get(c.verdict, "#444")
        measured = "; ".join(f"{_esc(k)} = {v:.4g}" for k, v in c.measured.items())
        rows.append((_esc(c.statement), f"{c.value:.4g}", _esc(c.rule),
                     f'<b style="color:{colour}">{_esc(c.verdict)}</b>', measured))
    parts.append(_table(("claim", "measured", "rule", "verdict", "details"), rows))
    if r.setup:
        parts.append("<h3>Setup</h3>")
        parts.append(_table(("", ""), [(_esc(k), _esc(v)) for k, v in r.setup.items()]))
    for t in r.tables:
        parts.append(f"<h3>{_esc(t.title)}</h3>")
        parts.append(_table(t.columns, [tuple(_esc(c) for c in row) for row in t.rows]))
    for p in r.plots:
        fig = plot_figure(p)
        fid = f"lab{index}-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", p.id) or "plot")
        parts.append(f'<figure id="{fid}">{inline_svg(fig, fid)}'
                     f"<figcaption>{_esc(p.title)}</figcaption></figure>")
        if pngs is not None:
            pngs[f"{r.name}-{fid}.png"] = fig  # written after the checks
    return "\n".join(parts)


def render_labs(
    results: Sequence[LabResult],
    out: str | os.PathLike[str],
    *,
    crashed: Sequence[tuple[str, str]] = (),
    png: bool = False,
    force: bool = False,
) -> Path:
    """Write ``out/index.html`` (and ``out/results.json``) for a set of lab results.

    The folder may be new, empty, or hold files of an earlier labs report; a file gradwatch
    did not write where one of ours would go is refused (unless ``force``), before anything
    is written. Other files in the folder are left alone.

    Args:
        results: what the labs returned.
        out: the report folder (created if missing).
        crashed: (lab name, error) pairs to list at the top.
        png: also write each figure as a PNG next to the page.
        force: replace those files even if gradwatch did not write them.

    Returns:
        The path of ``index.html``.

    Raises:
        FileExistsError: a file in ``out`` that we would replace was not written by gradwatch.

    Example:
        >>> render_labs([run_lab("depth", LabConfig("smoke"))], "gradwatch-report")
        ... # doctest: +SKIP
    """
    return _render_labs(results, out, crashed=crashed, png=png, force=force)


def _render_labs(
    results: Sequence[LabResult],
    out: Any,
    *,
    crashed: Sequence[tuple[str, str]] = (),
    png: bool = False,
    force: bool = False,
    name: str = "out",
) -> Path:
    """:func:`render_labs`; errors name the caller's argument ``name``."""
    folder = _writable_in(name, out, FILES, force=force)
    pngs: dict[str, Figure] | None = {} if png else None
    sections = []
    summary = [(_esc(r.title), _esc(c.statement), f"{c.value:.4g}", _esc(c.rule),
                f'<b style="color:{_COLOUR.get(c.verdict, "#444")}">{_esc(c.verdict)}</b>')
               for r in results for c in r.claims]
    overview = _table(("lab", "claim", "measured", "rule", "verdict"), summary)
    if crashed:
        overview = "".join(f'<p class="crash"><b>{_esc(n)} crashed:</b> {_esc(e)}</p>'
                           for n, e in crashed) + overview
    sections.append(("Verdicts", overview))
    for i, r in enumerate(results):
        sections.append((r.title, _section(r, i, pngs)))
    page = _page("gradwatch labs", sections, "")
    data = "[" + ",\n".join(r.to_json() for r in results) + "]\n"
    if pngs:  # every figure checked before anything is written
        _writable_in(name, folder, [(n, "figure") for n in pngs], force=force)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / "index.html", page)
    _atomic_write(folder / "results.json", data.encode("utf-8"))
    for file, fig in (pngs or {}).items():
        _atomic_write(folder / file, _figure_bytes(fig, "png", dpi=150))
    return folder / "index.html"
