import dataclasses
import math

import numpy as np
import pytest
import torch
from lab_checks import assert_well_formed

from gradwatch.labs import topology as lab
from gradwatch.labs.base import LabConfig, LabResult

SMOKE = LabConfig("smoke", seed=3)


@pytest.fixture(scope="module")
def smoke() -> LabResult:
    return lab.topology(SMOKE)


@pytest.fixture(scope="module")
def small() -> lab._Mesh:
    return lab._mesh(30, 10, 1.2)


def _blas_threads() -> list[int]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [p["num_threads"] for p in threadpool_info()]


def test_smoke_mechanics(smoke: LabResult) -> None:
    assert smoke.name == "topology"
    assert len(smoke.claims) == 9
    assert_well_formed(smoke)
    ids = [p.id for p in smoke.plots]
    assert ids == ["design_validation", "design_continuation", "design_sharp_beta64",
                   "design_sharp_beta512", "sensitivity_continuation",
                   "sensitivity_sharp_beta64", "sensitivity_sharp_beta512", "compliance",
                   "vanished", "zero_by_zero"]
    val, runs = smoke.tables
    assert len(val.rows) == 2 and len(runs.rows) == 3
    assert {"problem", "material", "update", "runs", "solver", "reference"} <= set(smoke.setup)
    # heatmaps: one row per element row, bottom row first; the load point (top left) is solid
    design = next(p for p in smoke.plots if p.id == "design_continuation")
    assert design.kind == "heatmap" and len(design.series) == 10
    assert design.series[0].label == "y 0" and len(design.series[0].x) == 30
    assert design.series[-1].y[0] > 0.9


def test_validation_reproduces_the_88_line_code(smoke: LabResult) -> None:
    # always at 60 x 20, whatever the size: 216.81 (sensitivity filter), 233.71 (density)
    for claim, ref in zip(smoke.claims[:2], (216.81, 233.71), strict=True):
        assert claim.verdict == "holds", claim.statement
        assert claim.value < 1e-4
        assert round(claim.measured["compliance"], 2) == ref
        assert claim.measured["converged (1 yes)"] == 1.0


def test_deterministic_and_leaves_global_state(smoke: LabResult) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        rng, threads, blas = torch.get_rng_state(), torch.get_num_threads(), _blas_threads()
        again = lab.topology(SMOKE)
        assert _blas_threads() == blas  # the lab's one BLAS thread is given back
    assert again.to_json() == smoke.to_json()
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_num_threads() == threads


def test_element_stiffness_is_the_88_line_matrix() -> None:
    # the 88-line code builds KE from four 4x4 blocks; ours from the 8 distinct entries
    a11 = np.array([[12, 3, -6, -3], [3, 12, 3, 0], [-6, 3, 12, -3], [-3, 0, -3, 12]])
    a12 = np.array([[-6, -3, 0, 3], [-3, -6, -3, -6], [0, -3, -6, 3], [3, -6, 3, -6]])
    b11 = np.array([[-4, 3, -2, 9], [3, -4, -9, 4], [-2, -9, -4, -3], [9, 4, -3, -4]])
    b12 = np.array([[2, -3, 4, -9], [-3, 2, 9, -2], [4, 9, 2, 3], [-9, -2, 3, 2]])
    nu = lab.NU
    ke = (np.block([[a11, a12], [a12.T, a11]]) + nu * np.block([[b11, b12], [b12.T, b11]]))
    ke = ke / (1 - nu**2) / 24
    np.testing.assert_allclose(lab._element_stiffness(), ke, rtol=0, atol=1e-15)
    # rigid-body modes carry no energy: translations are in the null space
    assert np.abs(lab._element_stiffness() @ np.tile([1.0, 0.0], 4)).max() < 1e-14


def test_banded_solve_matches_sparse_lu(small: lab._Mesh) -> None:
    x = np.random.default_rng(0).uniform(0.0, 1.0, small.nel)
    u, ce = lab._solve(small, x)
    u_ref, ce_ref = lab._solve_reference(small, x)
    assert np.abs(u - u_ref).max() <= 1e-9 * np.abs(u_ref).max()
    np.testing.assert_allclose(ce, ce_ref, rtol=1e-8, atol=1e-12 * ce_ref.max())
    # equilibrium on the free dofs, and compliance = f^T u = sum E_e u_e^T k0 u_e
    k = lab._stiffness(small, x)
    f = small.free
    assert np.abs((k @ u)[f] - small.load[f]).max() < 1e-8
    assert float(small.load @ u) == pytest.approx(float((lab._young(x) * ce).sum()), rel=1e-10)


