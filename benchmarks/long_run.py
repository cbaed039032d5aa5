"""Long run: 10^5 steps of a tiny model under a Watch with every statistic on.

Measures, every ``--block`` steps: Python heap in use (tracemalloc), resident set size, the
Watch's device tables, the rows it holds, and the wall time per block. Writes a Markdown table
(memory and time against steps) for docs/RELIABILITY.md.

    .venv/bin/python benchmarks/long_run.py                  # 10^5 steps, blocks of 10^4
    .venv/bin/python benchmarks/long_run.py --steps 20000 --block 2000 --out /tmp/long.md

tracemalloc slows Python down; the time column is comparable between blocks of one run, not
with benchmarks/watch_overhead.py.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch
from torch import nn

from gradwatch.watch import Watch


class Tiny(nn.Module):
    """A GRU (gradient-through-time samples), activations (saturation) and linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(3, 8, batch_first=True)
        self.body = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, 3) -> (B, 2)
        return self.head(self.body(self.rnn(x)[0][:, -1]))


def rss_bytes() -> int:
    """Resident set size now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def long_run(steps: int, block: int, path: str, recurrent_every: int = 1000) -> list[dict]:
    """Train ``steps`` steps; one row of measurements per ``block`` steps."""
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(4, 6, 3), torch.randint(0, 2, (4,))
    rows = []
    watch = Watch(model, optimizer=opt, detail_every=1, history=256,
                  recurrent_every=recurrent_every).attach()
    watch.save(path)
    tracemalloc.start()
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        if step % block == 0:
            t = time.perf_counter()
            gc.collect()
            rows.append({
                "step": step,
                "heap": tracemalloc.get_traced_memory()[0],
                "rss": rss_bytes(),
                "tables": watch._layer_tables.nbytes() + watch._act_tables.nbytes(),
                "rows": len(watch._layer_tables.lview_steps) + watch._layer_tables.recent,
                "samples": len(watch._samples) + len(watch._pending_profiles),
                "seconds": t - t0,
            })
            t0 = time.perf_counter()
    watch.close()
    tracemalloc.stop()
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| steps | Python heap (KiB) | RSS (MiB) | Watch tables (KiB) | rows held | recurrent "
        "samples held | s per block |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['step']:,} | {r['heap'] / 1024:,.0f} | {r['rss'] / 2**20:,.1f} | "
            f"{r['tables'] / 1024:,.1f} | {r['rows']} | {r['samples']} | {r['seconds']:.1f} |"
        )
    first, last = rows[0], rows[-1]
    lines += [
        "",
        f"Heap growth from step {first['step']:,} to {last['step']:,}: "
        f"{(last['heap'] - first['heap']) / 1024:+,.0f} KiB; RSS growth: "
        f"{(last['rss'] - first['rss']) / 2**20:+,.1f} MiB; time per block last/first: "
        f"{last['seconds'] / first['seconds']:.2f}.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--block", type=int, default=10_000)
    ap.add_argument("--recurrent-every", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        rows = long_run(args.steps, args.block, os.path.join(d, "run.jsonl"),
                        args.recurrent_every)
    text = (f"torch {torch.__version__}, {sys.platform}, 1 thread, {args.steps:,} steps, "
            f"detail_every=1, activations, recurrent_every={args.recurrent_every}, run file\n\n"
            + table(rows))
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
