"""How the Watch scales: overhead against model size, memory against the number of steps.

Run: .venv/bin/python benchmarks/scaling.py            (full measurement)
     .venv/bin/python benchmarks/scaling.py --quick    (a few rounds, 10^4 steps)
     .venv/bin/python benchmarks/scaling.py --part size|memory

1. Size: tanh MLPs of depth 8 (+ a 10-way head) whose width puts them at 1M, 10M, 30M and
   100M parameters, batch 64, SGD. Bare, floor (one read of every gradient, as in
   watch_overhead.py), Watch every=1 and every=10, each on its own copy, interleaved (turns of
   10 steps, median turn). Also the direct time of the two calls themselves (mean over steps):
   the floor read and watch.step().
2. Memory: a Watch with default settings (every=1, history=1024) on a tiny MLP, under
   tracemalloc from the first step. Every --real-every-th step is a real training step
   (forward with the activation hooks, backward, watch.step(), SGD); the others call only
   watch.step() on the gradients left in place, each a full recorded step for the Watch (the
   fast path that makes 10^6 steps fit in minutes; --real-every 1 makes every step real). At
   10^3, 10^4, 10^5 and 10^6 steps: Python memory traced since the start, the process's RSS,
   the Watch's tables' nbytes and the length of its host-side bookkeeping. Only the steps that
   ran within --budget are reported: nothing is extrapolated.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved, machine, median, read_all

from gradwatch import Watch

DEPTH, BATCH = 8, 64
SIZES = {"1M": 376, "10M": 1192, "30M": 2064, "100M": 3776}  # width: 7w^2 + 82w + 10 params


def rss_mib() -> float:
    """Resident set size now (Linux /proc), else the peak (getrusage)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def tanh_mlp(width: int, depth: int = DEPTH, d_in: int = 64) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(d_in, width), nn.Tanh()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def size_row(label: str, width: int, rounds: int, steps: int, warmup: int) -> str:
    torch.manual_seed(0)
    base = tanh_mlp(width)
    n_params = sum(p.numel() for p in base.parameters())
    x, y = torch.randn(BATCH, 64), torch.randint(0, 10, (BATCH,))
    calls: dict[str, list[float]] = {}

    def variant(name: str, every: int | None, floor: bool = False) -> Callable[[], None]:
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        watch = None if every is None else Watch(model, every=every).attach()
        params = list(model.parameters())
        calls[name] = []

        def go() -> None:
            for _ in range(steps):
                F.cross_entropy(model(x), y).backward()
                t0 = time.perf_counter()
                if watch is not None:
                    watch.step()
                if floor:  # read every gradient byte once
                    read_all(params)
                calls[name].append(time.perf_counter() - t0)
                opt.step()
                opt.zero_grad()

        return go

    variants = {"bare": variant("bare", None), "floor": variant("floor", None, floor=True),
                "1": variant("1", 1), "10": variant("10", 10)}
    times = interleaved(variants, rounds, warmup)
    bare = median(times["bare"])
    fl, r1, r10 = (median(times[k]) / bare for k in ("floor", "1", "10"))
    skip = steps * warmup
    fc, c1, c10 = (1e3 * statistics.fmean(calls[k][skip:]) for k in ("floor", "1", "10"))
    grad_mb = n_params * 4 / 2**20
    return (f"| {label} ({n_params / 1e6:.1f}M, width {width}) | {grad_mb:.0f} MB "
            f"| {bare / steps * 1e3:.1f} ms | {fl:.3f}x | {r1:.3f}x | {r10:.3f}x "
            f"| {fc:.2f} ms | {c1:.2f} ms ({c1 / fc:.2f}x) | {c10:.2f} ms |")


