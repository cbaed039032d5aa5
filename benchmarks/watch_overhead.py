"""Watch overhead: median training-step time with a Watch over the bare loop.

Run: .venv/bin/python benchmarks/watch_overhead.py [--rounds 30] [--steps 10]
Each round times `steps` training steps of every variant, interleaved (bare, floor, every=1,
every=10), each on its own identical copy of the model, so the ratios are measured side by
side in one process (10 steps a round: each round holds one recorded step of every=10).
"floor" is the bare loop plus one read of every gradient (_timing.read_all): the cost of
reading every gradient byte once, which any per-step gradient monitor pays.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved, machine, median, read_all

from gradwatch import Watch


def mlp() -> tuple[nn.Module, Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
    layers: list[nn.Module] = []
    for _ in range(16):
        layers += [nn.Linear(512, 512), nn.Tanh()]
    x, y = torch.randn(256, 512), torch.randint(0, 10, (256,))
    return nn.Sequential(*layers, nn.Linear(512, 10)), lambda: (x, y)


def cnn() -> tuple[nn.Module, Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10))
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    return model, lambda: (x, y)


class LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(32, 128, num_layers=2, batch_first=True)
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def lstm() -> tuple[nn.Module, Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
    x, y = torch.randn(32, 100, 32), torch.randint(0, 10, (32,))
    return LSTMNet(), lambda: (x, y)


def run(name: str, make: Callable, rounds: int, steps: int) -> str:
    """One row: bare, every=1 and every=10, each on its own identical copy of the model."""
    torch.manual_seed(0)
    base, batch = make()

    def variant(every: int | None, floor: bool = False) -> Callable[[], None]:
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        watch = None if every is None else Watch(model, every=every).attach()
        params = list(model.parameters())

        def go() -> None:
            for _ in range(steps):
                x, y = batch()
                nn.functional.cross_entropy(model(x), y).backward()
                if watch is not None:
                    watch.step()
                if floor:  # read every gradient byte once: the least any monitor must do
                    read_all(params)
                opt.step()
                opt.zero_grad()

        return go

    variants = {"bare": variant(None), "floor": variant(None, floor=True),
                "1": variant(1), "10": variant(10)}
    times = interleaved(variants, rounds)
    bare = median(times["bare"]) / steps
    fl, r1, r10 = (median(times[k]) / steps / bare for k in ("floor", "1", "10"))
    return f"| {name} | {bare * 1e3:.1f} ms | {fl:.3f}x | {r1:.3f}x | {r10:.3f}x |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print(f"rounds {args.rounds} x {args.steps} steps per variant, interleaved; median per step\n")
    print("| workload | bare step | floor (one read of the grads) | Watch every=1 "
          "| Watch every=10 |")
    print("|---|---|---|---|---|")
    for name, make in (("16-layer tanh MLP, width 512, batch 256", mlp),
                       ("CNN, 3 conv + 2 fc, 32x32 inputs, batch 64", cnn),
                       ("2-layer LSTM, 100 steps, hidden 128, batch 32", lstm)):
        print(run(name, make, args.rounds, args.steps), flush=True)


if __name__ == "__main__":
    main()
