"""The per-tensor statistics behind Watch.step(): NumPy on the host, torch on devices."""

import math

import torch

from gradwatch.watch.stats import nonfinite_counts, segment_sum, squared_norms


def test_squared_norms_match_float64_and_survive_float32_overflow():
    torch.manual_seed(0)
    ts = [torch.randn(7, 3), torch.randn(11), torch.full((4,), 3e19), torch.randn(2, 2)]
    ts[3][0, 1] = float("nan")
    sq = squared_norms(ts, torch.float32, torch.float64)
    assert sq.dtype == torch.float64 and sq.shape == (4,)
    for got, t in zip(sq[:2], ts[:2], strict=True):
        assert math.isclose(float(got), float(t.double().square().sum()), rel_tol=1e-6)
    assert math.isclose(float(sq[2]), 4 * 3e19**2, rel_tol=1e-6)  # finite, though > float32 max
    assert math.isnan(float(sq[3]))


def test_nonfinite_counts_scan_only_what_the_norm_flags():
    ts = [torch.ones(5), torch.tensor([1.0, float("inf"), float("nan"), 2.0])]
    counts = nonfinite_counts(ts, squared_norms(ts, torch.float32, torch.float64))
    assert counts.tolist() == [0.0, 2.0]


def test_segment_sum_matches_index_add_and_keeps_nan():
    values = torch.tensor([1.0, 2.0, float("nan"), 4.0, 8.0], dtype=torch.float64)
    seg = torch.tensor([0, 2, 1, 2, 0])
    got = segment_sum(values, seg, 4)
    ref = torch.zeros(4, dtype=torch.float64).index_add_(0, seg, values)
    assert got.dtype == torch.float64
    assert torch.equal(got.isnan(), ref.isnan())
    assert torch.equal(got.nan_to_num(), ref.nan_to_num())
    assert got.tolist()[3] == 0.0  # an empty segment sums to 0
