"""One self-contained HTML page: findings first, a run summary, then the figures as inline SVG.

The page loads nothing from anywhere (no scripts, fonts, stylesheets or images outside the
file) and a Content-Security-Policy says so to the browser. Every string that comes from a
model or a file is escaped; figure text is escaped by matplotlib's SVG writer. Pages are
written atomically and hold no timestamp, so one run always gives the same bytes.

Every file gradwatch writes at a path the user named (a page, a figure, a labs folder) follows
one rule, :func:`_writable`: the path must be absent or hold a file gradwatch wrote itself,
known by a marker in the file's head (``<meta name="generator" content="gradwatch ...">`` in a
page, ``Software`` / ``Creator`` metadata in a PNG / SVG / PDF figure), never by its name.
Anything else is refused in one line unless ``force``; the run a report is drawn from is
refused even then.
"""

from __future__ import annotations

import contextlib
import html
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradwatch.diagnose.finding import Finding
from gradwatch.report.figures import NamedFigure, run_figures, style
from gradwatch.watch.history import RunHistory

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["inline_svg", "render_run", "save_figure", "write_html"]

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


def _generator() -> str:
    """The marker gradwatch writes into every file it makes: ``gradwatch <version>``."""
    from gradwatch import __version__  # here: the package imports report/ before its version

    return f"gradwatch {__version__}"


_HEAD = 4096  # bytes read to recognise a file: every marker sits in the first few hundred
_TAIL = 8192  # a PDF keeps its Info dictionary at the end, before the (short) xref table
_SVG_CREATOR = re.compile(rb"<dc:creator>\s*<cc:Agent>\s*<dc:title>gradwatch ")
_PDF_CREATOR = re.compile(rb"/Creator \(gradwatch ")


def _ours(path: Path) -> bool:
    """Whether ``path`` is a regular file that gradwatch wrote: its head carries our marker.

    A page: ``<meta name="generator" content="gradwatch ...">`` in its first bytes. A PNG: a
    ``Software`` text chunk (it precedes the image data). An SVG: matplotlib's ``dc:creator``.
    A PDF: ``/Creator`` in the Info dictionary at its end. A labs ``results.json``: a list of
    ``LabResult`` JSON (or the empty list). Reads at most 12 KiB; never follows a name.
    """
    try:
        if not path.is_file():  # a FIFO or device is never read (it could block)
            return False
        with open(path, "rb") as f:
            head = f.read(_HEAD)
            if head.startswith(b"%PDF-"):
                f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL))
                return bool(_PDF_CREATOR.search(f.read()))
    except OSError:
        return False
    if head.startswith(b"<!DOCTYPE html>"):
        return b'<meta name="generator" content="gradwatch ' in head
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"tEXtSoftware\x00gradwatch " in head
    if head.startswith(b"<?xml"):
        return b"<svg" in head and bool(_SVG_CREATOR.search(head))
    return head.startswith(b'[{"type": "LabResult", "data": ') or head == b"[]\n"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them is absent: not the same file
        return False


def _writable(
    name: str,
    value: Any,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
    what: str = "report",
) -> Path:
    """The one rule for every file gradwatch writes at a path the user named.

    ``value`` must be a file path whose directory exists (not a directory). It may be written
    if it is absent or a file gradwatch wrote (:func:`_ours`), or with ``force``; never if it
    is one of ``inputs`` (the run a report is drawn from), whatever ``force`` says.

    Raises:
        TypeError: ``value`` is not a path.
        ValueError: it is a directory, or its directory is missing.
        FileExistsError: it holds a file that may not be replaced.
    """
    p = _path(name, value)
    if not os.path.lexists(p):
        return p
    if any(_same_file(p, Path(i)) for i in inputs):
        raise FileExistsError(
            f"{name}: {str(p)!r} is the run file this report is drawn from; refusing to "
            "overwrite it, even with force (choose another path)"
        )
    if not force and not _ours(p):
        raise FileExistsError(
            f"{name}: {str(p)!r} exists and is not a gradwatch {what}; refusing to overwrite "
            "it (pass force=True / --force, or choose another path)"
        )
    return p


