"""A Hugging Face Trainer callback that runs a Watch over ``trainer.train()``."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from gradwatch.diagnose import Finding
from gradwatch.watch import RunHistory, Sink, Watch

try:
    from transformers import TrainerCallback
except ImportError as err:
    raise ImportError(
        "gradwatch.integrations.transformers needs transformers: "
        "pip install 'gradwatch[integrations]'"
    ) from err

__all__ = ["GradWatchCallback"]


class GradWatchCallback(TrainerCallback):
    """Watch a model's gradients during ``Trainer.train()`` and add them to the Trainer's logs.

    The Watch is built on the Trainer's model in ``on_train_begin`` and reads the gradients in
    ``on_pre_optimizer_step``: after backward over all accumulated micro-batches and after the
    Trainer's gradient clipping (``max_grad_norm``, 1.0 by default), right before
    ``optimizer.step()``. So the norms are of the gradient the optimizer uses: while clipping
    is active their total is min(the Trainer's own pre-clip ``grad_norm`` log, about
    ``max_grad_norm``); with ``max_grad_norm=0`` (no clipping) it equals that log. The Trainer
    has no callback event between the last backward and clipping.

    At every Trainer log of the training loss (``logging_steps``) the Watch is flushed to your
    ``sinks`` and ``<prefix>/grad_norm/<layer>`` and ``<prefix>/grad_norm_total`` of the most
    recent recorded step are added to the logs: to ``trainer.state.log_history`` and to every
    callback after this one. The Trainer runs its ``report_to`` loggers (TensorBoard, W&B, ...)
    before callbacks passed in ``callbacks=[...]``; add this one with :meth:`install` so they
    log our values too. At ``on_train_end`` the Watch is closed and diagnosed: ``findings``
    holds the result and the main process prints it.

    Args:
        every: record every ``every``-th optimizer step.
        sinks: where the full records go as well (``TensorBoardSink``, ``WandbSink``,
            ``CSVSink``, ``JSONLSink`` from ``gradwatch.integrations``).
        prefix: the first component of the logged names.
        verbose: print the findings at the end (main process only).
        **watch_kwargs: passed to :class:`gradwatch.Watch` (``modules``, ``detail_every``,
            ``activations``, ``meta``, ...), except ``optimizer``.

    Example:
        >>> from gradwatch.integrations.transformers import GradWatchCallback  # doctest: +SKIP
        >>> trainer = Trainer(model=model, args=args, train_dataset=ds)
        >>> cb = GradWatchCallback().install(trainer)     # or Trainer(..., callbacks=[cb])
        >>> trainer.train(); print(cb.findings)
    """

    def __init__(
        self,
        every: int = 1,
        sinks: Sequence[Sink] = (),
        *,
        prefix: str = "gradwatch",
        verbose: bool = True,
        **watch_kwargs: Any,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every: expected an int >= 1, got {every!r}")
        if "optimizer" in watch_kwargs:
            raise ValueError(
                "optimizer: leave it out; the callback steps the Watch in on_pre_optimizer_step"
            )
        self.every = every
        self.sinks = list(sinks)
        self.prefix = prefix
        self.verbose = verbose
        self.watch_kwargs = watch_kwargs
        self.watch: Watch | None = None
        self.findings: list[Finding] = []
        self._installed = False
        self._warned = False
        self._calls = 0  # on_pre_optimizer_step calls: the Watch's step count
        self._logged = -1  # the last watch step added to the logs
        self._last = _LastRow()

    def install(self, trainer: Any) -> GradWatchCallback:
        """Add this callback to ``trainer`` ahead of its ``report_to`` loggers; returns it.

        Args:
            trainer: a ``transformers.Trainer``.
        """
        handler = getattr(trainer, "callback_handler", None)
        if handler is None:
            raise TypeError(
                f"trainer: expected a transformers.Trainer, got {type(trainer).__name__}"
            )
        handler.callbacks[:] = [c for c in handler.callbacks if c is not self]
        handler.callbacks.insert(0, self)
        self._installed = True
        return self

    @property
    def history(self) -> RunHistory:
        """Everything the Watch recorded (see :attr:`gradwatch.Watch.history`)."""
        if self.watch is None:
            raise RuntimeError("history: training has not started with this callback yet")
        return self.watch.history

    # ---------------------------------------------------------------- events
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs.get("model")
        if model is None:
            raise RuntimeError("model: the Trainer passed no model to on_train_begin")
        if self.watch is not None:
            self.watch.close()  # a second train() with the same callback starts a new Watch
        self.findings, self._calls, self._logged = [], 0, -1
        self.watch = Watch(model, every=self.every, sinks=self.sinks, **self.watch_kwargs)
        self.watch.attach()
        self._last = _LastRow()
        self.watch.add_sink(self._last)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watch is not None and self.watch.attached:
            self.watch.step()
            self._calls += 1

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if self.watch is None or not self.watch.attached or logs is None or "loss" not in logs:
            return  # only the training-loss logs: not eval metrics or the end-of-train summary
        self.watch.flush()  # the sinks get every row; the logs get the latest one
        latest = 1 + (self._calls - 1) // self.every * self.every  # last recorded step
        if self._last.step != latest:  # held back by the flush (its update ratio is pending)
            h = self.watch.history  # slower: copies the whole history to the host
            if len(h):
                self._last.step, self._last.row = int(h.steps[-1]), h["grad_norm"][-1].tolist()
        if self._last.step <= self._logged:
            return
        self._logged = self._last.step
        values = {
            f"{self.prefix}/grad_norm/{n}": v
            for n, v in zip(self.watch.layer_names, self._last.row, strict=True)
            if not math.isnan(v)
        }
        if not values:
            return
        values[f"{self.prefix}/grad_norm_total"] = math.sqrt(sum(v * v for v in values.values()))
        logs.update(values)
        last = state.log_history[-1] if state.log_history else None
        if last is not None and last.get("step") == state.global_step and "loss" in last:
            last.update(values)  # the Trainer appended its copy of logs just before on_log
        if not self._installed and not self._warned and _reporters(args):
            self._warned = True
            warnings.warn(
                f"GradWatchCallback: the report_to loggers {_reporters(args)} ran before this "
                "callback and did not get the gradwatch values; add it with "
                "GradWatchCallback(...).install(trainer) instead of callbacks=[...]",
                RuntimeWarning,
                stacklevel=2,
            )

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watch is None or not self.watch.attached:
            return
        self.watch.close()  # hooks off, last rows to the sinks
        self.findings = self.watch.diagnose()
        if self.verbose and state.is_world_process_zero:
            text = "\n".join(str(f) for f in self.findings) or "no gradient problems found"
            print(f"gradwatch: {text}")


class _LastRow:
    """A sink that keeps the last grad_norm row it was handed."""

    def __init__(self) -> None:
        self.step: int = -1
        self.row: list[float] = []

    def write(
        self,
        header: dict[str, Any],
        steps: list[int],
        rows: dict[str, torch.Tensor],
        samples: Sequence[Any],
    ) -> None:
        if steps:
            self.step, self.row = steps[-1], rows["grad_norm"][-1].tolist()

    def close(self) -> None:
        pass


def _reporters(args: Any) -> list[str]:
    report_to = getattr(args, "report_to", None) or []
    report_to = [report_to] if isinstance(report_to, str) else list(report_to)
    return [r for r in report_to if r != "none"]