def test_filter_weights_and_boundary_conditions() -> None:
    m = lab._mesh(6, 4, 2.4)
    h = m.h.toarray()
    assert np.allclose(h, h.T)
    assert h[0, 0] == pytest.approx(2.4) and h[0, 1] == pytest.approx(1.4)  # 1 below
    assert h[0, 4] == pytest.approx(1.4) and h[0, 5] == pytest.approx(2.4 - math.sqrt(2))
    assert h[0, 2] == pytest.approx(0.4) and h[0, 3] == 0.0  # 2 below; 3 below is outside
    ndof = 2 * 7 * 5
    fixed = sorted(set(range(ndof)) - set(m.free.tolist()))
    assert fixed == [0, 2, 4, 6, 8, ndof - 1]
    assert m.load[1] == -1.0 and np.count_nonzero(m.load) == 1


@pytest.mark.parametrize("seed", [0, 1])
def test_analytic_sensitivities_match_autograd(seed: int) -> None:
    gen = LabConfig("smoke", seed=seed).generator(1)
    for beta in (1.0, lab.AUTOGRAD_BETA):  # larger beta: K near-singular, both solves drift
        g = lab._gradient_check(gen, beta)
        assert g.dc_err < 1e-9 and g.dv_err < 1e-12 and g.c_err < 1e-9, (beta, g)


def test_oc_guards_zero_by_zero(small: lab._Mesh) -> None:
    x = np.full(small.nel, lab.VOLFRAC)
    s = lab._sensitivities(small, x, "projection", 4.0)
    dead = np.arange(0, small.nel, 3)
    dc, dv = s.dc.copy(), s.dv.copy()
    dc[dead] = 0.0
    dv[dead] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        assert np.isnan(-dc / dv).sum() == dead.size  # what an unguarded OC step divides
    step = lab._oc(small, x, dataclasses.replace(s, dc=dc, dv=dv), "projection", 4.0)
    assert step.guarded == dead.size
    assert np.isfinite(step.x).all() and np.isfinite(step.xphys).all()
    assert np.array_equal(step.x[dead], x[dead])  # the element keeps its density


def test_sharp_projection_meets_zero_by_zero_and_stays_finite(small: lab._Mesh) -> None:
    run = lab._optimise(small, "projection", "sharp", beta0=512.0, beta_max=512.0,
                        max_iter=12, early=5)
    assert sum(run.guarded) > 0 and run.vanished[4] > lab.MOST
    assert max(run.underflow) > 0.5  # the projection's derivative is exactly 0 there
    assert np.isfinite(run.x).all() and np.isfinite(run.xphys).all()
    assert all(math.isfinite(c) for c in run.compliance)
    claim = lab._zero_by_zero_claim(run)
    assert claim.verdict == "holds" and claim.value == sum(run.guarded)


def test_verdicts_flip_with_the_measurement(smoke: LabResult, small: lab._Mesh) -> None:
    vmesh = lab._mesh(*lab.VALIDATION_MESH)
    dens = lab._optimise(vmesh, "density", "density")
    assert lab._validation_claim("density", dens).verdict == "holds"
    assert lab._validation_claim("sensitivity", dens).verdict == "does not hold"
    # no projection: no 0/0 anywhere
    assert lab._zero_by_zero_claim(dens).verdict == "does not hold"
    cont = lab._optimise(small, "projection", "cont", beta0=1.0, beta_max=512.0, beta_every=6,
                         max_iter=40, early=5)
    sharp = lab._optimise(small, "projection", "sharp", beta0=64.0, beta_max=64.0,
                          max_iter=40, early=5)
    assert lab._vanished_claim(cont, 5, sharp=False).verdict == "holds"
    assert lab._vanished_claim(cont, 5, sharp=True).verdict == "does not hold"
    assert lab._compliance_claim(cont, sharp).verdict == "holds"
    assert lab._compliance_claim(sharp, cont).verdict == "does not hold"
    assert lab._finite_claim([cont, sharp]).verdict == "holds"
    leaked = dataclasses.replace(sharp, x=np.where(sharp.x > 0.5, np.nan, sharp.x))
    assert lab._finite_claim([cont, leaked]).verdict == "does not hold"
    bad = dataclasses.replace(lab._gradient_check(SMOKE.generator(1)), dc_err=1e-3)
    assert lab._gradient_claim(bad).verdict == "does not hold"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="cfg"):
        lab.topology("quick")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nelx"):
        lab._mesh(0, 5)
