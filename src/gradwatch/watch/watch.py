"""The Watch: per-layer gradient statistics recorded during training, without changing it."""

from __future__ import annotations

import copy
import fnmatch
import math
import os
import re
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from gradwatch.core.activations import (
    Activation,
    dead_share,
    inactive_share,
    module_activation,
    saturated_share,
)
from gradwatch.core.bptt import bptt_profile
from gradwatch.core.probe import layers_of, qualname, weight_gain
from gradwatch.watch import runfile
from gradwatch.watch.functional import Discovery
from gradwatch.watch.history import RecurrentSample, RunHistory, Tables
from gradwatch.watch.stats import NormPlan, hypot_segments, segment_sum

__all__ = ["Watch"]

LAYER_STATS = ("grad_norm", "param_norm", "update_ratio", "nonfinite")
ACTIVATION_STATS = ("saturated", "inactive", "dead", "mean_abs")
RECURRENT = (nn.RNN, nn.LSTM, nn.GRU)

ModuleFilter = str | type[nn.Module] | Sequence[str | type[nn.Module]] | None

_attached: weakref.WeakSet[nn.Module] = weakref.WeakSet()

_DTensor: Any = None  # FSDP2's sharded parameters and gradients
try:
    from torch.distributed.tensor import DTensor as _DTensor
except ImportError:  # pragma: no cover - torch < 2.4 or a build without torch.distributed
    pass


class _Measured(NamedTuple):
    """A recorded step read but not yet written: its gradients' plan, their (Q,) exact piece
    norms and non-finite counts (None: all finite), and the GradScaler scale still in the
    gradients (None: unscaled)."""

    step: int
    present: list[int]
    plan: NormPlan
    absent: torch.Tensor  # (L,) layers no present gradient belongs to
    norms: torch.Tensor
    counts: torch.Tensor | None
    scale: torch.Tensor | None


def _selector(modules: ModuleFilter) -> Callable[[str, nn.Module], bool]:
    if modules is None:
        return lambda name, m: True
    if isinstance(modules, (str, type)):
        items: list[Any] = [modules]
    elif isinstance(modules, Sequence) or isinstance(modules, (set, frozenset)):
        items = list(modules)
    else:
        raise TypeError(
            "modules: expected a name pattern, an nn.Module type or a list of them, got "
            f"{type(modules).__name__}"
        )
    for item in items:
        if not (isinstance(item, str) or (isinstance(item, type) and issubclass(item, nn.Module))):
            raise TypeError(
                f"modules: expected name patterns or nn.Module types, got {type(item).__name__}"
            )
    pats = [i for i in items if isinstance(i, str)]
    types = tuple(i for i in items if isinstance(i, type))
    return lambda name, m: isinstance(m, types) or any(fnmatch.fnmatchcase(name, p) for p in pats)


