"""Crash safety: a training process killed with SIGKILL while it writes its run file leaves a
file that load_run reads up to the last complete record (with a warning when a record was cut);
hostile or broken files get one ValueError line that names the path, never a parser traceback;
the CLI prints one line and exits non-zero; reports are replaced atomically."""

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import gradwatch as gw
from gradwatch import cli
from gradwatch.watch import Watch, load_run

# The child trains under a Watch that flushes its run file at every step. Each flush's text is
# written in two halves; once RECORDS steps are on disk it says "mid" between the halves of
# the next record and waits there, so the parent's SIGKILL lands inside a record. With
# ``--free`` it never waits: the kill lands wherever the loop happens to be.
CHILD = textwrap.dedent("""
    import sys, time, torch
    from torch import nn
    from gradwatch.watch import Watch

    path, records, free = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "--free"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    watch = Watch(model, optimizer=opt, detail_every=1, history=8).attach()
    watch.save(path)
    real = watch._file

    class Halves:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, text):
            half = len(text) // 2
            self.f.write(text[:half])
            self.f.flush()
            self.n += 1  # one record per flush
            if not free and self.n > records:
                print("mid", flush=True)
                time.sleep(60)
            self.f.write(text[half:])

        def flush(self):
            self.f.flush()

        def close(self):
            self.f.close()

    step = 0
    while True:
        step += 1
        model(torch.randn(16, 4)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        watch.flush()
        if real.file is not None and not isinstance(real.file, Halves):
            real.file = Halves(real.file)
        if step == records:
            print("ready", flush=True)
""")


def _kill_child(tmp_path, records, free):
    path = tmp_path / "run.jsonl"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(records), "--free" if free else "-"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        want = "ready" if free else "mid"
        for line in proc.stdout:
            if line.strip() == want:
                break
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return path


def test_sigkill_inside_a_record_loads_every_complete_record_with_a_warning(tmp_path):
    path = _kill_child(tmp_path, records=20, free=False)
    assert not path.read_bytes().endswith(b"\n")  # the kill did cut a record
    with pytest.warns(RuntimeWarning, match="skipped 1 incomplete"):
        h = load_run(path)
    n = len(h)
    assert n >= 20 and h.steps.tolist() == list(range(1, n + 1))
    assert torch.isfinite(h["grad_norm"]).all() and torch.isfinite(h["param_norm"]).all()
    with pytest.warns(RuntimeWarning, match="skipped 1"):
        gw.report(path, tmp_path / "report.html")  # and the cut file still makes a report


def test_sigkill_anywhere_in_the_loop_loads_what_was_flushed(tmp_path):
    path = _kill_child(tmp_path, records=30, free=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cut tail, if the kill landed there
        h = load_run(path)
    n = len(h)
    assert n >= 29 and h.steps.tolist() == list(range(1, n + 1))  # nothing lost before it


HEAD = {"format": "gradwatch-run", "version": 1, "layers": ["a"], "layer_kinds": ["Linear"],
        "activations": [], "activation_kinds": [], "layer_info": {}, "meta": {}}
GOOD = json.dumps(HEAD) + "\n"

BROKEN = {
    "empty": b"",
    "whitespace": b"\n\n  \n",
    "binary": bytes(range(256)) * 4,
    "nul bytes": b"\x00" * 64,
    "pickle": pickle.dumps({"layers": ["a"]}),
    "latin-1": '{"format": "gradwatch-run", "caf\xe9"}'.encode("latin-1"),
    "truncated header": GOOD[:40].encode(),
    "json list": b"[1, 2, 3]\n",
    "json string": b'"gradwatch-run"\n',
    "other format": b'{"format": "tensorboard"}\n',
    "future version": GOOD.replace('"version": 1', '"version": 2').encode(),
    "header without layers": b'{"format": "gradwatch-run", "version": 1}\n',
    "layers not a list": GOOD.replace('["a"]', '"abc"', 1).encode(),
    "meta not a dict": GOOD.replace('"meta": {}', '"meta": [1]').encode(),
    "deeply nested header": b"[" * 100_000 + b"]" * 100_000 + b"\n",
}


def _cases(table):
    return [pytest.param(v, id=k) for k, v in table.items()]


@pytest.mark.parametrize("content", _cases(BROKEN))
def test_broken_files_get_one_value_error_naming_the_path(tmp_path, content):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_run(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    # no JSON parser traceback chained to it
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None


BAD_RECORDS = {
    "string value": '{"step": 2, "grad_norm": ["x"]}',
    "null value": '{"step": 2, "grad_norm": [null]}',
    "step overflows": '{"step": 1e400, "grad_norm": [1.0]}',
    "record is a list": "[1, 2]",
    "record is a number": "7",
    "deeply nested record": "[" * 100_000 + "]" * 100_000,
    "profile missing fields": '{"recurrent": "rnn", "step": 2, "profile": {"lag": [1]}}',
}


@pytest.mark.parametrize("record", _cases(BAD_RECORDS))
def test_a_wrong_record_is_skipped_with_a_warning_and_the_rest_loads(tmp_path, record):
    path = tmp_path / "run.jsonl"
    path.write_text(GOOD + '{"step": 1, "grad_norm": [0.5]}\n' + record + "\n"
                    + '{"step": 3, "grad_norm": [0.25]}\n')
    with pytest.warns(RuntimeWarning, match=f"{path}: skipped 1 incomplete or unreadable"):
        h = load_run(path)
    assert h.steps.tolist() == [1, 3] and h["grad_norm"][:, 0].tolist() == [0.5, 0.25]
    assert h.recurrent == ()
    with pytest.warns(RuntimeWarning, match="skipped 1"):
        gw.report(path, tmp_path / "r.html")  # what loads, renders


def test_header_only_file_is_an_empty_run(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text(GOOD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = load_run(path)
    assert len(h) == 0 and h.layers == ("a",)
    (f,) = gw.diagnose(h)  # never "healthy": nothing was recorded
    assert f.kind == "no_data" and f.severity == "error"


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n\x00\xff", GOOD[:40].encode(),
                                     b'{"hello": 1}\n'], ids=["empty", "binary", "cut", "foreign"])
def test_cli_report_of_a_bad_file_is_one_line_and_a_nonzero_exit(tmp_path, content):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli._app(), ["report", str(path), "-o", str(out)])
    assert result.exit_code != 0
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert lines[0].startswith("gradwatch: error: ValueError: path:")
    assert lines[1:] == ["(run with --verbose for the traceback)"]
    assert "Traceback" not in result.output and not out.exists()


def test_cli_report_of_a_hostile_file_is_one_line_too(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    result = CliRunner().invoke(cli._app(), ["report", str(path)])
    assert result.exit_code != 0 and "ValueError: path:" in result.output


def test_a_failing_render_leaves_the_old_report_untouched(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1))
    with Watch(model) as w:
        for _ in range(3):
            model(torch.randn(4, 3)).sum().backward()
            w.step()
            model.zero_grad()
    out = tmp_path / "report.html"
    gw.report(w.history, out)
    old = out.read_bytes()
    from gradwatch.report import html as page

    def boom(fig, prefix):
        raise RuntimeError("renderer crashed half-way")

    monkeypatch.setattr(page, "inline_svg", boom)
    with pytest.raises(RuntimeError, match="half-way"):
        gw.report(w.history, out)
    assert out.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["report.html"]  # no temporary file left over