def sizes(rounds: int, big_rounds: int, steps: int, warmup: int, which: list[str]) -> None:
    print(f"\n## Overhead against model size: tanh MLP depth {DEPTH}, batch {BATCH}, SGD")
    print(f"{rounds} turns ({big_rounds} for 30M and 100M) x {steps} steps per variant, "
          f"interleaved, {warmup} warm-up turns; median turn over bare's median turn\n")
    print("| model | gradients | bare step | floor | Watch every=1 | Watch every=10 "
          "| floor read call | watch.step() every=1 (vs norm) | watch.step() every=10 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label in which:
        t0 = time.perf_counter()
        n = big_rounds if label in ("30M", "100M") else rounds
        print(size_row(label, SIZES[label], n, steps, warmup), flush=True)
        print(f"<!-- {label}: {time.perf_counter() - t0:.0f} s -->", flush=True)


def memory(max_steps: int, budget_s: float, real_every: int) -> None:
    print("\n## History memory against steps: Watch(every=1, history=1024), tiny MLP "
          f"(8 -> 16 -> 16 -> 1, tanh), batch 4; every {real_every}th step a real one (forward, "
          "backward, SGD), the others watch.step() alone on the gradients left in place; "
          "tracemalloc on from step 0\n")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(4, 8), torch.randn(4, 1)
    checkpoints = [c for c in (10**3, 10**4, 10**5, 3 * 10**5, 10**6) if c <= max_steps]
    print("| steps | wall | Python traced (current / peak) | RSS | tables nbytes "
          "| long-view rows, stride | host lists (ring, long view, segments) |")
    print("|---|---|---|---|---|---|---|")
    tracemalloc.start()
    watch = Watch(model).attach()
    tables = (watch._layer_tables, watch._act_tables)
    t0 = time.perf_counter()
    step = 0
    for target in checkpoints:
        while step < target:
            if step % real_every == 0:  # a real step: forward (hooks), backward, SGD
                opt.zero_grad()
                F.mse_loss(model(x), y).backward()
                watch.step()
                opt.step()
            else:  # fast path: the Watch records the gradients left in place
                watch.step()
            step += 1
            if step % 1000 == 0 and time.perf_counter() - t0 > budget_s:
                break
        cur, peak = tracemalloc.get_traced_memory()
        lt = watch._layer_tables
        nbytes = sum(t.nbytes() for t in tables)
        lists = (len(lt.ring_steps), len(lt.lview_steps), len(watch._segments))
        print(f"| {step:,} | {time.perf_counter() - t0:.0f} s | {cur / 2**10:.0f} KiB / "
              f"{peak / 2**10:.0f} KiB | {rss_mib():.1f} MiB "
              f"| {nbytes:,} B | {len(lt.lview_steps)}, {lt.stride} | {lists} |", flush=True)
        if step < target:
            print(f"\nstopped at {step:,} steps: the --budget of {budget_s:.0f} s ran out "
                  "(points past it are not measured, not extrapolated)")
            break
    hist = watch.history
    print(f"\nhistory read at the end: {len(hist)} rows from step {int(hist.steps[0])} to "
          f"{int(hist.steps[-1])}")
    watch.close()
    tracemalloc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few rounds, 10^4 steps")
    ap.add_argument("--part", choices=("size", "memory", "both"), default="both")
    ap.add_argument("--rounds", type=int, help="turns for 1M and 10M (default 10; quick 2)")
    ap.add_argument("--big-rounds", type=int, help="turns for 30M and 100M (default 5; quick 1)")
    ap.add_argument("--steps", type=int, default=10, help="training steps per turn")
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--max-steps", type=int, help="memory part (default 10^6; quick 10^4)")
    ap.add_argument("--budget", type=float, default=1200.0, help="seconds for the memory part")
    ap.add_argument("--real-every", type=int, default=10,
                    help="memory part: one real training step in this many (1: all real)")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    if args.part in ("size", "both"):
        sizes(args.rounds or (2 if args.quick else 10), args.big_rounds or (1 if args.quick else 5),
              args.steps, 1 if args.quick else 2, args.sizes.split(","))
    if args.part in ("memory", "both"):
        memory(args.max_steps or (10**4 if args.quick else 10**6), args.budget,
               args.real_every)


if __name__ == "__main__":
    main()
