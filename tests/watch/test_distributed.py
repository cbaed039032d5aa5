"""Under DDP and FSDP2 (two gloo processes on the CPU) the Watch reports the numbers that one
process on the whole batch reports, with one collective per read; only rank 0 writes."""

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from gradwatch import Watch

WORLD, STEPS, BATCH = 2, 4, 8
STATS = ("grad_norm", "param_norm", "update_ratio", "nonfinite")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 7), nn.ReLU(), nn.Linear(7, 3)
    ).double()


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(BATCH, 6, generator=g, dtype=torch.float64), torch.randn(
        BATCH, 3, generator=g, dtype=torch.float64
    )


def _train(model: nn.Module, rank: int, world: int, out: Path) -> dict[str, list]:
    """STEPS of SGD on this rank's share of each batch; every statistic on every step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Watch(model, detail_every=1) as watch:
        watch.save(out / f"run{rank}.jsonl")
        for step in range(STEPS):
            x, y = _batch(step)
            x, y = x.chunk(world)[rank], y.chunk(world)[rank]
            nn.functional.mse_loss(model(x), y).backward()
            watch.step()
            opt.step()
            opt.zero_grad()
    h = watch.history
    return {"layers": list(h.layers), **{s: h[s].tolist() for s in STATS}}


def _worker(rank: int, kind: str, out: str) -> None:
    out_dir = Path(out)
    dist.init_process_group(
        "gloo", init_method=f"file://{out_dir / 'store'}", rank=rank, world_size=WORLD
    )
    try:
        model = _model()
        if kind == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(model)
        else:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh("cpu", (WORLD,))
            for layer in model:
                if isinstance(layer, nn.Linear):
                    fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
        calls = []
        all_reduce, all_gather = dist.all_reduce, dist.all_gather_into_tensor

        def counting_reduce(tensor: torch.Tensor, *args: object, **kwargs: object) -> object:
            calls.append(("all_reduce", tensor.numel()))
            return all_reduce(tensor, *args, **kwargs)

        def counting_gather(out: torch.Tensor, tensor: torch.Tensor, *args: object,
                            **kwargs: object) -> object:
            if tensor.ndim == 2:  # the Watch's (statistics, layers) block; FSDP2's are flat
                calls.append(("all_gather", tensor.numel()))
            return all_gather(out, tensor, *args, **kwargs)

        # counts the Watch's collectives (FSDP2 itself all-gathers flat parameter buffers)
        dist.all_reduce, dist.all_gather_into_tensor = counting_reduce, counting_gather
        try:
            result = _train(model, rank, WORLD, out_dir)
        finally:
            dist.all_reduce, dist.all_gather_into_tensor = all_reduce, all_gather
        result["collectives"] = [name for name, _ in calls]
        (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _spawn(kind: str, tmp_path: Path) -> list[dict]:
    mp.spawn(_worker, args=(kind, str(tmp_path)), nprocs=WORLD, join=True)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    return _train(_model(), 0, 1, tmp_path_factory.mktemp("single"))


def _assert_same(run: dict, ref: dict) -> None:
    layers = [n.removeprefix("module.") for n in run["layers"]]  # DDP wraps the model
    assert layers == ref["layers"]
    for s in STATS:
        got, want = torch.tensor(run[s]), torch.tensor(ref[s])
        assert got.shape == want.shape == (STEPS, len(layers)), s
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0, equal_nan=True, msg=s)


@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_two_processes_report_the_single_process_numbers(
    kind: str, reference: dict, tmp_path: Path
) -> None:
    runs = _spawn(kind, tmp_path)
    for run in runs:
        _assert_same(run, reference)
    # Only rank 0 wrote its run file.
    assert (tmp_path / "run0.jsonl").exists() and not (tmp_path / "run1.jsonl").exists()
    if kind == "ddp":  # DDP's gradients are already reduced: the Watch adds no collective
        assert all(r["collectives"] == [] for r in runs)
    else:  # per step one all-gather for the gradient read and one for the update measured
        # after it (the last step's update is measured by a next step that never comes)
        assert all(r["collectives"] == ["all_gather"] * (2 * STEPS - 1) for r in runs)
