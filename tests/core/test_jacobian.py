import itertools
import math

import pytest
import torch
from torch import nn

from gradwatch.core.jacobian import (
    JacobianSpectrum,
    LayerwiseSpectrum,
    jacobian_spectrum,
    layerwise_spectrum,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)  # every test draws its data from a fixed stream


def _mlp(widths, act, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    mods = []
    for a, b in itertools.pairwise(widths):
        mods += [nn.Linear(a, b), act()]
    return nn.Sequential(*mods[:-1]).to(dtype).eval()


def _reference(f, x):
    """Slow reference: autograd's dense Jacobian of each example, then svdvals."""
    out = []
    for xb in x:
        jac = torch.autograd.functional.jacobian(lambda v: f(v[None])[0], xb)
        out.append(torch.linalg.svdvals(jac.reshape(f(xb[None])[0].numel(), xb.numel())))
    return torch.stack(out)  # (B, min(in, out))


def _rel(a, b):
    return float(((a - b).abs() / b.abs()).max())


def _orthogonal_stack(width, depth, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    layers = [nn.Linear(width, width, bias=False) for _ in range(depth)]
    for layer in layers:
        nn.init.orthogonal_(layer.weight)
    return nn.Sequential(*layers).to(dtype).eval()


def _known_spectrum_linear(n_in, n_out, s, seed=0):
    """A linear map W = U diag(s) V^T with singular values s exactly."""
    g = torch.Generator().manual_seed(seed)
    r = len(s)
    u = torch.linalg.qr(torch.randn(n_out, r, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(n_in, r, generator=g, dtype=torch.float64)).Q
    lin = nn.Linear(n_in, n_out, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(u @ torch.diag(s) @ v.T)
    return lin


# -- against the dense autograd reference ------------------------------------------------------


@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU])
@pytest.mark.parametrize("widths", [(40, 32, 32, 24), (24, 32, 32, 40)])  # out < in, out > in
def test_matches_autograd_jacobian_svdvals(act, widths):
    net = _mlp(widths, act)
    x = torch.randn(3, widths[0], dtype=torch.float64)
    ref = _reference(net, x)

    dense = jacobian_spectrum(net, x, method="dense")
    assert dense.method == "dense" and dense.singular_values.shape == ref.shape
    assert (dense.in_dim, dense.out_dim) == (widths[0], widths[-1])
    torch.testing.assert_close(dense.singular_values, ref, rtol=1e-12, atol=1e-12)

    # a block of 4 + 4 vectors: several Krylov steps before the basis could fill the space
    mf = jacobian_spectrum(net, x, k=4, method="matrix_free", oversample=4)
    assert mf.method == "matrix_free" and mf.converged
    assert _rel(mf.singular_values, ref[:, :4]) < 1e-8


def test_multidimensional_inputs_and_outputs():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 2, 3)).double()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)  # in (2, 6, 6) -> out (2, 4, 4)
    ref = _reference(net, x)
    dense = jacobian_spectrum(net, x)
    assert (dense.in_dim, dense.out_dim) == (72, 32)
    torch.testing.assert_close(dense.singular_values, ref, rtol=1e-12, atol=1e-12)
    mf = jacobian_spectrum(net, x, k=5, method="matrix_free")
    assert _rel(mf.singular_values, ref[:, :5]) < 1e-8


def test_output_dtype_other_than_input():
    net = _mlp((9, 11, 6), nn.Tanh)  # float64 model fed a float32 batch
    x = torch.randn(2, 9)
    ref = _reference(lambda t: net(t.double()), x.double())
    for method in ("dense", "matrix_free"):
        spec = jacobian_spectrum(lambda t: net(t.double()), x, k=3, method=method)
        assert spec.singular_values.dtype == torch.float32
        assert _rel(spec.singular_values, ref[:, :3].float()) < 1e-5


def test_float32_matrix_free_within_1e_4_of_dense():
    net = _mlp((256, 256, 256, 256, 256), nn.Tanh, dtype=torch.float32)
    x = torch.randn(2, 256)
    dense = jacobian_spectrum(net, x, method="dense")
    mf = jacobian_spectrum(net, x, k=8, method="matrix_free")
    assert mf.singular_values.dtype == torch.float32
    assert _rel(mf.singular_values, dense.singular_values[:, :8]) < 1e-4


