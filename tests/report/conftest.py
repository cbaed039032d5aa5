"""Runs shared by the report tests: one live Watch run, rendered once per session."""

import pytest
import torch
from report_runs import NASTY, batches, train
from torch import nn

from gradwatch.report import render_run


class _Net(nn.Module):
    """An LSTM, a ReLU and a head whose names a page must escape."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 8, batch_first=True)
        self.add_module('act"$x$', nn.ReLU())
        self.add_module(NASTY, nn.Linear(8, 3))

    def forward(self, x):
        h = getattr(self, 'act"$x$')(self.rnn(x)[0][:, -1])
        return getattr(self, NASTY)(h)


@pytest.fixture(scope="session")
def lstm(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("lstm")
    w = train(
        _Net(),
        batches(5, (4, 20, 4), classes=3),
        path=d / "run.jsonl",
        recurrent_every=2,
        detail_every=2,
        meta={"note": "<img src=x onerror=alert(1)> & more"},
    )
    h, found = w.history, w.diagnose()
    page = render_run(h, found, d / "live.html", title=f"run {NASTY}")
    return h, found, d, page