class Watch:
    """Record per-layer gradient statistics in any training loop, with no effect on training.

    Per recorded step and layer (leaf modules with trainable parameters, by qualified name):
    gradient L2 norm, parameter norm, update/weight ratio ||dW||/||W|| and the count of NaN/Inf
    gradient entries. Per activation module (Sigmoid, Tanh, ReLU, LeakyReLU, GELU, SiLU, ELU,
    Softplus, Hardtanh): the saturated share (phi' under 1% of its maximum), the dead share for
    ReLU-like units (inactive for the whole batch) and the mean |activation|. Per nn.RNN /
    LSTM / GRU: the gradient-against-lag profile (:func:`gradwatch.bptt_profile`) every
    ``recurrent_every`` steps. Statistics stay on the tensors' device; the host sees them only
    when ``history`` is read or the run file is flushed, so ``step()`` adds no host sync. A
    plain recorded step only reads the gradients' norms (one fused pass); its row is written
    with up to 15 others, and ``history``, ``flush()`` and ``close()`` write any still pending.

    Args:
        model: the network to watch. Only a weak reference is kept.
        optimizer: if given, the Watch hooks ``optimizer.step`` and records by itself (do not
            call ``step()``); update ratios are then exact.
        every: record every ``every``-th step (1 = all).
        modules: only watch modules whose qualified name matches these fnmatch patterns or
            whose type is one of these types.
        activations: also record activation statistics (forward hooks on recorded steps
            only). Only forward passes that belong to training count: with gradients enabled
            and the module in ``train()`` mode; validation passes (``torch.no_grad()``,
            ``torch.inference_mode()``, ``model.eval()``) are not counted.
        history: rows kept at full resolution (the most recent recorded steps); an equally long
            downsampled view keeps the whole run, so memory is constant.
        detail_every: on every ``detail_every``-th recorded step (0: never) also take the
            statistics that cost more than the gradient norm: parameter norms, the update ratio
            (a copy of the weights) and the activation statistics (a pass over every
            activation). NaN in the other rows. 1 takes them on every recorded step.
        recurrent_every: steps between gradient-through-time samples of recurrent modules
            (0 disables them).
        scaler: a ``torch.amp.GradScaler`` whose scale divides the gradients when ``step()`` is
            called before ``scaler.unscale_`` (norms are then of the unscaled gradient).
        meta: strings to keep with the run (e.g. ``{"gan_discriminator": "disc",
            "gan_loss": "saturating"}`` for the GAN finding).
        sinks: a list of where records go at every flush besides the history (see
            :class:`Sink`: ``JSONLSink``, or TensorBoard / W&B / CSV from
            ``gradwatch.integrations``).
        flush_every: hand new rows to the sinks at least every this many recorded steps.
        flush_seconds: ... and at the first recorded step this many seconds after the last
            flush (``math.inf``: no time bound). Each flush is one host sync on an
            accelerator and one write per sink.

    Under ``torch.compile`` the forward hooks step aside inside compiled graphs (no graph
    breaks, no recompilations): gradient, parameter and update statistics are complete, the
    activation statistics and gradient-through-time samples of compiled modules are not
    recorded. Under torch.distributed the numbers are global: DDP gradients are read after their
    all-reduce; FSDP2's sharded (DTensor) gradients and parameters are reduced as sums of
    squares with one all-reduce per read, never one per parameter. Only rank 0 writes sinks.

    Example:
        >>> with Watch(model) as watch:                       # doctest: +SKIP
        ...     for x, y in loader:
        ...         loss_fn(model(x), y).backward()
        ...         watch.step()                              # before optimizer.step()
        ...         opt.step(); opt.zero_grad()
        >>> watch.history["grad_norm"].shape                  # doctest: +SKIP
        torch.Size([steps, layers])

    Paper: Glorot & Bengio 2010 track these per-layer gradients and saturations during
    training; the update/weight ratio is Karpathy's ~1e-3 rule of thumb (CS231n).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        every: int = 1,
        modules: ModuleFilter = None,
        activations: bool = True,
        history: int = 1024,
        *,
        detail_every: int = 10,
        recurrent_every: int = 100,
        scaler: Any = None,
        meta: dict[str, str] | None = None,
        sinks: Sequence[runfile.Sink] = (),
        flush_every: int = 100,
        flush_seconds: float = 10.0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        # torch.compile's wrapper: hooks and names belong to the module it compiled.
        compiled = hasattr(model, "_orig_mod")
        model = getattr(model, "_orig_mod", model)
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        for name, value, low in (
            ("every", every, 1),
            ("detail_every", detail_every, 0),
            ("history", history, 2),
            ("recurrent_every", recurrent_every, 0),
            ("flush_every", flush_every, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        if isinstance(flush_seconds, bool) or not isinstance(flush_seconds, (int, float)) or not (
            flush_seconds > 0
        ):
            raise ValueError(
                f"flush_seconds: expected seconds > 0 (math.inf: no time bound), got "
                f"{flush_seconds!r}"
            )
        if not isinstance(activations, bool):
            raise TypeError(f"activations: expected True or False, got {activations!r}")
        sinks = _sink_list(sinks)
        meta = _meta(meta)
        _check_scaler(scaler)
        if any(p.is_meta for p in model.parameters()):
            raise ValueError(
                "model: its parameters are on the meta device (no data yet); materialise them "
                "first (model.to_empty(device=...) and initialise), then create the Watch"
            )
        keep = _selector(modules)
        layers = [(n, m, ps) for n, m, ps in layers_of(model) if keep(n, m)]
        if not layers:
            raise ValueError(
                "model: no trainable parameters to watch (none, all frozen, or none "
                "matching `modules`)"
            )
        self._model = weakref.ref(model)
        self._optimizer = optimizer
        self.every, self.activations_on, self.detail_every = every, activations, detail_every
        self.recurrent_every = recurrent_every
        self._scaler = scaler
        self.meta = dict(meta or {})

        self.layer_names = tuple(n for n, _, _ in layers)
        self.layer_kinds = tuple(type(m).__name__ for _, m, _ in layers)
        self._params = [p for _, _, ps in layers for p in ps]
        self._param_layer = [i for i, (_, _, ps) in enumerate(layers) for _ in ps]
        device = self._params[0].device
        self._acts: list[tuple[str, nn.Module, Activation]] = []
        self.notes: list[str] = []  # what the Watch could not see, in plain words
        if activations:
            for n, m in model.named_modules():
                act = module_activation(m)
                if act is not None and keep(n, m):
                    self._acts.append((qualname(model, n), m, act))
                elif act is None and keep(n, m):
                    self.notes += _unseen_module(qualname(model, n), m)
        if compiled:
            self.notes.append(
                "the model is torch.compile'd: activation statistics and gradient-through-time "
                "samples of compiled modules are not recorded"
            )
        self._fed: set[int] = set()  # activations measured on their producer's output
        self._discovery: Discovery | None = None
        self._discover = activations  # look for functional activations in a training forward
        self._discovery_handles: list[RemovableHandle] = []
        self._recurrent = [
            (qualname(model, n), m)
            for n, m in model.named_modules()
            if isinstance(m, RECURRENT) and keep(n, m)
        ]
        _check_history(history, len(layers), len(self._acts))
        self.layer_info = _layer_info(layers)
        for n, m in self._recurrent:
            if isinstance(m, nn.LSTM) and m.bias:
                self.meta.setdefault(f"lstm_forget_bias:{n}", f"{_forget_bias(m):.4g}")

        L, A = len(self.layer_names), len(self._acts)
        dtype = _table_dtype(device)
        self._layer_tables = Tables(LAYER_STATS, L, device, history, history, dtype)
        self._act_tables = Tables(ACTIVATION_STATS, A, device, history, history, dtype)
        # ("grad" | "param", present param indices) -> (how they are read, absent-layer mask)
        self._plans: dict[tuple[str, tuple[int, ...]], tuple[NormPlan, torch.Tensor]] = {}
        self._act_nan = torch.full((len(ACTIVATION_STATS), A), math.nan, dtype=dtype,
                                   device=device)
        self._step = 0
        self._handles: list[RemovableHandle] = []
        # activation index -> (ACTIVATION_STATS sums on device, calls this step)
        self._staged: dict[int, tuple[list[torch.Tensor | None], int]] = {}
        self._buffers: list[torch.Tensor] | None = None  # weights kept for the update ratio
        # (step, present param indices, param norms then) of the update being measured
        self._pending_update: tuple[int, list[int], torch.Tensor] | None = None
        self._captures: dict[int, dict[str, tuple[nn.Module, torch.Tensor]]] = {}
        self._pending_profiles: list[tuple[str, int, nn.Module, torch.Tensor]] = []
        self._samples: list[RecurrentSample] = []
        self._group = _shard_group(self._params)  # FSDP2: where local shards are summed
        self._sinks: list[runfile.Sink] = []
        self._file: runfile.JSONLSink | None = None  # the one save() opened
        self._flushed = 0  # last step handed to the sinks
        self._rows_at_flush = 0  # steps recorded by then
        self._half_ring = max(1, history // 2)
        self._recorded = 0  # steps recorded so far (rows written or pending)
        self._measured: list[_Measured] = []  # recorded steps whose rows are not written yet
        # Steps measured before their rows are written: under half the ring, so no row is
        # overwritten unflushed; 1 when sharded (its all-reduce must run on every rank at once).
        self._batch = 1 if self._group is not None else min(16, self._half_ring)
        self._zeros = torch.zeros(L, dtype=dtype, device=device)
        self._samples_flushed = 0
        # A run file sees every recorded row within flush_every rows and flush_seconds.
        self._flush_rows = min(flush_every, self._half_ring)
        self.flush_seconds = float(flush_seconds)
        self._flush_due = time.monotonic() + self.flush_seconds
        for sink in sinks:
            self.add_sink(sink)
        self._warned_no_grad = self._warned_closed = False
        self.attached = self.closed = False

    # ---------------------------------------------------------------- lifecycle
    @property
    def model(self) -> nn.Module:
        model = self._model()
        if model is None:
            raise RuntimeError("model: the watched model was garbage collected")
        return model

    def attach(self) -> Watch:
        """Register the hooks. Called by ``with Watch(...)``."""
        if self.attached:
            return self
        self.closed = False
        model = self.model
        if model in _attached:
            raise RuntimeError(
                "model: already has an attached Watch; close() it first (one Watch per model)"
            )
        me = weakref.ref(self)
        try:
            for i, (_, m, _) in enumerate(self._acts):
                self._handles.append(m.register_forward_hook(_act_hook(me, i, i in self._fed)))
            for name, m in self._recurrent:
                self._handles.append(
                    m.register_forward_pre_hook(_rnn_hook(me, name), with_kwargs=True)
                )
            if self._discover:
                self._discovery_handles = [
                    model.register_forward_pre_hook(_discover_start(me)),
                    model.register_forward_hook(_discover_stop(me), always_call=True),
                ]
                self._handles += self._discovery_handles
            if self._optimizer is not None:
                self._handles.append(self._optimizer.register_step_pre_hook(_opt_pre(me)))
                self._handles.append(self._optimizer.register_step_post_hook(_opt_post(me)))
        except BaseException:
            self._remove_hooks()
            raise
        known = weakref.WeakKeyDictionary({m: qualname(model, n) for n, m in model.named_modules()})
        for register in (
            nn.modules.module.register_module_module_registration_hook,
            nn.modules.module.register_module_parameter_registration_hook,
        ):
            self._handles.append(register(_added_hook(known)))
        _attached.add(model)
        weakref.finalize(self, _release, self._handles, self._model)
        self.attached = True
        return self

    def close(self) -> None:
        """Remove every hook, write what is pending to the sinks and close them.

        Safe to call twice. After it ``step()`` records nothing (it warns once); ``history``,
        ``diagnose()`` and ``save()`` still work.
        """
        self._remove_hooks()
        model = self._model()
        if model is not None:
            _attached.discard(model)
        if self.closed:
            return
        self.attached, self.closed = False, True
        self._drain()
        self.flush()
        for sink in self._sinks:
            sink.close()

    def _remove_hooks(self) -> None:
        _remove_all(self._handles)

    def __enter__(self) -> Watch:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- recording
    def _recording(self) -> bool:
        """Whether the forward/backward now running belongs to a recorded step."""
        return self._step % self.every == 0

    def _detailed(self) -> bool:
        """Whether it also belongs to a step with the costlier statistics (detail_every)."""
        return (
            self._step % self.every == 0
            and self.detail_every > 0
            and self._recorded % self.detail_every == 0
        )

    def step(self) -> None:
        """Record this step's statistics. Call after ``backward()``, before ``optimizer.step()``.

        With ``optimizer=`` given to the Watch this is done for you and a call here is ignored.
        """
        if self._optimizer is not None:
            return
        if self.closed:
            if not self._warned_closed:
                warnings.warn(
                    "Watch.step(): this Watch is closed (its `with` block ended or close() was "
                    "called); nothing is recorded. Create a new Watch to record more.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._warned_closed = True
            return
        self._finish_update()
        self._record()

    @torch.no_grad()
    def _record(self) -> None:
        step = self._step + 1
        if not self._recording():
            self._step = step
            return
        present = [i for i, p in enumerate(self._params) if p.grad is not None]
        if not present:
            if not self._warned_no_grad:
                warnings.warn(
                    "Watch.step(): no gradients yet; call it after loss.backward() "
                    "(nothing recorded for this step)",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._warned_no_grad = True
            self._staged.clear()
            self._step = step
            return
        detail = self._detailed()
        grads, scale, sparse = self._grads(present)
        self._follow(grads[0].device)
        plan, absent = self._plan("grad", present, grads, fresh=sparse)
        norms, counts = plan.norms(grads, count=True)  # the one read of the gradients
        measured = _Measured(step, present, plan, absent, norms, counts, scale)
        self._recorded += 1
        if detail:
            self._drain()
            self._write(measured, [_local(self._params[i].detach()) for i in present])
        else:
            self._measured.append(measured)
            if len(self._measured) >= self._batch:
                self._drain()
        self._take_captures(step)
        self._step = step
        # Flush every flush_every rows (always before the ring overwrites rows the sinks have
        # not seen) and every flush_seconds: one host sync per flush.
        if self._sinks and (
            self._recorded - self._rows_at_flush >= self._flush_rows
            or time.monotonic() >= self._flush_due
        ):
            self.flush()

    def _drain(self) -> None:
        """Write the rows of the measured steps still pending, in step order.

        Right after backward every call runs several times slower than in isolation (evicted
        caches; docs/PERFORMANCE.md), so a plain step only measures and up to ``_batch`` of
        them are turned into rows together, when the caches are warm for it.
        """
        pending, self._measured = self._measured, []
        for m in pending:
            self._write(m)

    def _write(self, m: _Measured, params: list[torch.Tensor] | None = None) -> None:
        """Store the row of a measured step; with ``params`` (a detailed step, written at
        once) also the parameter norms, the weights for the update ratio and the activations."""
        L = len(self.layer_names)
        grad = m.plan.layer_norms(m.norms)  # (L,) exact
        if m.scale is not None:
            grad = grad / m.scale
        bad = self._zeros if m.counts is None else segment_sum(m.counts, m.plan.seg, L)
        found = [grad]
        if params is not None:
            pplan, _ = self._plan("param", m.present, params)
            found.append(pplan.layer_norms(pplan.norms(params)[0]))
        found, (bad,) = self._reduce(found, [bad])
        row = self._layer_row(found, bad, m.absent)  # (LAYER_STATS, L)
        if params is not None:
            self._keep_for_update(m.step, m.present, params, row[1])
        self._layer_tables.write(m.step, row)
        # Activation rows have width 0 when no activation module is watched.
        acts = self._activation_row() if params is not None else self._act_nan
        self._act_tables.write(m.step, acts)

    def _grads(
        self, present: list[int]
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, bool]:
        """The present gradients as read (local shards, dense values of sparse ones), the
        GradScaler's scale still in them (None when unscaled: norms are divided, not the
        gradients, so nothing is copied) and whether any was sparse (its size then varies)."""
        grads: list[torch.Tensor] = [self._params[i].grad for i in present]  # type: ignore[misc]
        if self._group is not None:
            grads = [_local(g) for g in grads]
        sparse = any(g.is_sparse for g in grads)
        if sparse:
            grads = [g.coalesce().values() if g.is_sparse else g for g in grads]
        scale = getattr(self._scaler, "_scale", None)
        if scale is None or _already_unscaled(self._scaler):
            return grads, None, sparse
        # copied: scaler.update() changes it in place before this step's row is written
        return grads, scale.to(self._zeros.dtype, copy=True), sparse

    def _follow(self, device: torch.device) -> None:
        """Move the tables to where the gradients are now (the model was moved after attach);
        the kept weights and reading plans are made anew there."""
        if device == self._zeros.device:
            return
        self._drain()
        dtype = _table_dtype(device)
        self._layer_tables = self._layer_tables.to(device, dtype)
        self._act_tables = self._act_tables.to(device, dtype)
        self._act_nan = self._act_nan.to(device, dtype)
        self._zeros = self._zeros.to(device, dtype)
        self._plans.clear()
        self._buffers, self._pending_update = None, None
        self._staged.clear()

    def _plan(
        self, kind: str, present: list[int], tensors: list[torch.Tensor], fresh: bool = False
    ) -> tuple[NormPlan, torch.Tensor]:
        """How ``tensors`` (the present params' grads, or the params) are read, cached per set
        of present params; made anew when their dtype or device changed (or ``fresh``)."""
        key = (kind, tuple(present))
        entry = self._plans.get(key)
        if entry is None or fresh or not entry[0].matches(tensors):
            seg = [self._param_layer[i] for i in present]
            L, dev = len(self.layer_names), self._zeros.device
            plan = NormPlan(tensors, seg, L, host=dev.type == "cpu")
            absent = torch.tensor([j not in set(seg) for j in range(L)], device=dev)
            entry = self._plans[key] = (plan, absent)
        return entry

    def _layer_row(
        self, found: list[torch.Tensor], bad: torch.Tensor, absent: torch.Tensor
    ) -> torch.Tensor:
        """(LAYER_STATS, L) row from per-layer [grad norm(, param norm)] and non-finite counts:
        NaN where no gradient reached a layer and for what this step did not measure."""
        host = absent.device.type == "cpu"
        xp: Any = np if host else torch  # NumPy on the host (see stats.py), torch on devices
        f: list[Any] = [t.numpy() for t in found] if host else found
        b: Any = bad.numpy() if host else bad
        mask = absent.numpy() if host else absent
        nan = xp.full_like(f[0], math.nan)
        param = f[1] if len(f) > 1 else nan
        row = xp.stack([xp.where(mask, nan, f[0]), param, nan, xp.where(mask, nan, b)])
        out = torch.from_numpy(row) if host else row
        return out.to(self._zeros.dtype)

    def _keep_for_update(
        self, step: int, present: list[int], params: list[torch.Tensor], pnorm: torch.Tensor
    ) -> None:
        """Copy the weights into buffers kept across steps (no allocation after the first)."""
        kept = self._buffers
        if kept is None or (kept[present[0]].dtype, kept[present[0]].device) != (
            params[0].dtype,
            params[0].device,
        ):  # first use, or the model was converted since
            kept = self._buffers = [torch.empty_like(_local(p.detach())) for p in self._params]
        torch._foreach_copy_([kept[i] for i in present], params)
        self._pending_update = (step, present, pnorm)

    def _finish_update(self) -> None:
        """||W_now - W_then|| / ||W_then|| for the last sampled step, once its update is done."""
        if self._pending_update is None or self._buffers is None:
            return
        step, present, before = self._pending_update
        self._pending_update = None
        now = [_local(self._params[i].detach()) for i in present]
        then = [self._buffers[i] for i in present]
        if (now[0].dtype, now[0].device) != (then[0].dtype, then[0].device):
            return  # the model was converted between the two reads: no ratio for that step
        torch._foreach_sub_(then, now)  # the buffers now hold W_then - W_now
        plan, _ = self._plan("param", present, then)
        (moved,), _ = self._reduce([plan.layer_norms(plan.norms(then)[0])], [])
        self._layer_tables.update(step, "update_ratio", moved / before)

    def _activation_row(self) -> torch.Tensor:
        """(ACTIVATION_STATS, A) means of what the forward hooks staged this step: the staged
        0-d sums go through one stack (NaN where a statistic does not apply)."""
        out = self._act_nan.clone()
        if not self._staged:
            return out
        at: list[tuple[int, int, int]] = []  # (statistic, activation, calls) of each value
        vals: list[torch.Tensor] = []
        for i, (sums, n) in self._staged.items():
            for k, v in enumerate(sums):
                if v is not None:
                    at.append((k, i, n))
                    vals.append(v)
        self._staged.clear()
        ks, cols, calls = (list(c) for c in zip(*at, strict=True))
        means = torch.stack(vals).to(out.dtype)
        out[ks, cols] = means / torch.tensor(calls, dtype=out.dtype, device=out.device)
        return out

    def _stage_activation(self, i: int, x: torch.Tensor, y: torch.Tensor | None) -> None:
        """Stage activation ``i``'s statistics of input ``x`` and output ``y`` (None: a fed
        activation, whose output is computed here) for this step's row."""
        if self._discovery is not None:  # our own tanh / gelu calls are not the model's
            self._discovery.quiet = True
            try:
                self._stage(i, x, y)
            finally:
                self._discovery.quiet = False
        else:
            self._stage(i, x, y)

    def _stage(self, i: int, x: torch.Tensor, y: torch.Tensor | None) -> None:
        act = self._acts[i][2]
        with torch.no_grad():
            x = x.detach()
            y = act.fn(x) if y is None else y.detach()
            vals = [
                saturated_share(act, x),
                inactive_share(act, x),
                dead_share(act, x) if x.ndim >= 2 else None,  # None: does not apply (NaN)
                y.abs().mean(dtype=torch.promote_types(y.dtype, torch.float32)),
            ]
        prev = self._staged.get(i)
        if prev is None:
            self._staged[i] = (vals, 1)
        else:  # called again in the same step (shared module, accumulation): average
            pairs = zip(prev[0], vals, strict=True)
            summed = [None if a is None or b is None else a + b for a, b in pairs]
            self._staged[i] = (summed, prev[1] + 1)

    def _capture(
        self, name: str, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        step = self._step + 1
        if (
            not self.recurrent_every
            or self._step % self.recurrent_every
            or not self._recording()
            or not args
        ):
            return
        x = args[0]
        if not isinstance(x, torch.Tensor) or x.ndim != 3:
            return  # packed sequences and unbatched inputs are not profiled
        taken = self._captures.setdefault(step, {})
        if name in taken:
            return  # the first micro-batch of an accumulated step is enough
        # A hook-free copy of the module as it is now: the profile is computed at read time.
        clone = copy.deepcopy(module)
        clone._forward_pre_hooks.clear()
        clone._forward_hooks.clear()
        taken[name] = (clone, x.detach().clone())

    def _take_captures(self, step: int) -> None:
        for name, (module, x) in self._captures.pop(step, {}).items():
            self._pending_profiles.append((name, step, module, x))
        self._captures.clear()

    # ---------------------------------------------------------------- reading
    @property
    def history(self) -> RunHistory:
        """Everything recorded so far, on the host (this is where the Watch syncs)."""
        self._drain()
        self._run_profiles()
        steps, layer = self._layer_tables.snapshot()
        _, act = self._act_tables.snapshot()
        return RunHistory(
            layers=self.layer_names,
            layer_kinds=self.layer_kinds,
            activations=tuple(n for n, _, _ in self._acts),
            activation_kinds=tuple(a.name for _, _, a in self._acts),
            steps=steps,
            layer_stats=layer,
            activation_stats=act,
            recurrent=tuple(self._samples),
            layer_info=dict(self.layer_info),
            meta=dict(self.meta),
            notes=tuple(self.notes),
        )

    def _run_profiles(self) -> None:
        for name, s, module, x in self._pending_profiles:
            try:
                # enable_grad: a flush can run inside optimizer.step(), which is no_grad
                with torch.enable_grad():
                    prof = bptt_profile(module, x, lags=())
            except (ValueError, TypeError, RuntimeError) as err:
                warnings.warn(
                    f"Watch: no gradient-through-time profile for {name!r}: {err}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            self._samples.append(RecurrentSample(name, s, prof))
        self._pending_profiles.clear()
        cap = self._layer_tables.long
        if len(self._samples) > cap:  # bounded like the tables: thin the samples already written
            done = self._samples_flushed if self._sinks else len(self._samples)
            kept = self._samples[:done][::2]
            self._samples = kept + self._samples[done:]
            self._samples_flushed = len(kept) if self._sinks else 0

    def diagnose(self) -> list[Any]:
        """Findings about this run: see :func:`gradwatch.diagnose`."""
        from gradwatch.diagnose import diagnose

        return diagnose(self.history)

    # ---------------------------------------------------------------- files
    def save(
        self, path: str | os.PathLike[str] | None = None, *, overwrite: bool = False
    ) -> str:
        """Write this run to a JSON Lines file, now and at every later flush and on close.

        Rows reach the file at least every ``flush_every`` recorded steps and every
        ``flush_seconds`` (one write of whole lines each time), so a killed run keeps what
        it recorded up to then. After ``close()`` the file is written whole and closed.
        Calling it again with another path moves the run file there (from the rows kept).

        Args:
            path: the ``.jsonl`` file. ``None``: a new ``runs/<YYYYmmdd-HHMMSS>-<n>.jsonl``.
            overwrite: replace a file holding another gradwatch run (without it that is
                refused; a file that is not a run file is never replaced).

        Returns:
            The path written.

        Example:
            >>> with Watch(model) as watch:           # doctest: +SKIP
            ...     train(model, watch)
            >>> watch.save("run.jsonl")               # doctest: +SKIP
            'run.jsonl'
        """
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path: expected a file path or None, got {type(path).__name__}")
        path = runfile.fresh_run_path() if path is None else os.fspath(path)
        if self._file is not None and self._file.path == path:
            self.flush()
            return path
        new = runfile.JSONLSink(path, overwrite=overwrite)
        if self._file is not None:
            self._file.close()
            self._sinks.remove(self._file)
        self._file = new
        self.add_sink(new)
        self.flush()
        if self.closed:  # nothing more will come: the file is complete
            new.close()
        return path

    def add_sink(self, sink: runfile.Sink) -> None:
        """Send records to ``sink`` at every flush, starting with the rows already kept.

        On ranks other than 0 of a torch.distributed run the sink is closed and ignored.
        """
        if not isinstance(sink, runfile.Sink):
            raise TypeError(
                "sink: expected an object with write(header, steps, rows, samples) and "
                f"close(), got {type(sink).__name__}"
            )
        if not _writer():
            sink.close()
            return
        self._sinks.append(sink)
        if self._flushed:  # catch up with what the other sinks already have
            self._run_profiles()
            steps, rows = self._rows(0, self._flushed)
            sink.write(self._header(), steps, rows, self._samples[: self._samples_flushed])

    def flush(self) -> None:
        """Hand the recorded steps not yet written to every sink (one host sync)."""
        if not self._sinks or (not self._recorded and not self._flushed and not self.closed):
            return  # the header waits for the first row: the activations are known by then
        self._run_profiles()
        # Rows whose update ratio is still to come wait for the next flush (or close).
        pending = self._pending_update
        upto = pending[0] - 1 if pending is not None and self.attached else 2**62
        steps, rows = self._rows(self._flushed, upto)
        samples = self._samples[self._samples_flushed :]
        header = self._header()
        for sink in self._sinks:
            sink.write(header, steps, rows, samples)
        if steps:
            self._flushed = steps[-1]
        self._rows_at_flush = self._recorded
        self._flush_due = time.monotonic() + self.flush_seconds
        self._samples_flushed = len(self._samples)

    def _rows(self, after: int, upto: int) -> tuple[list[int], dict[str, torch.Tensor]]:
        self._drain()
        steps, rows = self._layer_tables.rows(after, upto)
        _, acts = self._act_tables.rows(after, upto)
        return steps, {**rows, **acts}

    def _header(self) -> dict[str, Any]:
        return {
            "layers": list(self.layer_names),
            "layer_kinds": list(self.layer_kinds),
            "activations": [n for n, _, _ in self._acts],
            "activation_kinds": [a.name for _, _, a in self._acts],
            "layer_info": self.layer_info,
            "meta": self.meta,
            "notes": list(self.notes),
        }

    # ---------------------------------------------------------------- functional activations
    def _start_discovery(self, model: nn.Module) -> None:
        """Before the first training forward: watch the activation functions it calls."""
        names = {m: qualname(model, n) for n, m in model.named_modules()}
        self._discovery = Discovery(model, names, {m for _, m, _ in self._acts})
        self._discovery.start()

    def _finish_discovery(self) -> None:
        """After it: watch each activation function applied to a module's output on that
        module's output from now on (this step included); name the others in ``notes``."""
        found, self._discovery = self._discovery, None
        if found is None:
            return
        found.stop()
        self._discover = False
        _remove_all(self._discovery_handles)
        self.notes += found.notes
        fed = list(found.fed.values())
        if fed and self._recorded:  # rows already have their width: do not change it
            self.notes += [f"{f.name}: found after the first recorded step; not watched"
                           for f in fed]
            return
        if not fed:
            return
        me = weakref.ref(self)
        first = len(self._acts)
        for i, f in enumerate(fed, start=first):
            self._acts.append((f.name, f.producer, f.act))
            self._fed.add(i)
            self._handles.append(f.producer.register_forward_hook(_act_hook(me, i, True)))
        A, dev = len(self._acts), self._zeros.device
        t = self._act_tables
        self._act_tables = Tables(ACTIVATION_STATS, A, dev, t.recent, t.long, self._zeros.dtype)
        self._act_nan = torch.full((len(ACTIVATION_STATS), A), math.nan,
                                   dtype=self._zeros.dtype, device=dev)
        if self._detailed():  # this forward's calls count for this step
            for i, f in enumerate(fed, start=first):
                for x in f.inputs:
                    self._stage_activation(i, x, None)

    # ---------------------------------------------------------------- distributed
    def _reduce(
        self, norms: list[torch.Tensor], counts: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer norms and counts of this rank's shards -> global ones: one all-gather
        of all of them; norms combine as a scaled hypot over ranks, counts as a sum."""
        if self._group is None:
            return norms, counts
        local = torch.stack([*norms, *counts])  # (K, L)
        world = torch.distributed.get_world_size(self._group)
        K, L = local.shape
        out = local.new_empty((world * K, L))  # ranks stacked along the first dimension
        torch.distributed.all_gather_into_tensor(out, local, group=self._group)
        out, k = out.view(world, K, L), len(norms)
        seg = torch.arange(L, device=local.device).repeat(world)  # (W * L,) layer of each
        merged = [hypot_segments(out[:, i].reshape(-1), seg, L) for i in range(k)]
        return merged, [out[:, k + i].sum(0) for i in range(len(counts))]


def _sink_list(sinks: Any) -> list[runfile.Sink]:
    if isinstance(sinks, runfile.Sink):
        raise TypeError(
            f"sinks: expected a list of sinks, got one {type(sinks).__name__}; pass "
            f"sinks=[{type(sinks).__name__}(...)]"
        )
    if isinstance(sinks, (str, bytes)) or not isinstance(sinks, Sequence):
        raise TypeError(f"sinks: expected a list of sinks, got {type(sinks).__name__}")
    for i, sink in enumerate(sinks):
        if not isinstance(sink, runfile.Sink):
            raise TypeError(
                f"sinks[{i}]: expected an object with write(header, steps, rows, samples) and "
                f"close(), got {type(sink).__name__}"
            )
    return list(sinks)


def _meta(meta: Any) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise TypeError(f"meta: expected a dict of str to str, got {type(meta).__name__}")
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(
                f"meta: expected str keys and values, got {k!r}: {v!r} "
                f"({type(k).__name__}: {type(v).__name__}); write str(value)"
            )
    return dict(meta)


def _check_scaler(scaler: Any) -> None:
    if scaler is not None and not (
        callable(getattr(scaler, "get_scale", None)) and callable(getattr(scaler, "unscale_", None))
    ):
        raise TypeError(
            f"scaler: expected a torch.amp.GradScaler (or None), got {type(scaler).__name__}"
        )


_TABLE_LIMIT = 1 << 30  # bytes of history tables a Watch may allocate


def _check_history(history: int, layers: int, activations: int) -> None:
    """Refuse a ``history`` whose tables would not fit in memory (ring + long view, float64)."""
    nbytes = 2 * history * (len(LAYER_STATS) * layers + len(ACTIVATION_STATS) * activations) * 8
    if nbytes > _TABLE_LIMIT:
        fits = _TABLE_LIMIT // (nbytes // history)
        raise ValueError(
            f"history: {history} rows for {layers} layers and {activations} activations would "
            f"take {nbytes / 2**30:.1f} GiB of tables (the limit is 1 GiB: at most {fits} rows "
            "here); the long view already keeps the whole run at a coarser stride, so a few "
            "thousand rows are plenty"
        )


def _table_dtype(device: torch.device) -> torch.dtype:
    """float64 tables, so a norm of 1e-300 or 1e300 is kept as measured; MPS has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _writer() -> bool:
    """Whether this process writes files: always, except on ranks > 0 of a distributed run."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (FSDP2); any other tensor as it is."""
    return t.to_local() if _DTensor is not None and isinstance(t, _DTensor) else t


def _shard_group(params: list[nn.Parameter]) -> Any:
    """The process group over which FSDP2's parameters are sharded (None: not sharded).

    Parameters replicated across a mesh dimension (HSDP) need no sum over it; only the
    sharded dimension's group is reduced.
    """
    if _DTensor is None:
        return None
    groups = set()
    for p in params:
        if isinstance(p, _DTensor):
            for dim, placement in enumerate(p.placements):
                if placement.is_shard():
                    groups.add(p.device_mesh.get_group(dim))
    if len(groups) > 1:
        raise ValueError(
            "model: parameters are sharded over more than one mesh dimension; the Watch "
            "reduces over one (FSDP2 / HSDP)"
        )
    return groups.pop() if groups else None


def _layer_info(layers: list[tuple[str, nn.Module, list[nn.Parameter]]]) -> dict[str, torch.Tensor]:
    """Static per-layer facts, read once at attach: size, fan-in and the weight's init gain."""
    numel, fan_in, gain = [], [], []
    for _, m, ps in layers:
        numel.append(float(sum(p.numel() for p in ps)))
        fi, g = weight_gain(m) or (math.nan, math.nan)
        fan_in.append(fi)
        gain.append(g)
    return {
        k: torch.tensor(v, dtype=torch.float64)
        for k, v in (("numel", numel), ("fan_in", fan_in), ("init_gain", gain))
    }


def _forget_bias(m: nn.LSTM) -> float:
    """Mean forget-gate bias (b_ih + b_hh, gate order i, f, g, o) over layers."""
    H, vals = m.hidden_size, []
    for k in range(m.num_layers):
        b = getattr(m, f"bias_ih_l{k}").detach() + getattr(m, f"bias_hh_l{k}").detach()
        vals.append(b[H : 2 * H].double().mean())
    return float(torch.stack(vals).mean())


def _already_unscaled(scaler: Any) -> bool:
    # GradScaler marks optimizers it unscaled this step; then the grads are already unscaled.
    states = getattr(scaler, "_per_optimizer_states", {})
    return any(
        s.get("stage") is not None and s["stage"].name == "UNSCALED" for s in states.values()
    )


def _release(handles: list[RemovableHandle], model: weakref.ref[nn.Module]) -> None:
    """A Watch collected without close(): its hooks go, and the model is free for a new one."""
    _remove_all(handles)
    m = model()
    if m is not None:
        _attached.discard(m)


def _added_hook(known: weakref.WeakKeyDictionary[nn.Module, str]) -> Callable[..., None]:
    """Warn when a module or parameter joins the watched model after attach: it is not watched.

    A global registration hook: it costs nothing per step, only when a module registers one.
    """

    def hook(parent: nn.Module, name: str, value: Any) -> None:
        where = known.get(parent)
        if where is None or value is None:
            return
        what = "parameter" if isinstance(value, torch.Tensor) else "module"
        warnings.warn(
            f"Watch: {what} {name!r} was added to {where!r} after the Watch was attached; it "
            "is not watched. Create the Watch once the model is complete (or close() it and "
            "attach a new one).",
            RuntimeWarning,
            stacklevel=3,
        )

    return hook


def _remove_all(handles: list[RemovableHandle]) -> None:
    for h in handles:
        h.remove()
    handles.clear()


def _act_hook(me: weakref.ref[Watch], i: int, fed: bool = False) -> Callable[..., None]:
    """Forward hook of activation ``i``: its module's input (or, ``fed``: the output of the
    module whose output the activation function is applied to) on detailed steps."""

    def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if torch.compiler.is_compiling():
            return  # inside a torch.compile graph: step aside (no graph break, no guards)
        if not (module.training and torch.is_grad_enabled()):
            return  # a validation / inference pass: not part of the step being recorded
        w = me()
        if w is None or not w._detailed() or not args or not isinstance(out, torch.Tensor):
            return
        x = out if fed else args[0]
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.numel():
            w._stage_activation(i, x, None if fed else out)

    return hook


def _discover_start(me: weakref.ref[Watch]) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        w = me()
        if (
            w is None
            or not w._discover
            or w._discovery is not None
            or torch.compiler.is_compiling()
            or not (module.training and torch.is_grad_enabled())
        ):
            return
        w._start_discovery(module)

    return hook


def _discover_stop(me: weakref.ref[Watch]) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        w = me()
        if w is not None and w._discovery is not None:
            w._finish_discovery()

    return hook


# class names of activation modules gradwatch may not know (XIELUActivation, SwiGLU, StarReLU)
_ACTIVATION_LIKE = re.compile(r"activation|elu|swish|silu|mish|sigmoid|tanh|softplus|glu", re.I)


def _unseen_module(name: str, m: nn.Module) -> list[str]:
    """A note for a module that looks like an activation the Watch does not know."""
    if isinstance(m, (nn.PReLU, nn.RReLU)):
        return [f"{name!r} ({type(m).__name__}): its slopes are learned or random; no "
                "activation statistics"]
    leaf = not any(True for _ in m.children())
    plain = not any(True for _ in m.parameters(recurse=False))
    if leaf and plain and _ACTIVATION_LIKE.search(type(m).__name__):
        return [f"{name!r} ({type(m).__name__}) looks like an activation gradwatch does not "
                "know; it gives no statistics"]
    return []


def _rnn_hook(me: weakref.ref[Watch], name: str) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if torch.compiler.is_compiling() or not (module.training and torch.is_grad_enabled()):
            return  # compiled, or a validation / inference pass
        w = me()
        if w is not None:
            w._capture(name, module, args, kwargs)

    return hook


def _opt_pre(me: weakref.ref[Watch]) -> Callable[..., None]:
    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        w = me()
        if w is not None:
            w._record()

    return hook


def _opt_post(me: weakref.ref[Watch]) -> Callable[..., None]:
    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        w = me()
        if w is not None:
            w._finish_update()

    return hook
