"""Lyapunov spectra: closed forms for linear maps, determinant identity, mean-field theory,
RNN modules against their own forward, bad input, JSON."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradwatch.core.lyapunov import LyapunovSpectrum, lyapunov_spectrum

DT = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Small matrices on a shared 2-core machine: OpenMP threads only contend.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _orthogonal(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT)).Q


def _states(S: int, n: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(S, n, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _tanh_net(N: int, g: float, seed: int) -> tuple[torch.Tensor, Callable[..., torch.Tensor]]:
    W = torch.randn(N, N, generator=torch.Generator().manual_seed(seed), dtype=DT) * g / N**0.5
    return W, lambda h: torch.tanh(h @ W.T)


# ------------------------------------------------------------------ linear maps, exactly


def test_diagonal_map_exact() -> None:
    d = torch.tensor([2.0, -1.5, 0.9, 0.5, -0.3], dtype=DT)
    spec = lyapunov_spectrum(lambda h: h * d, _states(2, 5), steps=100, warmup=100)
    expected = d.abs().log()  # already descending
    torch.testing.assert_close(spec.exponents, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(spec.per_state, expected.expand(2, 5), rtol=0, atol=1e-10)
    assert spec.per_state.shape == (2, 5) and spec.state_dim == 5
    assert torch.all(spec.stderr < 1e-10)


@pytest.mark.parametrize("jacobian", ["jvp", "dense"])
@pytest.mark.parametrize("reortho_every", [1, 7])
def test_normal_matrix_exact(jacobian: str, reortho_every: int) -> None:
    d = torch.tensor([1.8, -1.2, 1.0, 0.7, -0.4, 0.15], dtype=DT)
    Q = _orthogonal(6, 1)
    A = Q @ torch.diag(d) @ Q.T  # normal: Lyapunov exponents = ln|eig|
    spec = lyapunov_spectrum(
        lambda h: h @ A.T,
        _states(3, 6),
        steps=120,
        warmup=150,
        reortho_every=reortho_every,
        jacobian=jacobian,
    )
    expected = d.abs().log().sort(descending=True).values
    torch.testing.assert_close(spec.exponents, expected, rtol=0, atol=1e-10)


def test_partial_spectrum_is_the_leading_exponents() -> None:
    d = torch.tensor([1.8, -1.2, 1.0, 0.7, -0.4, 0.15], dtype=DT)
    Q = _orthogonal(6, 2)
    A = Q @ torch.diag(d) @ Q.T
    spec = lyapunov_spectrum(lambda h: A @ h, _states(2, 6), k=3, steps=100, warmup=150)
    torch.testing.assert_close(spec.exponents, d.abs().log()[:3], rtol=0, atol=1e-10)


def test_non_normal_upper_triangular_exact() -> None:
    diag = torch.tensor([1.3, -0.6, 0.9, 0.2, 1.1], dtype=DT)
    g = torch.Generator().manual_seed(3)
    A = torch.triu(3.0 * torch.randn(5, 5, generator=g, dtype=DT), 1) + torch.diag(diag)
    spec = lyapunov_spectrum(lambda h: h @ A.T, _states(2, 5), steps=100, warmup=250)
    expected = diag.abs().log().sort(descending=True).values
    torch.testing.assert_close(spec.exponents, expected, rtol=0, atol=1e-10)


def test_inputs_leave_linear_exponents_unchanged() -> None:
    d = torch.tensor([1.5, 0.8, -0.5, 0.25], dtype=DT)
    Q = _orthogonal(4, 4)
    A, B = Q @ torch.diag(d) @ Q.T, _orthogonal(4, 5)[:, :2]  # (4, 4), (4, 2)
    h0 = _states(3, 4, scale=0.01)
    ref = lyapunov_spectrum(lambda h: h @ A.T, h0, steps=40, warmup=10)
    xs = torch.randn(60, 3, 2, generator=torch.Generator().manual_seed(6), dtype=DT)
    step = lambda h, x: h @ A.T + x @ B.T  # noqa: E731
    for inputs in (xs, xs[:, 0], lambda t: xs[t]):
        spec = lyapunov_spectrum(step, h0, inputs, steps=40, warmup=10)
        torch.testing.assert_close(spec.per_state, ref.per_state, rtol=0, atol=1e-12)


# ------------------------------------------------------ determinant identity, dense reference


@pytest.mark.parametrize("reortho_every", [1, 3])
def test_sum_equals_mean_log_abs_det(reortho_every: int) -> None:
    N, warmup, steps = 10, 20, 50
    _, f = _tanh_net(N, 1.7, seed=7)
    h0 = _states(1, N, seed=8)
    spec = lyapunov_spectrum(f, h0, steps=steps, warmup=warmup, reortho_every=reortho_every)
    h, logdets = h0[0], []
    for t in range(warmup + steps):
        if t >= warmup:
            J = torch.autograd.functional.jacobian(f, h)  # (N, N), dense
            logdets.append(torch.linalg.slogdet(J).logabsdet)
        h = f(h)
    assert spec.sum == pytest.approx(float(torch.stack(logdets).mean()), abs=1e-8)


def _qr_reference(
    f: Callable[..., torch.Tensor], h0: torch.Tensor, k: int, steps: int, warmup: int
) -> torch.Tensor:
    """Textbook QR method, one state at a time, with dense autograd Jacobians."""
    out = []
    gen = torch.Generator().manual_seed(0)  # the default frame: one (N, k) draw per state
    for s in range(h0.shape[0]):
        q = torch.linalg.qr(torch.randn(h0.shape[1], k, generator=gen, dtype=DT)).Q
        h, acc = h0[s], torch.zeros(k, dtype=DT)
        for t in range(warmup + steps):
            J = torch.autograd.functional.jacobian(f, h)
            q, r = torch.linalg.qr(J @ q)
            q = q * torch.sign(r.diagonal())
            if t >= warmup:
                acc += r.diagonal().abs().log()
            h = f(h)
        out.append(acc / steps)
    return torch.stack(out)  # (S, k)


def test_matches_textbook_qr_with_dense_jacobians() -> None:
    _, f = _tanh_net(8, 1.5, seed=9)
    h0 = _states(2, 8, seed=10)
    spec = lyapunov_spectrum(f, h0, k=4, steps=40, warmup=0)
    ref = _qr_reference(f, h0, k=4, steps=40, warmup=0)
    torch.testing.assert_close(spec.per_state, ref, rtol=0, atol=1e-10)


def test_dense_path_matches_jvp_path() -> None:
    _, f = _tanh_net(20, 1.5, seed=11)
    h0 = _states(3, 20, seed=12)
    a = lyapunov_spectrum(f, h0, k=6, steps=80, warmup=20, jacobian="jvp")
    b = lyapunov_spectrum(f, h0, k=6, steps=80, warmup=20, jacobian="dense")
    torch.testing.assert_close(a.per_state, b.per_state, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [3, 7])
def test_single_state_step_is_vmapped(n: int) -> None:
    # tanh(W @ h) only takes one state; with n = 3 it also runs, wrongly, on a (3, 3) batch,
    # which the probe must catch.
    W, rows = _tanh_net(n, 1.2, seed=13)
    h0 = _states(2, n, seed=14)
    ref = lyapunov_spectrum(rows, h0, steps=30, warmup=5, batched=True)
    for batched in (None, False):
        spec = lyapunov_spectrum(
            lambda h: torch.tanh(W @ h), h0, steps=30, warmup=5, batched=batched
        )
        torch.testing.assert_close(spec.per_state, ref.per_state, rtol=0, atol=1e-10)


def _wide_net() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(28)
    W = torch.randn(80, 80, generator=g, dtype=DT) * 1.5 / 80**0.5
    return W, 0.1 * torch.randn(80, generator=g, dtype=DT), _states(2, 80, 29)


@pytest.mark.parametrize("form", ["matmul", "linear", "columns", "mm"])
def test_shared_primal_products_match_plain_forward_ad(form: str) -> None:
    # n >= 64: matrix products run on one primal row per state (_SharedPrimal).
    W, b, h0 = _wide_net()
    steps: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "matmul": lambda h: torch.tanh(h @ W.T + b),
        "linear": lambda h: torch.tanh(F.linear(h, W, b)),
        "columns": lambda h: torch.tanh((W @ h.T).T + b),
        "mm": lambda h: torch.tanh(torch.mm(h, W.T) + b),
    }
    ref = lyapunov_spectrum(lambda h: torch.tanh(W @ h + b), h0, k=5, steps=40, batched=False)
    got = lyapunov_spectrum(steps[form], h0, k=5, steps=40)
    torch.testing.assert_close(got.per_state, ref.per_state, rtol=0, atol=1e-10)


def test_shared_primal_falls_back_when_rows_are_not_copies() -> None:
    # Row-wise overall, but an intermediate interleaves the states' rows: the first step's
    # check must catch that the k copies of a state are not adjacent, and fall back.
    W, b, h0 = _wide_net()
    perm = torch.tensor([0, 2, 1, 3])  # an involution on S*k = 4 rows

    def shuffled(h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h[perm] @ W.T + b)[perm]

    ref = lyapunov_spectrum(lambda h: torch.tanh(h @ W.T + b), h0, k=2, steps=40)
    got = lyapunov_spectrum(shuffled, h0, k=2, steps=40, batched=True)
    torch.testing.assert_close(got.per_state, ref.per_state, rtol=0, atol=1e-10)


def test_float32_close_to_float64() -> None:
    # Contracting maps, so float32 rounding is not amplified. The frames differ by dtype, and
    # complex eigenvalue pairs share one modulus, so compare what is frame-free: the largest
    # exponent and, with k = all, the sum (the mean log|det J|).
    W, b, h0 = _wide_net()
    W = 0.4 * W
    torch.manual_seed(30)
    cell = nn.GRUCell(2, 8)
    cell64 = nn.GRUCell(2, 8).to(DT)
    cell64.load_state_dict(cell.state_dict())

    def run(dt: torch.dtype) -> tuple[LyapunovSpectrum, LyapunovSpectrum]:
        Wd, bd = W.to(dt), b.to(dt)
        net = lyapunov_spectrum(lambda h: torch.tanh(h @ Wd.T + bd), h0.to(dt), steps=60, warmup=50)
        gru = lyapunov_spectrum(cell if dt == torch.float32 else cell64, _states(2, 8).to(dt))
        return net, gru

    for a, c in zip(run(torch.float32), run(DT), strict=True):
        assert a.exponents.dtype == DT  # accumulated and reported in float64
        assert a.max_exponent == pytest.approx(c.max_exponent, abs=1e-3)
        assert a.sum == pytest.approx(c.sum, abs=1e-5)


def test_tuple_state_matches_flat_state() -> None:
    A = 0.9 * _orthogonal(5, 15)
    flat = lyapunov_spectrum(lambda h: torch.tanh(h @ A.T), _states(2, 5, 16), steps=30)

    def split(s: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(torch.cat(s, -1) @ A.T)
        return h[..., :2], h[..., 2:]

    h0 = _states(2, 5, 16)
    parts = lyapunov_spectrum(split, (h0[:, :2], h0[:, 2:]), steps=30)
    torch.testing.assert_close(parts.per_state, flat.per_state, rtol=0, atol=1e-12)


# ----------------------------------------------------------- random networks, mean field


@pytest.mark.parametrize("g", [0.5, 0.8, 1.5, 2.0, 3.0])
def test_random_tanh_network_sign_of_lambda_max(g: float) -> None:
    _, f = _tanh_net(200, g, seed=17)
    spec = lyapunov_spectrum(f, _states(2, 200, 18), k=1, steps=300, warmup=100)
    assert (spec.max_exponent > 0) == (g > 1), spec.max_exponent


def _chi1(g: float) -> float:
    from gradwatch.core.meanfield import chi1  # written concurrently; imported only here

    return float(chi1("tanh", g, 0.0))


@pytest.mark.parametrize("g", [2.0, 3.0])
def test_lambda_max_matches_mean_field(g: float) -> None:
    # Engelken et al. 2020: lambda_max -> (1/2) ln(g^2 <phi'(sqrt(q*) z)^2>) as N -> infinity.
    _, f = _tanh_net(500, g, seed=19)
    spec = lyapunov_spectrum(f, _states(3, 500, 20), k=2, steps=400, warmup=100)
    assert spec.max_exponent == pytest.approx(0.5 * math.log(_chi1(g)), abs=0.03)


# ------------------------------------------------------------------------- RNN modules


def _seq_step(m: nn.RNNBase) -> tuple[Callable[..., Any], Any]:
    """A step written against the module's own forward; state as flat tuples of layers."""
    L, H = m.num_layers, m.hidden_size
    P = m.proj_size or H
    lstm = isinstance(m, nn.LSTM)

    def step(state: Any, x: torch.Tensor | None = None) -> Any:
        h = state[0] if lstm else state
        B = h.shape[0]
        if x is None:
            x = h.new_zeros(B, m.input_size)
        xs = x.unsqueeze(1) if m.batch_first else x.unsqueeze(0)
        layers = lambda v, w: v.reshape(B, L, w).transpose(0, 1).contiguous()  # noqa: E731
        flat = lambda v: v.transpose(0, 1).reshape(B, -1)  # noqa: E731
        if lstm:
            _, (hn, cn) = m(xs, (layers(state[0], P), layers(state[1], H)))
            return flat(hn), flat(cn)
        _, hn = m(xs, layers(h, H))
        return flat(hn)

    return step, (P, H)


