"""Critical initialisation: put every layer of a network at the edge of chaos.

Each nn.Linear / nn.Conv1d/2d/3d weight gets the variance sigma_w^2 / fan_in with sigma_w the
critical value of mean-field theory for the activation that follows the layer (chi1 = 1, so
gradients neither vanish nor explode with depth), Gaussian or as a scaled orthogonal matrix.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradwatch._result import Result
from gradwatch.core import _checks
from gradwatch.core.activations import NAMES, Activation, activation, module_activation
from gradwatch.core.meanfield import critical_sigma_w

__all__ = ["CriticalInit", "critical_init_"]

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True, eq=False)
class CriticalInit(Result, Mapping[str, float]):
    """What ``critical_init_`` did; reads as the mapping {layer name: sigma_w used}.

    Attributes:
        sigma_w: layer name (as in ``model.named_modules()``; "" for the model itself) ->
            the sigma_w its weight was drawn with.
        activation: layer name -> the activation whose critical point set its sigma_w.
        fallback: layer names with no known activation module after them; they used ``act``
            if given, else "linear" (sigma_w = 1).
        sigma_b: the bias standard deviation used.
        orthogonal: whether weights are scaled orthogonal matrices (else Gaussian).
    """

    sigma_w: dict[str, float]
    activation: dict[str, str]
    fallback: tuple[str, ...]
    sigma_b: float
    orthogonal: bool

    def __getitem__(self, name: str) -> float:
        return self.sigma_w[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.sigma_w)

    def __len__(self) -> int:
        return len(self.sigma_w)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CriticalInit):
            return (
                self.sigma_w == other.sigma_w
                and self.activation == other.activation
                and self.fallback == other.fallback
                and self.sigma_b == other.sigma_b
                and self.orthogonal == other.orthogonal
            )
        if isinstance(other, Mapping):
            return dict(self.sigma_w) == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to dicts, so unhashable like them


def critical_init_(
    model: nn.Module,
    orthogonal: bool = False,
    sigma_b: float = 0.0,
    act: Any = None,
    *,
    generator: torch.Generator | None = None,
) -> CriticalInit:
    """Initialise every Linear/Conv layer at the edge of chaos, in place.

    Each nn.Linear / nn.Conv1d / nn.Conv2d / nn.Conv3d weight W of shape (out, fan_in / ...)
    gets W_ij ~ N(0, sigma_w^2 / fan_in), or, with ``orthogonal=True``, a Haar-random
    orthogonal matrix on its (out, fan_in) flattening scaled to the same entry variance:
    W W^T = sigma_w^2 I when out <= fan_in, W^T W = sigma_w^2 (out / fan_in) I otherwise.
    Biases get N(0, sigma_b^2) (zeros when sigma_b = 0). sigma_w is
    ``meanfield.critical_sigma_w(phi, sigma_b)`` for the activation phi that follows the
    layer: the first activation module (nn.Tanh, nn.ReLU, ... ; nn.Identity is skipped)
    after it in ``model.named_modules()`` order and before the next Linear/Conv layer.
    Registration order is forward order for nn.Sequential-style models; for a model that
    applies its activations functionally (F.relu in forward) no module follows, and the layer
    falls back to ``act`` if given, else "linear" (sigma_w = 1); ``fallback`` lists those
    layers. Examples: relu -> sqrt(2) (He init), tanh with sigma_b = 0 -> 1.

    Orthogonal weights give dynamical isometry for tanh-like nets at the critical point (the
    singular values of the input-output Jacobian concentrate near 1, not just their mean
    square). For convolutions this is the orthogonal flattening, not the delta-orthogonal
    kernel of Xiao et al. 2018.

    Args:
        model: the network; its parameters are overwritten.
        orthogonal: scaled orthogonal weights instead of Gaussian ones.
        sigma_b: bias standard deviation, >= 0.
        act: activation (name, callable or module) for layers with no activation module
            after them; None means "linear".
        generator: the torch.Generator to draw from (on the parameters' device); None uses
            the global RNG, so ``torch.manual_seed`` makes the result reproducible.

    Returns:
        A :class:`CriticalInit`, which reads as {layer name: sigma_w used}, with the
        activation behind each value and the layers that fell back.

    Raises:
        TypeError: model is not an nn.Module; generator is not a torch.Generator.
        ValueError: sigma_b < 0; no Linear/Conv layer; an uninitialised lazy layer; an
            activation with no edge of chaos (chi1 < 1 for every sigma_w), named with its layer.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        >>> used = critical_init_(net)
        >>> round(used["0"], 6), used["2"], used.fallback
        (1.414214, 1.0, ('2',))

    Paper: Schoenholz, Gilmer, Ganguli & Sohl-Dickstein 2017, "Deep Information Propagation"
    (chi1 = 1); Pennington, Schoenholz & Ganguli 2017, "Resurrecting the sigmoid in deep
    learning through dynamical isometry"; Saxe, McClelland & Ganguli 2014 (orthogonal init).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(orthogonal, bool):
        raise TypeError(f"orthogonal: expected a bool, got {type(orthogonal).__name__}")
    sb = _checks.number("sigma_b", sigma_b, nonnegative=True)
    default = activation("linear") if act is None else activation(act)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")

    layers = _layers_and_followers(model)
    if not layers:
        kinds = "nn.Linear or nn.Conv1d/2d/3d"
        raise ValueError(f"model: {type(model).__name__} has no {kinds} layer to initialise")
    # every sigma_w first, so a bad activation leaves the model untouched
    plan: list[tuple[str, nn.Module, Activation, float]] = []
    fallback: list[str] = []
    for name, layer, follower in layers:
        if isinstance(layer.weight, nn.parameter.UninitializedParameter):
            raise ValueError(
                f"model: layer {name!r} ({type(layer).__name__}) is lazy and not materialised "
                "yet; run one forward pass before critical_init_"
            )
        if follower is None:
            fallback.append(name)
        a = default if follower is None else follower
        try:
            sw = _critical(a, sb)
        except ValueError as err:
            raise ValueError(f"model: layer {name!r} is followed by {a.name!r}: {err}") from err
        plan.append((name, layer, a, sw))

    with torch.no_grad():
        for _, layer, _, sw in plan:
            _init_layer(layer, sw, sb, orthogonal, generator)
    return CriticalInit(
        sigma_w={name: sw for name, _, _, sw in plan},
        activation={name: a.name for name, _, a, _ in plan},
        fallback=tuple(fallback),
        sigma_b=sb,
        orthogonal=orthogonal,
    )


def _layers_and_followers(model: nn.Module) -> list[tuple[str, nn.Module, Activation | None]]:
    """(name, layer, first activation module after it and before the next layer) in order."""
    found: list[tuple[str, nn.Module, Activation | None]] = []
    pending: Activation | None = None
    for name, m in reversed(list(model.named_modules())):
        if isinstance(m, LAYERS):
            found.append((name, m, pending))
            pending = None
            continue
        a = module_activation(m)
        if a is not None and a.name != "linear":  # nn.Identity is a placeholder, not a phi
            pending = a
    return found[::-1]


def _critical(a: Activation, sigma_b: float) -> float:
    if a.name in NAMES:  # the named activations are fixed functions: cache their roots
        return _critical_named(a.name, sigma_b)
    return critical_sigma_w(a, sigma_b)


@functools.lru_cache(maxsize=128)
def _critical_named(name: str, sigma_b: float) -> float:
    return critical_sigma_w(name, sigma_b)


def _init_layer(
    layer: nn.Module,
    sigma_w: float,
    sigma_b: float,
    orthogonal: bool,
    generator: torch.Generator | None,
) -> None:
    w = layer.weight  # (out, in / groups, *kernel)
    assert isinstance(w, torch.Tensor)
    out = w.shape[0]
    fan_in = w[0].numel()
    if orthogonal:
        # entry variance sigma_w^2 / fan_in, like the Gaussian: Q has entries of variance
        # 1 / max(out, fan_in)
        gain = sigma_w * math.sqrt(max(out, fan_in) / fan_in)
        w.copy_((_orthogonal(out, fan_in, w, generator) * gain).view_as(w))  # (out, fan_in)
    else:
        w.normal_(0.0, sigma_w / math.sqrt(fan_in), generator=generator)
    b = layer.bias
    if isinstance(b, torch.Tensor):
        if sigma_b > 0:
            b.normal_(0.0, sigma_b, generator=generator)
        else:
            b.zero_()


def _orthogonal(
    rows: int, cols: int, like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """A Haar-random (rows, cols) matrix with orthonormal rows or columns (the shorter side)."""
    work = torch.float64 if like.dtype == torch.float64 else torch.float32  # QR needs >= fp32
    a = torch.empty(max(rows, cols), min(rows, cols), dtype=work, device=like.device)
    a.normal_(0.0, 1.0, generator=generator)
    q, r = torch.linalg.qr(a)  # (max, min) orthonormal columns
    q = q * torch.sign(torch.diagonal(r))  # sign fix: Haar measure (Mezzadri 2007)
    return q.T if rows < cols else q  # (rows, cols)
