"""Sinks for a Watch's records: TensorBoard, Weights & Biases, CSV (and the JSONL run file).

Each sink receives, at every ``Watch.flush()``, the steps recorded since the last flush (see
:class:`gradwatch.watch.Sink`). NaN means "not measured at this step" (parameter norms, update
ratios and activation statistics are sampled every ``detail_every`` recorded steps) and is
skipped; a NaN gradient shows in the ``nonfinite`` count. Optional dependencies are imported
when a sink is built, never when this module is.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from typing import IO, Any

import numpy as np
import torch

from gradwatch.watch.history import RecurrentSample
from gradwatch.watch.runfile import JSONLSink
from gradwatch.watch.watch import LAYER_STATS

__all__ = ["CSVSink", "JSONLSink", "TensorBoardSink", "WandbSink"]

EXTRA = "pip install 'gradwatch[integrations]'"


def _need(what: str, module: str, package: str) -> None:
    """Import ``module`` or raise an ImportError that names the extra to install."""
    try:
        __import__(module)
    except ImportError as err:
        raise ImportError(f"{what} needs {package}: {EXTRA}") from err


def scalars(
    header: dict[str, Any], steps: list[int], rows: dict[str, torch.Tensor], prefix: str
) -> list[tuple[int, dict[str, float]]]:
    """Per step, ``{"<prefix>/<stat>/<name>": value}`` for every measured (non-NaN) value."""
    out: list[tuple[int, dict[str, float]]] = [(s, {}) for s in steps]
    for stat, table in rows.items():  # table: (len(steps), width)
        names = header["layers"] if stat in LAYER_STATS else header["activations"]
        keys = [f"{prefix}/{stat}/{n}" for n in names]
        for r, values in enumerate(table.tolist()):
            for key, v in zip(keys, values, strict=True):
                if not math.isnan(v):
                    out[r][1][key] = v
    return out


class TensorBoardSink:
    """Per-layer scalars and the gradient-flow image in TensorBoard.

    Scalars are ``<prefix>/<stat>/<layer or activation>`` at the Watch's step (grad_norm,
    param_norm, update_ratio, nonfinite, saturated, inactive, dead, mean_abs; values not
    measured at a step are skipped). The image ``<prefix>/gradient_flow`` is log10 of every
    layer's gradient norm, layers top to bottom in model order and recorded steps left to
    right, redrawn at each flush: dark blue is the run's smallest value, yellow its largest,
    grey not measured. Past ``image_steps`` steps neighbouring columns are averaged (in
    log10), so the image stays small for any run length.

    Args:
        log_dir: where the event files go (``SummaryWriter(log_dir)``; None: ``runs/...``).
        writer: an open ``SummaryWriter`` to share instead (it is flushed, not closed, by
            :meth:`close`).
        prefix: the first component of every tag.
        image_steps: the most columns the gradient-flow image keeps.

    Example:
        >>> from gradwatch.integrations import TensorBoardSink         # doctest: +SKIP
        >>> with Watch(model, sinks=[TensorBoardSink("runs/exp1")]) as watch:
        ...     ...                                                   # train; watch.step()
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        writer: Any = None,
        prefix: str = "gradwatch",
        image_steps: int = 512,
    ) -> None:
        if log_dir is not None and writer is not None:
            raise ValueError("log_dir: give log_dir or writer, not both")
        if isinstance(image_steps, bool) or not isinstance(image_steps, int) or image_steps < 1:
            raise ValueError(f"image_steps: expected an int >= 1, got {image_steps!r}")
        self._own = writer is None
        if writer is None:
            _need("TensorBoardSink", "tensorboard", "tensorboard")
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(None if log_dir is None else os.fspath(log_dir))
        elif not hasattr(writer, "add_scalar"):
            raise TypeError(
                f"writer: expected a torch.utils.tensorboard.SummaryWriter, got "
                f"{type(writer).__name__}"
            )
        self.writer = writer
        self.prefix = prefix
        self._flow = _Columns(image_steps)
        self._last = 0

    def write(
        self,
        header: dict[str, Any],
        steps: list[int],
        rows: dict[str, torch.Tensor],
        samples: Sequence[RecurrentSample],
    ) -> None:
        for step, values in scalars(header, steps, rows, self.prefix):
            for tag, v in values.items():
                self.writer.add_scalar(tag, v, step)
        if steps:
            self._flow.add(rows["grad_norm"].numpy())
            self._last = steps[-1]
            self.writer.add_image(
                f"{self.prefix}/gradient_flow", self._flow.image(), self._last, dataformats="HWC"
            )
        self.writer.flush()

    def close(self) -> None:
        if self._own:
            self.writer.close()
        else:
            self.writer.flush()