def _cell_step(cell: Any) -> Callable[..., Any]:
    def step(state: Any, x: torch.Tensor | None = None) -> Any:
        h = state[0] if isinstance(state, tuple) else state
        if x is None:
            x = h.new_zeros(h.shape[0], cell.input_size)
        return cell(x, state)

    return step


MODULES: dict[str, Callable[[], nn.Module]] = {
    "RNNCell": lambda: nn.RNNCell(3, 6),
    "RNNCell-relu": lambda: nn.RNNCell(3, 6, nonlinearity="relu"),
    "GRUCell": lambda: nn.GRUCell(3, 6),
    "LSTMCell": lambda: nn.LSTMCell(3, 6),
    "RNN-2": lambda: nn.RNN(3, 4, num_layers=2),
    "GRU-2-bf": lambda: nn.GRU(3, 4, num_layers=2, batch_first=True),
    "LSTM": lambda: nn.LSTM(3, 4),
    "LSTM-2-proj": lambda: nn.LSTM(3, 5, num_layers=2, proj_size=3, batch_first=True),
    "GRU-nobias": lambda: nn.GRU(3, 4, bias=False),
}


def _module_case(name: str) -> tuple[nn.Module, Callable[..., Any], Any, Any]:
    torch.manual_seed(21)
    m = MODULES[name]().to(DT)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.0 if "relu" in name else 2.5)  # strong weights: saturated gates
        if "relu" in name:
            m.bias_hh.fill_(0.5)  # keep most units alive: finite exponents
    S = 2
    if isinstance(m, nn.RNNBase):
        step, (P, H) = _seq_step(m)
        L = m.num_layers
        if isinstance(m, nn.LSTM):
            h0_mod: Any = (
                _states(S, L * P, 22).T.reshape(L, P, S).transpose(1, 2),
                _states(S, L * H, 23).T.reshape(L, H, S).transpose(1, 2),
            )
            h0_ref: Any = (_states(S, L * P, 22), _states(S, L * H, 23))
        else:
            h0_mod = _states(S, L * H, 22)  # flat (S, L*H)
            h0_ref = h0_mod
    else:
        step = _cell_step(m)
        H = int(m.hidden_size)
        if isinstance(m, nn.LSTMCell):
            h0_mod = h0_ref = (_states(S, H, 22), _states(S, H, 23))
        else:
            h0_mod = h0_ref = _states(S, H, 22)
    return m, step, h0_mod, h0_ref


