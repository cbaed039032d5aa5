"""A Lightning callback that runs a Watch over ``trainer.fit`` and logs through its loggers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from gradwatch.diagnose import Finding
from gradwatch.watch import RunHistory, Sink, Watch
from gradwatch.watch.history import RecurrentSample

try:
    import lightning.pytorch as pl
except ImportError:  # the older standalone package
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as err:
        raise ImportError(
            "gradwatch.integrations.lightning needs lightning: "
            "pip install 'gradwatch[integrations]'"
        ) from err

__all__ = ["GradWatchCallback"]


class GradWatchCallback(pl.Callback):
    """Watch a LightningModule's gradients during ``trainer.fit`` and log them.

    The Watch is built on the LightningModule at fit start and reads the gradients in
    ``on_before_optimizer_step``: after backward and gradient accumulation, after AMP's
    ``scaler.unscale_`` (Lightning unscales right before this hook) and *before* gradient
    clipping, so the norms are those of the raw, unscaled gradient (the same point where
    Lightning's own ``grad_norm`` is meant to be called). One Watch step per optimizer step.

    Every ``log_every_n_steps`` optimizer steps (default: the trainer's) the Watch is flushed:
    your ``sinks`` get the new rows, and every logger in ``trainer.loggers`` gets
    ``<prefix>/grad_norm/<layer>`` and ``<prefix>/grad_norm_total`` for each recorded step at
    that step's ``global_step`` (the step Lightning logs that batch's ``self.log`` values at),
    so one host sync per flush and no per-step logging cost. At fit end (or when fit raises)
    the Watch is closed and diagnosed: ``findings`` holds the result, rank 0 prints it and
    adds it as text to loggers that take text (TensorBoard).

    Args:
        every: record every ``every``-th optimizer step.
        log_every_n_steps: optimizer steps between flushes to the loggers and sinks (None: the
            trainer's ``log_every_n_steps``; 0 there means only at the end).
        sinks: where the full records go as well (``TensorBoardSink``, ``WandbSink``,
            ``CSVSink``, ``JSONLSink`` from ``gradwatch.integrations``).
        prefix: the first component of the logged metric names.
        verbose: print the findings at the end (rank 0 only).
        **watch_kwargs: passed to :class:`gradwatch.Watch` (``modules``, ``detail_every``,
            ``activations``, ``meta``, ...), except ``optimizer``: the callback steps the
            Watch itself.

    Example:
        >>> from gradwatch.integrations.lightning import GradWatchCallback   # doctest: +SKIP
        >>> cb = GradWatchCallback()
        >>> Trainer(callbacks=[cb]).fit(module, loader); print(cb.findings)

    Works with ``lightning.pytorch`` (preferred when installed) and with the standalone
    ``pytorch_lightning`` package, whose trainer calls the same hooks by name.
    """

    def __init__(
        self,
        every: int = 1,
        log_every_n_steps: int | None = None,
        sinks: Sequence[Sink] = (),
        *,
        prefix: str = "gradwatch",
        verbose: bool = True,
        **watch_kwargs: Any,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every: expected an int >= 1, got {every!r}")
        if log_every_n_steps is not None and (
            isinstance(log_every_n_steps, bool)
            or not isinstance(log_every_n_steps, int)
            or log_every_n_steps < 0
        ):
            raise ValueError(
                f"log_every_n_steps: expected None or an int >= 0, got {log_every_n_steps!r}"
            )
        if "optimizer" in watch_kwargs:
            raise ValueError(
                "optimizer: leave it out; the callback steps the Watch in on_before_optimizer_step"
            )
        self.every = every
        self.log_every_n_steps = log_every_n_steps
        self.sinks = list(sinks)
        self.prefix = prefix
        self.verbose = verbose
        self.watch_kwargs = watch_kwargs
        self.watch: Watch | None = None
        self.findings: list[Finding] = []
        self._offset: int | None = None  # global_step at the Watch's first step
        self._flushed_at = -1  # global_step of the last flush

    @property
    def history(self) -> RunHistory:
        """Everything the Watch recorded (see :attr:`gradwatch.Watch.history`)."""
        if self.watch is None:
            raise RuntimeError("history: no fit has started with this callback yet")
        return self.watch.history

    # ---------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.watch is not None:
            self.watch.close()  # a second fit with the same callback starts a new Watch
        self.findings, self._offset, self._flushed_at = [], None, -1
        self.watch = Watch(pl_module, every=self.every, sinks=self.sinks, **self.watch_kwargs)
        self.watch.attach()
        if trainer.loggers:
            self.watch.add_sink(_LoggerSink(trainer.loggers, self.prefix, self._logger_step))

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if self.watch is None:
            return
        if self._offset is None:
            self._offset = trainer.global_step
        self.watch.step()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        n = self.log_every_n_steps
        if n is None:
            n = getattr(trainer, "log_every_n_steps", 0)  # set on the trainer by Lightning
        step = trainer.global_step
        if self.watch is not None and n and step % n == 0 and step != self._flushed_at:
            self._flushed_at = step  # accumulation: several batch ends share one global_step
            self.watch.flush()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._finish(trainer)

    # ---------------------------------------------------------------- internals
    def _logger_step(self, watch_step: int) -> int:
        """Lightning's logging step of the batch whose optimizer step was ``watch_step``."""
        return (self._offset or 0) + watch_step - 1

    def _finish(self, trainer: pl.Trainer) -> None:
        if self.watch is None or not self.watch.attached:
            return
        self.watch.close()  # hooks off, last rows to the loggers and sinks
        self.findings = self.watch.diagnose()
        if not trainer.is_global_zero:
            return
        text = "\n".join(str(f) for f in self.findings) or "no gradient problems found"
        if self.verbose:
            print(f"gradwatch: {text}")
        for logger in trainer.loggers:
            experiment: Any = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_text"):
                experiment.add_text(f"{self.prefix}/findings", text, trainer.global_step)


class _LoggerSink:
    """Per-layer gradient norms and their total to Lightning loggers, each at its own step."""

    def __init__(self, loggers: Sequence[Any], prefix: str, step_of: Callable[[int], int]) -> None:
        self.loggers, self.prefix, self.step_of = list(loggers), prefix, step_of

    def write(
        self,
        header: dict[str, Any],
        steps: list[int],
        rows: dict[str, torch.Tensor],
        samples: Sequence[RecurrentSample],
    ) -> None:
        keys = [f"{self.prefix}/grad_norm/{n}" for n in header["layers"]]
        for step, values in zip(steps, rows["grad_norm"].tolist(), strict=True):
            metrics = {k: v for k, v in zip(keys, values, strict=True) if not math.isnan(v)}
            if not metrics:
                continue
            metrics[f"{self.prefix}/grad_norm_total"] = math.sqrt(
                sum(v * v for v in metrics.values())
            )
            for logger in self.loggers:
                logger.log_metrics(metrics, step=self.step_of(step))

    def close(self) -> None:
        pass  # Lightning finalizes (and saves) its loggers after fit end
