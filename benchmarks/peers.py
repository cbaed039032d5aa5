"""gradwatch's Watch against other gradient monitors, and against the floor, in one process.

Run: .venv/bin/python benchmarks/peers.py            (full measurement, ~15 min on 2 cores)
     .venv/bin/python benchmarks/peers.py --quick    (a few rounds: checks that it all runs)
Peers (not project dependencies; torch stays pinned). BackPACK's torchvision requirement pulls
a CUDA torchvision wheel that does not load with the CPU torch and breaks `import
lightning.pytorch`, so Cockpit and BackPACK go in without their dependencies:
    .venv/bin/pip install -c constraints.txt gradviz traintools wandb lightning
    .venv/bin/pip install -c constraints.txt --no-deps cockpit-for-pytorch \
        backpack-for-pytorch unfoldNd
    .venv/bin/pip install -c constraints.txt einops json-tricks seaborn scipy pandas
A peer that is not installed gets a row saying so; the others still run.

Every variant trains its own identical copy of the model with SGD. Variants are interleaved
(A B C ... A B C ...), each turn `--steps` training steps; the ratio is the median turn over
the bare loop's median turn. With 10 steps a turn, every turn holds exactly one step of the
every-10 variants; events rarer than that (the Watch's detailed step at every=10, W&B at
log_freq=100) land in one turn in ten and the median leaves them out: the direct timings
printed with the floor table are means over every call, so they include them.

"floor": the bare loop plus one read of every gradient (`_timing.read_all`), as in
watch_overhead.py: the cost of reading every gradient byte once, which any per-step gradient
monitor pays. Over the floor: (watch - bare) / (floor - bare), step medians; the target
"within 1.5x of the floor" means watch <= bare + 1.5 * (floor - bare). Because floor - bare is
a few percent of a step (under the noise on some workloads), the same ratio is also given from
direct timings of the two calls themselves (watch.step() and the floor read, each right after
backward, mean over all steps).

Cockpit's economy configuration costs tens of bare steps on a CPU (per-sample gradients of
every parameter). It is timed apart from the interleaved set, alternating single bare and
Cockpit steps, so that it does not take the whole run's time budget.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.metadata as md
import os
import statistics
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved, machine, median, read_all
from watch_overhead import cnn, lstm, mlp

from gradwatch import Watch

Batch = Callable[[], tuple[torch.Tensor, torch.Tensor]]
LR = 1e-3


class Transformer(nn.Module):
    """16 pre-built encoder blocks (d=512, 8 heads, FFN 2048): 50.4M parameters."""

    def __init__(self) -> None:
        super().__init__()
        block = nn.TransformerEncoderLayer(512, 8, 2048, dropout=0.0, batch_first=True)
        self.blocks = nn.TransformerEncoder(block, 16, enable_nested_tensor=False)
        self.head = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean(1))  # (B, T, 512) -> (B, 10)


def transformer() -> tuple[nn.Module, Batch]:
    x, y = torch.randn(4, 32, 512), torch.randint(0, 10, (4,))  # 4 sequences of 32 tokens
    return Transformer(), lambda: (x, y)


WORKLOADS: dict[str, tuple[str, Callable[[], tuple[nn.Module, Batch]]]] = {
    "mlp": ("16-layer tanh MLP, width 512, batch 256", mlp),
    "cnn": ("CNN, 3 conv + 2 fc, 32x32, batch 64", cnn),
    "lstm": ("2-layer LSTM, 100 steps, hidden 128, batch 32", lstm),
    "transformer": ("transformer, 16 blocks d=512, 4x32 tokens", transformer),
}


# ------------------------------------------------------------------------- the monitors
class Monitor:
    """One tool in a training loop: work after backward, work after the optimizer step."""

    def after_backward(self, loss: torch.Tensor, step: int) -> None:
        pass

    def after_step(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class Floor(Monitor):
    def __init__(self, model: nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]

    def after_backward(self, loss: torch.Tensor, step: int) -> None:
        read_all(self.params)


class GradwatchMon(Monitor):
    def __init__(self, model: nn.Module, every: int) -> None:
        self.watch = Watch(model, every=every).attach()

    def after_backward(self, loss: torch.Tensor, step: int) -> None:
        self.watch.step()

    def close(self) -> None:
        self.watch.close()


class LightningMon(Monitor):
    """`grad_norm` as a LightningModule's on_before_optimizer_step would log it."""

    def __init__(self, model: nn.Module) -> None:
        from lightning.pytorch.utilities import grad_norm

        self.model, self.grad_norm = model, grad_norm
        self.logged: dict[str, float] = {}

    def after_backward(self, loss: torch.Tensor, step: int) -> None:
        self.logged = {k: float(v) for k, v in self.grad_norm(self.model, norm_type=2).items()}


