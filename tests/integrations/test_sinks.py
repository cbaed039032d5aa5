"""TensorBoard, W&B (offline), CSV and JSONL sinks: what a Watch wrote is what is read back."""

from __future__ import annotations

import csv
import math
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

from gradwatch import Watch
from gradwatch.integrations import CSVSink, JSONLSink, TensorBoardSink, WandbSink
from gradwatch.integrations.sinks import _Columns
from gradwatch.watch import runfile

STEPS = 7


def train(*sinks, steps: int = STEPS) -> Watch:
    """A tanh/ReLU MLP for a few SGD steps; costly statistics every 2nd step (NaN between)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 6)
    with Watch(model, detail_every=2, sinks=list(sinks)) as watch:
        for _ in range(steps):
            model(x).square().mean().backward()
            watch.step()
            opt.step()
            opt.zero_grad()
    return watch  # closed: everything flushed once


def expected(watch: Watch) -> dict[tuple[str, str, int], float]:
    """(stat, name, step) -> value for every measured value in the Watch's history."""
    h = watch.history
    out = {}
    for stat, table in {**h.layer_stats, **h.activation_stats}.items():
        names = h.layers if stat in h.layer_stats else h.activations
        for r, step in enumerate(h.steps.tolist()):
            for j, name in enumerate(names):
                v = table[r, j].item()
                if not math.isnan(v):
                    out[stat, name, step] = v
    return out


def test_tensorboard_scalars_equal_the_history_and_the_image_is_drawn(tmp_path):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    watch = train(TensorBoardSink(tmp_path, prefix="gw"))
    want = expected(watch)
    acc = ea.EventAccumulator(str(tmp_path), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
    acc.Reload()
    got = {}
    for tag in acc.Tags()["scalars"]:
        _, stat, name = tag.split("/", 2)
        for s in acc.Scalars(tag):
            got[stat, name, s.step] = s.value
    assert got.keys() == want.keys()  # NaN (not measured) skipped, nothing else
    assert ("param_norm", "0", 2) not in got and ("param_norm", "0", 3) in got
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-6, abs=1e-30)  # event files keep float32

    (image,) = {i.step: i for i in acc.Images("gw/gradient_flow")}.values()  # one per flush
    assert image.step == STEPS and image.height == 3 * (128 // 3)
    assert image.width == STEPS * (512 // STEPS)


def test_gradient_flow_image_colours_and_bounded_width():
    cols = _Columns(width=4)
    cols.add(np.array([[1e-6, 1.0, math.nan]] * 3))
    img = cols.image()  # (H, W, 3)
    assert img.shape == (3 * 42, 3 * 170, 3) and img.dtype == np.uint8
    small, big, missing = img[0, 0], img[42, 0], img[84, 0]
    assert small[2] > small[1] and big[0] > 200 and big[1] > 200  # dark blue ... yellow
    assert (missing == 128).all()  # grey: not measured
    cols.add(np.ones((40, 3)))
    assert len(cols.cols) <= 6 and cols.stride > 1


def test_wandb_offline_run_gets_our_keys_on_our_axis(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(
        mode="offline",
        dir=str(tmp_path),
        project="gradwatch-test",
        settings=wandb.Settings(console="off", x_disable_stats=True, x_disable_meta=True),
    )
    try:
        logged: list[tuple[dict, dict]] = []
        real_log = run.log
        monkeypatch.setattr(run, "log", lambda d, **kw: (logged.append((d, kw)), real_log(d, **kw)))
        watch = train(WandbSink(prefix="gw"))  # the active run
        want = expected(watch)
        summary = dict(run.summary)
    finally:
        run.finish()
    assert all(kw == {} for _, kw in logged)  # never step=: the user's step counter is theirs
    assert [d["gw/step"] for d, _ in logged] == list(range(1, STEPS + 1))  # a row per step
    got = {
        (*key.split("/", 2)[1:], d["gw/step"]): v
        for d, _ in logged
        for key, v in d.items()
        if key != "gw/step"
    }
    assert got == want
    assert summary["gw/step"] == STEPS
    last = {(stat, name): v for (stat, name, step), v in want.items() if step == STEPS}
    for (stat, name), v in last.items():
        assert summary[f"gw/{stat}/{name}"] == pytest.approx(v, rel=1e-12)
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))


def test_wandb_without_a_run_says_so(monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setattr(wandb, "run", None)
    with pytest.raises(ValueError, match="run: no active W&B run"):
        WandbSink()


def test_csv_round_trip_and_append(tmp_path):
    path = tmp_path / "g.csv"
    watch = train(CSVSink(path))
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "stat", "name", "value"]
    got = {(stat, name, int(step)): float(v) for step, stat, name, v in rows[1:]}
    assert got == expected(watch)  # exact: float64 written with repr

    train(CSVSink(path), steps=2)  # a second run appends, header once
    text = path.read_text()
    assert text.count("step,stat,name,value") == 1
    assert len(text.splitlines()) > len(rows)


def test_csv_refuses_foreign_files(tmp_path):
    foreign = tmp_path / "data.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(FileExistsError, match=r"path: .* not a gradwatch CSV"):
        CSVSink(foreign)
    with pytest.raises(IsADirectoryError, match="path"):
        CSVSink(tmp_path)


def test_jsonl_is_the_run_file_sink():
    assert JSONLSink is runfile.JSONLSink


@pytest.mark.parametrize(
    ("module", "build", "message"),
    [
        ("tensorboard", lambda p: TensorBoardSink(p), "TensorBoardSink needs tensorboard"),
        ("wandb", lambda p: WandbSink(), "WandbSink needs wandb"),
    ],
)
def test_missing_dependency_names_the_extra(tmp_path, monkeypatch, module, build, message):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=message) as err:
        build(tmp_path)
    assert "pip install 'gradwatch[integrations]'" in str(err.value)


def test_sink_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="log_dir"):
        TensorBoardSink(tmp_path, writer=object())
    with pytest.raises(TypeError, match="writer"):
        TensorBoardSink(writer=object())
    with pytest.raises(ValueError, match="image_steps"):
        TensorBoardSink(os.fspath(tmp_path), image_steps=0)
