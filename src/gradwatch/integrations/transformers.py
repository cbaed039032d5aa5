"""A Hugging Face Trainer callback that runs a Watch over ``trainer.train()``.

When the gradients are read. On the optimizer step's last micro-batch the Trainer calls, after
the backward and before the first callback event that follows it (``on_pre_optimizer_step``),
``_clip_grad_norm`` (``max_grad_norm > 0``) and ``_get_grad_norm``, which without clipping
calls ``accelerator.clip_grad_norm_(params, inf)``. Clipping rewrites every gradient in place,
and with one Inf entry anywhere it multiplies all of them by 0 or NaN: at ``max_norm=inf``
``torch.nn.utils.clip_grad_norm_`` (which accelerate calls when torch.distributed is missing)
and FSDP1's ``clip_grad_norm_`` multiply by inf/inf = NaN; accelerate 1.16's own path skips
that multiply. A Watch stepped in ``on_pre_optimizer_step`` would record clipped norms and
blame the wrong layers.

So the callback reads at the end of that backward instead:

- ``on_train_begin`` puts a post-accumulate-grad hook on each trainable parameter.
- A hook acts only in a backward of an optimizer step's last micro-batch: between
  ``on_step_begin`` and ``on_pre_optimizer_step`` (a backward run elsewhere, say in an
  evaluation callback, is not read), with accelerate's ``GradientState().sync_gradients``
  set. transformers 5 sets that flag before every micro-batch
  (``_set_sync_gradients(do_sync_step)``), true for the one that completes the accumulated
  gradient, the shorter last accumulation of an epoch included.
- The first hook that acts in that backward queues one autograd-engine callback (nothing is
  read, nothing waits on the device). When the whole backward is done it queues a second one,
  which calls ``Watch.step()``. That hop puts the read behind every callback queued while the
  backward ran: DDP's reducer queues the one that waits for its all-reduce and writes the
  reduced gradients back to ``.grad`` (when its last bucket is ready, so after our first), and
  FSDP2 queues its own at the start of backward (FSDP2 runs the sharded parameters' hooks
  itself, after its reduce-scatter). So under DDP and FSDP2 the Watch reads the reduced
  gradients, as it expects.
- Reentrant activation checkpointing runs a nested backward inside a node of the outer one; a
  callback queued in it runs when the nested backward ends. There the outer node is still
  running (``torch._C._current_autograd_node()``), so the callback waits for that node to
  finish and then for the end of the outer backward.

If no hook read an optimizer step's gradients (gradients written to ``.grad`` without autograd
accumulating them, as DeepSpeed's ZeRO does; a Trainer that does not set ``sync_gradients`` on
the last micro-batch), ``on_pre_optimizer_step`` steps the Watch instead, after the Trainer's
clipping, and says so once in a warning. No step is recorded twice: one read per optimizer
step, at the end of the first backward of its last micro-batch.

Why hooks rather than wrapping the Trainer's norm call (``install`` patching
``trainer._clip_grad_norm`` / ``_get_grad_norm``): those are private methods of transformers 5
(4.x clips inline in its loop), so a patch breaks between releases, and it would need
``install()``. The hooks rest on torch's autograd engine and on accelerate's sync flag, which
the Trainer sets for DDP's ``no_sync`` itself.
"""

from __future__ import annotations

