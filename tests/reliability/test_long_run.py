"""Long runs: memory flat and history bounded under a Watch with every statistic on.

A few thousand steps here (the suite's budget); benchmarks/long_run.py runs 10^5 and writes
the memory-against-steps table of docs/RELIABILITY.md. Time per block is measured there, not
asserted here (a shared machine's timings are noise)."""

import gc
import sys
import tracemalloc
import warnings

import pytest
import torch
from torch import nn

from gradwatch.watch import Watch, load_run

# Warm-up: torch and NumPy fill bounded internal caches over the first ~2000 steps (measured:
# 170-420 blocks more from step 300 to 2000, 50-120 from 2000 to 3700; flat after).
WARMUP, STEPS, TRACED, HISTORY = 2000, 3700, 300, 64


def _step(model, opt, x, y):
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad()


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared machine two threads spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_memory_is_flat_and_history_bounded_over_a_long_run(tmp_path, one_thread):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    path = tmp_path / "run.jsonl"
    with Watch(model, optimizer=opt, detail_every=1, history=HISTORY) as w:
        w.save(path)
        held = w._layer_tables.nbytes() + w._act_tables.nbytes()
        for _ in range(WARMUP):  # rings full, caches warm
            _step(model, opt, x, y)
        gc.collect()
        blocks = sys.getallocatedblocks()  # cheap: over the whole measured stretch
        for _ in range(STEPS - WARMUP - TRACED):
            _step(model, opt, x, y)
        tracemalloc.start()  # slow: over the last stretch only
        try:
            gc.collect()
            start = tracemalloc.get_traced_memory()[0]
            for _ in range(TRACED):
                _step(model, opt, x, y)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - start
        finally:
            tracemalloc.stop()
        blocks = sys.getallocatedblocks() - blocks
        assert w._layer_tables.nbytes() + w._act_tables.nbytes() == held
        assert len(w._plans) == 2 and not w._staged and not w._captures
    h = w.history
    assert len(h) <= 2 * HISTORY and h.steps[-1] == STEPS
    assert h.steps[-HISTORY:].tolist() == list(range(STEPS - HISTORY + 1, STEPS + 1))
    assert (h.steps.diff() > 0).all() and h.steps[0] == 1  # the whole run, downsampled
    # One object kept per step would show as 1700 blocks (the traced stretch is a coarser check:
    # a few KiB of step-number ints come and go).
    assert blocks < 300, f"{blocks} Python objects more after {STEPS - WARMUP} steps"
    assert grown < 16 * 1024, f"Python heap grew {grown} bytes over {TRACED} steps"
    assert load_run(path).steps.tolist() == list(range(1, STEPS + 1))  # the file has them all


class _GRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def _recurrent_run(tmp_path, steps, history, every):
    torch.manual_seed(0)
    model = _GRU()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(4, 6, 3), torch.randint(0, 2, (4,))
    with Watch(model, optimizer=opt, history=history, recurrent_every=every) as w:
        w.save(tmp_path / "run.jsonl")  # flushed inside optimizer.step(), a no_grad region
        for _ in range(steps):
            _step(model, opt, x, y)
    return w


def test_recurrent_profiles_survive_a_flush_inside_optimizer_step(tmp_path, one_thread):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "no gradient-through-time profile ... grad_fn"
        w = _recurrent_run(tmp_path, steps=40, history=8, every=10)
    assert [s.step for s in w.history.recurrent] == [1, 11, 21, 31]
    assert len(load_run(tmp_path / "run.jsonl").recurrent) == 4


def test_recurrent_samples_held_are_bounded(tmp_path, one_thread):
    w = _recurrent_run(tmp_path, steps=100, history=4, every=5)  # 20 samples taken
    h = w.history
    assert len(h.recurrent) <= 4  # as bounded as the tables, whatever the run's length
    steps = [s.step for s in h.recurrent]
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 96  # the whole run
    assert len(load_run(tmp_path / "run.jsonl").recurrent) == 20  # the file keeps them all