def _writable_in(
    name: str,
    folder: Any,
    files: Iterable[tuple[str, str]],
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """:func:`_writable` for a folder: it may be absent (made at write time) or a directory
    where each ``(file name, what)`` we would write is writable. Other files never block it.
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a directory path, got {type(folder).__name__}")
    d = Path(folder)
    if d.exists() and not d.is_dir():
        raise ValueError(f"{name}: {str(d)!r} exists and is not a directory")
    if d.is_dir():
        inputs = tuple(inputs)
        for file, what in files:
            _writable(name, d / file, force=force, inputs=inputs, what=what)
    return d


_FIGURE_METADATA: dict[str, Callable[[str], dict[str, str | None]]] = {
    "png": lambda g: {"Software": g},
    "svg": lambda g: {"Creator": g, "Date": None},
    "pdf": lambda g: {"Creator": g, "Producer": None, "CreationDate": None},
}


def _figure_bytes(fig: Figure, fmt: str, **savefig: Any) -> bytes:
    """A figure as a PNG, SVG or PDF file's bytes, marked as gradwatch's, without a date."""
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format=fmt, metadata=_FIGURE_METADATA[fmt](_generator()), **savefig)
    return buf.getvalue()


def save_figure(
    fig: Figure, path: str | os.PathLike[str], *, force: bool = False, dpi: float = 150
) -> Path:
    """Write a figure as a PNG, SVG or PDF file (by the name's suffix), atomically.

    The file carries gradwatch's marker in its metadata, so a later call may replace it; a
    file gradwatch did not write is refused unless ``force``.

    Args:
        fig: the figure (e.g. from :func:`gradwatch.report.run_figures`).
        path: a ``.png``, ``.svg`` or ``.pdf`` file; its directory must exist.
        force: replace the file even if gradwatch did not write it.
        dpi: resolution of a PNG.

    Returns:
        The path written.

    Raises:
        FileExistsError: ``path`` holds a file that gradwatch did not write (and not ``force``).

    Example:
        >>> save_figure(phase_figure(pd), "phase.svg")   # doctest: +SKIP
        PosixPath('phase.svg')
    """
    return _save_figure(fig, path, force=force, dpi=dpi)


def _figure_path(name: str, path: Any, *, force: bool = False) -> Path:
    """:func:`_writable` for a figure file, whose suffix says its format."""
    if isinstance(path, (str, os.PathLike)) and (
        Path(path).suffix.lower().lstrip(".") not in _FIGURE_METADATA
    ):
        raise ValueError(f"{name}: expected a .png, .svg or .pdf file, got {str(path)!r}")
    return _writable(name, path, force=force, what="figure")


def _save_figure(
    fig: Figure, path: Any, *, force: bool = False, dpi: float = 150, name: str = "path"
) -> Path:
    p = _figure_path(name, path, force=force)
    _atomic_write(p, _figure_bytes(fig, p.suffix.lower().lstrip("."), dpi=dpi))
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
    force: bool = False,
) -> Path:
    """Write one self-contained HTML page: a title and a list of (heading, html) sections.

    A generic page builder (a run report, a labs report). Headings and the title are escaped;
    each section's html is trusted as given (escape what you put in it).

    Args:
        title: page title (escaped).
        sections: (heading, html fragment) pairs, in order.
        path: the ``.html`` file to write (atomically: a temporary file, then a rename). It
            must be absent or a page gradwatch wrote.
        footer: optional html fragment at the end of the page.
        force: replace ``path`` even if gradwatch did not write it.

    Returns:
        The path written.

    Raises:
        FileExistsError: ``path`` holds a file that gradwatch did not write (and not ``force``).

    Example:
        >>> write_html("labs", [("Chain rule", "<p>0.25^30 = 8.67e-19</p>")], "labs.html")
        ... # doctest: +SKIP

    Paper: none; a page builder.
    """
    data = _page(title, sections, footer)
    p = _writable("path", path, force=force)
    _atomic_write(p, data)
    return p


def _page(title: Any, sections: Any, footer: str) -> bytes:
    """The bytes of a page; the generator marker sits in its first 300 bytes (see _ours)."""
    if not isinstance(title, str):
        raise TypeError(f"title: expected a str, got {type(title).__name__}")
    if isinstance(sections, (str, bytes)) or not isinstance(sections, Sequence):
        raise TypeError(
            f"sections: expected a list of (heading, html) pairs, got {type(sections).__name__}"
        )
    for i, sec in enumerate(sections):
        if not (isinstance(sec, tuple) and len(sec) == 2 and all(isinstance(s, str) for s in sec)):
            raise TypeError(f"sections[{i}]: expected a (heading, html) pair of str, got {sec!r}")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta name="generator" content="{_esc(_generator())}">',
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
    return "\n".join(parts).encode("utf-8")


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
    table = f'<table class="summary">\n{body}\n</table>'
    if not h.notes:
        return table
    items = "\n".join(f"<li>{_esc(n)}</li>" for n in h.notes)
    head = '<p class="label">Not seen by the Watch:</p>'
    return f'{table}\n{head}\n<ul class="notes">\n{items}\n</ul>'


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
    force: bool = False,
) -> Path:
    """Render a Watch run as one self-contained HTML page: findings, summary, figures.

    Findings come first (kind, colour-coded severity, summary, cause, fix), then a short
    summary of the run, then every figure that applies (inline SVG; see
    :func:`gradwatch.report.run_figures`). The file loads nothing from elsewhere and holds
    no timestamp: the same run gives the same bytes, live or loaded from its run file.

    Nothing is written over a file gradwatch did not write (the page, or a PNG in
    ``png_dir``) unless ``force``; everything is checked before anything is written.

    Args:
        history: a :class:`~gradwatch.RunHistory` (``watch.history`` or ``load_run(path)``).
        findings: the run's findings (``watch.diagnose()``); an empty list says the signal
            looks healthy.
        path: the ``.html`` file to write, atomically; its directory must exist. It must be
            absent or a page gradwatch wrote.
        title: page title.
        png_dir: if given, also write each figure there as ``<figure id>.png`` (created if
            missing). Other files in it are left alone.
        force: replace ``path`` and the PNGs even if gradwatch did not write them.

    Returns:
        The path of the page.

    Raises:
        ImportError: matplotlib is missing (install the ``plot`` extra).
        FileExistsError: ``path`` or a PNG holds a file that gradwatch did not write.

    Example:
        >>> render_run(watch.history, watch.diagnose(), "run.html")   # doctest: +SKIP
        PosixPath('run.html')

    Paper: none; it draws the results of :func:`gradwatch.diagnose` and the Watch.
    """
    return _render_run(history, findings, path, title=title, png_dir=png_dir, force=force)


def _render_run(
    history: Any,
    findings: Iterable[Finding],
    path: Any,
    *,
    title: str = "gradwatch run",
    png_dir: Any = None,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
    names: tuple[str, str] = ("path", "png_dir"),
) -> Path:
    """:func:`render_run`, never over ``inputs``; errors name the caller's arguments."""
    if not isinstance(history, RunHistory):
        raise TypeError(
            f"history: expected a RunHistory (Watch.history or "
            f"gradwatch.load_run), got {type(history).__name__}"
        )
    found = _check_findings(findings)
    if not isinstance(title, str):
        raise TypeError(f"title: expected a str, got {type(title).__name__}")
    inputs = tuple(inputs)
    p = _writable(names[0], path, force=force, inputs=inputs)
    # png_dir: a folder path (not a file); its PNGs are checked once the figures are known.
    png = None if png_dir is None else _writable_in(names[1], png_dir, (), force=force)
    figures = run_figures(history)
    if png is not None:  # every PNG checked before anything is written
        _writable_in(names[1], png, [(f"{nf.id}.png", "figure") for nf in figures],
                     force=force, inputs=inputs)
    sections = [
        ("Findings", _findings_html(found)),
        ("Run", _summary_html(history)),
        ("Figures", _figures_html(figures)),
    ]
    footer = f"Written by {_esc(_generator())}."
    _atomic_write(p, _page(title, sections, footer))
    if png is not None:
        png.mkdir(parents=True, exist_ok=True)
        for nf in figures:
            _atomic_write(png / f"{nf.id}.png", _figure_bytes(nf.figure, "png", dpi=150))
    return p