class WandbMon(Monitor):
    """wandb.watch(log="gradients") and the user's wandb.log of the loss each step."""

    run: Any = None  # one offline run per process; each watched model gets its own prefix

    def __init__(self, model: nn.Module, log_freq: int | None) -> None:
        import wandb

        if WandbMon.run is None:
            WandbMon.run = wandb.init(
                project="gradwatch-bench", mode="offline", dir=tempfile.mkdtemp(),
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        self.model = model
        if log_freq is not None:
            WandbMon.run.watch(model, log="gradients", log_freq=log_freq)
            self.watched = True
        else:
            self.watched = False

    def after_step(self, step: int) -> None:
        WandbMon.run.log({"loss": self.loss})

    def after_backward(self, loss: torch.Tensor, step: int) -> None:
        self.loss = float(loss.detach())

    def close(self) -> None:
        if self.watched:
            WandbMon.run.unwatch(self.model)


class GradvizMon(Monitor):
    def __init__(self, model: nn.Module) -> None:
        from gradviz import GradViz

        self.gv = GradViz(model)
        self.gv.attach()

    def after_step(self, step: int) -> None:
        self.gv.step()  # README: after optimizer.step()

    def close(self) -> None:
        self.gv.detach()


class TraintoolsMon(Monitor):
    def __init__(self, model: nn.Module) -> None:
        from traintools import GradientHealthMonitor

        self.model, self.mon = model, GradientHealthMonitor(max_grad_norm=1.0)

    def after_backward(self, loss: torch.Tensor, step: int) -> None:
        self.report = self.mon.inspect(self.model, step=step, lr=LR)


@dataclass(frozen=True)
class Tool:
    name: str
    make: Callable[[nn.Module], Monitor] | None  # None: the bare loop
    records: str
    package: str = ""  # distribution name, for the version and the "not installed" row
    per_layer: bool = True  # records per-layer (or finer) norms: what the target compares


TOOLS = [
    Tool("bare", None, "-", per_layer=False),
    Tool("floor: one read of all grads", Floor,
         "nothing kept: the least any per-step monitor does", per_layer=False),
    Tool("gradwatch Watch every=1", lambda m: GradwatchMon(m, 1),
         "per layer every step: grad norm, NaN/Inf count; every 10th recorded step also "
         "param norm, update/weight ratio, per-activation saturated/dead/mean|a|; LSTM "
         "grad-vs-lag every 100; bounded on-device history", "gradwatch"),
    Tool("gradwatch Watch every=10", lambda m: GradwatchMon(m, 10),
         "the same, every 10th step", "gradwatch"),
    Tool("Lightning grad_norm, logged every step", LightningMon,
         "per-parameter grad norm + total, every step, handed to a logger as floats; no "
         "NaN count, no weights, no activations", "lightning"),
    Tool("wandb.watch gradients, log_freq=1", lambda m: WandbMon(m, 1),
         "64-bin histogram of each parameter's gradient every step (no norms), + the loss",
         "wandb", per_layer=False),
    Tool("wandb.watch gradients, log_freq=100", lambda m: WandbMon(m, 100),
         "the same histograms every 100th step, + the loss every step", "wandb",
         per_layer=False),
    Tool("wandb.log(loss) only, no watch", lambda m: WandbMon(m, None),
         "the loss only: wandb's own per-step cost, for reference", "wandb", per_layer=False),
    Tool("gradviz GradViz", GradvizMon,
         "per-parameter grad norm every step, one host .item() each, rows kept in a list "
         "(halved past 1e6)", "gradviz"),
    Tool("traintools GradientHealthMonitor", TraintoolsMon,
         "per parameter every step: grad norm, param norm, lr*|g|/|w|, NaN/Inf counts, max|g|, "
         "zero share; ~10 passes and ~6 host syncs per tensor; returned, not kept", "traintools"),
]
COCKPIT_RECORDS = ("per-sample gradients of every parameter each step -> 1-D histogram of "
                   "their elements, norm/inner-product/orthogonality tests, alpha, per-param "
                   "grad norm, distance, update size, loss")


def version(package: str) -> str | None:
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------- measurement
@dataclass
class Variant:
    go: Callable[[], None]
    calls: list[float] = field(default_factory=list)  # seconds of after_backward + after_step
    monitor: Monitor | None = None


def make_variant(tool: Tool, base: nn.Module, batch: Batch, steps: int) -> Variant:
    torch.manual_seed(0)
    model = copy.deepcopy(base)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    mon = tool.make(model) if tool.make is not None else Monitor()
    v = Variant(go=lambda: None, monitor=mon)
    counter = [0]

    def go() -> None:
        for _ in range(steps):
            x, y = batch()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            t0 = time.perf_counter()
            mon.after_backward(loss, counter[0])
            t1 = time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
            mon.after_step(counter[0])
            v.calls.append(t1 - t0 + time.perf_counter() - t2)
            opt.zero_grad()
            counter[0] += 1

    v.go = go
    return v


def cockpit_ratio(base: nn.Module, batch: Batch, pairs: int, cap_s: float) -> str:
    """Cockpit economy against bare, alternating single steps; or why it does not run."""
    if version("cockpit-for-pytorch") is None:
        return "not installed"
    if "pkg_resources" not in sys.modules:  # cockpit 1.0.2 reads its version through it,
        shim = types.ModuleType("pkg_resources")  # gone from setuptools >= 81

        class DistributionNotFound(Exception):
            pass

        shim.DistributionNotFound = DistributionNotFound  # type: ignore[attr-defined]
        shim.get_distribution = (  # type: ignore[attr-defined]
            lambda name: types.SimpleNamespace(version=md.version("cockpit-for-pytorch")))
        sys.modules["pkg_resources"] = shim
    from backpack import extend
    from cockpit import Cockpit
    from cockpit.utils.configuration import configuration

    torch.manual_seed(0)
    bare_model, model = copy.deepcopy(base), extend(copy.deepcopy(base))
    bare_opt = torch.optim.SGD(bare_model.parameters(), lr=LR)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = extend(nn.CrossEntropyLoss())
    per_example = nn.CrossEntropyLoss(reduction="none")
    cp = Cockpit(model.parameters(), quantities=configuration("economy"))
    step = [0]  # Cockpit's README counts from 0 (its first step starts the alpha pair)

    def bare() -> None:
        x, y = batch()
        F.cross_entropy(bare_model(x), y).backward()
        bare_opt.step()
        bare_opt.zero_grad()

    def cockpit() -> None:
        x, y = batch()
        out = model(x)
        loss, losses = loss_fn(out, y), per_example(out, y)
        info = {"batch_size": x.shape[0], "individual_losses": losses, "loss": loss,
                "optimizer": opt}
        with cp(step[0], info=info):
            loss.backward(create_graph=cp.create_graph(step[0]))
        opt.step()
        opt.zero_grad()
        step[0] += 1

    def timed(fn: Callable[[], None]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bare()
            first = timed(cockpit)  # the first step also builds BackPACK's buffers
            b, c = [timed(bare)], [first]
            if first * pairs <= cap_s:
                b, c = [], []
                for _ in range(pairs):
                    b.append(timed(bare))
                    c.append(timed(cockpit))
    except (NotImplementedError, AttributeError, RuntimeError, KeyError) as err:
        msg = str(err).split("\n")[0][:90]
        return f"fails: {type(err).__name__}: {msg}"
    note = f"{len(c)} step{'s' if len(c) > 1 else ''}"
    if len(c) == 1 and first * pairs > cap_s:
        note = "first step only"
    return f"{statistics.median(c) / statistics.median(b):.1f}x ({note})"


@dataclass
class Result:
    bare_ms: float
    ratio: dict[str, float | None]
    call_ms: dict[str, float]  # mean direct time of the monitor's own calls, per step
    cockpit: str
    errors: dict[str, str]


def run_workload(key: str, rounds: int, steps: int, warmup: int, cockpit_pairs: int,
                 cockpit_cap: float, tools: list[Tool]) -> Result:
    torch.manual_seed(0)
    base, batch = WORKLOADS[key][1]()
    variants: dict[str, Variant] = {}
    errors: dict[str, str] = {}
    for tool in tools:
        if tool.package and version(tool.package) is None:
            errors[tool.name] = f"not installed ({tool.package})"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                variants[tool.name] = make_variant(tool, base, batch, steps)
                variants[tool.name].go()  # fail here, not inside the timing loop
        except Exception as err:  # a peer that breaks on this workload gets its error shown
            errors[tool.name] = f"fails: {type(err).__name__}: {str(err)[:80]}"
            variants.pop(tool.name, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = interleaved({k: v.go for k, v in variants.items()}, rounds, warmup)
    for v in variants.values():
        if v.monitor is not None:
            v.monitor.close()
    bare = median(times["bare"])
    ratio: dict[str, float | None] = {k: median(t) / bare for k, t in times.items()}
    skip = steps * (1 + warmup)  # the calls of the check run and the warm-up turns
    call_ms = {k: 1e3 * statistics.fmean(v.calls[skip:]) for k, v in variants.items()}
    cockpit = cockpit_ratio(base, batch, cockpit_pairs, cockpit_cap) if cockpit_pairs else (
        "skipped (--cockpit-pairs 0)")
    return Result(bare / steps * 1e3, ratio, call_ms, cockpit, errors)


# ------------------------------------------------------------------------- printing
def fmt_ratio(res: Result, name: str) -> str:
    r = res.ratio.get(name)
    return f"{r:.3f}x" if r is not None else res.errors.get(name, "-")


def print_tables(results: dict[str, Result], tools: list[Tool]) -> None:
    keys = list(results)
    print("\n| tool | " + " | ".join(WORKLOADS[k][0] for k in keys) + " | records |")
    print("|---|" + "---|" * len(keys) + "---|")
    print("| bare step (median) | " + " | ".join(f"{results[k].bare_ms:.1f} ms" for k in keys)
          + " | - |")
    for tool in tools[1:]:
        ver = version(tool.package) if tool.package else None
        label = f"{tool.name} ({ver})" if ver else tool.name
        cells = " | ".join(fmt_ratio(results[k], tool.name) for k in keys)
        print(f"| {label} | {cells} | {tool.records} |")
    ver = version("cockpit-for-pytorch")
    label = f"Cockpit economy ({ver}, timed apart)" if ver else "Cockpit economy"
    print(f"| {label} | " + " | ".join(results[k].cockpit for k in keys)
          + f" | {COCKPIT_RECORDS} |")

    w1, fl = "gradwatch Watch every=1", "floor: one read of all grads"
    print("\nAgainst the floor (target: Watch every=1 within 1.5x of the floor's extra time)\n")
    print("| workload | floor | Watch every=1 | over the floor, step medians "
          "| floor read call | watch.step() call | over the floor, direct |")
    print("|---|---|---|---|---|---|---|")
    for k in keys:
        res = results[k]
        if res.ratio.get(w1) is None or res.ratio.get(fl) is None:
            continue
        f_r, w_r = res.ratio[fl], res.ratio[w1]
        assert f_r is not None and w_r is not None
        over = (w_r - 1) / (f_r - 1) if f_r - 1 > 0.002 else float("nan")
        over_s = f"{over:.2f}x" if over == over else "floor under noise"
        fc, wc = res.call_ms[fl], res.call_ms[w1]
        print(f"| {WORKLOADS[k][0]} | {f_r:.3f}x | {w_r:.3f}x | {over_s} | {fc:.2f} ms "
              f"| {wc:.2f} ms | {wc / fc:.2f}x |")

    print("\nPeers that record per-layer (or per-parameter) norms, against the Watch every=1:")
    for k in keys:
        res = results[k]
        w = res.ratio.get(w1)
        if w is None:
            continue
        rows = [(t.name, res.ratio.get(t.name)) for t in tools
                if t.per_layer and not t.name.startswith("gradwatch")]
        cheaper = [f"{n} ({r:.3f}x)" for n, r in rows if r is not None and r < w]
        print(f"- {WORKLOADS[k][0]}: "
              + ("cheaper than the Watch: " + ", ".join(cheaper) if cheaper
                 else "none is cheaper than the Watch"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few rounds: check that it runs")
    ap.add_argument("--rounds", type=int, help="turns per variant (default 20; quick 3)")
    ap.add_argument("--transformer-rounds", type=int, help="(default 6; quick 2)")
    ap.add_argument("--steps", type=int, default=10, help="training steps per turn")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated keys")
    ap.add_argument("--cockpit-pairs", type=int, help="bare/Cockpit step pairs after the "
                    "first Cockpit step (default 2; quick 1; 0 skips Cockpit)")
    ap.add_argument("--cockpit-cap", type=float, help="seconds (default 240; quick 30): when "
                    "the pairs would take longer, a workload's Cockpit time is its first step")
    args = ap.parse_args()
    rounds = args.rounds or (3 if args.quick else 20)
    t_rounds = args.transformer_rounds or (2 if args.quick else 6)
    pairs = args.cockpit_pairs if args.cockpit_pairs is not None else (1 if args.quick else 2)
    cap = args.cockpit_cap or (30.0 if args.quick else 240.0)
    warmup = 1 if args.quick else 2
    os.environ.setdefault("WANDB_SILENT", "true")

    print(f"machine: {machine()}")
    print(f"{'--quick: ' if args.quick else ''}{rounds} turns ({t_rounds} for the transformer) "
          f"x {args.steps} steps per variant, interleaved, {warmup} warm-up turns; median turn")
    results: dict[str, Result] = {}
    t_start = time.perf_counter()
    for key in args.workloads.split(","):
        t0 = time.perf_counter()
        n = t_rounds if key == "transformer" else rounds
        results[key] = run_workload(key, n, args.steps, warmup, pairs, cap, TOOLS)
        res = results[key]
        cells = ", ".join(f"{k.split(',')[0]} {v:.3f}x" for k, v in res.ratio.items() if v)
        print(f"  {key}: {time.perf_counter() - t0:.0f} s; bare {res.bare_ms:.1f} ms; {cells}; "
              f"Cockpit {res.cockpit}; {res.errors or ''}", flush=True)
    print_tables(results, TOOLS)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if WandbMon.run is not None:
        with contextlib.redirect_stdout(None), contextlib.redirect_stderr(None):
            WandbMon.run.finish()


if __name__ == "__main__":
    main()
