import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from gradwatch.watch import JSONLSink, Watch, load_run


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


def _header(layers=("a",)):
    return {
        "layers": list(layers),
        "layer_kinds": ["Linear"] * len(layers),
        "activations": [],
        "activation_kinds": [],
        "layer_info": {},
        "meta": {},
    }


def _rows(steps, width=1):
    return {"grad_norm": torch.ones(len(steps), width, dtype=torch.float64)}


def _write_run(path, steps=(1, 2, 3)):
    sink = JSONLSink(path)
    sink.write(_header(), list(steps), _rows(steps), [])
    sink.close()


def test_an_existing_run_file_is_kept_unless_overwrite_is_asked_for(tmp_path):
    path = tmp_path / "run.jsonl"
    _write_run(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError) as info:
        JSONLSink(path)
    message = str(info.value)
    assert str(path) in message and "another gradwatch run" in message and "\n" not in message
    assert "overwrite=True" in message and "step 3" in message
    model = nn.Linear(1, 1)
    with Watch(model) as w, pytest.raises(FileExistsError, match="another gradwatch run"):
        w.save(path)
    assert path.read_bytes() == before
    sink = JSONLSink(path, overwrite=True)
    assert path.read_bytes() == before  # replaced when written, not when opened
    sink.write(_header(), [7], _rows([7]), [])
    sink.close()
    assert load_run(path).steps.tolist() == [7]


def test_a_foreign_file_is_never_replaced_even_with_overwrite(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not a gradwatch run file"):
            JSONLSink(path, overwrite=overwrite)
    assert path.read_text() == "my notes\n"


def test_a_file_filled_after_the_sink_was_made_is_not_clobbered(tmp_path):
    path = tmp_path / "run.jsonl"
    sink = JSONLSink(path)
    path.write_text("my notes\n")  # another process wrote there in between
    with pytest.raises(FileExistsError):
        sink.write(_header(), [1], _rows([1]), [])
    assert path.read_text() == "my notes\n"


def test_fresh_run_path_gives_new_names_and_makes_the_folder(tmp_path, monkeypatch):
    from gradwatch.watch import runfile

    monkeypatch.setattr(runfile.time, "strftime", lambda fmt, *a: "20240102-030405")
    folder = tmp_path / "deep" / "runs"
    a = runfile.fresh_run_path(folder)
    b = runfile.fresh_run_path(folder)
    assert a != b and isinstance(a, str)
    assert os.path.basename(a) == "20240102-030405-1.jsonl"
    assert os.path.basename(b) == "20240102-030405-2.jsonl"
    assert os.path.dirname(a) == str(folder) and os.path.getsize(a) == 0  # reserved, empty
    _write_run(a)
    assert load_run(a).steps.tolist() == [1, 2, 3]
    monkeypatch.chdir(tmp_path)
    assert runfile.fresh_run_path().startswith(os.path.join("runs", "20240102-030405-"))
    assert {"fresh_run_path", "JSONLSink"} <= set(runfile.__all__)


def test_each_write_is_one_write_of_whole_lines(tmp_path, monkeypatch):
    from gradwatch.watch import runfile

    path = tmp_path / "run.jsonl"
    calls = []

    class Counting:
        def __init__(self, f):
            self.f = f

        def write(self, text):
            calls.append(text)
            return self.f.write(text)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    real_open = open
    monkeypatch.setattr(
        runfile, "open", lambda *a, **k: Counting(real_open(*a, **k)), raising=False
    )
    sink = JSONLSink(path)
    for n, steps in enumerate(([1, 2], [3], [4, 5, 6]), start=1):
        sink.write(_header(), steps, _rows(steps), [])
        assert len(calls) == n  # header and records together, then flushed
        text = path.read_text()  # what a reader tailing the file sees now
        assert text.endswith("\n") and all(json.loads(x) for x in text.splitlines())
    sink.close()
    assert load_run(path).steps.tolist() == [1, 2, 3, 4, 5, 6]


def test_a_row_of_the_wrong_width_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "run.jsonl"
    head = {"format": "gradwatch-run", "version": 1, **_header(("a", "b"))}
    path.write_text(
        json.dumps(head) + "\n"
        + '{"step": 1, "grad_norm": [0.5, 0.5]}\n'
        + '{"step": 2, "grad_norm": [0.5, 0.5, 0.5]}\n'
        + '{"step": 3, "grad_norm": [0.5, 0.5]}\n'
    )
    with pytest.raises(ValueError) as info:
        load_run(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message and "grad_norm" in message
    assert "3 values" in message and "2 layers" in message and "\n" not in message


def test_a_write_after_close_appends_and_never_rewrites_the_header(tmp_path):
    path = tmp_path / "run.jsonl"
    sink = JSONLSink(path)
    sink.write(_header(), [1, 2], _rows([1, 2]), [])
    sink.close()
    sink.write(_header(), [], _rows([]), [])  # e.g. a second Watch.close(): nothing new
    sink.write(_header(), [3], _rows([3]), [])
    sink.close()
    assert load_run(path).steps.tolist() == [1, 2, 3]
    assert path.read_text().count('"format"') == 1
