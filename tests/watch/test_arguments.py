"""Bad arguments to Watch get a TypeError / ValueError naming the argument, never a raw
Python error from deep inside (or a 32 GB allocation)."""

import re

import pytest
import torch
from torch import nn

import gradwatch as gw
from gradwatch.integrations.sinks import CSVSink


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"sinks": "CSV"}, TypeError, "sinks: expected a list of sinks, got str"),
        ({"sinks": [object()]}, TypeError, "sinks[0]: expected an object with write"),
        ({"modules": 123}, TypeError, "modules: expected a name pattern, an nn.Module type"),
        ({"modules": [1.5]}, TypeError, "modules: expected name patterns or nn.Module types"),
        ({"modules": int}, TypeError, "modules: expected name patterns or nn.Module types"),
        ({"meta": "x"}, TypeError, "meta: expected a dict of str to str, got str"),
        ({"meta": {"a": 1}}, TypeError, "meta: expected str keys and values, got 'a': 1"),
        ({"scaler": "x"}, TypeError, "scaler: expected a torch.amp.GradScaler (or None), got str"),
        ({"activations": "yes"}, TypeError, "activations: expected True or False, got 'yes'"),
        ({"history": 10**9}, ValueError, "history: 1000000000 rows for 2 layers and 1 activations"),
        ({"history": 1}, ValueError, "history: expected an int >= 2, got 1"),
        ({"flush_every": 0}, ValueError, "flush_every: expected an int >= 1, got 0"),
        ({"flush_seconds": 0}, ValueError, "flush_seconds: expected seconds > 0"),
        ({"flush_seconds": float("nan")}, ValueError, "flush_seconds: expected seconds > 0"),
    ],
    ids=lambda v: str(v)[:30] if not isinstance(v, type) else v.__name__,
)
def test_bad_watch_arguments_name_themselves(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        gw.Watch(_model(), **kwargs)


def test_one_sink_instead_of_a_list_says_how_to_pass_it(tmp_path):
    with pytest.raises(TypeError, match=r"got one CSVSink; pass sinks=\[CSVSink\(\.\.\.\)\]"):
        gw.Watch(_model(), sinks=CSVSink(tmp_path / "run.csv"))


def test_the_history_limit_allocates_nothing_first(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tables allocated before the history check")

    monkeypatch.setattr("gradwatch.watch.watch.Tables", refuse)
    with pytest.raises(ValueError, match="GiB of tables"):
        gw.Watch(_model(), history=10**9)


def test_good_arguments_of_every_kind_still_work(tmp_path):
    model = _model()
    scaler = torch.amp.GradScaler("cpu")
    with gw.Watch(model, modules=(nn.Linear, "1"), meta={"a": "1"}, scaler=scaler,
                  activations=False, history=4096, flush_every=5, flush_seconds=float("inf"),
                  sinks=(CSVSink(tmp_path / "r.csv"),)) as w:
        model(torch.randn(2, 3)).sum().backward()
        w.step()
    assert w.history.meta["a"] == "1" and len(w.history) == 1


def test_save_names_a_bad_path():
    model = _model()
    with gw.Watch(model) as w:
        pass
    with pytest.raises(TypeError, match="path: expected a file path or None, got int"):
        w.save(3)  # type: ignore[arg-type]
