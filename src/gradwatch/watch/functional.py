"""Activations a model applies as functions (``F.relu(self.linear1(x))`` in
``nn.TransformerEncoderLayer``, ``torch.tanh`` in user code): found in one training forward.

Forward hooks see modules, not function calls. So the first training forward after attach runs
under a ``TorchFunctionMode`` that sees every call of a known activation function, the module
whose forward made it, and whether its input is exactly the output of a leaf module (a
Linear, a Conv, a norm): then that module's output is the activation's input at every later
step, and a forward hook on it measures the activation there ("fed" activations). Calls whose
input comes from elsewhere are named in notes, never silently missed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from gradwatch.core.activations import (
    LEAKY_SLOPE,
    Activation,
    _elu,
    _hardtanh,
    _leaky,
    _softplus,
    activation,
)

Resolver = Callable[[tuple[Any, ...], dict[str, Any]], Activation | None]


def _fixed(name: str) -> Resolver:
    return lambda args, kwargs: activation(name)


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, key: str, default: Any) -> Any:
    return kwargs.get(key, args[i] if len(args) > i else default)


def _gelu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Activation:
    return activation("gelu_tanh" if kwargs.get("approximate") == "tanh" else "gelu")


def _leaky_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Activation:
    slope = float(_arg(args, kwargs, 1, "negative_slope", LEAKY_SLOPE))
    return activation("leaky_relu") if slope == LEAKY_SLOPE else _leaky(slope)


def _elu_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Activation:
    alpha = float(_arg(args, kwargs, 1, "alpha", 1.0))
    return activation("elu") if alpha == 1.0 else _elu(alpha)


def _softplus_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Activation:
    beta = float(_arg(args, kwargs, 1, "beta", 1.0))
    return activation("softplus") if beta == 1.0 else _softplus(beta)


def _hardtanh_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Activation:
    lo = float(_arg(args, kwargs, 1, "min_val", -1.0))
    hi = float(_arg(args, kwargs, 2, "max_val", 1.0))
    return activation("hardtanh") if (lo, hi) == (-1.0, 1.0) else _hardtanh(lo, hi)


def _functions() -> dict[Any, tuple[str, Resolver]]:
    """Activation functions by the object a TorchFunctionMode sees: (name in notes, resolver)."""
    T = torch.Tensor
    table: dict[Any, tuple[str, Resolver]] = {}
    for fns, name in (
        ((torch.relu, torch.relu_, F.relu, F.relu_, T.relu, T.relu_), "relu"),
        ((torch.tanh, torch.tanh_, F.tanh, T.tanh, T.tanh_), "tanh"),
        ((torch.sigmoid, torch.sigmoid_, F.sigmoid, T.sigmoid, T.sigmoid_), "sigmoid"),
        ((F.silu,), "silu"),
        ((F.mish,), "mish"),
        ((F.selu, torch.selu), "selu"),
        ((F.relu6,), "relu6"),
        ((F.hardsigmoid,), "hardsigmoid"),
        ((F.hardswish,), "hardswish"),
        ((F.softsign,), "softsign"),
    ):
        for fn in fns:
            table[fn] = (name, _fixed(name))
    for fn, name, resolve in (
        (F.gelu, "gelu", _gelu),
        (F.leaky_relu, "leaky_relu", _leaky_of),
        (F.elu, "elu", _elu_of),
        (F.softplus, "softplus", _softplus_of),
        (F.hardtanh, "hardtanh", _hardtanh_of),
    ):
        table[fn] = (name, resolve)
    return table


@dataclass
class Fed:
    """An activation applied as a function to the output of a leaf module (its producer)."""

    name: str  # "<producer>><activation>", e.g. "encoder.layers.0.linear1>relu"
    producer: nn.Module
    act: Activation
    inputs: list[torch.Tensor] = field(default_factory=list)  # seen in the discovery forward


class Discovery(TorchFunctionMode):
    """One forward of ``model`` under watch: the activation functions it calls, and where.

    Use as ``start()`` ... ``stop()`` around one forward (the Watch does it from the root
    module's forward hooks); then ``fed`` and ``notes`` hold what was found.
    """

    def __init__(self, model: nn.Module, names: dict[nn.Module, str],
                 modules_watched: set[nn.Module]) -> None:
        super().__init__()
        self._names, self._skip = names, modules_watched  # skip: activation modules watched
        self._table = _functions()
        self._stack: list[nn.Module] = [model]  # its forward is running when start() is called
        self._outputs: list[tuple[torch.Tensor, nn.Module]] = []  # leaf outputs, this forward
        self.fed: dict[tuple[int, str], Fed] = {}
        self._unfed: dict[tuple[str, str], int] = {}  # (function, where) -> calls
        self._handles: list[Any] = []
        self.quiet = False  # set while the Watch computes its own statistics

    def start(self) -> None:
        reg = nn.modules.module
        self._handles = [
            reg.register_module_forward_pre_hook(self._enter),
            reg.register_module_forward_hook(self._leave, always_call=True),
        ]
        self.__enter__()

    def stop(self) -> None:
        self.__exit__(None, None, None)
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._outputs.clear()

    def _enter(self, module: nn.Module, args: Any) -> None:
        if module in self._names:
            self._stack.append(module)

    def _leave(self, module: nn.Module, args: Any, out: Any) -> None:
        if module not in self._names:
            return
        if self._stack and self._stack[-1] is module:
            self._stack.pop()
        if isinstance(out, torch.Tensor) and not any(True for _ in module.children()):
            self._outputs.append((out, module))

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        entry = self._table.get(func)
        if entry is not None and not self.quiet and args and isinstance(args[0], torch.Tensor):
            self._seen(entry, args, kwargs)  # before the call: an in-place one overwrites x
        return func(*args, **kwargs)

    def _seen(self, entry: tuple[str, Resolver], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> None:
        inside = self._stack[-1] if self._stack else None
        if inside in self._skip:
            return  # the body of an activation module the Watch already measures
        x = args[0]
        if not x.is_floating_point():
            return
        fn_name, resolve = entry
        producer = next((m for out, m in reversed(self._outputs) if out is x), None)
        act = resolve(args, kwargs)
        if producer is None or act is None:
            where = "the model" if inside is None else repr(self._names[inside])
            kind = "" if inside is None else f" ({type(inside).__name__})"
            unfed = (fn_name, f"{where}{kind}")
            self._unfed[unfed] = self._unfed.get(unfed, 0) + 1
            return
        key = (id(producer), act.name)
        if key not in self.fed:
            self.fed[key] = Fed(f"{self._names[producer]}>{act.name}", producer, act)
        self.fed[key].inputs.append(x.detach())

    @property
    def notes(self) -> list[str]:
        """One line per activation function the Watch cannot measure, with where it ran."""
        return [
            f"{fn} called in {where} is not watched: its input is not the output of a layer "
            f"(seen {n}x in one forward)"
            for (fn, where), n in self._unfed.items()
        ]
