"""GradWatchCallback in a real Lightning fit: a deep sigmoid MLP, a few CPU steps."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from gradwatch.integrations import CSVSink  # noqa: E402
from gradwatch.integrations.lightning import GradWatchCallback  # noqa: E402

STEPS = 6

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*LeafSpec.*",
    "ignore:The number of training batches",
    "ignore:.*does not have many workers",
)


class Deep(pl.LightningModule):
    """Ten sigmoid layers: the first gets a vanishing share of the last one's gradient."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        for _ in range(10):
            layers += [nn.Linear(8, 8), nn.Sigmoid()]
        self.net = nn.Sequential(*layers, nn.Linear(8, 1))
        self.fail_at = fail_at
        self.seen: list[torch.Tensor] = []  # (layers,) grad norms this module saw, per step

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
        if self.fail_at is not None and self.global_step == self.fail_at:
            raise RuntimeError("boom")
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        self.seen.append(
            torch.stack(
                [torch.cat([p.grad.flatten() for p in m.parameters()]).norm() for m in linears]
            ).double()
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    return torch.utils.data.DataLoader(data, batch_size=8)


def trainer(tmp_path, cb: GradWatchCallback, **kw) -> pl.Trainer:
    return pl.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(tmp_path, name="run"),
        callbacks=[cb],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def read_metrics(tmp_path) -> list[dict[str, str]]:
    (path,) = tmp_path.glob("run/version_*/metrics.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


def test_fit_logs_norms_at_lightning_steps_and_diagnoses(tmp_path, capsys):
    model = Deep()
    cb = GradWatchCallback(log_every_n_steps=2, detail_every=3, sinks=[CSVSink(tmp_path / "g.csv")])
    trainer(tmp_path, cb, log_every_n_steps=1).fit(model, loader())

    h = cb.history
    assert h.steps.tolist() == list(range(1, STEPS + 1))
    assert h.layers[0] == "net.0" and len(h.layers) == 11
    # read in on_before_optimizer_step: the same gradients the module's own hook sees
    torch.testing.assert_close(h["grad_norm"], torch.stack(model.seen), rtol=1e-6, atol=0)

    kinds = [f.kind for f in cb.findings]
    assert "vanishing" in kinds
    assert "vanishing" in capsys.readouterr().out
    assert not cb.watch.attached  # closed at fit end

    rows = read_metrics(tmp_path)
    ours = [r for r in rows if r.get("gradwatch/grad_norm/net.0")]
    # every recorded step reached the logger, at the step Lightning logs that batch's loss at
    assert sorted(int(r["step"]) for r in ours) == list(range(STEPS))
    losses = {int(r["step"]) for r in rows if r.get("train_loss")}
    assert losses == set(range(STEPS))
    for r in ours:
        row = h["grad_norm"][int(r["step"])]  # watch step s is logged at step s - 1
        for j, name in enumerate(h.layers):
            assert float(r[f"gradwatch/grad_norm/{name}"]) == pytest.approx(row[j].item(), rel=1e-6)
        total = math.sqrt(float((row**2).sum()))
        assert float(r["gradwatch/grad_norm_total"]) == pytest.approx(total, rel=1e-6)
    assert (tmp_path / "g.csv").read_text().count("\n") > STEPS * len(h.layers)


def test_flushes_follow_log_every_n_steps(tmp_path):
    model = Deep()
    cb = GradWatchCallback(log_every_n_steps=4, detail_every=0, verbose=False)
    flushed: list[int] = []

    class Spy:
        def write(self, header, steps, rows, samples):
            flushed.append(len(steps))

        def close(self):
            pass

    cb.sinks = [Spy()]
    trainer(tmp_path, cb).fit(model, loader())
    assert flushed[:2] == [4, 2]  # at global step 4, then the rest at fit end


def test_exception_closes_the_watch_and_still_diagnoses(tmp_path):
    model = Deep(fail_at=3)
    cb = GradWatchCallback(verbose=False)
    with pytest.raises(RuntimeError, match="boom"):
        trainer(tmp_path, cb).fit(model, loader())
    assert not cb.watch.attached
    assert cb.history.steps.tolist() == [1, 2, 3]
    assert any(f.kind == "vanishing" for f in cb.findings)
    assert not any(m._forward_hooks for m in model.modules())


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="every"):
        GradWatchCallback(every=0)
    with pytest.raises(ValueError, match="log_every_n_steps"):
        GradWatchCallback(log_every_n_steps=-1)
    with pytest.raises(ValueError, match="optimizer"):
        GradWatchCallback(optimizer=None)
    with pytest.raises(RuntimeError, match="no fit"):
        _ = GradWatchCallback().history


def test_the_standalone_pytorch_lightning_trainer_takes_it_too():
    ptl = pytest.importorskip("pytorch_lightning")

    class Small(ptl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))

        def training_step(self, batch, i):
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cb = GradWatchCallback(verbose=False)
    ptl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        callbacks=[cb],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(Small(), loader())
    assert cb.history.steps.tolist() == [1, 2] and not cb.watch.attached


class TanhWithValidation(pl.LightningModule):
    """A tanh net trained on small inputs (never saturated) and validated on huge ones."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
        self.validated = 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(0.01 * x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> None:
        self.validated += 1
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(100 * x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_a_validation_loop_does_not_pollute_activation_statistics(tmp_path):
    cb = GradWatchCallback(verbose=False, detail_every=1)
    t = trainer(tmp_path, cb, val_check_interval=2, num_sanity_val_steps=2)
    module = TanhWithValidation()
    t.fit(module, loader(), loader())
    h = cb.history
    assert len(h) == STEPS and module.validated > 8  # sanity check and mid-epoch validations
    assert h["saturated"].max().item() == 0.0  # validation saturates tanh; training does not