def test_known_spectrum_and_auto_goes_matrix_free_when_large():
    s = 3.0 * 0.8 ** torch.arange(40, dtype=torch.float64)  # well separated, ratio 0.8
    lin = _known_spectrum_linear(1100, 1000, s)  # 1.1e6 entries > 2**20
    spec = jacobian_spectrum(lin, torch.randn(2, 1100, dtype=torch.float64), k=6)
    assert spec.method == "matrix_free" and spec.converged
    assert _rel(spec.singular_values, s[:6].expand(2, 6)) < 1e-8
    # small maps and k=None go dense
    net = _mlp((10, 10), nn.Tanh)
    assert jacobian_spectrum(net, torch.randn(1, 10, dtype=torch.float64), k=3).method == "dense"


@pytest.mark.parametrize("gain", [1e25, 1e-30])
def test_exploding_and_vanishing_scales_in_float32(gain):
    # sigma^2 would overflow (1e50) or underflow (1e-60) float32; every value must still be gain
    q = torch.linalg.qr(torch.randn(200, 200, generator=torch.Generator().manual_seed(0))).Q
    x = torch.randn(2, 200)
    for method in ("dense", "matrix_free"):
        spec = jacobian_spectrum(lambda t: gain * (t @ q.T), x, k=5, method=method)
        torch.testing.assert_close(spec.singular_values / gain, torch.ones(2, 5), rtol=0, atol=1e-5)


def test_rank_deficient_and_zero_jacobians():
    # rank 5 map from 40 dims: the Krylov space becomes invariant after one block
    s = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    lin = _known_spectrum_linear(40, 30, s)
    spec = jacobian_spectrum(
        lin, torch.randn(3, 40, dtype=torch.float64), k=7, method="matrix_free"
    )
    assert spec.converged
    torch.testing.assert_close(spec.singular_values[:, :5], s.expand(3, 5), rtol=1e-10, atol=0)
    assert float(spec.singular_values[:, 5:].abs().max()) < 1e-10
    zero = jacobian_spectrum(
        lambda t: 0.0 * t, torch.randn(2, 30, dtype=torch.float64), k=3, method="matrix_free"
    )
    assert zero.converged and float(zero.singular_values.abs().max()) == 0.0


def test_batch_matches_single_examples():
    net = _mlp((30, 40, 20), nn.Tanh)
    x = torch.randn(4, 30, dtype=torch.float64)
    both = jacobian_spectrum(net, x, k=3, method="matrix_free").singular_values
    for b in range(4):
        one = jacobian_spectrum(net, x[b : b + 1], k=3, method="matrix_free").singular_values
        torch.testing.assert_close(both[b : b + 1], one, rtol=1e-9, atol=0)


# -- closed forms --------------------------------------------------------------------------------


def test_orthogonal_linear_network_is_an_isometry():
    # Saxe et al. 2014: a product of orthogonal matrices has every singular value 1.
    net = _orthogonal_stack(64, 12)
    x = torch.randn(3, 64)
    dense = jacobian_spectrum(net, x, method="dense")
    assert dense.singular_values.shape == (3, 64)
    torch.testing.assert_close(dense.singular_values, torch.ones(3, 64), rtol=0, atol=1e-5)
    mf = jacobian_spectrum(net, x, k=10, method="matrix_free")
    assert mf.converged
    torch.testing.assert_close(mf.singular_values, torch.ones(3, 10), rtol=0, atol=1e-5)
    assert float(dense.spread.max()) < 1e-5 and float(dense.condition.max()) < 1 + 1e-5


@pytest.mark.slow
def test_gaussian_linear_product_edge_is_fuss_catalan():
    # Products of L Ginibre matrices W ~ N(0, 1/N) have squared singular values on the
    # Fuss-Catalan law, upper edge (L+1)^(L+1)/L^L (Penson & Zyczkowski 2011). At finite N the
    # top one sits on the Tracy-Widom scale N^(-2/3) below it: over 24 dense-SVD samples at
    # N=1000 one sample has s.d. 1-3% and the mean is 1.5-2.6% low (4.5% at N=500). The mean
    # of 8 (s.d. <= 1%) is thus > 3.5 s.d. inside a 6% band; the edge for L +- 1 is >= 18% off.
    # tol=1e-2 bounds the solver's error on sigma^2 by 1% (tol=1e-3 gives the same 5 digits).
    n, samples, depths = 1000, 8, torch.arange(2, 6)
    g = torch.Generator().manual_seed(0)
    top2 = torch.zeros(len(depths))
    for _ in range(samples):
        ws = [torch.randn(n, n, generator=g) / math.sqrt(n) for _ in range(int(depths[-1]))]

        def f(x, ws=ws):  # example b gets W_{L_b} ... W_1 x_b with L_b = depths[b]
            hs = []
            for w in ws:
                x = x @ w.T
                hs.append(x)
            return torch.stack([hs[int(depth) - 1][b] for b, depth in enumerate(depths)])

        spec = jacobian_spectrum(
            f, torch.zeros(len(depths), n), k=1, method="matrix_free", tol=1e-2, oversample=16
        )
        assert spec.method == "matrix_free" and spec.converged
        top2 += spec.max.square() / samples
    edge = (depths + 1.0) ** (depths + 1) / depths.double() ** depths
    ratio = top2 / edge
    assert bool(((ratio - 1).abs() < 0.06).all()), ratio


