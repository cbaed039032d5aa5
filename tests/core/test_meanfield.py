"""Mean-field theory: closed forms, slow references, Monte Carlo and the edge of chaos."""

import doctest
import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from torch import nn

from gradwatch.core import meanfield as mf
from gradwatch.core.activations import activation
from gradwatch.core.meanfield import (
    DepthScales,
    PhaseDiagram,
    chi1,
    critical_sigma_w,
    depth_scales,
    phase_diagram,
    qstar,
)

F64 = torch.float64
SQRT2 = math.sqrt(2.0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # On a loaded 2-core machine torch's 2-thread pool runs these many small ops ~8x slower
    # than one thread (workers wait on each other); results do not depend on it.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- exact special cases ------------------------------------------------------------------


def test_relu_closed_forms():
    assert qstar("relu", 1.0, 1.0) == 2.0  # sigma_b^2 / (1 - sigma_w^2 / 2)
    for sw in (0.5, 1.0, 1.3, SQRT2, 1.6, 3.0):
        assert chi1("relu", sw) == pytest.approx(sw * sw / 2, rel=1e-15)
        assert chi1("relu", sw, 0.7) == pytest.approx(sw * sw / 2, rel=1e-15)
    assert qstar("relu", 1.2) == 0.0  # ordered, sigma_b = 0: lengths shrink to 0
    assert qstar("relu", 1.5) == math.inf  # sigma_w^2 / 2 > 1: they grow without bound
    assert qstar("relu", SQRT2, q0=3.0) == 3.0  # critical: every q is a fixed point
    assert qstar("relu", SQRT2, 0.1) == math.inf  # critical with bias: linear growth
    assert critical_sigma_w("relu") == pytest.approx(SQRT2, abs=1e-15)
    assert critical_sigma_w("relu", 0.5) == pytest.approx(SQRT2, abs=1e-15)
    assert critical_sigma_w("linear") == 1.0
    a = 0.2
    assert critical_sigma_w(nn.LeakyReLU(a)) == pytest.approx(math.sqrt(2 / (1 + a * a)), 1e-15)
    ds = depth_scales("relu", SQRT2)
    assert ds.xi_grad == math.inf and ds.xi_c == math.inf and ds.c_star == 1.0
    ds = depth_scales("relu", 1.2, 0.1)  # ordered with bias: c* = 1 and chi_c = chi1
    assert ds.c_star == 1.0 and ds.chi_c == ds.chi1 == pytest.approx(0.72, rel=1e-15)
    assert ds.xi_c == pytest.approx(-1 / math.log(0.72), rel=1e-14)
    assert ds.q_star == pytest.approx(0.01 / (1 - 0.72), rel=1e-14)


def test_tanh_critical_exactly_at_one_where_q_star_is_zero():
    assert qstar("tanh", 1.0) == 0.0
    assert qstar("tanh", 0.7) == 0.0
    assert chi1("tanh", 1.0) == 1.0  # sigma_w^2 phi'(0)^2, not a slowly converging iterate
    assert chi1("tanh", 0.8) == pytest.approx(0.64, rel=1e-15)
    assert critical_sigma_w("tanh") == 1.0
    assert depth_scales("tanh", 1.0).xi_grad == math.inf
    # Just above 1, q* is small and positive: E[tanh(sqrt(q) z)^2] / q = 1 - 2q + 17/3 q^2
    # - 62/3 q^3 + O(q^4) (Taylor series of tanh^2 and Gaussian moments), so q* solves
    # sigma_w^2 (1 - 2q + 17/3 q^2 - 62/3 q^3) = 1 up to O(q^4).
    sw = 1.001
    q = 0.0
    for _ in range(50):
        f = 1 - 2 * q + 17 / 3 * q**2 - 62 / 3 * q**3 - sw**-2
        q -= f / (-2 + 34 / 3 * q - 62 * q**2)
    assert qstar("tanh", sw) == pytest.approx(q, rel=1e-7)
    assert critical_sigma_w("tanh", 0.3) > 1.0


def test_degenerate_fixed_points_give_no_exponential_correlation_scale():
    # q* = 0 (tanh, sigma_w < 1) and relu without bias: the normalised c-map has slope 1 at
    # c = 1 (the net is linear near q = 0; relu is scale-free), so xi_c = inf, while lengths
    # and gradients still decay at the rate chi1.
    ds = depth_scales("tanh", 0.8)
    assert ds.q_star == 0.0 and ds.chi_c == pytest.approx(1.0, abs=1e-15)
    assert ds.xi_c == math.inf and ds.xi_q == pytest.approx(-1 / math.log(0.64), rel=1e-14)
    ds = depth_scales("relu", 1.2)
    assert ds.q_star == 0.0 and ds.chi_c == 1.0 and ds.xi_c == math.inf
    assert ds.xi_grad == pytest.approx(-1 / math.log(0.72), rel=1e-14)


def test_erf_quadrature_matches_williams_closed_form_at_large_q():
    # erf has closed forms (Williams 1997); the numeric path must match them where q* is
    # large, i.e. where phi'(sqrt(q) z)^2 is a narrow peak that a Gauss-Hermite rule misses.
    for sw, sb in ((4.0, 2.0), (8.0, 0.0), (1.7, 0.3), (0.8, 0.05)):
        exact = depth_scales("erf", sw, sb)
        num = depth_scales("erf", sw, sb, method="quadrature")
        assert num.q_star == pytest.approx(exact.q_star, rel=1e-12)
        assert num.chi1 == pytest.approx(exact.chi1, rel=1e-11)
        assert num.xi_q == pytest.approx(exact.xi_q, rel=1e-10)
        assert num.c_star == pytest.approx(exact.c_star, rel=1e-9, abs=1e-12)
        assert num.chi_c == pytest.approx(exact.chi_c, rel=1e-9)
    assert depth_scales("erf", 8.0).q_star > 30  # the large-q regime is really exercised


# activations.py computes leaky_relu's derivative in float32 (torch.where with Python scalars):
# its slope 0.01 is off by 2e-10, hence the looser tolerance; 0.25 is exact in float32.
RELU_LIKE = [("relu", 1e-12), ("leaky_relu", 1e-9), (nn.LeakyReLU(0.25), 1e-12), ("linear", 1e-12)]


@pytest.mark.parametrize(("act", "tol"), RELU_LIKE)
def test_relu_quadrature_matches_closed_forms(act, tol):
    for sw, sb in ((1.2, 0.5), (0.7, 0.1), (1.39, 1.0)):
        assert qstar(act, sw, sb, method="quadrature") == pytest.approx(
            qstar(act, sw, sb), rel=1e-12
        )
        assert chi1(act, sw, sb, method="quadrature") == pytest.approx(chi1(act, sw, sb), rel=tol)
    assert critical_sigma_w(act, 0.2, method="quadrature") == pytest.approx(
        critical_sigma_w(act, 0.2), rel=tol
    )


def test_2d_rule_matches_arc_cosine_and_williams_kernels_up_to_c_near_1():
    q = torch.tensor([0.01, 1.0, 30.0, 1000.0], dtype=F64)
    c = torch.tensor([-0.9, 0.0, 0.5, 0.9, 0.999, 0.99999], dtype=F64)
    Q, C = (t.reshape(-1) for t in torch.meshgrid(q, c, indexing="ij"))
    for name in ("relu", "leaky_relu", "erf"):
        exact = mf._kernel(activation(name), "auto")
        assert not isinstance(exact, mf._Quadrature)
        for fast, tol in ((False, 1e-8), (True, 5e-5)):
            d, p = mf._Quadrature(activation(name), fast=fast).pair(Q, C)
            d0, p0 = exact.pair(Q, C)
            # D = E[phi(u1) phi(u2)] - E[phi^2] is O(q (1 - c)) (O(1 - c) for bounded erf)
            scale = (Q.clamp(max=1) if name == "erf" else Q) * (1 - C)
            assert ((d - d0).abs() / scale).max() < tol
            assert ((p - p0).abs() / p0.abs()).max() < tol


def test_1d_rule_against_adaptive_quad_at_large_q():
    # E[tanh'(sqrt(q) z)^2] (chi1 / sigma_w^2) and E[tanh(sqrt(q) z)^2] against scipy's quad.
    kern = mf._Quadrature(activation("tanh"))
    qs = torch.tensor([1e-3, 1.0, 30.0, 1e3, 1e5], dtype=F64)
    _, sq, _, dsq, _ = kern.moments(qs)

    def ref(f, q):
        s = math.sqrt(q)
        g = lambda x: f(x) * math.exp(-x * x / (2 * q)) / math.sqrt(2 * math.pi * q)  # noqa: E731
        pts = sorted({0.0, -1.0, 1.0, -5.0, 5.0, -s, s, -3 * s, 3 * s})
        cuts = [-12 * s - 40, *pts, 12 * s + 40]
        return sum(
            integrate.quad(g, a, b, epsabs=0, epsrel=1e-13, limit=200)[0]
            for a, b in itertools.pairwise(cuts)
        )

    for i, q in enumerate(qs.tolist()):
        sech4 = lambda x: (2 * math.exp(-abs(x)) / (1 + math.exp(-2 * abs(x)))) ** 4  # noqa: E731
        assert float(dsq[i]) == pytest.approx(ref(sech4, q), rel=1e-11)
        assert float(sq[i]) == pytest.approx(ref(lambda x: math.tanh(x) ** 2, q), rel=1e-11)
    # What a fixed 32-point Gauss-Hermite rule gets wrong here, for contrast.
    z, w = np.polynomial.hermite_e.hermegauss(32)
    e = np.exp(-math.sqrt(1e3) * np.abs(z))
    gh = float(np.sum(w * (2 * e / (1 + e * e)) ** 4) / math.sqrt(2 * math.pi))
    assert abs(gh / float(dsq[3]) - 1) > 0.05


# --- consistency of the maps with the reported slopes ----------------------------------------


def test_depth_scales_are_the_slopes_of_the_maps():
    # Iterate the mean-field maps themselves: deviations from q* and c* must shrink by chi_q
    # and chi_c per layer, so xi_q and xi_c are their depth scales.
    for act, sw, sb in (("tanh", 1.5, 0.3), ("tanh", 0.9, 0.3), ("hardtanh", 2.0, 0.2)):
        ds = depth_scales(act, sw, sb)
        kern = mf._kernel(activation(act), "auto")
        qs = torch.tensor([ds.q_star], dtype=F64)
        q = qs * (1 + 1e-4)
        dev = []
        for _ in range(6):
            q = sw * sw * kern.sq(q) + sb * sb
            dev.append(float(q - qs))
        assert dev[-1] / dev[-2] == pytest.approx(math.exp(-1 / ds.xi_q), rel=1e-3)
        c = torch.tensor([ds.c_star - 1e-4], dtype=F64)
        a = sw * sw / ds.q_star
        cdev = []
        for _ in range(6):  # C(c) = 1 + a D(c) (the map sends 1 to 1)
            c = 1 + a * kern.pair(qs, c)[0]
            cdev.append(float(c) - ds.c_star)
        assert cdev[-1] / cdev[-2] == pytest.approx(ds.chi_c, rel=1e-3)
        assert ds.xi_c == pytest.approx(-1 / math.log(ds.chi_c), rel=1e-12)
        assert ds.xi_grad == pytest.approx(-1 / math.log(ds.chi1), rel=1e-12)


def test_chaotic_phase_fixed_point():
    ds = depth_scales("tanh", 2.5, 0.0)  # odd phi without bias: c* = 0 (Poole et al.)
    assert ds.c_star == 0.0 and ds.chi1 > 1 and ds.xi_grad < 0
    ds = depth_scales("tanh", 1.5, 0.3)
    assert 0 < ds.c_star < 1 and ds.chi_c < 1 < ds.chi1
    assert ds.chi_c != ds.chi1


# --- Monte Carlo: wide random networks ---------------------------------------------------------


def _propagate(act, sw, sb, *, width=1000, depth=24, inputs=8, c0=0.2, q0=1.0, seed=0):
    """Forward K inputs with pairwise correlation ~c0 and length q0 through a random net, then
    backpropagate a random cotangent. Returns q_l (L+1, K), |dL/dh_l|^2 (L+1, K) and the mean
    pairwise correlation c_l (L+1,) of the pre-activations."""
    a = activation(act)
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(width, generator=g, dtype=F64)
    own = torch.randn(inputs, width, generator=g, dtype=F64)
    h = math.sqrt(q0) * (math.sqrt(c0) * shared + math.sqrt(1 - c0) * own)
    hs, Ws = [h], []
    for _ in range(depth):
        # float32 normals (fast), propagated in float64
        W = torch.randn(width, width, generator=g).to(F64) * (sw / math.sqrt(width))
        b = torch.randn(width, generator=g).to(F64) * sb
        h = a.fn(h) @ W.T + b
        hs.append(h)
        Ws.append(W)
    d = torch.randn(inputs, width, generator=g, dtype=F64)
    norms = [d.pow(2).sum(1)]
    for layer in reversed(range(depth)):
        d = a.derivative(hs[layer]) * (d @ Ws[layer])
        norms.append(d.pow(2).sum(1))
    q = torch.stack([x.pow(2).mean(1) for x in hs])
    unit = torch.stack([x / x.norm(dim=1, keepdim=True) for x in hs])
    corr = unit @ unit.transpose(1, 2)  # (L+1, K, K)
    iu = torch.triu_indices(inputs, inputs, 1)
    return q, torch.stack(norms[::-1]), corr[:, iu[0], iu[1]].mean(1)


MC_CASES = {  # (act, sigma_w, sigma_b, c0, q0 or None for q*)
    "tanh_chaotic": ("tanh", 2.5, 0.5, 0.9, None),
    "tanh_ordered": ("tanh", 0.9, 0.3, 0.0, None),
    "relu_ordered": ("relu", 1.0, 0.3, 0.0, 1.0),
}


@pytest.fixture(scope="module")
def monte_carlo():
    out = {}
    for key, (act, sw, sb, c0, q0) in MC_CASES.items():
        ds = depth_scales(act, sw, sb)
        q0 = ds.q_star if q0 is None else q0
        out[key] = (ds, _propagate(act, sw, sb, q0=q0, c0=c0, seed=len(out)))
    return out


@pytest.mark.parametrize("key", MC_CASES)
def test_monte_carlo_length_and_gradient_factor(monte_carlo, key):
    ds, (q, norms, _) = monte_carlo[key]
    assert float(q[8:].mean()) == pytest.approx(ds.q_star, rel=0.05)
    ratio = norms[:-1] / norms[1:]  # per-layer squared gradient ratio (L, K)
    assert float(ratio.log().mean().exp()) == pytest.approx(ds.chi1, rel=0.03)


def test_monte_carlo_length_converges_along_the_q_map(monte_carlo):
    # relu from q0 = 1, far above q* = 0.18: q_l follows q -> sigma_w^2 q / 2 + sigma_b^2
    # (relu's q fluctuates by ~7% per layer at width 1000; the mean deviation is ~3%).
    ds, (q, _, _) = monte_carlo["relu_ordered"]
    _, sw, sb, *_ = MC_CASES["relu_ordered"]
    path = [float(q[0].mean())]
    for _ in range(1, len(q)):
        path.append(sw * sw * path[-1] / 2 + sb * sb)
    dev = (q.mean(1) / torch.tensor(path, dtype=F64) - 1).abs()
    assert float(dev.mean()) < 0.06 and float(dev.max()) < 0.2
    assert path[-1] == pytest.approx(ds.q_star, rel=1e-6) and path[0] > 4 * ds.q_star


def test_monte_carlo_correlation_depth_scale_ordered(monte_carlo):
    # Ordered phase: 1 - c_l decays like chi_c^l = exp(-l / xi_c).
    ds, (_, _, c) = monte_carlo["tanh_ordered"]
    layers = torch.arange(3, 13, dtype=F64)
    y = (1 - c[3:13]).log()
    dl = layers - layers.mean()
    slope = float((dl * (y - y.mean())).sum() / dl.pow(2).sum())
    assert -1 / slope == pytest.approx(ds.xi_c, rel=0.05)


def test_monte_carlo_correlation_follows_the_c_map(monte_carlo):
    # Chaotic phase: from c_0 = 0.9, c_l follows the mean-field c-map down towards c* (its
    # stable fixed point); finite width adds noise of ~0.02 that depth does not average out.
    ds, (_, _, c) = monte_carlo["tanh_chaotic"]
    act, sw, *_ = MC_CASES["tanh_chaotic"]
    kern = mf._kernel(activation(act), "auto")
    qs = torch.tensor([ds.q_star], dtype=F64)
    cm, path = c[:1].clone(), [float(c[0])]
    for _ in range(1, len(c)):
        cm = 1 + sw * sw / ds.q_star * kern.pair(qs, cm)[0]
        path.append(float(cm))
    dev = (c - torch.tensor(path, dtype=F64)).abs()
    assert float(dev.mean()) < 0.03 and float(dev.max()) < 0.08
    assert path[-1] == pytest.approx(ds.c_star, abs=0.02) and float(c[0]) > 0.85


# --- phase diagram ------------------------------------------------------------------------


def test_phase_diagram_critical_line_and_phases():
    sw = torch.linspace(0.6, 3.0, 13, dtype=F64)
    sb = torch.tensor([0.0, 0.05, 0.3, 1.0], dtype=F64)
    pd = phase_diagram("tanh", sw, sb)
    assert pd.chi1.shape == pd.q_star.shape == pd.xi_c.shape == (4, 13)
    assert pd.critical_sigma_w.shape == (4,)
    for i, b in enumerate(sb.tolist()):
        crit = float(pd.critical_sigma_w[i])
        assert crit == pytest.approx(critical_sigma_w("tanh", b), abs=1e-12)
        assert bool((pd.chi1[i, sw < crit - 1e-9] < 1).all())
        assert bool((pd.chi1[i, sw > crit + 1e-9] > 1).all())
    assert float(pd.critical_sigma_w[0]) == 1.0
    # every entry is what the scalar functions give (xi_c to the fast 2-D rule's accuracy)
    for i, j in ((0, 0), (0, 8), (1, 2), (2, 6), (3, 12)):
        ds = depth_scales("tanh", float(sw[j]), float(sb[i]))
        assert float(pd.chi1[i, j]) == pytest.approx(ds.chi1, rel=1e-12)
        assert float(pd.q_star[i, j]) == pytest.approx(ds.q_star, rel=1e-12, abs=1e-300)
        assert float(pd.xi_c[i, j]) == pytest.approx(ds.xi_c, rel=1e-4)


def test_phase_diagram_relu_and_missing_critical_line():
    pd = phase_diagram("relu", np.array([1.0, 1.6]), (0.0, 0.5))
    assert torch.allclose(pd.critical_sigma_w, torch.full((2,), SQRT2, dtype=F64))
    assert pd.q_star[0, 0] == 0 and pd.q_star[1, 1] == math.inf
    pd = phase_diagram(lambda x: 0.001 * torch.tanh(x), [1.0, 2.0], [0.0])
    assert bool(pd.critical_sigma_w.isnan().all())  # would be at 1000 > max(100, 2)


# --- results, errors, docs --------------------------------------------------------------------


def test_results_round_trip_json():
    ds = depth_scales("relu", 1.6)  # q* = inf and xi_c = inf survive JSON
    assert DepthScales.from_json(ds.to_json()) == ds
    pd = phase_diagram("tanh", [0.5, 1.5], [0.0, 0.2])
    back = PhaseDiagram.from_json(pd.to_json())
    for name in ("sigma_w", "sigma_b", "chi1", "q_star", "xi_c", "critical_sigma_w"):
        assert torch.equal(getattr(back, name), getattr(pd, name))
    assert back.act == "tanh"


def test_bad_input():
    with pytest.raises(ValueError, match="act: unknown activation 'tanhh'"):
        qstar("tanhh", 1.0)
    with pytest.raises(ValueError, match="sigma_w: must be > 0"):
        chi1("tanh", -1.0)
    with pytest.raises(ValueError, match="sigma_w: must be > 0"):
        depth_scales("tanh", 0.0)
    with pytest.raises(ValueError, match="sigma_b: must be >= 0"):
        qstar("tanh", 1.0, -0.1)
    with pytest.raises(ValueError, match="sigma_b: expected a finite number"):
        critical_sigma_w("tanh", float("nan"))
    with pytest.raises(TypeError, match="sigma_w: expected a real number"):
        qstar("tanh", "1")
    with pytest.raises(ValueError, match="method"):
        qstar("tanh", 1.0, method="gauss-hermite")
    with pytest.raises(ValueError, match="q0: must be > 0"):
        qstar("tanh", 1.0, q0=0.0)
    with pytest.raises(ValueError, match="sigma_w_grid: got an empty tensor"):
        phase_diagram("tanh", [], [0.0])
    with pytest.raises(ValueError, match="sigma_b_grid: got an empty tensor"):
        phase_diagram("tanh", [1.0], torch.zeros(0))
    with pytest.raises(ValueError, match="sigma_w_grid: every value must be > 0"):
        phase_diagram("tanh", [1.0, 0.0], [0.0])
    with pytest.raises(ValueError, match="sigma_b_grid: holds 1 NaN"):
        phase_diagram("tanh", [1.0], [float("nan")])
    with pytest.raises(ValueError, match="sigma_w_grid: expected a tensor with 1 dimensions"):
        phase_diagram("tanh", torch.ones(2, 2), [0.0])
    with pytest.raises(TypeError, match="sigma_w_grid"):
        phase_diagram("tanh", ["a"], [0.0])
    with pytest.raises(ValueError, match=r"no edge of chaos.*stays below 1"):
        critical_sigma_w(lambda x: 0.01 * torch.tanh(x), sigma_w_max=10.0)


def test_critical_line_is_a_continuous_crossing():
    # gelu without bias: q* = 0 is attracting until the iterates from q0 = 1 escape to inf,
    # and chi1 jumps from sigma_w^2 / 4 to sigma_w^2 / 2 there: no sigma_w gives chi1 = 1.
    assert chi1("gelu", 1.5) < 0.6 and chi1("gelu", 1.6) > 1.2
    with pytest.raises(ValueError, match="jumps across 1"):
        critical_sigma_w("gelu")
    # softplus: chi1 -> 1 continuously (infinitely steeply) as q* -> inf at sigma_w -> sqrt(2)
    assert critical_sigma_w("softplus", 0.5) == pytest.approx(SQRT2, rel=1e-12)
    assert critical_sigma_w("gelu", 1.0) == pytest.approx(1.405944526838, rel=1e-9)


def test_docstring_examples():
    result = doctest.testmod(mf, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0
