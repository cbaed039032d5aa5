"""Training runs under a Watch, shared by the report tests (imported by name: tests/report is
on sys.path under pytest's default import mode)."""

import torch
from torch import nn

import gradwatch as gw

NASTY = "<script>alert(1)</script>"


def train(model, batches, path=None, loss=nn.functional.cross_entropy, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gw.Watch(model, optimizer=opt, **kw) as w:
        if path is not None:
            w.save(path)
        for x, y in batches:
            loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    return w


def batches(n, shape, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(*shape, generator=g), torch.randint(0, classes, (shape[0],), generator=g))
        for _ in range(n)
    ]