@pytest.mark.parametrize("driven", [False, True])
@pytest.mark.parametrize("name", list(MODULES))
def test_module_matches_step_through_its_own_forward(name: str, driven: bool) -> None:
    m, step, h0_mod, h0_ref = _module_case(name)
    xs = torch.randn(50, 2, 3, generator=torch.Generator().manual_seed(24), dtype=DT)
    inputs = xs if driven else None
    got = lyapunov_spectrum(m, h0_mod, inputs, steps=40, warmup=10)
    ref = lyapunov_spectrum(step, h0_ref, inputs, steps=40, warmup=10, batched=True)
    assert got.state_dim == ref.state_dim
    assert got.per_state.isfinite().all() or "relu" in name  # dead ReLUs: J is singular
    # Same maths, different rounding (PyTorch's fused kernels), amplified along the trajectory.
    torch.testing.assert_close(got.per_state, ref.per_state, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["LSTM-2-proj", "GRUCell"])
def test_module_dense_path_matches_jvp_path(name: str) -> None:
    m, _, h0, _ = _module_case(name)
    a = lyapunov_spectrum(m, h0, k=4, steps=40, warmup=10)
    b = lyapunov_spectrum(m, h0, k=4, steps=40, warmup=10, jacobian="dense")
    torch.testing.assert_close(a.per_state, b.per_state, rtol=0, atol=1e-10)


