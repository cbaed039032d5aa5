import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from gradwatch.watch import Watch, load_run


def _run(tmp_path, steps=5, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "run.jsonl"
    with Watch(model, optimizer=opt, **kw) as w:
        w.save(path)
        for _ in range(steps):
            model(torch.randn(8, 4)).square().mean().backward()
            opt.step()
            opt.zero_grad()
    return w, path


def test_saved_run_loads_to_the_same_history(tmp_path):
    w, path = _run(tmp_path, detail_every=1)
    loaded = load_run(path)
    assert loaded == w.history
    assert torch.isfinite(loaded["update_ratio"]).all()  # flushed after each update was known


def test_flushes_as_it_goes_so_the_file_grows_during_the_run(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "run.jsonl"
    with Watch(model, optimizer=opt, history=8) as w:
        w.save(path)
        for _ in range(22):
            model(torch.randn(2, 3)).sum().backward()
            opt.step()
            opt.zero_grad()
        during = len(load_run(path))
    assert during == 20  # flushed at every half ring (4 rows) while running
    assert load_run(path).steps.tolist() == list(range(1, 23))  # the rest on close


def test_file_cut_mid_record_loads_complete_records_and_warns(tmp_path):
    _, path = _run(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 25])  # cut inside the last record
    with pytest.warns(RuntimeWarning, match="skipped 1 incomplete"):
        h = load_run(path)
    assert h.steps.tolist() == [1, 2, 3, 4]


def test_killed_writer_leaves_a_readable_file(tmp_path):
    path = tmp_path / "run.jsonl"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from torch import nn
        from gradwatch.watch import Watch
        model = nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        w = Watch(model, optimizer=opt, history=4).attach()
        w.save({str(path)!r})
        for i in range(50):
            model(torch.randn(2, 3)).sum().backward()
            opt.step(); opt.zero_grad()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9
    h = load_run(path)
    assert len(h) >= 40 and h.steps.tolist() == list(range(1, len(h) + 1))


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "binary"),
        (b'{"format": "gradwatch-run", "vers', "does not start with a gradwatch run header"),
        (b'{"hello": 1}\n', "not a gradwatch run file"),
        (b'{"format": "gradwatch-run", "version": 99}\n', "version 99"),
        (b'{"format": "gradwatch-run", "version": 1}\n', "malformed header"),
    ],
)
def test_bad_files_get_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_run(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_run(tmp_path / "missing.jsonl")


def test_save_refuses_to_overwrite_a_foreign_file(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("my notes\n")
    model = nn.Linear(2, 2)
    with Watch(model) as w, pytest.raises(FileExistsError, match="not a gradwatch run file"):
        w.save(other)
    assert other.read_text() == "my notes\n"
    with Watch(model) as w, pytest.raises(IsADirectoryError, match="directory"):
        w.save(tmp_path)


def test_non_finite_values_stay_standard_json(tmp_path):
    model = nn.Linear(2, 2)
    path = tmp_path / "run.jsonl"
    with Watch(model) as w:
        w.save(path)
        model(torch.randn(3, 2)).sum().backward()
        model.weight.grad[0, 0] = float("nan")
        w.step()
    for line in path.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    h = load_run(path)
    assert h["nonfinite"][0, 0] == 1 and torch.isnan(h["grad_norm"][0, 0])
    assert os.path.getsize(path) > 0
