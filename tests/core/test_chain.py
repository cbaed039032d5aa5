import math

import pytest
import torch

from gradwatch.core.chain import ChainProduct, chain_bound, chain_product, derivative_bound


def test_quarter_to_the_thirty_is_exact():
    p = chain_bound("sigmoid", 30)
    assert p.value == pytest.approx(0.25**30, rel=1e-13)
    assert str(p) == "8.67e-19"


def test_products_below_float64_range_keep_their_digits():
    p = chain_product([0.25] * 600)
    assert p.value == 0.0  # float64 underflows ...
    assert p.log10 == pytest.approx(600 * math.log10(0.25), rel=1e-15)  # ... the log does not
    assert str(p) == "5.81e-362"
    assert chain_product([10.0] * 400).value == math.inf
    assert str(chain_product([10.0] * 400)) == "1.00e+400"


def test_through_time_powers():
    assert str(chain_product([0.9] * 50)) == "5.15e-03"
    assert chain_product(torch.full((50,), 1.1, dtype=torch.float64)).value == pytest.approx(
        1.1**50, rel=1e-13
    )
    assert chain_product([0.9] * 50).per_factor == pytest.approx(0.9)


def test_signs_and_zero():
    assert chain_product([-2.0, 3.0]).value == pytest.approx(-6.0)
    z = chain_product([2.0, 0.0, 5.0])
    assert z.sign == 0 and z.value == 0.0 and str(z) == "0"


def test_derivative_bounds_match_closed_forms_and_numeric_search():
    assert derivative_bound("sigmoid") == 0.25
    assert derivative_bound("tanh") == 1.0
    assert derivative_bound("erf") == pytest.approx(2 / math.sqrt(math.pi))
    # Named bounds agree with a grid search on the same function given as a callable.
    for name, fn in [
        ("gelu", torch.nn.functional.gelu),
        ("silu", torch.nn.functional.silu),
        ("sigmoid", torch.sigmoid),
    ]:
        assert derivative_bound(fn) == pytest.approx(derivative_bound(name), abs=1e-4)


def test_weight_gain_scales_each_factor():
    assert chain_bound("tanh", 10, weight_gain=0.5).value == pytest.approx(0.5**10)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="act"):
        derivative_bound("sigmoidish")
    with pytest.raises(ValueError, match="depth"):
        chain_bound("tanh", -1)
    with pytest.raises(ValueError, match="weight_gain"):
        chain_bound("tanh", 3, weight_gain=-1.0)
    with pytest.raises(ValueError, match="factors"):
        chain_product([1.0, math.nan])
    with pytest.raises(ValueError, match="factors"):
        chain_product(torch.tensor([1.0, math.inf]))
    with pytest.raises(TypeError, match="factors"):
        chain_product(["a"])  # type: ignore[list-item]


def test_json_round_trip():
    p = chain_product([0.25] * 600)
    q = ChainProduct.from_json(p.to_json())
    assert q == p
    z = chain_product([0.0])
    assert ChainProduct.from_json(z.to_json()) == z  # -inf survives JSON
