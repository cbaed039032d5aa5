"""Bounded, on-device history of per-step statistics, and its host-side snapshot.

Each statistic is a (steps x columns) table. Recent rows live in a ring buffer; a long view
keeps every ``stride``-th recorded step and halves itself (doubling the stride) when full, so
memory stays constant over any number of steps while the whole run stays visible.
Writes are device-side ``copy_`` calls: nothing here syncs with the host until ``snapshot``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from gradwatch._result import Result
from gradwatch.core.bptt import BPTTProfile
from gradwatch.core.probe import ProbeResult

__all__ = ["RecurrentSample", "RunHistory"]


@dataclass(frozen=True)
class RecurrentSample(Result):
    """A gradient-against-lag profile of one recurrent module at one step."""

    module: str
    step: int
    profile: BPTTProfile


@dataclass(frozen=True)
class RunHistory(Result):
    """What a Watch recorded, on the host. ``history["grad_norm"]`` is a (steps x layers) tensor.

    Attributes:
        layers: qualified names of the watched layers (leaf modules with parameters).
        layer_kinds: their class names.
        activations: qualified names of the watched activation modules.
        activation_kinds: their activation names ("sigmoid", "relu", ...).
        steps: (S,) recorded step numbers, increasing (1-based optimizer steps).
        layer_stats: per-layer tables (S, len(layers)): grad_norm, param_norm, update_ratio,
            nonfinite. NaN marks "absent": no gradient reached the layer at that step.
        activation_stats: per-activation tables (S, len(activations)): saturated (phi' under
            1% of its maximum), inactive and dead (ReLU-like units on their flat side; dead:
            for the whole batch), mean_abs. NaN where the statistic does not apply (saturated
            for ReLU, inactive and dead for sigmoid) or was not measured.
        recurrent: sampled gradient-through-time profiles of nn.RNN/LSTM/GRU modules.
        layer_info: per-layer facts taken once at attach, (len(layers),) each: ``numel``,
            ``fan_in`` and ``init_gain`` (sigma_w = sqrt(fan_in * mean(W^2)) of the weight).
        meta: what the user told the Watch (e.g. the GAN discriminator and loss kind), and
            ``lstm_forget_bias:<name>`` entries the Watch adds for LSTM modules.
        notes: what the Watch could not see, in plain words (activation functions whose input
            is not a layer's output, activation classes it does not know, compiled modules).
    """

    layers: tuple[str, ...]
    layer_kinds: tuple[str, ...]
    activations: tuple[str, ...]
    activation_kinds: tuple[str, ...]
    steps: torch.Tensor
    layer_stats: dict[str, torch.Tensor]
    activation_stats: dict[str, torch.Tensor]
    recurrent: tuple[RecurrentSample, ...] = ()
    layer_info: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __getitem__(self, stat: str) -> torch.Tensor:
        if stat in self.layer_stats:
            return self.layer_stats[stat]
        if stat in self.activation_stats:
            return self.activation_stats[stat]
        known = ", ".join([*self.layer_stats, *self.activation_stats])
        raise KeyError(f"stat: no statistic {stat!r} in this history; it has {known}")

    def __len__(self) -> int:
        return int(self.steps.numel())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunHistory):
            return NotImplemented
        same_tables = all(
            a.keys() == b.keys()
            and all(torch.equal(a[k].isnan(), b[k].isnan()) for k in a)
            and all(torch.equal(a[k].nan_to_num(), b[k].nan_to_num()) for k in a)
            for a, b in (
                (self.layer_stats, other.layer_stats),
                (self.activation_stats, other.activation_stats),
                (self.layer_info, other.layer_info),
            )
        )
        return (
            same_tables
            and torch.equal(self.steps, other.steps)
            and (self.layers, self.layer_kinds, self.activations, self.activation_kinds)
            == (other.layers, other.layer_kinds, other.activations, other.activation_kinds)
            and self.meta == other.meta
            and len(self.recurrent) == len(other.recurrent)
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_probe(cls, result: ProbeResult) -> RunHistory:
        """A one-step history of what :func:`gradwatch.probe` measured, for ``diagnose``.

        Example:
            >>> diagnose(RunHistory.from_probe(probe(model, x, loss_fn)))   # doctest: +SKIP
        """
        nan = math.nan

        def col(values: list[float | None]) -> torch.Tensor:
            return torch.tensor([[nan if v is None else v for v in values]], dtype=torch.float64)

        rows = result.layers
        acts = result.activations
        return cls(
            layers=tuple(s.name for s in rows),
            layer_kinds=tuple(s.kind for s in rows),
            activations=tuple(a.name for a in acts),
            activation_kinds=tuple(a.act for a in acts),
            steps=torch.tensor([0]),
            layer_stats={
                "grad_norm": col([s.grad_norm for s in rows]),
                "param_norm": col([s.param_norm for s in rows]),
                "update_ratio": col([None for _ in rows]),
                "nonfinite": col(
                    [None if s.grad_norm is None else float(s.nonfinite) for s in rows]
                ),
            },
            activation_stats={
                "saturated": col([a.saturated for a in acts]),
                "inactive": col([a.inactive for a in acts]),
                "dead": col([a.dead for a in acts]),
                "mean_abs": col([a.mean_abs for a in acts]),
            },
            layer_info={
                "numel": col([None for _ in rows])[0],
                "fan_in": col([s.fan_in for s in rows])[0],
                "init_gain": col([s.init_gain for s in rows])[0],
            },
        )

    def profiles(self, module: str) -> list[RecurrentSample]:
        """The recurrent samples of one module, in step order."""
        return [s for s in self.recurrent if s.module == module]


class Tables:
    """Device-side ring buffer + long view for a set of same-width statistics.

    All statistics live in one (stats, rows, columns) tensor, so a step's row of every
    statistic is written by one call (on the CPU a NumPy assignment into the same memory).
    Row steps are kept in Python lists on the host, so bookkeeping never touches a tensor.
    """

    def __init__(
        self,
        names: tuple[str, ...],
        width: int,
        device: torch.device,
        recent: int,
        long: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.names, self.device = names, device
        self.recent, self.long = recent, long
        K = len(names)
        self._ring = torch.full((K, recent, width), math.nan, dtype=dtype, device=device)
        self._lview = torch.full((K, long, width), math.nan, dtype=dtype, device=device)
        # CPU: NumPy views of the same memory (a NumPy write costs ~1 us, a torch one ~10)
        host = device.type == "cpu"
        self._ring_np = self._ring.numpy() if host else None
        self._lview_np = self._lview.numpy() if host else None
        self.ring_steps: list[int] = [-1] * recent  # -1 marks an empty row
        self.lview_steps: list[int] = []
        self.stride = 1
        self.n_rows = 0  # rows written to the ring so far

    def _put(self, long: bool, row: int, values: torch.Tensor, k: slice | int) -> None:
        """values (stats, C) or (C,) for statistic k -> row ``row`` of the ring or long view."""
        arr = self._lview_np if long else self._ring_np
        if arr is not None and values.device.type == "cpu":
            arr[k, row] = values.numpy()
        else:
            (self._lview if long else self._ring)[k, row].copy_(values, non_blocking=True)

    def write(self, step: int, values: torch.Tensor) -> None:
        """Store one row of every statistic: values (stats, C) in ``names`` order; no sync."""
        slot = self.n_rows % self.recent
        self._put(False, slot, values, slice(None))
        self.ring_steps[slot] = step
        self.n_rows += 1
        if step % self.stride:
            return
        if len(self.lview_steps) == self.long:  # halve: keep every other row, double the stride
            half = (self.long + 1) // 2
            self._lview[:, :half] = self._lview[:, ::2].clone()
            self._lview[:, half:] = math.nan
            self.lview_steps = self.lview_steps[::2]
            self.stride *= 2
            if step % self.stride:
                return
        self._put(True, len(self.lview_steps), values, slice(None))
        self.lview_steps.append(step)

    def update(self, step: int, name: str, values: torch.Tensor) -> None:
        """Fill in a statistic of an already written row (known only after the update)."""
        k = self.names.index(name)
        if step in self.ring_steps:
            self._put(False, self.ring_steps.index(step), values, k)
        if step in self.lview_steps:
            self._put(True, self.lview_steps.index(step), values, k)

    def rows(self, after: int, upto: int) -> tuple[list[int], dict[str, torch.Tensor]]:
        """Ring rows with after < step <= upto, in step order (host copies; one sync)."""
        slots = sorted((s, i) for i, s in enumerate(self.ring_steps) if after < s <= upto)
        idx = torch.tensor([i for _, i in slots], dtype=torch.long, device=self.device)
        picked = self._ring[:, idx].cpu().double()  # (K, S, C)
        return [s for s, _ in slots], dict(zip(self.names, picked, strict=True))

    def snapshot(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Long view and ring merged, one row per step, in step order (host copies)."""
        rows: dict[int, tuple[int, int]] = {s: (0, i) for i, s in enumerate(self.lview_steps)}
        rows.update({s: (1, i) for i, s in enumerate(self.ring_steps) if s >= 0})
        steps = sorted(rows)
        both = (self._lview.cpu().double(), self._ring.cpu().double())  # (K, R, C) each
        K, _, width = both[0].shape
        out = torch.empty(K, len(steps), width, dtype=torch.float64)
        for r, s in enumerate(steps):
            src, i = rows[s]
            out[:, r] = both[src][:, i]
        return torch.tensor(steps, dtype=torch.long), dict(zip(self.names, out, strict=True))

    def to(self, device: torch.device, dtype: torch.dtype) -> Tables:
        """These tables on another device (the watched model moved there after attach)."""
        out = Tables(self.names, self._ring.shape[2], device, self.recent, self.long, dtype)
        out._ring.copy_(self._ring)
        out._lview.copy_(self._lview)
        out.ring_steps, out.lview_steps = list(self.ring_steps), list(self.lview_steps)
        out.stride, out.n_rows = self.stride, self.n_rows
        return out

    def nbytes(self) -> int:
        """Device memory held by the tables: constant, whatever the number of steps."""
        return sum(t.numel() * t.element_size() for t in (self._ring, self._lview))
