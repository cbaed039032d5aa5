"""The norms behind Watch.step(): exact against float64 over the whole range, both paths.

``host=False`` runs the accelerator path (power-of-two scaling, no host read) on CPU tensors,
so it is tested on every machine.
"""

import math

import numpy as np
import pytest
import torch

from gradwatch.watch.stats import CHUNK, NormPlan, hypot_segments, segment_sum

REL = 1e-5  # the bar: relative to a float64 reference
DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16, torch.complex64)


def _reference(t: torch.Tensor) -> float:
    """The L2 norm from float64 copies, max-abs scaled (exact where the test lives)."""
    x = t.detach().to(torch.complex128 if t.is_complex() else torch.float64).abs()
    peak = float(x.max()) if x.numel() else 0.0
    return 0.0 if peak == 0 else peak * float(torch.linalg.vector_norm(x / peak))


def _norms(ts: list[torch.Tensor], host: bool, count: bool = False):
    plan = NormPlan(ts, list(range(len(ts))), len(ts), host=host)
    vals, counts = plan.norms(ts, count=count)
    return plan.layer_norms(vals), counts, plan


def _scales(dtype: torch.dtype) -> list[float]:
    """Entry magnitudes from the dtype's smallest normal number to near its largest."""
    info = torch.finfo(dtype)
    lo, hi = math.log10(info.tiny), math.log10(info.max)
    return [10.0**e for e in np.linspace(lo + 1, hi - 3, 9)]


@pytest.mark.parametrize("host", [True, False], ids=["host", "device-path"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_norms_are_exact_over_the_whole_range_of_every_dtype(dtype, host):
    g = torch.Generator().manual_seed(0)
    ts = []
    for scale in _scales(dtype if not dtype.is_complex else torch.float32):
        base = torch.randn(37, 5, generator=g, dtype=torch.float64) * scale
        ts.append(base.to(dtype) if not dtype.is_complex else torch.complex(base, base).to(dtype))
    got, counts, _ = _norms(ts, host)
    assert counts is None or not counts.any()
    for value, t in zip(got.tolist(), ts, strict=True):
        ref = _reference(t)
        assert ref > 0 and math.isfinite(ref)
        assert math.isclose(value, ref, rel_tol=REL), (t.dtype, ref, value)


@pytest.mark.parametrize("host", [True, False], ids=["host", "device-path"])
def test_a_vanishing_float32_gradient_is_a_value_not_zero(host):
    # 3e-26 per entry: a float32 square (1e-51) flushes to 0 in a plain _foreach_norm.
    t = torch.full((64, 64), 3e-26)
    assert float(torch._foreach_norm([t])[0]) == 0.0  # what the Watch used to record
    got, _, _ = _norms([t], host)
    assert math.isclose(float(got[0]), 64 * 3e-26, rel_tol=REL)


@pytest.mark.parametrize("host", [True, False], ids=["host", "device-path"])
def test_float64_gradients_from_1e_300_to_1e300(host):
    ts = [torch.full((10,), 1e-300, dtype=torch.float64),
          torch.full((10,), 1e300, dtype=torch.float64)]
    got, _, _ = _norms(ts, host)
    for value, t in zip(got.tolist(), ts, strict=True):
        assert math.isclose(value, float(t[0]) * math.sqrt(10), rel_tol=REL)


@pytest.mark.parametrize("host", [True, False], ids=["host", "device-path"])
def test_only_a_truly_zero_gradient_reads_zero(host):
    tiny = torch.zeros(100)
    tiny[17] = torch.finfo(torch.float32).smallest_normal / 4  # one subnormal entry
    got, _, _ = _norms([torch.zeros(100), tiny], host)
    assert got[0].item() == 0.0
    assert math.isclose(got[1].item(), float(tiny[17]), rel_tol=REL)


def test_large_tensors_keep_six_digits():
    # One float32 accumulator over 2.5e6 same-sign entries drifts past 1e-5; pieces do not.
    t = torch.rand(5 * CHUNK, generator=torch.Generator().manual_seed(1)) + 1
    got, _, plan = _norms([t], host=True)
    assert len(plan.owner) == 5
    assert math.isclose(float(got[0]), _reference(t), rel_tol=2e-6)


@pytest.mark.parametrize("host", [True, False], ids=["host", "device-path"])
def test_nonfinite_entries_are_counted_and_propagate(host):
    ts = [torch.ones(5), torch.tensor([1.0, float("inf"), float("nan"), 2.0]),
          torch.tensor([float("inf"), 1.0])]
    got, counts, plan = _norms(ts, host, count=True)
    assert counts is not None
    per_tensor = segment_sum(counts, plan.seg, 3)
    assert per_tensor.tolist() == [0.0, 2.0, 1.0]
    assert math.isclose(got[0].item(), math.sqrt(5), rel_tol=REL)
    assert math.isnan(got[1].item()) and got[2].item() == math.inf


def test_finite_float32_past_its_square_range_is_finite():
    t = torch.full((4,), 3e19)  # squares overflow float32
    for host in (True, False):
        got, counts, _ = _norms([t], host, count=True)
        assert math.isclose(got[0].item(), 2 * 3e19, rel_tol=REL)
        assert counts is None or not counts.any()


@pytest.mark.parametrize("on_cpu", [True, False], ids=["numpy", "torch"])
def test_hypot_segments_matches_float64_and_keeps_extremes(on_cpu):
    values = torch.tensor([3e-300, 4e-300, 1e300, 2.0, float("nan"), 5.0], dtype=torch.float64)
    seg = torch.tensor([0, 0, 1, 3, 2, 3])
    if on_cpu:
        got = hypot_segments(values, seg, 5)
    else:  # the accelerator branch, run on CPU tensors
        from gradwatch.watch import stats

        got = stats._hypot_torch(values, seg, 5)
    assert math.isclose(got[0].item(), 5e-300, rel_tol=1e-12)
    assert math.isclose(got[1].item(), 1e300, rel_tol=1e-12)
    assert math.isnan(got[2].item())
    assert math.isclose(got[3].item(), math.sqrt(29), rel_tol=1e-12)
    assert got[4].item() == 0.0  # an empty segment


def test_segment_sum_matches_index_add_and_keeps_nan():
    values = torch.tensor([1.0, 2.0, float("nan"), 4.0, 8.0], dtype=torch.float64)
    seg = torch.tensor([0, 2, 1, 2, 0])
    got = segment_sum(values, seg, 4)
    ref = torch.zeros(4, dtype=torch.float64).index_add_(0, seg, values)
    assert got.dtype == torch.float64
    assert torch.equal(got.isnan(), ref.isnan())
    assert torch.equal(got.nan_to_num(), ref.nan_to_num())
    assert got.tolist()[3] == 0.0  # an empty segment sums to 0