def test_spectrum_properties():
    net = _mlp((8, 12, 10), nn.Tanh)
    x = torch.randn(2, 8, dtype=torch.float64)
    spec = jacobian_spectrum(net, x)
    jac = torch.autograd.functional.jacobian(lambda v: net(v[None])[0], x[0])
    fro2 = float(torch.linalg.matrix_norm(jac) ** 2)
    assert float(spec.mean_squared[0]) == pytest.approx(fro2 / 8, rel=1e-12)
    sv = spec.singular_values
    torch.testing.assert_close(spec.condition, sv[:, 0] / sv[:, -1])
    assert spec.k == 8 and torch.equal(spec.max, sv[:, 0]) and torch.equal(spec.min, sv[:, -1])
    s2 = sv.square()
    torch.testing.assert_close(spec.spread, s2.std(-1, correction=0) / s2.mean(-1))


# -- layerwise -----------------------------------------------------------------------------------


def test_layerwise_last_depth_equals_whole_model():
    net = _mlp((10, 16, 16, 6), nn.Tanh)  # Linear, Tanh, Linear, Tanh, Linear
    x = torch.randn(3, 10, dtype=torch.float64)
    lw = layerwise_spectrum(net, x)
    assert lw.layers == ("0", "1", "2", "3", "4")
    whole = jacobian_spectrum(net, x)
    torch.testing.assert_close(lw.spectra[-1].singular_values, whole.singular_values)
    # depth 3 is the map through the first three children; its out_dim is 16
    part = jacobian_spectrum(net[:3], x)
    torch.testing.assert_close(lw.spectra[2].singular_values, part.singular_values)
    assert [s.out_dim for s in lw.spectra] == [16, 16, 16, 16, 6]
    # k larger than a depth's min(in, out) gives that depth all its values
    lw_k = layerwise_spectrum(net, x, k=8)
    assert [s.k for s in lw_k.spectra] == [8, 8, 8, 8, 6]
    torch.testing.assert_close(lw_k.spectra[-1].singular_values, whole.singular_values)


def test_layerwise_orthogonal_stack_stays_at_one():
    net = _orthogonal_stack(48, 10, seed=3)
    lw = layerwise_spectrum(net, torch.randn(2, 48), k=6, method="matrix_free")
    assert len(lw.spectra) == 10
    torch.testing.assert_close(lw.max_singular_value, torch.ones(10), rtol=0, atol=1e-5)
    for s in lw.spectra:
        torch.testing.assert_close(s.singular_values, torch.ones(2, 6), rtol=0, atol=1e-5)
    assert float(lw.spread.max()) < 1e-5


def test_layerwise_sees_vanishing_sigmoid_stack():
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Sequential(nn.Linear(32, 32), nn.Sigmoid()) for _ in range(8)])
    lw = layerwise_spectrum(net.double().eval(), torch.randn(4, 32, dtype=torch.float64), k=3)
    top = lw.max_singular_value
    assert bool((top[1:] < top[:-1]).all()) and float(top[-1]) < 1e-3 * float(top[0])


# -- robustness ----------------------------------------------------------------------------------


def test_not_converged_warns_and_says_so():
    net = _orthogonal_stack(64, 3, seed=1)
    with torch.no_grad():
        net[0].weight.mul_(1 + 1e-3 * torch.randn(64, 1))  # a tight, non-trivial cluster
    with pytest.warns(RuntimeWarning, match="max_iter"):
        spec = jacobian_spectrum(net, torch.randn(1, 64), k=4, method="matrix_free", max_iter=1)
    assert not spec.converged


def test_reproducible_and_leaves_global_rng_alone():
    net = _mlp((50, 60, 40), nn.Tanh, dtype=torch.float32)
    x = torch.randn(2, 50)
    state = torch.get_rng_state()
    a = jacobian_spectrum(net, x, k=3, method="matrix_free")
    b = jacobian_spectrum(net, x, k=3, method="matrix_free")
    assert torch.equal(a.singular_values, b.singular_values)
    assert torch.equal(state, torch.get_rng_state())
    g = torch.Generator().manual_seed(7)
    c = jacobian_spectrum(net, x, k=3, method="matrix_free", generator=g)
    assert _rel(c.singular_values, a.singular_values) < 1e-4