def test_module_state_layouts_agree() -> None:
    torch.manual_seed(25)
    gru = nn.GRU(2, 3, num_layers=2).to(DT)
    flat = _states(4, 6, 26)  # (S, L*H), layer-major
    pytorch = flat.reshape(4, 2, 3).transpose(0, 1)  # (L, S, H)
    a = lyapunov_spectrum(gru, flat, steps=20, warmup=0)
    b = lyapunov_spectrum(gru, pytorch, steps=20, warmup=0)
    torch.testing.assert_close(a.per_state, b.per_state, rtol=0, atol=0)
    single = lyapunov_spectrum(gru, pytorch[:, 1], steps=20, warmup=0)  # (L, H)
    first = lyapunov_spectrum(gru, flat[1], steps=20, warmup=0)  # (L*H,)
    torch.testing.assert_close(single.per_state, first.per_state, rtol=0, atol=0)
    # Each state draws its own tangent frame, in order: state 0 does not see the others.
    alone = lyapunov_spectrum(gru, flat[0], steps=20, warmup=0)
    # (columns follow the order of the mean over states, so compare sorted)
    torch.testing.assert_close(
        alone.per_state.sort().values, a.per_state[:1].sort().values, rtol=0, atol=1e-14
    )
    assert single.stderr.isnan().all()


