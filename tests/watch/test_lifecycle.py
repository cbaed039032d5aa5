"""A Watch's run file and lifecycle: rows reach the file within the flush bounds (a killed run
keeps them), another run's file is never replaced silently, and nothing records or leaks once
the Watch is closed."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

import gradwatch as gw
from gradwatch.watch import load_run


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def _train(model: nn.Module, watch: gw.Watch, steps: int, after=None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for i in range(steps):
        model(torch.randn(3, 4)).square().mean().backward()
        watch.step()
        opt.step()
        opt.zero_grad()
        if after is not None:
            after(i + 1)


def _rows_on_disk(path) -> int:
    if not path.exists():  # the file appears with its first rows
        return 0
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert not text or text.endswith("\n")  # a tailing reader only ever sees whole lines
    return sum(1 for line in text.splitlines()[1:] if '"recurrent"' not in line)


def test_a_reader_tailing_the_file_sees_rows_within_flush_every(tmp_path):
    path = tmp_path / "run.jsonl"
    model = _model()
    seen = []
    with gw.Watch(model, flush_every=25) as w:
        w.save(path)
        _train(model, w, 120, after=lambda step: seen.append((step, _rows_on_disk(path))))
    for step, rows in seen:
        assert step - rows <= 25, (step, rows)  # never more than flush_every rows behind
    for step, rows in seen:
        if step % 25 == 0:  # a flush: every row but one whose update ratio is still due
            assert rows >= step - 1, (step, rows)
    assert len(load_run(path)) == 120


def test_rows_reach_the_file_within_flush_seconds(tmp_path, monkeypatch):
    from gradwatch.watch import watch as watch_module

    clock = [1000.0]
    monkeypatch.setattr(watch_module.time, "monotonic", lambda: clock[0])
    path = tmp_path / "run.jsonl"
    model = _model()
    seen = []

    def tick(step: int) -> None:
        clock[0] += 1.0  # one second per step
        seen.append((step, _rows_on_disk(path)))

    with gw.Watch(model, flush_every=10_000, flush_seconds=5.0, history=64) as w:
        w.save(path)
        _train(model, w, 30, after=tick)
    for step, rows in seen:
        assert step - rows <= 6, (step, rows)  # 5 s of steps and the one whose update is due


def test_a_killed_run_keeps_its_rows(tmp_path):
    # SIGKILL at step 400: the file used to hold only its header (rows came every 512 steps).
    path = tmp_path / "run.jsonl"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from torch import nn
        import gradwatch as gw
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        w = gw.Watch(model).attach()
        w.save({str(path)!r})
        for step in range(1, 1000):
            model(torch.randn(3, 4)).square().mean().backward()
            w.step()
            opt.step(); opt.zero_grad()
            if step == 400:
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    h = load_run(path)
    assert len(h) >= 300 and int(h.steps[-1]) >= 300  # within flush_every=100 of the kill


def test_save_refuses_another_runs_file_and_returns_the_path(tmp_path):
    path = tmp_path / "run.jsonl"
    model = _model()
    with gw.Watch(model) as w:
        _train(model, w, 3)
    assert w.save(path) == str(path)
    before = path.read_bytes()
    model2 = _model()
    with gw.Watch(model2) as w2:
        _train(model2, w2, 5)
    with pytest.raises(FileExistsError, match=r"holds another gradwatch run .*overwrite=True"):
        w2.save(path)
    assert path.read_bytes() == before
    w2.save(path, overwrite=True)
    assert len(load_run(path)) == 5
    assert w2.save(path) == str(path)  # its own file again: fine


def test_save_without_a_path_makes_a_new_file_per_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = []
    for _ in range(2):
        model = _model()
        with gw.Watch(model) as w:
            _train(model, w, 2)
        paths.append(w.save())
    assert paths[0] != paths[1]
    assert all(os.path.dirname(p) == "runs" and p.endswith(".jsonl") for p in paths)
    assert [len(load_run(p)) for p in paths] == [2, 2]


def test_save_after_close_writes_the_whole_run_and_leaks_no_file(tmp_path):
    model = _model()
    with gw.Watch(model) as w:
        _train(model, w, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        w.save(tmp_path / "run.jsonl")
        assert w._file is not None and w._file.file is None  # closed at once
        del w
        import gc

        gc.collect()
    assert len(load_run(tmp_path / "run.jsonl")) == 4


def test_step_after_close_records_nothing_and_warns_once(tmp_path):
    model = _model()
    with gw.Watch(model) as w:
        _train(model, w, 2)
    with pytest.warns(RuntimeWarning, match="this Watch is closed"):
        _train(model, w, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _train(model, w, 2)  # warned once: silent now
    assert w.history.steps.tolist() == [1, 2]
    w.close()  # twice is fine
    w.attach()  # reopened: records again
    _train(model, w, 1)
    w.close()
    assert w.history.steps.tolist() == [1, 2, 3]


def test_the_flush_bound_keeps_every_row_once(tmp_path):
    path = tmp_path / "run.jsonl"
    model = _model()
    with gw.Watch(model, flush_every=7, detail_every=3) as w:
        w.save(path)
        _train(model, w, 50)
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == list(range(1, 51))  # each row written once, in order
    assert load_run(path) == w.history
