"""Runs with nothing to judge: no steps, no readable records, no gradient. Each is said to be
so, never passed off as a healthy run."""

import json

import pytest
import torch
from torch import nn

import gradwatch as gw
from gradwatch.watch import JSONLSink, Watch, load_run

HEAD = {
    "format": "gradwatch-run",
    "version": 1,
    "layers": ["a"],
    "layer_kinds": ["Linear"],
    "activations": [],
    "activation_kinds": [],
    "layer_info": {},
    "meta": {},
}
GOOD = json.dumps(HEAD) + "\n"


def test_a_file_of_only_unreadable_records_is_an_error(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text(GOOD + '{"step": 1, "grad_norm": ["x"]}\n' + "[1, 2]\n" + "7\n")
    with pytest.raises(ValueError) as info:
        load_run(path)
    message = str(info.value)
    assert message.startswith("path:") and str(path) in message and "\n" not in message
    assert "no readable records" in message and "3" in message


def test_a_run_cut_in_its_first_record_is_an_empty_run_with_a_warning(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text(GOOD + '{"step": 1, "grad_no')  # the writer was killed mid-record
    with pytest.warns(RuntimeWarning, match="skipped 1 incomplete"):
        h = load_run(path)
    assert len(h) == 0 and [f.kind for f in gw.diagnose(h)] == ["no_data"]


def test_a_saved_watch_that_recorded_nothing_loads_as_no_data(tmp_path):
    path = tmp_path / "run.jsonl"
    model = nn.Linear(3, 2)
    with Watch(model, sinks=[JSONLSink(path)]) as w:
        w.flush()
        model(torch.randn(4, 3)).sum()  # a forward, but no backward and no step()
    h = load_run(path)
    assert len(h) == 0 and len(h.layers) == 1  # the header came with the first flush
    assert [f.kind for f in gw.diagnose(h)] == ["no_data"]


def test_a_saved_run_of_zero_gradients_loads_as_zero_gradient(tmp_path):
    path = tmp_path / "run.jsonl"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Watch(model, detail_every=1, sinks=[JSONLSink(path)]) as w:
        for _ in range(6):
            model(torch.randn(4, 3)).square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=False)
            w.step()  # too late: the gradients are already zeroed
    assert [f.kind for f in gw.diagnose(load_run(path))] == ["zero_gradient"]