# ---------------------------------------------------------------------------- bad input


def _lin(h: torch.Tensor) -> torch.Tensor:
    return 0.5 * h


H0 = _states(2, 4)
BAD: list[tuple[str, dict[str, Any], type[Exception]]] = [
    ("step", {"step": 3}, TypeError),
    ("step", {"step": nn.RNNCell}, TypeError),
    ("step", {"step": lambda h: h[:, :2]}, ValueError),
    ("step", {"step": nn.RNN(4, 4, bidirectional=True).to(DT)}, ValueError),
    ("h0", {"h0": [[1.0, 2.0]]}, TypeError),
    ("h0", {"h0": torch.tensor([1.0, math.nan], dtype=DT)}, ValueError),
    ("h0", {"h0": torch.ones(2, 4, dtype=torch.int64)}, TypeError),
    ("h0", {"h0": torch.ones(2, 2, 4, dtype=DT)}, ValueError),
    ("h0", {"step": nn.LSTMCell(2, 4).to(DT), "h0": torch.ones(2, 4, dtype=DT)}, ValueError),
    ("h0", {"step": nn.GRUCell(2, 4), "h0": H0}, ValueError),  # float32 module, float64 h0
    ("h0", {"step": nn.LSTM(2, 4).to(DT), "h0": torch.ones(1, 2, 4, dtype=DT)}, ValueError),
    ("h0", {"step": nn.GRU(2, 4, 2).to(DT), "h0": torch.ones(2, 2, 3, dtype=DT)}, ValueError),
    ("k", {"k": 5}, ValueError),
    ("k", {"k": 0}, ValueError),
    ("steps", {"steps": 0}, ValueError),
    ("steps", {"steps": 2.5}, TypeError),
    ("warmup", {"warmup": -1}, ValueError),
    ("reortho_every", {"reortho_every": 0}, ValueError),
    ("inputs", {"step": lambda h, x: h, "inputs": torch.ones(10, 2, dtype=DT)}, ValueError),
    ("inputs", {"step": lambda h, x: h, "inputs": torch.ones(200, 3, 1, dtype=DT)}, ValueError),
    (
        "inputs",
        {"step": nn.GRUCell(2, 4).to(DT), "inputs": torch.ones(200, 3, dtype=DT)},
        ValueError,
    ),
    ("jacobian", {"jacobian": "svd"}, ValueError),
    ("generator", {"generator": 0}, TypeError),
]


