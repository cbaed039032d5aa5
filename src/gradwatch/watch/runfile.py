"""Run files: JSON Lines, a header line then one record per recorded step.

Appending records line by line means a process killed mid-write leaves every complete record
readable; ``load_run`` warns about the partial tail and reads the rest. Each flush is one
write of whole lines, so a reader tailing the file sees whole records (a partial last line
only where a kill cut a write).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from typing import IO, Any, Protocol, runtime_checkable

import torch

from gradwatch.core.bptt import BPTTProfile
from gradwatch.watch.history import RecurrentSample, RunHistory

__all__ = ["JSONLSink", "Sink", "fresh_run_path", "load_run"]

FORMAT, VERSION = "gradwatch-run", 1
_LISTS = ("layers", "layer_kinds", "activations", "activation_kinds")
_PROFILE_FIELDS = tuple(f.name for f in dataclasses.fields(BPTTProfile))
_TAIL = 1 << 16  # bytes read from the end of an existing run file to name its last step


def _num(v: float) -> float | str:
    return v if math.isfinite(v) else repr(v)  # JSON has no NaN/Inf


def _is_run_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = json.loads(f.readline() or b"null")
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(head, dict) and head.get("format") == FORMAT


def _last_step(path: str) -> int | None:
    """The step of the last complete record, read from the file's tail only (None: none there)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL))
            lines = f.read().split(b"\n")
    except OSError:
        return None
    for line in reversed(lines[1:] if size > _TAIL else lines):  # lines[0] may be cut
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(rec, dict) and type(rec.get("step")) is int:
            return int(rec["step"])
    return None


def _refusal(path: str, overwrite: bool) -> FileExistsError | None:
    """Why ``path`` may not be written, or None: a missing or empty file may always be, a run
    file only with ``overwrite``, any other file never."""
    try:
        if os.path.getsize(path) == 0:
            return None
    except OSError:
        return None  # not there (yet)
    if not _is_run_file(path):
        return FileExistsError(
            f"path: {path!r} exists and is not a gradwatch run file; refusing to overwrite it"
        )
    if overwrite:
        return None
    last = _last_step(path)
    upto = "" if last is None else f" (recorded up to step {last})"
    return FileExistsError(
        f"path: {path!r} holds another gradwatch run{upto}; pass overwrite=True to replace "
        "it, or give a new file name"
    )


