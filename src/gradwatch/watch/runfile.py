"""Run files: JSON Lines, a header line then one record per recorded step.

Appending records line by line means a process killed mid-write leaves every complete record
readable; ``load_run`` warns about the partial tail and reads the rest.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Sequence
from typing import IO, Any, Protocol, runtime_checkable

import torch

from gradwatch.core.bptt import BPTTProfile
from gradwatch.watch.history import RecurrentSample, RunHistory

__all__ = ["JSONLSink", "Sink", "load_run"]

FORMAT, VERSION = "gradwatch-run", 1
_LISTS = ("layers", "layer_kinds", "activations", "activation_kinds")
_PROFILE_FIELDS = tuple(f.name for f in dataclasses.fields(BPTTProfile))


def _num(v: float) -> float | str:
    return v if math.isfinite(v) else repr(v)  # JSON has no NaN/Inf


def _is_run_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = json.loads(f.readline() or b"null")
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(head, dict) and head.get("format") == FORMAT


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

    Refuses to overwrite a file that is not a gradwatch run file.

    Example:
        >>> Watch(model, sinks=[JSONLSink("run.jsonl")])        # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = os.fspath(path)
        if os.path.isdir(path):
            raise IsADirectoryError(f"path: {path!r} is a directory; give a file name")
        if os.path.exists(path) and os.path.getsize(path) > 0 and not _is_run_file(path):
            raise FileExistsError(
                f"path: {path!r} exists and is not a gradwatch run file; refusing to overwrite it"
            )
        self.path = path
        self.file: IO[str] | None = None

    def write(
        self,
        header: dict[str, Any],
        steps: list[int],
        rows: dict[str, torch.Tensor],
        samples: Sequence[RecurrentSample],
    ) -> None:
        if self.file is None:
            self.file = open(self.path, "w", encoding="utf-8")
            info = {k: [_num(v) for v in t.tolist()] for k, t in header["layer_info"].items()}
            self.file.write(
                json.dumps({"format": FORMAT, "version": VERSION, **header, "layer_info": info})
                + "\n"
            )
        lines = []
        for r, step in enumerate(steps):
            rec: dict[str, Any] = {"step": step}
            for name, t in rows.items():
                rec[name] = [_num(v) for v in t[r].tolist()]
            lines.append(json.dumps(rec))
        for s in samples:
            lines.append(
                json.dumps({"recurrent": s.module, "step": s.step, "profile": s.profile.to_dict()})
            )
        if lines:
            self.file.write("\n".join(lines) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def load_run(path: str | os.PathLike[str]) -> RunHistory:
    """Read a run file written by ``Watch.save`` into the same :class:`RunHistory`.

    A file cut mid-record (the writer was killed) loads every complete record and warns about
    the rest. An empty, binary, truncated-header or foreign file raises one ``ValueError``.

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
        info = {
            str(k): torch.tensor([float(x) for x in v], dtype=torch.float64)
            for k, v in dict(head.get("layer_info", {})).items()
        }
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"path: {p!r} has a malformed header") from None

    rows: dict[int, dict[str, Any]] = {}
    samples: list[RecurrentSample] = []
    bad = 0
    body = lines[1:]
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
            else:  # values converted here, so one bad record is skipped, not fatal
                rows[int(rec["step"])] = {
                    k: [float(x) for x in v] for k, v in rec.items() if isinstance(v, list)
                }
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError, RecursionError):
            bad += 1
            last = i == len(body) - 1 or not any(x.strip() for x in body[i + 1 :])
            if not last:
                continue
    if bad:
        warnings.warn(
            f"{p}: skipped {bad} incomplete or unreadable record(s) (the writer was "
            "probably interrupted); loaded the rest",
            RuntimeWarning,
            stacklevel=2,
        )

    steps = sorted(rows)

    def table(name: str, width: int) -> torch.Tensor:
        out = torch.full((len(steps), width), math.nan, dtype=torch.float64)
        for r, s in enumerate(steps):
            vals = rows[s].get(name)
            if isinstance(vals, list) and len(vals) == width:
                out[r] = torch.tensor(vals, dtype=torch.float64)
        return out

    from gradwatch.watch.watch import ACTIVATION_STATS, LAYER_STATS

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
    )
