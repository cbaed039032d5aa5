"""core speed against the straightforward implementations, side by side in one process.

Run: .venv/bin/python benchmarks/core_speed.py [--rounds 3]

1. lyapunov_spectrum (N=500, k=16, 2000 steps of h <- tanh(W h), g=2, float64) against a plain
   NumPy QR loop written here as the reference and against the published `lyapynov` package
   (when installed); all given the same W and h0.
2. jacobian_spectrum top-16, matrix-free, on a tanh MLP of width 2048 and depth 20 (one
   example, float32) against the dense Jacobian (vmapped vjps) + torch.linalg.svdvals and
   against torch.autograd.functional.jacobian(vectorize=True) + svdvals.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved, machine, median

from gradwatch import jacobian_spectrum, lyapunov_spectrum

N, K, T = 500, 16, 2000


def lyapunov(rounds: int) -> None:
    rng = np.random.default_rng(0)
    W = rng.standard_normal((N, N)) * 2.0 / np.sqrt(N)
    h0 = rng.standard_normal(N)
    out: dict[str, np.ndarray] = {}

    def numpy_loop() -> None:
        h = h0.copy()
        Q, _ = np.linalg.qr(rng.standard_normal((N, K)))
        acc = np.zeros(K)
        for _ in range(T):
            h = np.tanh(W @ h)
            Q = (1 - h**2)[:, None] * (W @ Q)  # J_t Q, J_t = diag(1 - h^2) W
            Q, R = np.linalg.qr(Q)
            acc += np.log(np.abs(np.diag(R)))
        out["numpy"] = np.sort(acc / T)[::-1]

    Wt, ht = torch.from_numpy(W), torch.from_numpy(h0)
    cell = nn.RNNCell(1, N, bias=False, dtype=torch.float64)
    with torch.no_grad():
        cell.weight_hh.copy_(Wt)

    def gw_cell() -> None:
        out["cell"] = lyapunov_spectrum(cell, ht, k=K, steps=T, warmup=0).exponents.numpy()

    def gw_lambda() -> None:
        res = lyapunov_spectrum(lambda h: torch.tanh(h @ Wt.T), ht, k=K, steps=T, warmup=0)
        out["lambda"] = res.exponents.numpy()

    variants = {"numpy": numpy_loop, "cell": gw_cell, "lambda": gw_lambda}
    try:  # a published package, when installed (`make bench` installs it)
        import lyapynov
    except ImportError:
        lyapynov = None
    if lyapynov is not None:

        def published() -> None:
            system = lyapynov.DiscreteDS(
                h0.copy(), 0, lambda h, t: np.tanh(W @ h),
                lambda h, t: (1 - np.tanh(W @ h) ** 2)[:, None] * W)  # J = diag(phi'(Wh)) W
            out["lyapynov"] = np.sort(lyapynov.LCE(system, K, 0, T, False))[::-1]

        variants["lyapynov"] = published
    times = interleaved(variants, rounds, warmup=1)
    ref = median(times["numpy"])
    print(f"\n### lyapunov_spectrum, N={N}, k={K}, {T} steps, float64\n")
    print("| implementation | median time | vs NumPy | lambda_max |")
    print("|---|---|---|---|")
    for key, label in (("numpy", "NumPy QR loop (reference)"),
                       ("cell", "gradwatch, nn.RNNCell step"),
                       ("lambda", "gradwatch, lambda h: tanh(h @ W.T)"),
                       ("lyapynov", "lyapynov 1.0 `LCE` (published package, NumPy)")):
        if key not in times:
            print(f"| {label} | not installed | - | - |")
            continue
        t = median(times[key])
        print(f"| {label} | {t:.2f} s | {ref / t:.2f}x faster | {out[key][0]:.4f} |")


def jacobian(rounds: int) -> None:
    torch.manual_seed(0)
    width, depth = 2048, 20
    net = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.Tanh())])
    net.eval()
    x = torch.randn(1, width)
    out: dict[str, torch.Tensor] = {}

    def matrix_free() -> None:
        out["mf"] = jacobian_spectrum(net, x, k=16, method="matrix_free").singular_values[0]

    def dense() -> None:
        out["dense"] = jacobian_spectrum(net, x, method="dense").singular_values[0]

    def autograd_dense() -> None:
        jac = torch.autograd.functional.jacobian(lambda v: net(v[None])[0], x[0], vectorize=True)
        out["autograd"] = torch.linalg.svdvals(jac)

    times = interleaved({"mf": matrix_free, "dense": dense, "autograd": autograd_dense},
                        rounds, warmup=1)
    err = float(((out["mf"] - out["dense"][:16]).abs() / out["dense"][:16]).max())
    mf = median(times["mf"])
    print(f"\n### jacobian_spectrum top-16, tanh MLP width {width}, depth {depth}, float32\n")
    print("| implementation | median time | matrix-free is faster by |")
    print("|---|---|---|")
    print(f"| gradwatch matrix-free top-16 (max rel. error vs dense {err:.1e}) | {mf:.2f} s | - |")
    for key, label in (("dense", "dense Jacobian (vmapped vjps) + svdvals"),
                       ("autograd", "autograd.functional.jacobian(vectorize=True) + svdvals")):
        t = median(times[key])
        print(f"| {label} | {t:.2f} s | {t / mf:.1f}x |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {machine()}; {args.rounds} interleaved rounds, median")
    lyapunov(args.rounds)
    jacobian(args.rounds)


if __name__ == "__main__":
    main()
