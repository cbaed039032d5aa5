"""The topology lab: a sharp Heaviside projection kills the sensitivities; continuation does not.

Minimum-compliance topology optimisation of the MBB half-beam (SIMP, density filter, tanh
projection, optimality criteria) on a real sparse finite-element solver, written here in
numpy/scipy after the structure of the 88-line code (Andreassen et al. 2011). The solver is
validated first against the 88-line code's published compliances; then a sharp projection from
the start is compared with beta continuation. The projection's derivative
beta (1 - tanh^2) / (...) is a product of many "saturated" factors: on a nearly 0/1 field it
underflows to exactly 0, the sensitivity of most elements vanishes, and the OC update meets
0/0. The lab counts that and guards it (the element keeps its density).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from gradwatch.labs import register
from gradwatch.labs.base import Claim, LabConfig, LabResult, Plot, Series, Table, one_thread, steps

__all__ = ["topology"]

# ---------------------------------------------------------------- the 88-line code's problem
E0, EMIN, NU = 1.0, 1e-9, 0.3  # solid and void Young's moduli, Poisson's ratio
PENAL = 3.0  # SIMP penalty
VOLFRAC = 0.5
RMIN = 2.4  # filter radius in elements (the 88-line paper's 60 x 20 example)
MOVE = 0.2  # OC move limit
CHANGE_TOL = 0.01  # the 88-line loop: while max |x_new - x| > 0.01
OC_TOL = 1e-3  # bisection on the Lagrange multiplier: (l2 - l1) / (l1 + l2) > 1e-3
MAX_ITER = 2000  # safety cap for the validation runs (the 88-line loop has none)
VALIDATION_MESH = (60, 20)  # nelx, nely: always this size, whatever cfg.size
# The 88-line code's compliance for the 60 x 20 MBB beam (volfrac 0.5, penal 3, rmin 2.4):
# Andreassen, Clausen, Schevenels, Lazarov & Sigmund 2011, "Efficient topology optimization in
# MATLAB using 88 lines of code", top88(60, 20, 0.5, 3, 2.4, ft); the values a public Python
# port of the 88-line code asserts in its tests (printed to 2 decimals).
REFERENCE = {"sensitivity": 216.81, "density": 233.71}
REF_RTOL = 1e-4  # "to the printed digits": 0.01 % (216.81 +- 0.02)
# ---------------------------------------------------------------- projection experiment
ETA = 0.5  # projection threshold (Wang, Lazarov & Sigmund 2011)
SHARP_BETA = 64.0  # sharp projection from the first iteration
BETA_MAX = 512.0  # continuation: beta = 1, 2, 4, ..., 512 (the 88-line Heaviside variant)
VANISHED = 1e-6  # |dc/dx_e| below 1e-6 of the largest: the element's signal has vanished
MOST = 0.5  # "most elements"
AUTOGRAD_RTOL = 1e-8  # analytic chain rule against autograd, float64
AUTOGRAD_MESH = (8, 4)  # nelx, nely of the dense torch check
AUTOGRAD_BETA = 8.0
LOG_FLOOR = -20.0  # sensitivity maps: log10(|dc/dx| / max) floored here (exact zeros too)


@dataclass(frozen=True)
class _Sizes:
    nelx: int
    nely: int
    beta_every: int  # continuation: double beta after this many iterations (or on convergence)
    max_iter: int  # cap per projection run
    early: int  # iteration at which the vanished share is compared


def _sizes(cfg: LabConfig) -> _Sizes:
    s = cfg.pick(_Sizes(30, 10, 8, 90, 5), _Sizes(60, 20, 50, 600, 10),
                 _Sizes(150, 50, 50, 1000, 10))
    assert isinstance(s, _Sizes)
    return s


# ---------------------------------------------------------------- finite elements
def _element_stiffness(nu: float = NU) -> np.ndarray:
    """The bilinear Q4 plane-stress element stiffness for unit E, (8, 8): dofs ordered
    lower-left, lower-right, upper-right, upper-left (x, y each), counter-clockwise."""
    k = np.array([1 / 2 - nu / 6, 1 / 8 + nu / 8, -1 / 4 - nu / 12, -1 / 8 + 3 * nu / 8,
                  -1 / 4 + nu / 12, -1 / 8 - nu / 8, nu / 6, 1 / 8 - 3 * nu / 8])
    order = np.array([[0, 1, 2, 3, 4, 5, 6, 7],
                      [1, 0, 7, 6, 5, 4, 3, 2],
                      [2, 7, 0, 5, 6, 3, 4, 1],
                      [3, 6, 5, 0, 7, 2, 1, 4],
                      [4, 5, 6, 7, 0, 1, 2, 3],
                      [5, 4, 3, 2, 1, 0, 7, 6],
                      [6, 3, 4, 1, 2, 7, 0, 5],
                      [7, 2, 1, 4, 3, 6, 5, 0]])
    return 1 / (1 - nu**2) * k[order]  # (8, 8)


@dataclass(frozen=True)
class _Mesh:
    """The MBB half-beam on nelx x nely unit elements, numbered column by column from the top
    left (element e = ix * nely + iy), with its assembly index, BCs, load and filter."""

    nelx: int
    nely: int
    ke: np.ndarray  # (8, 8)
    edof: np.ndarray  # (nel, 8) global dofs of each element
    ik: np.ndarray  # (64 nel,) COO row index of the element matrices
    jk: np.ndarray  # (64 nel,) COO column index
    free: np.ndarray  # (nfree,) free dofs
    load: np.ndarray  # (ndof,) unit downward load at the top-left node
    h: sp.csr_matrix  # (nel, nel) filter weights max(0, rmin - dist)
    hs: np.ndarray  # (nel,) row sums of h

    @property
    def nel(self) -> int:
        return self.nelx * self.nely


def _mesh(nelx: int, nely: int, rmin: float = RMIN) -> _Mesh:
    if nelx < 1 or nely < 1:
        raise ValueError(f"nelx, nely: expected positive element counts, got {nelx}, {nely}")
    nodes = np.arange((nelx + 1) * (nely + 1)).reshape(nelx + 1, nely + 1)  # [ix, iy]
    lower_left = nodes[:-1, 1:].reshape(-1)  # (nel,) node below-left of each element
    off = 2 * (nely + 1)  # dof offset to the next column of nodes
    rel = np.array([0, 1, off, off + 1, off - 2, off - 1, -2, -1])  # LL, LR, UR, UL
    edof = 2 * lower_left[:, None] + rel[None, :]  # (nel, 8)
    ik = np.repeat(edof, 8, axis=1).reshape(-1)  # row a of element e, repeated over b
    jk = np.tile(edof, (1, 8)).reshape(-1)  # column b
    ndof = 2 * (nelx + 1) * (nely + 1)
    fixed = np.union1d(np.arange(0, 2 * (nely + 1), 2), [ndof - 1])  # left edge x; corner y
    free = np.setdiff1d(np.arange(ndof), fixed)
    load = np.zeros(ndof)
    load[1] = -1.0  # y of node 0 (top left)
    # filter: max(0, rmin - dist) over the ceil(rmin) - 1 neighbourhood
    r = math.ceil(rmin) - 1
    ix, iy = np.divmod(np.arange(nelx * nely), nely)
    rows, cols, vals = [], [], []
    for dx in range(-r, r + 1):
        for dy in range(-r, r + 1):
            jx, jy = ix + dx, iy + dy
            ok = (jx >= 0) & (jx < nelx) & (jy >= 0) & (jy < nely)
            w = max(0.0, rmin - math.hypot(dx, dy))
            rows.append(np.flatnonzero(ok))
            cols.append(jx[ok] * nely + jy[ok])
            vals.append(np.full(int(ok.sum()), w))
    h = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(nelx * nely, nelx * nely))
    hs = np.asarray(h.sum(axis=1)).reshape(-1)
    return _Mesh(nelx, nely, _element_stiffness(), edof, ik, jk, free, load, h, hs)


def _solve(mesh: _Mesh, xphys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Displacements (ndof,) and element energies u_e^T k0 u_e (nel,) for densities xphys."""
    young = EMIN + xphys**PENAL * (E0 - EMIN)  # (nel,) SIMP
    sk = (mesh.ke.reshape(1, 64) * young[:, None]).reshape(-1)  # (64 nel,)
    ndof = mesh.load.shape[0]
    k = sp.coo_matrix((sk, (mesh.ik, mesh.jk)), shape=(ndof, ndof)).tocsc()
    k = (k + k.T) / 2
    f = mesh.free
    u = np.zeros(ndof)
    u[f] = spla.spsolve(k[f][:, f], mesh.load[f])
    ue = u[mesh.edof]  # (nel, 8)
    ce = np.einsum("ea,ab,eb->e", ue, mesh.ke, ue)  # (nel,)
    return u, ce


