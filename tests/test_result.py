import math
from dataclasses import FrozenInstanceError, dataclass

import numpy as np
import pytest
import torch

from gradwatch._result import Result


@dataclass(frozen=True)
class Inner(Result):
    name: str
    value: float | None


@dataclass(frozen=True)
class Outer(Result):
    values: torch.Tensor
    grid: np.ndarray
    inners: tuple[Inner, ...]
    pair: tuple[int, str]
    table: dict[str, float]
    score: float


def _outer():
    return Outer(
        values=torch.tensor([[1.0, math.nan], [math.inf, -2.0]], dtype=torch.float64),
        grid=np.arange(3, dtype=np.float32),
        inners=(Inner("a", 1.5), Inner("b", None)),
        pair=(3, "x"),
        table={"k": -math.inf},
        score=0.25,
    )


def test_round_trip_keeps_types_values_and_non_finite():
    o = _outer()
    back = Outer.from_json(o.to_json())
    assert back.values.dtype == torch.float64
    assert torch.equal(back.values.isnan(), o.values.isnan())
    assert back.values[1, 0] == math.inf and back.values[1, 1] == -2.0
    assert isinstance(back.grid, np.ndarray) and back.grid.dtype == np.float32
    assert back.inners == o.inners and back.pair == (3, "x")
    assert back.table == {"k": -math.inf} and back.score == 0.25
    assert "NaN" not in o.to_json() and "Infinity" not in o.to_json()  # standard JSON


def test_frozen_and_replace():
    o = _outer()
    with pytest.raises(FrozenInstanceError):
        o.score = 1.0  # type: ignore[misc]
    assert o.replace(score=2.0).score == 2.0 and o.score == 0.25


def test_wrong_text_is_a_clear_error():
    with pytest.raises(ValueError, match="text: not JSON"):
        Outer.from_json("{oops")
    with pytest.raises(ValueError, match="expected a 'Outer'"):
        Outer.from_json(Inner("a", 1.0).to_json())


def test_string_fields_that_look_like_numbers_stay_strings():
    @dataclass(frozen=True)
    class Cells(Result):
        cells: tuple[tuple[str, ...], ...]
        label: str

    c = Cells((("inf", "nan"), ("-inf", "1")), "nan")
    assert Cells.from_json(c.to_json()) == c