def fresh_run_path(directory: str | os.PathLike[str] = "runs") -> str:
    """A new run-file name, ``<directory>/<YYYYmmdd-HHMMSS>-<n>.jsonl``, reserved on disk.

    The folder is made if missing. The file is created empty and exclusively (``O_EXCL``), so
    two processes starting in the same second get different names (``n`` counts up from 1);
    :class:`JSONLSink` writes into the empty file.

    Args:
        directory: the folder for run files.

    Returns:
        The path, e.g. ``"runs/20250101-120000-1.jsonl"``.

    Example:
        >>> Watch(model, sinks=[JSONLSink(fresh_run_path())])    # doctest: +SKIP
    """
    directory = os.fspath(directory)
    if directory:  # "" is the working directory
        os.makedirs(directory, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while True:
        path = os.path.join(directory, f"{stamp}-{n}.jsonl")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            n += 1
            continue
        return path


@runtime_checkable
class Sink(Protocol):
    """Where a Watch's records go at every flush: the run file, TensorBoard, W&B, CSV.

    ``write`` receives the run's header (layer and activation names, kinds, static layer info,
    meta), the steps recorded since the last flush with one host row per statistic
    (``rows[name]`` is (len(steps), layers) for the layer statistics and (len(steps),
    activations) for the activation ones), and the recurrent samples taken since. Only the
    writing rank (rank 0 under torch.distributed) calls it.
    """

    def write(
        self,
        header: dict[str, Any],
        steps: list[int],
        rows: dict[str, torch.Tensor],
        samples: Sequence[RecurrentSample],
    ) -> None: ...

    def close(self) -> None: ...


class JSONLSink:
    """The run file: a header line, then one JSON record per step (``Watch.save`` opens it).

    A missing or empty file is written. A file holding another gradwatch run is replaced only
    with ``overwrite=True``; a file that is not a run file is never replaced. Each ``write`` is
    one write of whole lines, flushed at once.

    Args:
        path: the ``.jsonl`` file (see :func:`fresh_run_path` for a new name).
        overwrite: replace an existing run file at ``path``.

    Raises:
        FileExistsError: ``path`` holds another run (and ``overwrite`` is False) or a file that
            is not a gradwatch run file.
        IsADirectoryError: ``path`` is a directory.

    Example:
        >>> Watch(model, sinks=[JSONLSink("run.jsonl")])        # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        path = os.fspath(path)
        if os.path.isdir(path):
            raise IsADirectoryError(f"path: {path!r} is a directory; give a file name")
        err = _refusal(path, overwrite)
        if err is not None:
            raise err
        self.path, self.overwrite = path, overwrite
        self.file: IO[str] | None = None
        self._begun = False  # the header is written

    def write(
        self,
        header: dict[str, Any],
        steps: list[int],
        rows: dict[str, torch.Tensor],
        samples: Sequence[RecurrentSample],
    ) -> None:
        lines = []
        if not self._begun:
            info = {k: [_num(v) for v in t.tolist()] for k, t in header["layer_info"].items()}
            lines.append(
                json.dumps({"format": FORMAT, "version": VERSION, **header, "layer_info": info})
            )
        for r, step in enumerate(steps):
            rec: dict[str, Any] = {"step": step}
            for name, t in rows.items():
                rec[name] = [_num(v) for v in t[r].tolist()]
            lines.append(json.dumps(rec))
        for s in samples:
            lines.append(
                json.dumps({"recurrent": s.module, "step": s.step, "profile": s.profile.to_dict()})
            )
        if not lines:
            return
        if self.file is None:  # first write, or one after close(): that carries on at the end
            self.file = open(self.path, "a", encoding="utf-8") if self._begun else self._open()
            self._begun = True
        # one write of whole lines, flushed: a reader tailing the file sees whole records
        self.file.write("".join(line + "\n" for line in lines))
        self.file.flush()

    def _open(self) -> IO[str]:
        """Open for appending; empty it first if it holds the run that ``overwrite`` replaces.

        Checked again here: the file may have been written since ``__init__``.
        """
        f = open(self.path, "a", encoding="utf-8")
        if f.tell():
            err = _refusal(self.path, self.overwrite)
            if err is not None:
                f.close()
                raise err
            f.truncate(0)
        return f

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def load_run(path: str | os.PathLike[str]) -> RunHistory:
    """Read a run file written by ``Watch.save`` into the same :class:`RunHistory`.

    A file cut mid-record (the writer was killed) loads every complete record and warns about
    the rest; so do other unreadable records among readable ones. A header with no records
    (a run that has not recorded a step yet, or was cut in its first record) loads as zero
    steps, which ``diagnose`` reports as ``no_data``. One ``ValueError`` naming the file is
    raised for an empty, binary, truncated-header or foreign file; for a record whose
    statistic has a different number of values than the header has layers (or activations),
    naming its line; and for a file with records but none readable ("no readable records").

    Args:
        path: the ``.jsonl`` file.

    Returns:
        The run's :class:`RunHistory`.

    Example:
        >>> watch.save("run.jsonl"); history = load_run("run.jsonl")   # doctest: +SKIP
    """
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ValueError(f"path: cannot read {p!r}: {err.strerror}") from None
    if not raw.strip():
        raise ValueError(f"path: {p!r} is empty; expected a gradwatch run file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"path: {p!r} is binary, not a gradwatch run file") from None
    lines = text.split("\n")
    try:
        head = json.loads(lines[0])
    except (json.JSONDecodeError, RecursionError):  # RecursionError: "[[[[..." nested deep
        raise ValueError(f"path: {p!r} does not start with a gradwatch run header") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ValueError(f"path: {p!r} is not a gradwatch run file (no '{FORMAT}' header)")
    if head.get("version") != VERSION:
        raise ValueError(
            f"path: {p!r} has run-file version {head.get('version')!r}; this "
            f"gradwatch reads version {VERSION}"
        )
    try:
        if not all(isinstance(head[k], list) for k in _LISTS):
            raise TypeError
        layers = tuple(map(str, head["layers"]))
        layer_kinds = tuple(map(str, head["layer_kinds"]))
        acts = tuple(map(str, head["activations"]))
        act_kinds = tuple(map(str, head["activation_kinds"]))
        meta = {str(k): str(v) for k, v in dict(head.get("meta", {})).items()}
        notes = head.get("notes", [])
        if not isinstance(notes, list):
            raise TypeError
        notes = tuple(map(str, notes))
        info = {
            str(k): torch.tensor([float(x) for x in v], dtype=torch.float64)
            for k, v in dict(head.get("layer_info", {})).items()
        }
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"path: {p!r} has a malformed header") from None

    from gradwatch.watch.watch import ACTIVATION_STATS, LAYER_STATS

    widths = {n: (len(layers), "layer") for n in LAYER_STATS}
    widths.update({n: (len(acts), "activation") for n in ACTIVATION_STATS})
    rows: dict[int, dict[str, list[float]]] = {}
    samples: list[RecurrentSample] = []
    bad, first_bad = 0, 0
    body = lines[1:]  # body[i] is line i + 2; a non-empty last one has no newline: it was cut
    for i, line in enumerate(body):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise TypeError
            if "recurrent" in rec:
                if any(rec["profile"].get(f) is None for f in _PROFILE_FIELDS):
                    raise KeyError("profile")
                samples.append(
                    RecurrentSample(
                        str(rec["recurrent"]),
                        int(rec["step"]),
                        BPTTProfile._from_dict(rec["profile"]),
                    )
                )
                continue
            # values converted here, so one bad record is skipped, not fatal
            step = int(rec["step"])
            vals = {k: [float(x) for x in v] for k, v in rec.items() if isinstance(v, list)}
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError, RecursionError):
            bad += 1
            first_bad = first_bad or i + 2
            continue
        for name, v in vals.items():  # a readable record of the wrong width is an error
            width, what = widths.get(name, (len(v), ""))
            if len(v) != width:
                raise ValueError(
                    f"path: {p!r} line {i + 2}: statistic {name!r} has {len(v)} values but the "
                    f"header lists {width} {what}{'' if width == 1 else 's'}; malformed record"
                )
        rows[step] = vals
    if bad and not rows and not samples and (bad > 1 or first_bad != len(body) + 1):
        raise ValueError(
            f"path: {p!r} has no readable records: all {bad} record(s) after the header are "
            f"unreadable (the first at line {first_bad}); the file is damaged"
        )
    if bad:
        warnings.warn(
            f"{p}: skipped {bad} incomplete or unreadable record(s) (the writer was "
            "probably interrupted); loaded the rest",
            RuntimeWarning,
            stacklevel=2,
        )

    steps = sorted(rows)

    def table(name: str, width: int) -> torch.Tensor:
        out = torch.full((len(steps), width), math.nan, dtype=torch.float64)  # NaN: absent
        for r, s in enumerate(steps):
            vals = rows[s].get(name)
            if vals is not None:  # width checked above
                out[r] = torch.tensor(vals, dtype=torch.float64)
        return out

    return RunHistory(
        layers=layers,
        layer_kinds=layer_kinds,
        activations=acts,
        activation_kinds=act_kinds,
        steps=torch.tensor(steps, dtype=torch.long),
        layer_stats={n: table(n, len(layers)) for n in LAYER_STATS},
        activation_stats={n: table(n, len(acts)) for n in ACTIVATION_STATS},
        recurrent=tuple(samples),
        layer_info=info,
        meta=meta,
        notes=notes,
    )