@pytest.mark.parametrize(("arg", "kwargs", "error"), BAD)
def test_bad_input_names_the_argument(
    arg: str, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    call: dict[str, Any] = {"step": _lin, "h0": H0, "steps": 50, "warmup": 10, **kwargs}
    with pytest.raises(error, match=rf"^{arg}\b"):
        lyapunov_spectrum(**call)


def test_diverging_trajectory_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"^step: the trajectory"):
        lyapunov_spectrum(lambda h: 10.0 * h, H0, steps=400, warmup=0)


def test_tangent_overflow_names_reortho_every() -> None:
    zero = torch.zeros(1, 3, dtype=DT)  # the trajectory stays at 0, the tangents grow 1e3^t
    with pytest.raises(ValueError, match=r"^reortho_every"):
        lyapunov_spectrum(lambda h: 1e3 * h, zero, steps=200, warmup=0, reortho_every=200)
    ok = lyapunov_spectrum(lambda h: 1e3 * h, zero, steps=200, warmup=0, reortho_every=20)
    assert ok.max_exponent == pytest.approx(math.log(1e3), abs=1e-12)


# ------------------------------------------------------------------ result and properties


def _spec(exponents: list[float], S: int = 2) -> LyapunovSpectrum:
    e = torch.tensor(exponents, dtype=DT)
    return LyapunovSpectrum(e, torch.zeros_like(e), e.expand(S, -1).clone(), 10, 0, 1, 8)


def test_properties() -> None:
    s = _spec([0.5, 0.1, -0.3, -1.0])
    assert s.max_exponent == 0.5 and s.sum == pytest.approx(-0.7)
    assert s.kaplan_yorke_dimension == pytest.approx(3 + 0.3 / 1.0)  # partial sums .5 .6 .3 -.7
    assert _spec([-0.1, -0.2]).kaplan_yorke_dimension == 0.0
    assert _spec([0.2, 0.1]).kaplan_yorke_dimension == 2.0  # every partial sum >= 0: k
    assert _spec([0.0, -1.0]).kaplan_yorke_dimension == 1.0


def test_json_round_trip() -> None:
    spec = lyapunov_spectrum(_lin, H0[0], steps=5, warmup=0)  # one state: stderr is NaN
    assert spec.stderr.isnan().all() and spec.per_state.shape == (1, 4)
    back = LyapunovSpectrum.from_json(spec.to_json())
    torch.testing.assert_close(back.exponents, spec.exponents, rtol=0, atol=0)
    torch.testing.assert_close(back.per_state, spec.per_state, rtol=0, atol=0)
    assert back.stderr.isnan().all()
    assert (back.steps, back.warmup, back.reortho_every, back.state_dim) == (5, 0, 1, 4)
    two = lyapunov_spectrum(_lin, H0, k=2, steps=5, warmup=0)
    again = LyapunovSpectrum.from_json(two.to_json())
    torch.testing.assert_close(again.stderr, two.stderr, rtol=0, atol=0)


def test_generator_and_default_seed_are_reproducible() -> None:
    _, f = _tanh_net(12, 1.5, seed=27)
    a = lyapunov_spectrum(f, _states(2, 12), k=3, steps=30)
    b = lyapunov_spectrum(f, _states(2, 12), k=3, steps=30)
    c = lyapunov_spectrum(
        f, _states(2, 12), k=3, steps=30, generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(a.per_state, b.per_state, rtol=0, atol=0)
    assert not torch.equal(a.per_state, c.per_state)
    torch.testing.assert_close(a.per_state, c.per_state, rtol=0, atol=0.1)


def test_results_are_plain_tensors() -> None:
    h0 = _states(2, 4).requires_grad_()
    spec = lyapunov_spectrum(_lin, h0, steps=5, warmup=0)
    assert spec.exponents.device.type == "cpu" and spec.exponents.dtype == DT
    assert not spec.exponents.requires_grad and not spec.exponents.is_inference()