class WandbSink:
    """Per-layer scalars in a Weights & Biases run, against their own x-axis.

    Every recorded step becomes one ``run.log`` of ``<prefix>/<stat>/<name>`` values and
    ``<prefix>/step``, declared with ``define_metric`` as the x-axis of ``<prefix>/*``. The
    sink never passes ``step=`` to ``run.log``, so it does not move a step counter you set,
    and the charts line up with the Watch's steps however often it flushes (the W&B loggers
    of Lightning and the Hugging Face Trainer work the same way). If your own code calls
    ``run.log(..., step=n)``, switch it to an x-axis metric too: W&B drops rows logged below
    its current step. The sink never starts, finishes or waits on a run; :meth:`close` leaves
    the run open.

    Args:
        run: the run to log to (None: the active ``wandb.run``).
        prefix: the first component of every key.

    Example:
        >>> run = wandb.init(project="p")                            # doctest: +SKIP
        >>> watch = Watch(model, sinks=[WandbSink(run)])
    """

    def __init__(self, run: Any = None, prefix: str = "gradwatch") -> None:
        _need("WandbSink", "wandb", "wandb")
        import wandb

        if run is None:
            run = wandb.run
            if run is None:
                raise ValueError("run: no active W&B run; call wandb.init(...) first or pass run=")
        if not hasattr(run, "log"):
            raise TypeError(f"run: expected a wandb Run, got {type(run).__name__}")
        self.run = run
        self.prefix = prefix
        self.step_key = f"{prefix}/step"
        run.define_metric(self.step_key)
        run.define_metric(f"{prefix}/*", step_metric=self.step_key)

    def write(
        self,
        header: dict[str, Any],
        steps: list[int],
        rows: dict[str, torch.Tensor],
        samples: Sequence[RecurrentSample],
    ) -> None:
        for step, values in scalars(header, steps, rows, self.prefix):
            self.run.log({self.step_key: step, **values})

    def close(self) -> None:
        pass  # the run is the caller's: finishing it here would end their logging too


CSV_HEADER = ("step", "stat", "name", "value")


class CSVSink:
    """Long-format CSV: one line per (step, statistic, layer or activation) that was measured.

    Columns ``step,stat,name,value``; the header is written once and later flushes, and later
    runs writing to the same file, append. Values keep full float64 precision. Read it with
    ``pandas.read_csv(path)`` and pivot as needed.

    Args:
        path: the ``.csv`` file (created, or appended to if it is one of ours).

    Example:
        >>> watch = Watch(model, sinks=[CSVSink("grads.csv")])        # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = os.fspath(path)
        if os.path.isdir(path):
            raise IsADirectoryError(f"path: {path!r} is a directory; give a file name")
        self.fresh = not os.path.exists(path) or os.path.getsize(path) == 0
        if not self.fresh:
            with open(path, encoding="utf-8", errors="replace") as f:
                first = f.readline().strip()
            if first != ",".join(CSV_HEADER):
                raise FileExistsError(
                    f"path: {path!r} exists and is not a gradwatch CSV (header "
                    f"{','.join(CSV_HEADER)!r}); refusing to append to it"
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
            self.file = open(self.path, "a", encoding="utf-8", newline="")
            if self.fresh:
                csv.writer(self.file).writerow(CSV_HEADER)
                self.fresh = False
        out = csv.writer(self.file)
        for step, values in scalars(header, steps, rows, ""):
            for key, v in values.items():
                _, stat, name = key.split("/", 2)  # names may contain "/": split twice only
                out.writerow((step, stat, name, repr(v)))
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class _Columns:
    """log10 gradient norms, one column per step, averaged in pairs past ``width`` columns.

    At most ``width + 2`` columns are kept, however long the run.
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.cols: list[np.ndarray] = []  # each (L,)
        self.stride = 1  # steps per column
        self.pending: list[np.ndarray] = []  # steps waiting to fill the next column

    def add(self, grad_norm: np.ndarray) -> None:  # (S, L)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log10(grad_norm)
        logs[~np.isfinite(logs)] = np.nan  # a zero or non-finite norm has no colour
        for row in logs:
            self.pending.append(row)
            if len(self.pending) == self.stride:
                self.cols.append(_nanmean(np.stack(self.pending)))
                self.pending = []
            if len(self.cols) > self.width and len(self.cols) % 2 == 0:  # pending is empty
                c = self.cols
                self.cols = [_nanmean(np.stack(c[i : i + 2])) for i in range(0, len(c), 2)]
                self.stride *= 2

    def image(self) -> np.ndarray:
        """(H, W, 3) uint8: viridis-like colours of the columns, each cell scaled up."""
        cols = [*self.cols, _nanmean(np.stack(self.pending))] if self.pending else self.cols
        grid = np.stack(cols, axis=1)  # (L, C)
        finite = grid[np.isfinite(grid)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        t = (grid - lo) / (hi - lo) if hi > lo else np.full_like(grid, 0.5)
        rgb = np.stack([np.interp(t, _STOPS, c) for c in _VIRIDIS.T], axis=-1)  # (L, C, 3)
        rgb[~np.isfinite(grid)] = 0.5
        L, C = grid.shape
        ry, rx = max(1, 128 // L), max(1, 512 // C)
        big = np.repeat(np.repeat(rgb, ry, axis=0), rx, axis=1)
        return (big * 255).round().astype(np.uint8)


def _nanmean(a: np.ndarray) -> np.ndarray:
    """Column mean ignoring NaN; NaN (without a warning) where a column has no value."""
    n = np.isfinite(a).sum(axis=0)
    s = np.where(np.isfinite(a), a, 0.0).sum(axis=0)
    return np.where(n > 0, s / np.maximum(n, 1), np.nan)


# A few points of matplotlib's viridis (0 -> dark blue, 1 -> yellow), linearly interpolated.
_STOPS = np.linspace(0.0, 1.0, 5)
_VIRIDIS = np.array(
    [
        [0.267, 0.005, 0.329],
        [0.229, 0.322, 0.546],
        [0.128, 0.567, 0.551],
        [0.369, 0.789, 0.383],
        [0.993, 0.906, 0.144],
    ]
)
