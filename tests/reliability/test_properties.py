"""Property-based tests (hypothesis) of the public functions of core and fix: random shapes,
dtypes, tiny and huge magnitudes, empty inputs. Each call either returns a finite result that
matches a slow reference, or raises ValueError / TypeError; never another exception, never a
silent NaN."""

import itertools
import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import gradwatch as gw
from gradwatch.fix import AutoClip, ZClip, agc_, critical_init_

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=25, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow])

ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=64)
MAGNITUDE = st.sampled_from([0.0, 1e-300, 1e-30, 1e-8, 1.0, 1e8, 1e30, 1e300])
ACTS = ["sigmoid", "tanh", "relu", "erf", "gelu", "silu", "linear"]


def _clean(fn, *args, **kwargs):
    """Call fn; a ValueError/TypeError is an allowed answer (returns None), anything else fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a documented warning is an answer too
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError) as err:
            assert str(err) and "\n" not in str(err).strip(), repr(err)  # one clear line
            return None


# ---------------------------------------------------------------- core.chain


@SETTINGS
@given(st.lists(ANY_FLOAT, max_size=40))
def test_chain_product_is_the_product_in_log_space(factors):
    got = _clean(gw.chain_product, factors)
    if not all(math.isfinite(f) for f in factors):
        assert got is None  # non-finite factors are refused
        return
    assert got is not None and got.n_factors == len(factors)
    if any(f == 0 for f in factors):
        assert got.sign == 0 and got.value == 0.0
        return
    expected = math.fsum(math.log10(abs(f)) for f in factors)
    assert math.isfinite(got.log10) and got.log10 == pytest.approx(expected, abs=1e-9)
    assert got.sign == (-1) ** sum(f < 0 for f in factors)
    assert not math.isnan(got.value) and isinstance(str(got), str)


@SETTINGS
@given(
    st.lists(st.integers(0, 4), max_size=3),
    st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
    MAGNITUDE,
)
def test_chain_product_of_a_tensor_of_any_shape_and_dtype(shape, dtype, scale):
    t = (torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
         + 0.5) * scale
    t = t.to(dtype)
    got = _clean(gw.chain_product, t)
    ref = t.double().flatten()
    if not torch.isfinite(ref).all():
        assert got is None
        return
    assert got is not None and got.n_factors == t.numel()
    if (ref == 0).any():
        assert got.sign == 0
    else:
        assert got.log10 == pytest.approx(float(ref.abs().log10().sum()), rel=1e-9, abs=1e-9)


@SETTINGS
@given(st.sampled_from(ACTS), st.integers(-3, 10**6), ANY_FLOAT)
def test_chain_bound_is_the_derivative_bound_to_the_depth(act, depth, gain):
    got = _clean(gw.chain_bound, act, depth, gain)
    if depth < 0 or not (math.isfinite(gain) and gain > 0):
        assert got is None
        return
    d = gw.derivative_bound(act)
    assert 0 < d < 2 and got is not None
    assert got.log10 == pytest.approx(depth * math.log10(d * gain), rel=1e-9, abs=1e-9)


@FEW
@given(st.one_of(st.text(max_size=8), st.integers(), st.none(), st.floats()))
def test_unknown_activations_are_refused_clearly(act):
    assume(act not in ACTS)
    _clean(gw.derivative_bound, act)  # a value or ValueError/TypeError, nothing else


# ---------------------------------------------------------------- core.meanfield


@FEW
@given(st.floats(0.05, 20.0), st.floats(0.0, 2.0))
def test_relu_mean_field_closed_forms(sigma_w, sigma_b):
    chi = _clean(gw.chi1, "relu", sigma_w, sigma_b)
    assert chi == pytest.approx(sigma_w**2 / 2, rel=1e-6)  # whatever q* is
    q = _clean(gw.qstar, "relu", sigma_w, sigma_b)
    assert q is not None and not math.isnan(q) and q >= 0
    if sigma_w**2 / 2 < 1 - 1e-6:  # q* = sigma_b^2 / (1 - sigma_w^2 / 2)
        assert q == pytest.approx(sigma_b**2 / (1 - sigma_w**2 / 2), rel=1e-4, abs=1e-12)


@FEW
@given(st.floats(0.05, 0.999))
def test_tanh_without_bias_is_ordered_below_one(sigma_w):
    assert _clean(gw.qstar, "tanh", sigma_w, 0.0) == 0.0
    assert _clean(gw.chi1, "tanh", sigma_w, 0.0) == pytest.approx(sigma_w**2, rel=1e-6)


@FEW
@given(st.sampled_from(["relu", "tanh", "erf"]), st.floats(0.0, 1.0))
def test_critical_sigma_w_puts_chi1_at_one(act, sigma_b):
    sw = _clean(gw.critical_sigma_w, act, sigma_b)
    assert sw is not None and math.isfinite(sw) and sw > 0
    if act == "relu":
        assert sw == pytest.approx(math.sqrt(2), rel=1e-6)
    assert gw.chi1(act, sw, sigma_b) == pytest.approx(1.0, abs=1e-4)


@FEW
@given(st.sampled_from(ACTS), ANY_FLOAT, ANY_FLOAT)
def test_mean_field_refuses_bad_numbers_clearly(act, sigma_w, sigma_b):
    for fn in (gw.qstar, gw.chi1):
        got = _clean(fn, act, sigma_w, sigma_b)
        if got is not None:
            assert not math.isnan(got) and got >= 0  # q* may be inf (documented), chi1 too
    if not (math.isfinite(sigma_w) and math.isfinite(sigma_b)):
        assert _clean(gw.chi1, act, sigma_w, sigma_b) is None


# ---------------------------------------------------------------- core.jacobian


@FEW
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), MAGNITUDE,
       st.sampled_from([torch.float32, torch.float64]))
def test_jacobian_spectrum_of_a_linear_map_is_its_singular_values(batch, n_in, n_out, scale, dt):
    assume(scale > 0 and (dt == torch.float64 or 1e-30 <= scale <= 1e30))
    g = torch.Generator().manual_seed(n_in * 7 + n_out)
    w = torch.randn(n_out, n_in, generator=g, dtype=torch.float64) * scale
    x = torch.randn(batch, n_in, generator=g, dtype=torch.float64).to(dt)
    got = _clean(gw.jacobian_spectrum, lambda v: v @ w.to(dt).T, x)
    assert got is not None
    sv = got.singular_values
    assert sv.shape == (batch, min(n_in, n_out)) and torch.isfinite(sv).all()
    ref = torch.linalg.svdvals(w).expand(batch, -1)
    tol = 1e-4 if dt == torch.float32 else 1e-9
    torch.testing.assert_close(sv.double(), ref, rtol=tol, atol=tol * float(ref.max()))


@FEW
@given(st.sampled_from([(0, 3), (2, 0), (0,)]))
def test_jacobian_spectrum_of_empty_input_is_a_clear_error(shape):
    assert _clean(gw.jacobian_spectrum, lambda v: v * 2, torch.zeros(shape)) is None


# ---------------------------------------------------------------- fix: clipping


def _grads(shapes, dtype, scale, seed, nonfinite=None):
    g = torch.Generator().manual_seed(seed)
    params = []
    for s in shapes:
        p = nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(dtype) + 1)
        p.grad = (torch.randn(s, generator=g, dtype=torch.float64) * scale).to(dtype)
        params.append(p)
    if nonfinite is not None and params and params[0].numel():
        params[0].grad.view(-1)[0] = nonfinite
    return params


SHAPES = st.lists(st.lists(st.integers(0, 5), max_size=3), max_size=4)
DTYPES = st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64])
# Gradients whose sum of squares the dtype holds (huge finite float32 gradients: see below).
SANE = st.sampled_from([0.0, 1e-12, 1e-3, 1.0, 1e3, 1e12])


def _reference_norm(params):
    gs = [p.grad.double().flatten() for p in params]
    return float(torch.cat(gs).norm()) if gs else 0.0


@SETTINGS
@given(SHAPES, DTYPES, SANE, st.integers(0, 10**6),
       st.sampled_from(["autoclip", "zclip", "agc"]))
def test_clippers_return_the_true_norm_and_only_ever_shrink(shapes, dtype, scale, seed, which):
    params = _grads(shapes, dtype, scale, seed)
    assume(all(torch.isfinite(p.grad).all() for p in params))  # fp16 may overflow: not here
    before = [p.grad.double().clone() for p in params]
    clip = {"autoclip": lambda: AutoClip(50.0), "zclip": lambda: ZClip(warmup=1),
            "agc": lambda: (lambda ps: agc_(ps, clipping=0.01))}[which]()
    norm = None
    for _ in range(2):  # the second call clips against the first's statistics
        norm = _clean(clip, params)
    assert norm is not None and norm.dim() == 0 and math.isfinite(float(norm))
    for p, b in zip(params, before, strict=True):
        after = p.grad.double()
        assert torch.isfinite(after).all()
        assert (after.abs() <= b.abs() * (1 + 1e-2) + 1e-30).all()  # clipping only shrinks
        assert torch.equal(after.sign(), b.sign()) or not b.any()


@SETTINGS
@given(SHAPES, DTYPES, SANE, st.integers(0, 10**6))
def test_first_call_returns_the_pre_clip_norm(shapes, dtype, scale, seed):
    params = _grads(shapes, dtype, scale, seed)
    assume(all(torch.isfinite(p.grad).all() for p in params))
    ref = _reference_norm(params)
    for clip in (AutoClip(10.0), ZClip(warmup=2), lambda ps: agc_(ps, clipping=0.1)):
        fresh = [nn.Parameter(p.detach().clone()) for p in params]
        for f, p in zip(fresh, params, strict=True):
            f.grad = p.grad.clone()
        norm = float(clip(fresh))
        assert norm == pytest.approx(ref, rel=2e-2 if dtype in (torch.float16, torch.bfloat16)
                                     else 1e-5, abs=1e-30)


@FEW
@given(SHAPES, st.sampled_from([math.nan, math.inf, -math.inf]), st.integers(0, 10**6))
def test_nonfinite_gradients_are_left_alone_and_kept_out_of_the_statistics(shapes, bad, seed):
    params = _grads(shapes, torch.float32, 1.0, seed, nonfinite=bad)
    assume(params and params[0].numel())
    clip = AutoClip(10.0)
    before = [p.grad.clone() for p in params]
    norm = clip(params)
    assert not torch.isfinite(norm)
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p.grad.nan_to_num(), b.nan_to_num())  # untouched
    assert clip.history.numel() == 0 and clip.threshold == math.inf  # not in the statistics


@FEW
@given(st.one_of(st.integers(), st.text(max_size=4), st.none(), st.lists(st.integers(),
                                                                         max_size=2)))
def test_clippers_refuse_non_tensors_clearly(thing):
    for clip in (AutoClip(), ZClip(), agc_):
        assert _clean(clip, thing) is None or (isinstance(thing, list) and not thing)


@FEW
@given(ANY_FLOAT, ANY_FLOAT)
def test_clipper_settings_are_checked(a, b):
    for make in (lambda: AutoClip(a), lambda: ZClip(alpha=a, z_threshold=b),
                 lambda: agc_(nn.Linear(2, 2).parameters(), clipping=a, eps=b)):
        _clean(make)  # a clipper, or ValueError/TypeError


@pytest.mark.parametrize("which", ["autoclip", "zclip", "agc"])
def test_huge_finite_float32_gradients_are_clipped_not_called_infinite(which):
    # 1e30 is a finite float32 gradient; its square is not. Summed in float32 the norm
    # overflows to inf, and every clipper then treats the step as non-finite and leaves it
    # unclipped: the one step that most needs clipping.
    p = nn.Parameter(torch.ones(100))
    p.grad = torch.full((100,), 1e30)
    clip = {"autoclip": AutoClip(50.0), "zclip": ZClip(warmup=1),
            "agc": lambda ps: agc_(ps, clipping=0.01)}[which]
    if which != "agc":  # give the statistics normal norms first
        q = nn.Parameter(torch.ones(100))
        for _ in range(20):
            q.grad = torch.ones(100)
            clip([q])
    norm = clip([p])
    assert float(norm) == pytest.approx(1e31, rel=1e-5)
    assert torch.isfinite(p.grad).all() and float(p.grad.norm()) < 1e3


# ---------------------------------------------------------------- fix: critical init


@FEW
@given(st.lists(st.integers(1, 12), min_size=2, max_size=5), st.sampled_from(["relu", "tanh"]),
       st.floats(0.0, 0.5), st.booleans())
def test_critical_init_sets_the_critical_gain(widths, act, sigma_b, orthogonal):
    layers = []
    for i, o in itertools.pairwise(widths):
        layers += [nn.Linear(i, o), nn.ReLU() if act == "relu" else nn.Tanh()]
    net = nn.Sequential(*layers)
    used = critical_init_(net, orthogonal=orthogonal, sigma_b=sigma_b,
                          generator=torch.Generator().manual_seed(0))
    target = gw.critical_sigma_w(act, sigma_b)
    for name, sw in used.items():
        assert sw == pytest.approx(target, rel=1e-9)
        w = net.get_submodule(name).weight
        assert torch.isfinite(w).all()
        if orthogonal:  # W W^T = sigma_w^2 I (wide) or W^T W = sigma_w^2 out/in I (tall)
            out_, in_ = w.shape
            gram = w @ w.T if out_ <= in_ else w.T @ w
            scale = sw**2 * (1 if out_ <= in_ else out_ / in_)
            torch.testing.assert_close(gram, scale * torch.eye(len(gram)), atol=1e-4, rtol=1e-4)


@FEW
@given(ANY_FLOAT, st.one_of(st.none(), st.integers(), st.text(max_size=3)))
def test_critical_init_refuses_bad_arguments_clearly(sigma_b, generator):
    net = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    _clean(critical_init_, net, sigma_b=sigma_b, generator=generator)
    assert torch.isfinite(net[0].weight).all()  # never left half-initialised with NaN