# ---------------------------------------------------------------- filter and projection
def _project(xt: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """tanh projection (Wang et al. 2011) and its derivative, elementwise.

    The derivative beta (1 - tanh^2(beta (x - eta))) / (...) is exactly 0 in float64 as soon
    as tanh rounds to +-1, i.e. |x - eta| > ~19 / beta."""
    den = math.tanh(beta * ETA) + math.tanh(beta * (1 - ETA))
    t = np.tanh(beta * (xt - ETA))
    return (math.tanh(beta * ETA) + t) / den, beta * (1 - t * t) / den


def _physical(mesh: _Mesh, x: np.ndarray, ft: str, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Physical densities and d xphys / d xtilde (ones without projection)."""
    if ft == "sensitivity":
        return x, np.ones_like(x)
    xt = mesh.h @ x / mesh.hs  # (nel,) density filter
    if ft == "density":
        return xt, np.ones_like(x)
    return _project(xt, beta)


@dataclass(frozen=True)
class _Sens:
    c: float  # compliance f^T u
    dc: np.ndarray  # (nel,) dc/dx, design variables
    dv: np.ndarray  # (nel,) d volume / dx
    xphys: np.ndarray  # (nel,)


def _sensitivities(mesh: _Mesh, x: np.ndarray, ft: str, beta: float = 1.0) -> _Sens:
    """Compliance and its analytic gradient: the adjoint identity (self-adjoint problem)
    dc/dxphys_e = -p xphys_e^(p-1) (E0 - Emin) u_e^T k0 u_e, then the chain rule through the
    projection and the density filter (or the 88-line sensitivity filter for ft="sensitivity")."""
    xphys, dproj = _physical(mesh, x, ft, beta)
    _, ce = _solve(mesh, xphys)
    c = float(((EMIN + xphys**PENAL * (E0 - EMIN)) * ce).sum())
    dc = -PENAL * (E0 - EMIN) * xphys ** (PENAL - 1) * ce  # (nel,) d c / d xphys
    dv = np.ones_like(x)
    if ft == "sensitivity":  # heuristic filter of the 88-line code (not a gradient)
        dc = mesh.h @ (x * dc) / mesh.hs / np.maximum(1e-3, x)
    else:  # d xtilde_i / d x_j = H_ij / Hs_i; H symmetric
        dc = mesh.h @ (dc * dproj / mesh.hs)
        dv = mesh.h @ (dv * dproj / mesh.hs)
    return _Sens(c, dc, dv, xphys)


# ---------------------------------------------------------------- optimality criteria
@dataclass(frozen=True)
class _Step:
    x: np.ndarray  # (nel,) new design variables
    xphys: np.ndarray  # (nel,)
    guarded: int  # elements whose OC ratio -dc/dv was 0/0 or otherwise not finite


def _oc(mesh: _Mesh, x: np.ndarray, s: _Sens, ft: str, beta: float) -> _Step:
    """OC update, bisection on the Lagrange multiplier for the volume constraint on xphys.

    Where -dc/dv is not finite (0/0 once the projection's derivative has underflowed), the
    element keeps its density: the OC fixed point x_e B_e^(1/2) with B_e = 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = -s.dc / s.dv  # (nel,)
    bad = ~np.isfinite(ratio)
    ratio = np.where(bad, 0.0, ratio)
    l1, l2 = 0.0, 1e9
    xnew, xphys = x, s.xphys
    while (l2 - l1) / (l1 + l2) > OC_TOL:
        lmid = 0.5 * (l1 + l2)
        b = np.where(bad, 1.0, np.sqrt(np.maximum(ratio, 0.0) / lmid))
        xnew = np.clip(x * b, np.maximum(0.0, x - MOVE), np.minimum(1.0, x + MOVE))
        xphys, _ = _physical(mesh, xnew, ft, beta)
        if xphys.sum() > VOLFRAC * mesh.nel:
            l1 = lmid
        else:
            l2 = lmid
    return _Step(xnew, xphys, int(bad.sum()))


# ---------------------------------------------------------------- one optimisation
@dataclass(frozen=True)
class _Run:
    label: str
    compliance: tuple[float, ...]  # c at each iteration (before its update, as top88 prints)
    beta: tuple[float, ...]  # beta used at each iteration
    vanished: tuple[float, ...]  # share of elements with |dc/dx| < 1e-6 max, per iteration
    underflow: tuple[float, ...]  # share of elements whose projection derivative is exactly 0
    guarded: tuple[int, ...]  # OC 0/0 elements per iteration
    x: np.ndarray  # (nel,) final design variables
    xphys: np.ndarray  # (nel,) final physical densities
    dc_early: np.ndarray  # (nel,) dc/dx at the early iteration
    dc_final: np.ndarray  # (nel,) dc/dx at the last iteration
    converged: bool  # stopped by the change rule (at the final beta), not by the cap

    @property
    def iterations(self) -> int:
        return len(self.compliance)


def _vanished_share(dc: np.ndarray) -> float:
    top = float(np.abs(dc).max())
    return float((np.abs(dc) < VANISHED * top).mean()) if top > 0 else 1.0


def _optimise(mesh: _Mesh, ft: str, label: str, *, beta0: float = 1.0,
              beta_max: float = 1.0, beta_every: int = 0, max_iter: int = MAX_ITER,
              early: int = 1) -> _Run:
    """The 88-line loop: solve, sensitivities, filter, OC, until max |x_new - x| <= 0.01.

    With ft="projection", beta doubles after ``beta_every`` iterations at one beta or on
    convergence, up to ``beta_max`` (top88's Heaviside continuation); the run stops on
    convergence at the final beta or after ``max_iter`` iterations."""
    x = np.full(mesh.nel, VOLFRAC)
    beta, at_beta = beta0, 0
    cs: list[float] = []
    betas: list[float] = []
    van: list[float] = []
    under: list[float] = []
    guards: list[int] = []
    dc_early = np.zeros(mesh.nel)
    converged = False
    s = _sensitivities(mesh, x, ft, beta)
    for it in steps(max_iter, label):
        if it:
            s = _sensitivities(mesh, x, ft, beta)
        cs.append(s.c)
        betas.append(beta)
        van.append(_vanished_share(s.dc))
        xt = mesh.h @ x / mesh.hs
        under.append(float((_project(xt, beta)[1] == 0).mean()) if ft == "projection" else 0.0)
        if it + 1 == early:
            dc_early = s.dc
        step = _oc(mesh, x, s, ft, beta)
        guards.append(step.guarded)
        change = float(np.abs(step.x - x).max())
        x = step.x
        at_beta += 1
        if ft == "projection" and beta < beta_max and (at_beta >= beta_every
                                                       or change <= CHANGE_TOL):
            beta, at_beta = min(2 * beta, beta_max), 0
        elif change <= CHANGE_TOL:
            converged = True
            break
    if len(cs) < early:
        dc_early = s.dc
    xphys, _ = _physical(mesh, x, ft, beta)
    return _Run(label, tuple(cs), tuple(betas), tuple(van), tuple(under), tuple(guards), x,
                xphys, dc_early, s.dc, converged)