import functools
import math
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

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

    The Watch is built on the Trainer's model in ``on_train_begin`` and reads the gradients
    once per optimizer step, at the end of the backward of its last micro-batch: the gradient
    accumulated over all micro-batches, before the Trainer clips it or takes its norm (see the
    module docstring for how). So ``max_grad_norm`` does not change what the Watch sees: the
    norms are the raw ones, and a NaN/Inf shows in the layer it is in, not in every layer the
    clipping rewrote. The Trainer's own logged ``grad_norm`` is the pre-clip total as well, so
    it equals ``<prefix>/grad_norm_total``; the gradient the optimizer then uses is the
    clipped one. Under DDP and FSDP2 the gradients are read after their reduction; under fp16
    mixed precision the Watch is given the Trainer's GradScaler and divides its scale out.
    Where the hooks cannot see the step (gradients written outside autograd, as under
    DeepSpeed ZeRO) the Watch is stepped in ``on_pre_optimizer_step``, after the clipping,
    with a one-time warning.

    At every Trainer log of the training loss (``logging_steps``) the Watch is flushed to your
    ``sinks`` and ``<prefix>/grad_norm/<layer>`` and ``<prefix>/grad_norm_total`` of the most
    recent recorded step are added to the logs: to ``trainer.state.log_history`` and to every
    callback after this one. The Trainer runs its ``report_to`` loggers (TensorBoard, W&B, ...)
    before callbacks passed in ``callbacks=[...]``; add this one with :meth:`install` so they
    log our values too. At ``on_train_end`` the hooks are removed and the Watch is closed and
    diagnosed: ``findings`` holds the result and the main process prints it. The Trainer has
    no event for a ``train()`` that raises: :meth:`install` also wraps ``trainer.train`` so
    that the hooks go then too; otherwise call :meth:`close`.

    Args:
        every: record every ``every``-th optimizer step.
        sinks: where the full records go as well (``TensorBoardSink``, ``WandbSink``,
            ``CSVSink``, ``JSONLSink`` from ``gradwatch.integrations``).
        prefix: the first component of the logged names.
        verbose: print the findings at the end (main process only).
        **watch_kwargs: passed to :class:`gradwatch.Watch` (``modules``, ``detail_every``,
            ``activations``, ``meta``, ``scaler``, ...), except ``optimizer``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from transformers import Trainer, TrainingArguments
        >>> from gradwatch.integrations.transformers import GradWatchCallback
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.body = nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 1))
        ...     def forward(self, x, labels):
        ...         return {"loss": nn.functional.mse_loss(self.body(x), labels)}
        >>> data = [{"x": torch.randn(8), "labels": torch.randn(1)} for _ in range(64)]
        >>> args = TrainingArguments("out", max_steps=8, report_to="none", use_cpu=True,
        ...                          max_grad_norm=1.0, save_strategy="no")
        >>> trainer = Trainer(model=Net(), args=args, train_dataset=data)
        >>> cb = GradWatchCallback(verbose=False).install(trainer)  # or callbacks=[cb]
        >>> _ = trainer.train()                            # doctest: +ELLIPSIS
        {'train_runtime': ...}
        >>> cb.history["grad_norm"].shape                  # (optimizer steps, layers)
        torch.Size([8, 2])
        >>> for finding in cb.findings:                    # doctest: +SKIP
        ...     print(finding)
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
                "optimizer: leave it out; the callback steps the Watch once per optimizer step"
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
        self._calls = 0  # Watch.step() calls: optimizer steps so far
        self._logged = -1  # the last watch step added to the logs
        self._last = _LastRow()
        self._handles: list[RemovableHandle] = []  # the post-accumulate-grad hooks
        self._sync: Any = None  # accelerate's GradientState: sync_gradients on a last micro-batch
        self._lock = threading.Lock()  # hooks may run on several autograd threads at once
        self._armed = False  # between on_step_begin and on_pre_optimizer_step
        self._queued = False  # the backward now running has its read queued
        self._read = False  # this optimizer step's gradients were read at the end of a backward
        self._warned_fallback = False
        self._warned_twice = False

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
        train = trainer.train
        if self not in getattr(train, "_gradwatch_callbacks", ()):
            trainer.train = _closing_on_error(train, self)
        return self

    def close(self) -> None:
        """Remove the gradient hooks and close the Watch (its hooks too). Safe to call twice.

        ``on_train_end`` does this, and so does a ``train()`` that raises when the callback
        was added with :meth:`install`. Added with ``callbacks=[...]`` instead, call it after
        a ``train()`` that raised (the next ``train()`` also does it).
        """
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._armed = self._queued = self._read = False
        if self.watch is not None and self.watch.attached:
            self.watch.close()

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
        self.close()  # a second train() (or a retry of auto_find_batch_size) starts anew
        self.findings, self._calls, self._logged = [], 0, -1
        watch_kwargs = dict(self.watch_kwargs)
        # fp16: the gradients are read before the Trainer unscales them; the Watch divides.
        scaler = getattr(kwargs.get("optimizer"), "scaler", None)  # an AcceleratedOptimizer's
        if scaler is not None:
            watch_kwargs.setdefault("scaler", scaler)
        self.watch = Watch(model, every=self.every, sinks=self.sinks, **watch_kwargs)
        self.watch.attach()
        self._last = _LastRow()
        self.watch.add_sink(self._last)
        self._sync = _gradient_state()
        if self._sync is None:
            return  # no accelerate: the last micro-batch is unknown; on_pre_optimizer_step reads
        hook = _grad_hook(weakref.ref(self))
        try:
            for p in model.parameters():
                if p.requires_grad:
                    self._handles.append(p.register_post_accumulate_grad_hook(hook))
        except BaseException:
            self.close()
            raise

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._armed, self._read = True, False  # a stray backward elsewhere is not read

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._armed = self._queued = False  # no backward is running now
        if self.watch is None or not self.watch.attached:
            return
        if self._read:
            self._read = False  # read at the end of the last micro-batch's backward
            return
        if not self._warned_fallback:
            self._warned_fallback = True
            warnings.warn(
                "GradWatchCallback: the gradient hooks did not see the backward of the last "
                f"micro-batch of optimizer step {state.global_step + 1} (its gradients were "
                "written outside autograd's accumulation, as DeepSpeed ZeRO does, or the "
                "Trainer did not set accelerate's sync_gradients for it). Such steps are read in "
                "on_pre_optimizer_step, after the Trainer's clipping and norm, which rewrite "
                "the gradients: their norms are post-clip, and a NaN/Inf in one layer can "
                "show in all. (Shown once.)",
                RuntimeWarning,
                stacklevel=2,
            )
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
        self.close()  # hooks off, last rows to the sinks
        self.findings = self.watch.diagnose()
        if self.verbose and state.is_world_process_zero:
            text = "\n".join(str(f) for f in self.findings) or "no gradient problems found"
            print(f"gradwatch: {text}")

    # ---------------------------------------------------------------- reading in backward
    def _queue_read(self) -> None:
        """From a parameter's hook in a last micro-batch's backward: queue the read once."""
        with self._lock:
            if self._queued:
                return
            self._queued = True
        _queue(self._backward_done)

    def _backward_done(self) -> None:
        """Runs when the backward it was queued in has finished."""
        node = torch._C._current_autograd_node()
        if node is not None:
            # A backward nested in an outer one's node (reentrant checkpointing) ended: wait
            # for that node, then for the end of the outer backward.
            node.register_hook(_once(lambda: _queue(self._backward_done)))
            return
        _queue(self._read_grads)  # behind the callbacks queued during backward (DDP's)

    def _read_grads(self) -> None:
        self._queued = False
        if self.watch is None or not self.watch.attached:
            return
        if self._read:  # another backward in the same last micro-batch: one read per step
            if not self._warned_twice:
                self._warned_twice = True
                warnings.warn(
                    "GradWatchCallback: more than one backward in the last micro-batch of an "
                    "optimizer step; the Watch read the gradients at the end of the first",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return
        self._read = True
        self.watch.step()
        self._calls += 1


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


def _gradient_state() -> Any:
    """accelerate's GradientState (shared by every instance), or None without accelerate."""
    try:
        from accelerate.state import GradientState
    except ImportError:  # pragma: no cover - the Trainer itself needs accelerate
        return None
    return GradientState()


def _grad_hook(me: weakref.ref[GradWatchCallback]) -> Callable[[torch.Tensor], None]:
    """A post-accumulate-grad hook: reads no tensor, only flags (no host sync)."""

    def hook(p: torch.Tensor) -> None:
        cb = me()
        if cb is not None and cb._armed and not cb._queued and cb._sync.sync_gradients:
            cb._queue_read()

    return hook


def _queue(fn: Callable[[], None]) -> None:
    """Run ``fn`` when the backward now running has finished (after the callbacks queued
    so far; a callback may queue more)."""
    torch.autograd.Variable._execution_engine.queue_callback(fn)


def _once(fn: Callable[[], None]) -> Callable[..., None]:
    """A node post-hook that calls ``fn`` the first time only (a retained graph reruns it)."""
    done: list[bool] = []

    def hook(*_: Any) -> None:
        if not done:
            done.append(True)
            fn()

    return hook


def _closing_on_error(train: Callable[..., Any], cb: GradWatchCallback) -> Callable[..., Any]:
    """``trainer.train`` that closes ``cb`` (hooks off, Watch closed and diagnosed) if it
    raises: the Trainer has no callback event for that."""

    @functools.wraps(train)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return train(*args, **kwargs)
        except BaseException:
            attached = cb.watch is not None and cb.watch.attached
            cb.close()
            if attached and cb.watch is not None:
                try:
                    cb.findings = cb.watch.diagnose()
                except Exception:  # never hide the error that stopped training
                    pass
            raise

    guarded._gradwatch_callbacks = (  # type: ignore[attr-defined]
        *getattr(train, "_gradwatch_callbacks", ()),
        cb,
    )
    return guarded


def _reporters(args: Any) -> list[str]:
    report_to = getattr(args, "report_to", None) or []
    report_to = [report_to] if isinstance(report_to, str) else list(report_to)
    return [r for r in report_to if r != "none"]
