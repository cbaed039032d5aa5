import dataclasses
import math

import pytest
import torch
from lab_checks import assert_well_formed
from torch.func import jacrev

from gradwatch.core.adjoint import adjoint
from gradwatch.labs import control as lab
from gradwatch.labs.base import LabConfig, LabResult

SMOKE = LabConfig("smoke", seed=2)
F64 = torch.float64


@pytest.fixture(scope="module")
def smoke() -> LabResult:
    return lab.control(SMOKE)


def test_smoke_mechanics(smoke: LabResult) -> None:
    assert smoke.name == "control"
    assert len(smoke.claims) == 7
    assert_well_formed(smoke)
    assert [p.id for p in smoke.plots] == ["cost", "trajectory", "control", "costates"]
    assert len(smoke.tables) == 3
    assert set(smoke.setup) >= {"pendulum", "swing-up", "costate check", "free pendulum"}
    costates = smoke.plots[-1]
    assert costates.logy and len(costates.series) == 2 * len(lab.DAMPINGS)


def test_smoke_verdicts_from_real_runs(smoke: LabResult) -> None:
    # exact at any size: costates = autograd, the area identity; the swing-up is solved at
    # smoke size (40 adjoint passes), the signs and the rate hold over 100 steps
    assert [c.verdict for c in smoke.claims] == ["holds"] * 7, [
        (c.statement[:40], c.value) for c in smoke.claims]
    solved = smoke.claims[1]
    assert solved.value < lab.SOLVED and abs(solved.measured["theta_T - pi (rad)"]) < 1e-2


def test_deterministic_and_leaves_global_state(smoke: LabResult) -> None:
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    again = lab.control(SMOKE)
    assert again.to_json() == smoke.to_json()
    assert torch.equal(torch.get_rng_state(), rng)  # every draw comes from cfg's generators
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(("b", "T", "u_std"), [(lab.DAMPING, 50, 2.0), (-1.0, 200, 0.5),
                                               (1.0, 200, 0.0)])
def test_costates_equal_autograd_to_rounding(b: float, T: int, u_std: float) -> None:
    gen = torch.Generator().manual_seed(5)
    u = u_std * torch.randn(T, generator=gen, dtype=F64)
    x0 = torch.tensor([0.3, -0.2, 0.0], dtype=F64)
    step = lab._Pendulum(b, 0.04)
    res = adjoint(step, x0, u, lab._phi)
    lams, du = lab._autograd(step, x0, u)
    lam_err, grad_err = lab._relative_errors(res, lams, du)
    assert lam_err < 1e-10 and grad_err < 1e-10
    assert all(float(lam[2]) == 1.0 for lam in res.costates)  # dPhi/dc_t = 1: cost folded in
    # the rollout is the pendulum: Phi from the states matches the adjoint's loss
    assert res.loss == pytest.approx(float(lab._phi(res.states[-1])), rel=1e-15)


def test_step_matches_the_equations_and_its_jacobian() -> None:
    # the fused affine step against the textbook semi-implicit Euler, and its analytic
    # Jacobian against jacrev (the slow reference)
    b, dt = 0.7, 0.05
    pend = lab._Pendulum(b, dt, rho=0.3)
    x, u = torch.tensor([1.1, -0.4, 2.0], dtype=F64), torch.tensor(0.8, dtype=F64)
    omega = x[1] + dt * (-lab.GRAVITY * torch.sin(x[0]) - b * x[1] + u)
    want = torch.stack([x[0] + dt * omega, omega, x[2] + 0.3 * dt * u * u])
    assert torch.allclose(pend(0, x, u), want, rtol=1e-14, atol=1e-14)
    batch = torch.tensor([[1.1, -0.4], [0.2, 3.0]], dtype=F64)
    ub = torch.tensor([[0.8], [-1.0]], dtype=F64)
    rows = torch.stack([pend(0, torch.cat([xb, torch.zeros(1, dtype=F64)]), ut[0])[:2]
                        for xb, ut in zip(batch, ub, strict=True)])
    assert torch.allclose(pend.free(batch, ub), rows, rtol=1e-14, atol=1e-14)
    J = pend.jacobian(batch[:, 0])  # (2, 2, 2)
    for i in range(2):
        ref = jacrev(lambda z, i=i: pend.free(z[None], ub[i : i + 1])[0])(batch[i])
        assert torch.allclose(J[i], ref, rtol=1e-14, atol=1e-14)
        assert float(torch.linalg.det(J[i])) == pytest.approx(1 - b * dt, rel=1e-13)


def test_costate_verdict_flips_when_the_reference_differs() -> None:
    # the same controls through a different damping: the gradients no longer agree
    u = torch.randn(50, generator=torch.Generator().manual_seed(1), dtype=F64)
    res = adjoint(lab._Pendulum(0.1, 0.04), lab._x0(), u, lab._phi)
    lams, du = lab._autograd(lab._Pendulum(0.2, 0.04), lab._x0(), u)
    claim = lab._costate_claim(*lab._relative_errors(res, lams, du), 50)
    assert claim.verdict == "does not hold" and claim.value > 1e-4
    lams, du = lab._autograd(lab._Pendulum(0.1, 0.04), lab._x0(), u)
    assert lab._costate_claim(*lab._relative_errors(res, lams, du), 50).verdict == "holds"


def test_solve_verdict_flips_with_too_few_passes() -> None:
    sol = lab._solve(lab._Sizes(50, 0.04, 3, 10))  # 3 adjoint passes: not swung up
    err = lab._terminal_error(sol.after)
    assert lab._solved_claim(err, sol.after).verdict == "does not hold" and err > 0.1
    assert lab._cost_claim(sol.costs, sol.after.loss).verdict == "does not hold"
    assert 3 <= len(sol.costs) <= 5 and sol.costs[0] == pytest.approx(math.pi**2)


def test_rate_verdicts_follow_the_measurement() -> None:
    s = lab._Sizes(50, 0.04, 3, 100)
    damped = lab._free(1.0, s, SMOKE, 0)
    anti = lab._free(-1.0, s, SMOKE, 1)
    assert lab._direction_claim(damped, 100).verdict == "holds"
    assert lab._direction_claim(anti, 100).verdict == "holds"
    # the damped costates judged with the antidamped rate, and vice versa
    assert lab._direction_claim(dataclasses.replace(damped, rate=anti.rate), 100).verdict == (
        "does not hold")
    assert lab._direction_claim(dataclasses.replace(anti, rate=damped.rate), 100).verdict == (
        "does not hold")
    assert lab._agree_claim([damped, anti]).verdict == "holds"
    wrong = dataclasses.replace(anti, theory=2 * anti.theory)  # a rate twice the true one
    assert lab._agree_claim([damped, wrong]).verdict == "does not hold"
    assert lab._volume_claim([damped, anti]).verdict == "holds"
    assert lab._volume_claim([dataclasses.replace(damped, theory=0.0)]).verdict == (
        "does not hold")


def test_bad_config_is_refused() -> None:
    with pytest.raises(TypeError, match="cfg"):
        lab.control("quick")  # type: ignore[arg-type]
