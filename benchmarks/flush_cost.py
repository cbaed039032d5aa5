"""What writing the run file within the flush bounds costs: a Watch with a run file flushed
every 100 rows / 10 s (the default) against the same Watch without a file and against the old
cadence (every 512 rows, half the default ring), side by side in one process.

Run: .venv/bin/python benchmarks/flush_cost.py [--rounds 20] [--steps 50]
Each round times `steps` training steps of every variant, interleaved; medians per step,
as ratios to the bare loop. flush_every=1 is the extreme (a write per step), for scale.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved, machine, median

from gradwatch import Watch


def mlp() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    layers: list[nn.Module] = []
    for _ in range(16):
        layers += [nn.Linear(256, 256), nn.Tanh()]
    x, y = torch.randn(128, 256), torch.randint(0, 10, (128,))
    return nn.Sequential(*layers, nn.Linear(256, 10)), (x, y)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    torch.manual_seed(0)
    base, (x, y) = mlp()
    out = Path(tempfile.mkdtemp(prefix="gradwatch-flush-"))

    def variant(file: bool, flush_every: int | None, watch_on: bool = True
                ) -> Callable[[], None]:
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        watch = None
        if watch_on:
            kw = {} if flush_every is None else {"flush_every": flush_every}
            watch = Watch(model, **kw).attach()  # type: ignore[arg-type]
            if file:
                watch.save(out / f"run-{flush_every}.jsonl", overwrite=True)

        def go() -> None:
            for _ in range(args.steps):
                nn.functional.cross_entropy(model(x), y).backward()
                if watch is not None:
                    watch.step()
                opt.step()
                opt.zero_grad()

        return go

    variants = {
        "bare": variant(False, None, watch_on=False),
        "watch, no file": variant(False, None),
        "file, every 512 rows (old)": variant(True, 512),
        "file, every 100 rows / 10 s (default)": variant(True, None),
        "file, every row": variant(True, 1),
    }
    # Each round in one order, then the reverse: a variant's place in the round (caches the one
    # before it left behind) is not what tells the variants apart.
    half = max(1, args.rounds // 2)
    forward = interleaved(variants, half)
    backward = interleaved(dict(reversed(variants.items())), half)
    times = {k: forward[k] + backward[k] for k in variants}
    bare = median(times["bare"]) / args.steps
    print(f"machine: {machine()}")
    print(f"16-layer tanh MLP, width 256, batch 128; {args.rounds} rounds x {args.steps} steps "
          "per variant, interleaved; median per step\n")
    print("| variant | per step | over bare |")
    print("|---|---|---|")
    for name, ts in times.items():
        t = median(ts) / args.steps
        print(f"| {name} | {t * 1e3:.2f} ms | {t / bare:.3f}x |")


if __name__ == "__main__":
    main()