def test_no_grad_context_and_parameter_grads_untouched():
    net = _mlp((6, 8, 5), nn.Tanh)
    x = torch.randn(2, 6, dtype=torch.float64)
    ref = jacobian_spectrum(net, x)
    with torch.no_grad():
        inside = jacobian_spectrum(net, x)
    torch.testing.assert_close(inside.singular_values, ref.singular_values)
    assert all(p.grad is None for p in net.parameters())


def test_bad_input_names_the_argument():
    net = _mlp((4, 5, 3), nn.Tanh)
    x = torch.randn(2, 4, dtype=torch.float64)
    cases = [
        (TypeError, "f:", lambda: jacobian_spectrum("net", x)),
        (TypeError, "x:", lambda: jacobian_spectrum(net, [[1.0, 2.0]])),
        (ValueError, "x:", lambda: jacobian_spectrum(net, torch.full((2, 4), math.nan))),
        (ValueError, "x:", lambda: jacobian_spectrum(net, torch.randn(4))),
        (TypeError, "x:", lambda: jacobian_spectrum(net, torch.ones(2, 4, dtype=torch.long))),
        (TypeError, "x:", lambda: jacobian_spectrum(net, x.half())),
        (ValueError, "k:", lambda: jacobian_spectrum(net, x, k=0)),
        (ValueError, "k:", lambda: jacobian_spectrum(net, x, k=4)),  # min(in=4, out=3) = 3
        (TypeError, "k:", lambda: jacobian_spectrum(net, x, k=2.0)),
        (ValueError, "method:", lambda: jacobian_spectrum(net, x, method="lanczos")),
        (ValueError, "tol:", lambda: jacobian_spectrum(net, x, tol=-1.0)),
        (ValueError, "max_iter:", lambda: jacobian_spectrum(net, x, max_iter=0)),
        (TypeError, "generator:", lambda: jacobian_spectrum(net, x, k=1, generator=0)),
        (ValueError, "f:", lambda: jacobian_spectrum(lambda t: t.sum(0, keepdim=True), x)),
        (TypeError, "f:", lambda: jacobian_spectrum(lambda t: (t, t), x)),
        (TypeError, "model:", lambda: layerwise_spectrum(lambda t: t, x)),
        (ValueError, "model:", lambda: layerwise_spectrum(nn.Tanh(), x)),
        (ValueError, "k:", lambda: layerwise_spectrum(net, x, k=0)),
        (ValueError, "x:", lambda: layerwise_spectrum(net, torch.randn(4))),
    ]
    for err, name, call in cases:
        with pytest.raises(err, match=name):
            call()


def test_refuses_f_that_mixes_examples():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh()).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"f:.*eval mode"):  # updates running stats in place
        jacobian_spectrum(net.train(), x)
    jacobian_spectrum(net.eval(), x)  # eval mode: examples independent, accepted
    # batch statistics without running stats: no mutation, but examples are coupled
    coupled = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8, track_running_stats=False))
    with pytest.raises(ValueError, match=r"f:.*depends on the other examples"):
        jacobian_spectrum(coupled.double(), x)


# -- results -------------------------------------------------------------------------------------


def test_json_round_trip():
    net = _mlp((6, 7, 5), nn.Tanh, dtype=torch.float32)
    x = torch.randn(2, 6)
    spec = jacobian_spectrum(net, x, k=2, method="matrix_free")
    back = JacobianSpectrum.from_json(spec.to_json())
    assert torch.equal(back.singular_values, spec.singular_values)
    assert back.singular_values.dtype == torch.float32
    assert (back.method, back.in_dim, back.out_dim, back.converged) == ("matrix_free", 6, 5, True)
    lw = layerwise_spectrum(net, x)
    lw_back = LayerwiseSpectrum.from_json(lw.to_json())
    assert lw_back.layers == lw.layers and len(lw_back.spectra) == 3
    for a, b in zip(lw_back.spectra, lw.spectra, strict=True):
        assert torch.equal(a.singular_values, b.singular_values) and a == a.replace()
        assert (a.method, a.in_dim, a.out_dim) == (b.method, b.in_dim, b.out_dim)
    torch.testing.assert_close(lw_back.max_singular_value, lw.max_singular_value)
