"""Frozen result dataclasses that round-trip through JSON.

Every result in gradwatch derives from :class:`Result`. Fields may hold tensors, numpy
arrays, floats, strings, tuples, dicts and nested results; ``to_json`` writes tensors as
``{"__tensor__": [...], "dtype": "float32"}`` and ``from_json`` reads them back using the
field annotations, so a report can be drawn from a live object or from a file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, TypeVar, Union

import numpy as np
import torch

R = TypeVar("R", bound="Result")


def _encode(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        return {"__tensor__": _floats_out(t.tolist()), "dtype": str(t.dtype).removeprefix("torch.")}
    if isinstance(value, np.ndarray):
        return _encode(torch.from_numpy(value))
    if isinstance(value, Result):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, float):
        return _floats_out(value)
    return value


def _floats_out(value: Any) -> Any:
    # JSON has no NaN/Inf; write them as strings so files stay standard JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, list):
        return [_floats_out(v) for v in value]
    return value


def _floats_in(value: Any) -> Any:
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, list):
        return [_floats_in(v) for v in value]
    return value


def _decode(value: Any, hint: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        return _decode(value, members[0]) if len(members) == 1 else _decode_untyped(value)
    if isinstance(value, dict) and "__tensor__" in value:
        t = torch.tensor(_floats_in(value["__tensor__"]), dtype=getattr(torch, value["dtype"]))
        return t.numpy() if hint is np.ndarray else t
    if isinstance(hint, type) and issubclass(hint, Result):
        return hint._from_dict(value)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(v, args[0]) for v in value)
        return tuple(_decode(v, a) for v, a in zip(value, args, strict=True))
    if origin is dict:
        _, vt = typing.get_args(hint)
        return {k: _decode(v, vt) for k, v in value.items()}
    if hint is float:
        return float(_floats_in(value))
    if hint is str:
        return value  # a string field holding "inf" stays the string "inf"
    return _decode_untyped(value)


def _decode_untyped(value: Any) -> Any:
    if isinstance(value, dict) and "__tensor__" in value:
        return _decode(value, torch.Tensor)
    return _floats_in(value)


@dataclasses.dataclass(frozen=True)
class Result:
    """Base for gradwatch's typed, immutable results (JSON round trip, ``replace``)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tensors as lists with their dtype)."""
        out: dict[str, Any] = _encode(self)
        return out

    def to_json(self, **kwargs: Any) -> str:
        """Serialise to a JSON string; ``from_json`` restores an equal object."""
        return json.dumps({"type": type(self).__name__, "data": self.to_dict()}, **kwargs)

    @classmethod
    def from_json(cls: type[R], text: str) -> R:
        """Rebuild a result from ``to_json`` output.

        Raises:
            ValueError: the text is not JSON written for this result type.
        """
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"text: not JSON ({err.msg} at position {err.pos})") from None
        if not isinstance(doc, dict) or doc.get("type") != cls.__name__:
            got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
            raise ValueError(f"text: holds a {got!r}, expected a {cls.__name__!r} result")
        return cls._from_dict(doc["data"])

    @classmethod
    def _from_dict(cls: type[R], data: dict[str, Any]) -> R:
        hints = typing.get_type_hints(cls)
        kwargs = {f.name: _decode(data.get(f.name), hints[f.name]) for f in dataclasses.fields(cls)}
        return cls(**kwargs)

    def replace(self: R, **changes: Any) -> R:
        """A copy with some fields changed (the object itself is frozen)."""
        return dataclasses.replace(self, **changes)
