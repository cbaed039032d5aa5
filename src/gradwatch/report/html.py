"""One self-contained HTML page: findings first, a run summary, then the figures as inline SVG.

The page loads nothing from anywhere (no scripts, fonts, stylesheets or images outside the
file) and a Content-Security-Policy says so to the browser. Every string that comes from a
model or a file is escaped; figure text is escaped by matplotlib's SVG writer. Pages are
written atomically and hold no timestamp, so one run always gives the same bytes.
"""

from __future__ import annotations

import contextlib
import html
import io
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradwatch.diagnose.finding import Finding
from gradwatch.report.figures import NamedFigure, run_figures, style
from gradwatch.watch.history import RunHistory

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["inline_svg", "render_run", "write_html"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d1d1f; background: #fff; margin: 0; }
main { max-width: 62rem; margin: 0 auto; padding: 1.5rem 1.25rem 3rem; }
h1 { font-size: 1.6rem; margin: 0 0 1rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .75rem; border-bottom: 1px solid #ddd; }
.finding { border-left: 6px solid #888; background: #fafafa; padding: .6rem .9rem;
           margin: 0 0 .9rem; }
.finding h3 { font-size: 1rem; margin: 0 0 .35rem; }
.finding p { margin: .2rem 0; }
.severity { display: inline-block; font-size: .75rem; font-weight: 700; color: #fff;
            text-transform: uppercase; padding: .05rem .45rem; border-radius: .25rem;
            margin-right: .45rem; background: #888; }
.sev-error { border-color: #c62828; } .sev-error .severity { background: #c62828; }
.sev-warning { border-color: #e08600; } .sev-warning .severity { background: #b86e00; }
.sev-info { border-color: #1565c0; } .sev-info .severity { background: #1565c0; }
.label { font-weight: 600; }
.evidence { font-size: .85rem; color: #444; }
.healthy { border-left: 6px solid #2e7d32; background: #f1f8f1; padding: .6rem .9rem; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: .2rem .9rem .2rem 0; vertical-align: top; }
th { font-weight: 600; }
figure { margin: 0 0 2rem; }
figure svg, figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: .9rem; color: #444; margin-top: .3rem; }
footer { margin-top: 3rem; font-size: .8rem; color: #777; }
"""
_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_ID = re.compile(r'(\sid=")([^"]+")')
_REF = re.compile(r'(url\(#|href="#)')


def _esc(text: object) -> str:
    """Escape a string from a model or file for HTML text and attributes (quotes too)."""
    return html.escape(_CONTROL.sub("\ufffd", str(text)), quote=True)


def _path(name: str, value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{name}: expected a file path (str or os.PathLike), got {type(value).__name__}"
        )
    p = Path(value)
    if p.is_dir():
        raise ValueError(f"{name}: {str(p)!r} is a directory; give a file name")
    if not p.parent.is_dir():
        raise ValueError(f"{name}: directory {str(p.parent)!r} does not exist; create it first")
    return p


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then ``os.replace``: never a partial file."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def inline_svg(fig: Figure, prefix: str) -> str:
    """A matplotlib figure as an ``<svg>`` element to paste into an HTML page.

    Deterministic (fixed hash salt, no date) and safe to repeat on one page: every id in it
    gets ``prefix`` so the figures' clip paths and markers never collide. Text in the figure
    is escaped by matplotlib's SVG writer.

    Args:
        fig: the figure.
        prefix: a page-unique id prefix, e.g. the figure's id.

    Returns:
        The ``<svg ...>...</svg>`` markup, without XML declaration, DOCTYPE or metadata.

    Example:
        >>> body = inline_svg(fig, "grad-flow")   # doctest: +SKIP
    """
    if not re.fullmatch(r"[A-Za-z][\w-]*", prefix):
        raise ValueError(f"prefix: expected letters, digits, '_' or '-', got {prefix!r}")
    buf = io.StringIO()
    with style():
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]  # drop the XML declaration and DOCTYPE
    text = _METADATA.sub("", text)  # RDF block: namespace URLs, nothing to show

    def tag(m: re.Match[str]) -> str:
        # Only inside tags: text content (a layer's name) is never rewritten.
        t = _ID.sub(lambda i: f"{i.group(1)}{prefix}-{i.group(2)}", m.group(0))
        return _REF.sub(lambda r: f"{r.group(1)}{prefix}-", t)

    return _TAG.sub(tag, text).strip()


def write_html(
    title: str,
    sections: Sequence[tuple[str, str]],
    path: str | os.PathLike[str],
    *,
    footer: str = "",
) -> Path:
    """Write one self-contained HTML page: a title and a list of (heading, html) sections.

    A generic page builder (a run report, a labs report). Headings and the title are escaped;
    each section's html is trusted as given (escape what you put in it).

    Args:
        title: page title (escaped).
        sections: (heading, html fragment) pairs, in order.
        path: the ``.html`` file to write (atomically: a temporary file, then a rename).
        footer: optional html fragment at the end of the page.

    Returns:
        The path written.

    Example:
        >>> write_html("labs", [("Chain rule", "<p>0.25^30 = 8.67e-19</p>")], "labs.html")
        ... # doctest: +SKIP

    Paper: none; a page builder.
    """
    if not isinstance(title, str):
        raise TypeError(f"title: expected a str, got {type(title).__name__}")
    if isinstance(sections, (str, bytes)) or not isinstance(sections, Sequence):
        raise TypeError(
            f"sections: expected a list of (heading, html) pairs, got {type(sections).__name__}"
        )
    for i, sec in enumerate(sections):
        if not (isinstance(sec, tuple) and len(sec) == 2 and all(isinstance(s, str) for s in sec)):
            raise TypeError(f"sections[{i}]: expected a (heading, html) pair of str, got {sec!r}")
    p = _path("path", path)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>{_esc(title)}</h1>",
    ]
    used: set[str] = set()
    for heading, body in sections:
        sid = base = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-") or "section"
        n = 1
        while sid in used:  # ids stay unique when headings repeat
            n += 1
            sid = f"{base}-{n}"
        used.add(sid)
        parts += [f'<section id="{sid}">', f"<h2>{_esc(heading)}</h2>", body, "</section>"]
    if footer:
        parts.append(f"<footer>{footer}</footer>")
    parts += ["</main>", "</body>", "</html>", ""]
    _atomic_write(p, "\n".join(parts).encode("utf-8"))
    return p


def _findings_html(findings: Sequence[Finding]) -> str:
    if not findings:
        return '<p class="healthy">No findings: the learning signal looks healthy.</p>'
    out = []
    ordered = sorted(findings, key=lambda f: _SEVERITY_ORDER.get(f.severity, 3))
    for f in ordered:
        sev = f.severity if f.severity in _SEVERITY_ORDER else "other"
        layers = list(f.layers)
        where = ", ".join(layers[:8]) + (f", ... ({len(layers)} in all)" if len(layers) > 8 else "")
        evidence = "; ".join(
            f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
            for k, v in f.evidence.items()
        )
        out += [
            f'<article class="finding sev-{sev}">',
            f'<h3><span class="severity">{_esc(f.severity)}</span>{_esc(f.kind)}</h3>',
            f'<p class="summary">{_esc(f.summary)}</p>',
            f'<p class="cause"><span class="label">Cause:</span> {_esc(f.cause)}</p>',
            f'<p class="fix"><span class="label">Fix:</span> {_esc(f.fix)}</p>',
        ]
        if where:
            out.append(f'<p class="layers"><span class="label">Where:</span> {_esc(where)}</p>')
        if evidence:
            out.append(f'<p class="evidence">Evidence: {_esc(evidence)}</p>')
        out.append("</article>")
    return "\n".join(out)


def _summary_html(h: RunHistory) -> str:
    steps = h.steps.tolist()
    modules = list(dict.fromkeys(s.module for s in h.recurrent))
    rows: list[tuple[str, str]] = [
        ("layers", f"{len(h.layers)}"),
        ("activation modules", f"{len(h.activations)}"),
        ("recurrent modules", ", ".join(modules) if modules else "none"),
        ("recorded steps", f"{len(steps)}"),
        ("first / last step", f"{steps[0]} / {steps[-1]}" if steps else "none"),
    ]
    if h.layers:
        first, last = h.layers[0], h.layers[-1]
        rows.append(
            ("first / last layer", f"{first} ({h.layer_kinds[0]}) / {last} ({h.layer_kinds[-1]})")
        )
    rows += [(f"meta: {k}", v) for k, v in h.meta.items()]
    body = "\n".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="summary">\n{body}\n</table>'


def _figures_html(figures: Sequence[NamedFigure]) -> str:
    if not figures:
        return "<p>No figures: the run recorded no step.</p>"
    out = []
    for nf in figures:
        out += [
            f'<figure id="fig-{nf.id}">',
            inline_svg(nf.figure, nf.id),
            f"<figcaption><strong>{_esc(nf.title)}.</strong> {_esc(nf.caption)}</figcaption>",
            "</figure>",
        ]
    return "\n".join(out)


def _check_findings(findings: Any) -> list[Finding]:
    if isinstance(findings, (str, bytes, Finding)) or not isinstance(findings, Iterable):
        raise TypeError(
            f"findings: expected a list of Finding (watch.diagnose()), got "
            f"{type(findings).__name__}"
        )
    out = list(findings)
    for i, f in enumerate(out):
        if not isinstance(f, Finding):
            raise TypeError(f"findings[{i}]: expected a Finding, got {type(f).__name__}")
    return out


def render_run(
    history: RunHistory,
    findings: Iterable[Finding],
    path: str | os.PathLike[str],
    *,
    title: str = "gradwatch run",
    png_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Render a Watch run as one self-contained HTML page: findings, summary, figures.

    Findings come first (kind, colour-coded severity, summary, cause, fix), then a short
    summary of the run, then every figure that applies (inline SVG; see
    :func:`gradwatch.report.run_figures`). The file loads nothing from elsewhere and holds
    no timestamp: the same run gives the same bytes, live or loaded from its run file.

    Args:
        history: a :class:`~gradwatch.RunHistory` (``watch.history`` or ``load_run(path)``).
        findings: the run's findings (``watch.diagnose()``); an empty list says the signal
            looks healthy.
        path: the ``.html`` file to write, atomically; its directory must exist.
        title: page title.
        png_dir: if given, also write each figure there as ``<figure id>.png`` (created if
            missing).

    Returns:
        The path of the page.

    Raises:
        ImportError: matplotlib is missing (install the ``plot`` extra).

    Example:
        >>> render_run(watch.history, watch.diagnose(), "run.html")   # doctest: +SKIP
        PosixPath('run.html')

    Paper: none; it draws the results of :func:`gradwatch.diagnose` and the Watch.
    """
    if not isinstance(history, RunHistory):
        raise TypeError(
            f"history: expected a RunHistory (Watch.history or "
            f"gradwatch.load_run), got {type(history).__name__}"
        )
    found = _check_findings(findings)
    if not isinstance(title, str):
        raise TypeError(f"title: expected a str, got {type(title).__name__}")
    p = _path("path", path)
    png = None
    if png_dir is not None:
        if not isinstance(png_dir, (str, os.PathLike)):
            raise TypeError(f"png_dir: expected a directory path, got {type(png_dir).__name__}")
        png = Path(png_dir)
        if png.exists() and not png.is_dir():
            raise ValueError(f"png_dir: {str(png)!r} exists and is not a directory")
    figures = run_figures(history)
    sections = [
        ("Findings", _findings_html(found)),
        ("Run", _summary_html(history)),
        ("Figures", _figures_html(figures)),
    ]
    from gradwatch import __version__

    out = write_html(title, sections, p, footer=f"Written by gradwatch {_esc(__version__)}.")
    if png is not None:
        png.mkdir(parents=True, exist_ok=True)
        for nf in figures:
            buf = io.BytesIO()
            with style():
                nf.figure.savefig(buf, format="png", dpi=150, metadata={"Software": None})
            _atomic_write(png / f"{nf.id}.png", buf.getvalue())
    return out
