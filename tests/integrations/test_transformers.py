"""GradWatchCallback in a real Hugging Face Trainer run: a tiny model, a few CPU steps."""

from __future__ import annotations

import os

for _k, _v in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("WANDB_MODE", "offline")):
    os.environ.setdefault(_k, _v)

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

transformers = pytest.importorskip("transformers")
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from gradwatch.integrations.transformers import GradWatchCallback  # noqa: E402

STEPS = 6
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


class Deep(nn.Module):
    """Ten sigmoid layers returning {"loss": ...} as the Trainer expects; no download."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        for _ in range(10):
            layers += [nn.Linear(8, 8), nn.Sigmoid()]
        self.net = nn.Sequential(*layers, nn.Linear(8, 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.mse_loss(self.net(x), labels)}


class Data(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(128, 8, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.x[i].sum(0, keepdim=True)}


def make(tmp_path, callbacks=(), **kw) -> Trainer:
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=STEPS,
        per_device_train_batch_size=8,
        learning_rate=0.1,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        **{"report_to": "none", **kw},
    )
    return Trainer(model=Deep(), args=args, train_dataset=Data(), callbacks=list(callbacks))


def train_logs(trainer: Trainer) -> list[dict]:
    return [e for e in trainer.state.log_history if "loss" in e]


def test_norms_reach_log_history_and_equal_the_trainers_grad_norm(tmp_path, capsys):
    cb = GradWatchCallback(detail_every=3)
    trainer = make(tmp_path, [cb], max_grad_norm=0.0, gradient_accumulation_steps=2)
    trainer.train()

    h = cb.history
    assert h.steps.tolist() == list(range(1, STEPS + 1))  # one step per optimizer step
    assert any(f.kind == "vanishing" for f in cb.findings)
    assert "vanishing" in capsys.readouterr().out
    assert not cb.watch.attached

    logs = train_logs(trainer)
    assert [e["step"] for e in logs] == list(range(1, STEPS + 1))
    for e in logs:
        row = h["grad_norm"][e["step"] - 1]  # Trainer step s is the Watch's step s
        for j, name in enumerate(h.layers):
            assert e[f"gradwatch/grad_norm/{name}"] == pytest.approx(row[j].item(), rel=1e-6)
        # no clipping: our total is the Trainer's own (pre-optimizer-step) grad_norm
        assert e["gradwatch/grad_norm_total"] == pytest.approx(e["grad_norm"], rel=1e-5)


def test_norms_are_read_after_the_trainers_clipping(tmp_path):
    cb = GradWatchCallback(verbose=False)
    trainer = make(tmp_path, [cb], max_grad_norm=1e-3)
    trainer.train()
    for e in train_logs(trainer):
        assert e["grad_norm"] > 1e-2  # the Trainer logs the pre-clip norm
        assert e["gradwatch/grad_norm_total"] == pytest.approx(1e-3, rel=1e-3)  # we: post-clip


def test_install_puts_the_values_in_report_to_loggers(tmp_path):
    event_acc = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(tmp_path / "tb")
    try:
        trainer = make(tmp_path, report_to="tensorboard", max_grad_norm=0.0)
        cb = GradWatchCallback(verbose=False).install(trainer)
        trainer.train()
    finally:
        del os.environ["TENSORBOARD_LOGGING_DIR"]
    (events,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    acc = event_acc.EventAccumulator(str(events))
    acc.Reload()
    total = acc.Scalars("train/gradwatch/grad_norm_total")
    assert [s.step for s in total] == list(range(1, STEPS + 1))
    row = cb.history["grad_norm"]
    want = row.square().sum(1).sqrt()
    assert [s.value for s in total] == pytest.approx(want.tolist(), rel=1e-6)


def test_callbacks_list_still_fills_log_history_and_warns_about_report_to(tmp_path):
    seen: list[dict] = []

    class After(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            seen.append(dict(logs or {}))

    cb = GradWatchCallback(verbose=False)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(tmp_path / "tb")
    try:
        trainer = make(tmp_path, [cb, After()], report_to="tensorboard")
        with pytest.warns(RuntimeWarning, match="install"):
            trainer.train()
    finally:
        del os.environ["TENSORBOARD_LOGGING_DIR"]
    assert all("gradwatch/grad_norm_total" in e for e in train_logs(trainer))
    assert all("gradwatch/grad_norm_total" in e for e in seen if "loss" in e)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="every"):
        GradWatchCallback(every=0)
    with pytest.raises(ValueError, match="optimizer"):
        GradWatchCallback(optimizer=None)
    with pytest.raises(TypeError, match="trainer"):
        GradWatchCallback().install(object())
    with pytest.raises(RuntimeError, match="not started"):
        _ = GradWatchCallback().history
