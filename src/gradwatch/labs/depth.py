"""The depth lab: why deep sigmoid nets stop learning, and what ReLU, skips, init, BN and Adam do.

Every number is measured in this run on scikit-learn's digits (8x8 images, 10 classes):
per-layer gradient norms at init from :class:`gradwatch.Watch`, test accuracy after a fixed
training budget, dead ReLU shares from :func:`gradwatch.probe`, forward+backward timings.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from gradwatch.core import _checks
from gradwatch.core.chain import chain_bound, derivative_bound
from gradwatch.core.probe import probe
from gradwatch.labs import register
from gradwatch.labs.base import Claim, LabConfig, LabResult, Plot, Series, Table, steps
from gradwatch.watch import Watch

__all__ = ["depth"]

ACTS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
}
INITS = ("default", "he", "xavier", "normal", "uniform05")
LR = 0.1  # plain SGD, the same for every configuration of the sweep
ADAM_LR = 1e-3
HIGH_LR = 0.03  # Adam at 30x its usual rate: the high learning rate at which ReLU units die


# ---------------------------------------------------------------- setup
@dataclass(frozen=True)
class _Sizes:
    depths: tuple[int, ...]
    width: int
    epochs: int
    batch: int
    n_train: int  # training examples used (digits has 1797 in all; the rest is held out)
    cnn_depth: int
    cnn_channels: int
    cnn_epochs: int
    time_width: int
    time_batch: int
    time_reps: int


def _sizes(cfg: LabConfig) -> _Sizes:
    s = cfg.pick(
        _Sizes((3, 5), 32, 2, 64, 400, 4, 4, 1, 64, 64, 5),
        _Sizes((5, 15, 30), 64, 15, 32, 1297, 10, 8, 6, 256, 512, 21),
        _Sizes((5, 15, 30, 50, 100), 128, 40, 32, 1297, 30, 16, 30, 512, 1024, 51),
    )
    assert isinstance(s, _Sizes)
    return s


@dataclass(frozen=True)
class _Data:
    x_train: torch.Tensor  # (N, 64)
    y_train: torch.Tensor  # (N,)
    x_test: torch.Tensor  # (M, 64)
    y_test: torch.Tensor  # (M,)


def _digits(cfg: LabConfig, n_train: int) -> _Data:
    """Digits, split by the seed into train/test, standardised with the training statistics."""
    from sklearn.datasets import load_digits

    x_np, y_np = load_digits(return_X_y=True)
    x = torch.as_tensor(x_np, dtype=torch.float32)  # (1797, 64)
    y = torch.as_tensor(y_np, dtype=torch.long)
    perm = torch.randperm(len(x), generator=cfg.generator(1))
    n_test = 500
    test, train = perm[:n_test], perm[n_test : n_test + n_train]
    mu = x[train].mean(0)
    sd = x[train].std(0).clamp_min(1e-2)  # border pixels are constant 0
    return _Data((x[train] - mu) / sd, y[train], (x[test] - mu) / sd, y[test])


# ---------------------------------------------------------------- models
class _Block(nn.Module):
    """(BN) -> act -> Linear/Conv, plus the input when residual: h + F(h)."""

    def __init__(self, layer: nn.Module, act: str, residual: bool, bn: nn.Module | None) -> None:
        super().__init__()
        self.bn = bn
        self.act = ACTS[act]()
        self.layer = layer
        self.residual = residual

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.layer(self.act(h if self.bn is None else self.bn(h)))
        return h + z if self.residual else z


class _Net(nn.Module):
    """Input layer, depth-2 blocks, output layer: ``depth`` weight layers in all."""

    def __init__(
        self,
        depth: int,
        width: int,
        act: str,
        *,
        residual: bool = False,
        bn: bool = False,
        conv: bool = False,
    ) -> None:
        super().__init__()
        self.conv = conv

        def layer() -> nn.Module:
            return nn.Conv2d(width, width, 3, padding=1) if conv else nn.Linear(width, width)

        def norm() -> nn.Module | None:
            if not bn:
                return None
            return nn.BatchNorm2d(width) if conv else nn.BatchNorm1d(width)

        self.inp = nn.Conv2d(1, width, 3, padding=1) if conv else nn.Linear(64, width)
        self.blocks = nn.Sequential(
            *[_Block(layer(), act, residual, norm()) for _ in range(depth - 2)]
        )
        self.head_bn = norm()
        self.head_act = ACTS[act]()
        self.out = nn.Linear(width * 64 if conv else width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x.reshape(-1, 1, 8, 8) if self.conv else x)  # (B, W) or (B, C, 8, 8)
        h = self.blocks(h)
        if self.head_bn is not None:
            h = self.head_bn(h)
        return self.out(self.head_act(h).flatten(1))  # (B, 10)


def _init(model: nn.Module, scheme: str, gen: torch.Generator) -> nn.Module:
    """Re-draw every weight from ``gen``: default = PyTorch's U(+-1/sqrt(fan_in)) weights
    and biases; he = N(0, 2/fan_in); xavier = N(0, 2/(fan_in+fan_out)); normal = N(0, 1);
    uniform05 = U(-0.05, 0.05). Biases are 0 except for the default."""
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, (nn.Linear, nn.Conv2d)):
                continue
            w = m.weight
            fan_in = w[0].numel()
            fan_out = w.shape[0] * w[0, 0].numel()
            bound = 1 / math.sqrt(fan_in)
            if scheme == "default":
                nn.init.uniform_(w, -bound, bound, generator=gen)
            elif scheme == "he":
                nn.init.normal_(w, 0.0, math.sqrt(2 / fan_in), generator=gen)
            elif scheme == "xavier":
                nn.init.normal_(w, 0.0, math.sqrt(2 / (fan_in + fan_out)), generator=gen)
            elif scheme == "normal":
                nn.init.normal_(w, 0.0, 1.0, generator=gen)
            else:
                nn.init.uniform_(w, -0.05, 0.05, generator=gen)
            if m.bias is not None:
                if scheme == "default":
                    nn.init.uniform_(m.bias, -bound, bound, generator=gen)
                else:
                    nn.init.zeros_(m.bias)
    return model


# ---------------------------------------------------------------- measurements
@dataclass(frozen=True)
class _Profile:
    norms: tuple[float, ...]  # per weight layer, input to output
    first_last: float  # first layer's gradient norm / last layer's
    hidden_first_last: float  # the same between the first and last hidden (W x W) layers
    factor: float  # geometric mean of successive hidden-layer ratios g_l / g_{l+1}
    gain: float  # mean sigma_w of the hidden layers


def _profile(model: nn.Module, data: _Data, n: int = 256) -> _Profile:
    """Per-layer gradient norms of the cross-entropy at init, in float64, from a Watch."""
    m64 = copy.deepcopy(model).double()
    with Watch(m64, modules=(nn.Linear, nn.Conv2d), activations=False) as watch:
        loss = F.cross_entropy(m64(data.x_train[:n].double()), data.y_train[:n])
        loss.backward()
        watch.step()
        hist = watch.history
    g = hist["grad_norm"][0]  # (layers,)
    hidden = g[1:-1]  # the W x W layers of the blocks: same shape, comparable
    ratios = hidden[:-1] / hidden[1:]
    factor = float(ratios.log().mean().exp()) if len(ratios) else math.nan
    gain = float(hist.layer_info["init_gain"][1:-1].mean()) if len(hidden) else math.nan
    hfl = float(hidden[0] / hidden[-1]) if len(hidden) else math.nan
    return _Profile(tuple(float(v) for v in g), float(g[0] / g[-1]), hfl, factor, gain)


def _update_first_last(
    model: nn.Module, data: _Data, adam: bool, n: int = 256
) -> tuple[float, float]:
    """One optimizer step on a copy (float32, as trained), read by a Watch: ||dW||/||W|| of the
    first layer over the last's, and the number of layers the step left exactly unchanged."""
    m = copy.deepcopy(model)
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(m.parameters(), lr=ADAM_LR) if adam
        else torch.optim.SGD(m.parameters(), lr=LR)
    )
    with Watch(m, opt, modules=nn.Linear, activations=False, detail_every=1) as watch:
        F.cross_entropy(m(data.x_train[:n]), data.y_train[:n]).backward()
        opt.step()
        r = watch.history["update_ratio"][0]  # (layers,)
    return float(r[0] / r[-1]), float((r == 0).sum())


def _train(
    model: nn.Module,
    data: _Data,
    sz: _Sizes,
    gen: torch.Generator,
    *,
    lr: float = LR,
    adam: bool = False,
    epochs: int | None = None,
) -> float:
    """Train with minibatch SGD (or Adam) for the budget; return the test accuracy."""
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(model.parameters(), lr=lr) if adam
        else torch.optim.SGD(model.parameters(), lr=lr)
    )
    n = len(data.x_train)
    model.train()
    label = f"{type(model).__name__}, {'Adam' if adam else 'SGD'} lr {lr:g}"
    for _ in steps(sz.epochs if epochs is None else epochs, label):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - sz.batch + 1, sz.batch):
            idx = perm[i : i + sz.batch]
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return _accuracy(model, data)


def _accuracy(model: nn.Module, data: _Data) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(data.x_test).argmax(1)  # (M,)
    acc = float((pred == data.y_test).double().mean())
    return acc if math.isfinite(acc) else 0.0


@dataclass(frozen=True)
class _Run:
    label: str
    depth: int
    profile: _Profile
    accuracy: float


# Configurations of the depth sweep: label -> (activation, init, residual)
SWEEP = {
    "sigmoid (default init)": ("sigmoid", "default", False),
    "ReLU + He": ("relu", "he", False),
    "residual sigmoid": ("sigmoid", "default", True),
}


def _run(
    cfg: LabConfig, data: _Data, sz: _Sizes, label: str, depth: int, offset: int, *,
    act: str, init: str, residual: bool = False, bn: bool = False, conv: bool = False,
    adam: bool = False, width: int | None = None, epochs: int | None = None,
) -> _Run:
    w = width or (sz.cnn_channels if conv else sz.width)
    model = _init(_Net(depth, w, act, residual=residual, bn=bn, conv=conv), init,
                  cfg.generator(offset))
    prof = _profile(model, data)
    acc = _train(model, data, sz, cfg.generator(offset + 1), lr=ADAM_LR if adam else LR,
                 adam=adam, epochs=epochs)
    return _Run(label, depth, prof, acc)


def _vanishing_claims(
    cfg: LabConfig, act: str = "sigmoid", init: str = "default", depth: int | None = None,
    data: _Data | None = None,
) -> tuple[Claim, Claim, _Profile]:
    """Claim 1 at one configuration: (first/last < 1e-6, factor <= max|phi'| * sigma_w, profile).

    The same code judges sigmoid at default init (where it should hold) and ReLU + He (where
    the vanishing claim should not): the verdict follows the measurement.
    """
    _checks.choice("act", act, tuple(ACTS))
    _checks.choice("init", init, INITS)
    sz = _sizes(cfg)
    L = depth or max(sz.depths)
    _checks.count("depth", L, low=4)
    data = data or _digits(cfg, sz.n_train)
    model = _init(_Net(L, sz.width, act), init, cfg.generator(100 + L))
    prof = _profile(model, data)
    dmax = derivative_bound(act)
    bound = dmax * prof.gain
    vanish = Claim.check(
        f"Through {L} {act} layers ({init} init) the first layer's gradient is more than "
        f"6 orders of magnitude below the last's (chain bound {dmax:g}^{L} = "
        f"{chain_bound(act, L)})",
        prof.first_last,
        below=1e-6,
        measured={
            "first_last_ratio": prof.first_last,
            "per_layer_factor": prof.factor,
            "chain_bound_log10": chain_bound(act, L).log10,
            "depth": float(L),
        },
    )
    factor = Claim.check(
        f"The measured per-layer decay factor of {act} stays within max|phi'| x sigma_w = "
        f"{dmax:g} x sigma_w (+10%)",
        prof.factor / bound,
        below=1.1,
        measured={"per_layer_factor": prof.factor, "sigma_w": prof.gain,
                  "max_derivative_x_sigma_w": bound,
                  "chain_bound_with_gain_log10": chain_bound(act, L - 3, prof.gain).log10},
    )
    return vanish, factor, prof


def _dead_share(model: nn.Module, data: _Data) -> tuple[float, float]:
    """(share of hidden units inactive on every training example, test accuracy) via probe."""
    model.eval()
    res = probe(model, data.x_train, F.cross_entropy, data.y_train)
    dead = [a.dead for a in res.activations if a.dead is not None]
    return (statistics.fmean(dead) if dead else math.nan), _accuracy(model, data)


def _time_ratio(cfg: LabConfig, sz: _Sizes, depth: int) -> tuple[float, float, float]:
    """Median forward+backward time of the same MLP with sigmoid and with ReLU, interleaved."""
    x = torch.randn(sz.time_batch, 64, generator=cfg.generator(900))
    y = torch.randint(0, 10, (sz.time_batch,), generator=cfg.generator(901))
    nets = {a: _init(_Net(depth, sz.time_width, a), "he", cfg.generator(902))
            for a in ("sigmoid", "relu")}
    times: dict[str, list[float]] = {a: [] for a in nets}
    for rep in range(sz.time_reps + 1):
        for a, net in nets.items():
            t0 = time.perf_counter()
            F.cross_entropy(net(x), y).backward()
            dt = time.perf_counter() - t0
            net.zero_grad(set_to_none=True)
            if rep:  # the first round warms up
                times[a].append(dt)
    ts, tr = statistics.median(times["sigmoid"]), statistics.median(times["relu"])
    return ts / tr, ts, tr


# ---------------------------------------------------------------- the lab
@register("depth")
def depth(cfg: LabConfig) -> LabResult:
    """Deep nets and the vanishing gradient: sigmoid, ReLU, skips, init, BN, Adam, CNNs, cost.

    Claims (each judged on a number measured in this run):

    1. Through L sigmoid layers the gradient shrinks by at most (0.25 sigma_w)^L: at default
       init the first layer's gradient is < 1e-6 of the last's, and the measured per-layer
       factor is within 0.25 x sigma_w (+10%). The same measurement with ReLU + He does not
       vanish (the verdict flips); deep sigmoid trained with SGD stays near chance.
    2. ReLU + He keeps the per-layer factor in (0.7, 1.3) and trains to > 90% at the
       largest depth; at a high learning rate (Adam, lr 0.03) ReLU units die (dead share
       > 30%) while LeakyReLU, trained the same way, ends with a higher accuracy.
    3. A residual block h + F(h) keeps the first layer's gradient within 10x of the last's,
       with sigmoid inside the blocks, and trains to > 90%.
    4. Xavier/Glorot init (tanh MLP) keeps first/last within 10x; N(0, 1) and
       U(-0.05, 0.05) do not (explode / vanish) and train worse.
    5. BatchNorm (with SGD) and Adam each recover the deep sigmoid MLP's accuracy.
    6. Deep CNN on the 8x8 digits (sigmoid): plain loses the gradient, the residual twin keeps it
       and trains better.
    7. "ReLU is much cheaper than sigmoid": median forward+backward time ratio > 1.5.

    Setup: MLPs of ``depth`` weight layers (input, depth-2 hidden blocks act -> Linear, output)
    on digits (seeded train/test split, 500 test images), cross-entropy, plain SGD lr 0.1,
    batch 32, fixed epochs for every configuration; gradient profiles at init on 256 training
    images in float64. Adam's first step is read by a Watch too: with gradients of 1e-25 its
    eps (1e-8) caps the rescaling and the float32 update of the early layers rounds to zero.
    Sizes: smoke depths 3, 5; quick 5, 15, 30 (width 64, 15 epochs);
    full 5 ... 100 (width 128, 40 epochs).

    Args:
        cfg: size, seed and device (the lab runs on CPU).

    Returns:
        The :class:`LabResult` with the claims, tables and plots.

    Example:
        >>> from gradwatch.labs import run_lab, LabConfig
        >>> res = run_lab("depth", LabConfig("smoke"))     # doctest: +SKIP

    Papers: Hochreiter 1991; Bengio, Simard & Frasconi 1994; Glorot & Bengio 2010 (Xavier
    init, saturation); He et al. 2015 (He init) and 2016 (residual nets); Ioffe & Szegedy 2015
    (BatchNorm); Kingma & Ba 2015 (Adam); Maas et al. 2013 (leaky ReLU); Lu et al. 2019
    (dying ReLU).
    """
    if not isinstance(cfg, LabConfig):
        raise TypeError(f"cfg: expected a LabConfig, got {type(cfg).__name__}")
    sz = _sizes(cfg)
    data = _digits(cfg, sz.n_train)
    L = max(sz.depths)
    claims: list[Claim] = []
    plots: list[Plot] = []
    tables: list[Table] = []

    # 1-3: the depth sweep
    runs: dict[str, list[_Run]] = {k: [] for k in SWEEP}
    for i, (label, (act, init, res)) in enumerate(SWEEP.items()):
        for d in sz.depths:
            runs[label].append(_run(cfg, data, sz, label, d, 10_000 + 1000 * d + 10 * i,
                                    act=act, init=init, residual=res))
    top = {k: v[-1] for k, v in runs.items()}
    sig, relu, resid = top["sigmoid (default init)"], top["ReLU + He"], top["residual sigmoid"]

    vanish, bound, _ = _vanishing_claims(cfg, "sigmoid", "default", L, data)
    flip, _, _ = _vanishing_claims(cfg, "relu", "he", L, data)
    claims += [vanish, bound]
    claims.append(Claim.check(
        "The same measurement on ReLU + He does not vanish: first/last > 1e-6 there",
        flip.value, above=1e-6, measured={"verdict_of_vanishing_claim_holds":
                                          float(flip.verdict == "holds")}))
    claims.append(Claim.check(
        f"Deep sigmoid ({L} layers, default init, SGD) stays near chance (test accuracy < 0.3)",
        sig.accuracy, below=0.3, measured={"chance": 0.1}))

    claims.append(Claim.check(
        f"ReLU + He keeps the per-layer gradient factor near 1 (0.7 .. 1.3) at depth {L}",
        relu.profile.factor, above=0.7, below=1.3,
        measured={"first_last_ratio": relu.profile.first_last, "sigma_w": relu.profile.gain}))
    claims.append(Claim.check(
        f"ReLU + He at depth {L} reaches > 90% test accuracy with SGD", relu.accuracy, above=0.9,
        measured={f"accuracy_depth_{r.depth}": r.accuracy for r in runs["ReLU + He"]}))

    dead_d = min(sz.depths[-1], 5)
    dead_rows = []
    dead: dict[str, tuple[float, float]] = {}
    for j, act in enumerate(("relu", "leaky_relu")):
        model = _init(_Net(dead_d, sz.width, act), "he", cfg.generator(700))
        _train(model, data, sz, cfg.generator(701 + j), lr=HIGH_LR, adam=True)
        dead[act] = _dead_share(model, data)
        dead_rows.append((act, f"{HIGH_LR:g}", f"{dead[act][0]:.1%}", f"{dead[act][1]:.3f}"))
    claims.append(Claim.check(
        f"At a high learning rate (Adam lr {HIGH_LR:g}) ReLU units die: > 30% of hidden units "
        "inactive on every training image",
        dead["relu"][0], above=0.3,
        measured={"relu_dead": dead["relu"][0], "leaky_inactive": dead["leaky_relu"][0]}))
    claims.append(Claim.check(
        "LeakyReLU avoids it: trained the same way it ends with a higher test accuracy "
        "than ReLU (difference > 0.05)",
        dead["leaky_relu"][1] - dead["relu"][1], above=0.05,
        measured={"relu_accuracy": dead["relu"][1], "leaky_accuracy": dead["leaky_relu"][1],
                  "leaky_inactive_share": dead["leaky_relu"][0]}))

    claims.append(Claim.check(
        f"A residual block h + F(h) keeps the first hidden layer's gradient within 10x of the "
        f"last hidden layer's (|log10 ratio| < 1) through {L} layers with sigmoid inside",
        abs(math.log10(resid.profile.hidden_first_last)), below=1.0,
        measured={"hidden_first_last": resid.profile.hidden_first_last,
                  "first_last_ratio": resid.profile.first_last,
                  "plain_sigmoid_first_last": sig.profile.first_last}))
    claims.append(Claim.check(
        f"Residual sigmoid at depth {L} reaches > 90% test accuracy with SGD",
        resid.accuracy, above=0.9,
        measured={f"accuracy_depth_{r.depth}": r.accuracy for r in runs["residual sigmoid"]}))

    # 4: Xavier against naive inits (tanh MLP, the largest depth)
    inits = {"Xavier": "xavier", "N(0, 1)": "normal", "U(-0.05, 0.05)": "uniform05"}
    init_runs = {k: _run(cfg, data, sz, k, L, 2000 + 10 * i, act="tanh", init=v)
                 for i, (k, v) in enumerate(inits.items())}
    xav = init_runs["Xavier"]
    naive = [init_runs["N(0, 1)"], init_runs["U(-0.05, 0.05)"]]
    claims.append(Claim.check(
        f"Xavier/Glorot init keeps a {L}-layer tanh MLP's hidden first/last gradient ratio "
        "within 10x",
        abs(math.log10(xav.profile.hidden_first_last)), below=1.0,
        measured={"hidden_first_last": xav.profile.hidden_first_last,
                  "first_last_ratio": xav.profile.first_last}))
    claims.append(Claim.check(
        "Naive N(0, 1) and U(-0.05, 0.05) inits are off by > 2 orders of magnitude "
        "(min |log10 first/last| of the two)",
        min(abs(math.log10(r.profile.hidden_first_last)) for r in naive), above=2.0,
        measured={f"hidden_first_last_{r.label}": r.profile.hidden_first_last for r in naive}))
    claims.append(Claim.check(
        "Xavier trains better than both naive inits (accuracy difference to the best > 0.1)",
        xav.accuracy - max(r.accuracy for r in naive), above=0.1,
        measured={f"accuracy_{r.label}": r.accuracy for r in [xav, *naive]}))

    # 5: mitigations for the deep sigmoid MLP
    bn = _run(cfg, data, sz, "sigmoid + BatchNorm (SGD)", L, 3000, act="sigmoid",
              init="default", bn=True)
    adam = _run(cfg, data, sz, "sigmoid + Adam", L, 3010, act="sigmoid", init="default",
                adam=True)
    probe_net = _init(_Net(L, sz.width, "sigmoid"), "default", cfg.generator(3010))
    (upd_sgd, frozen_sgd), (upd_adam, frozen_adam) = (
        _update_first_last(probe_net, data, a) for a in (False, True))
    claims.append(Claim.check(
        f"BatchNorm recovers the {L}-layer sigmoid MLP under SGD: accuracy gain > 0.2",
        bn.accuracy - sig.accuracy, above=0.2,
        measured={"accuracy_bn": bn.accuracy, "accuracy_plain": sig.accuracy,
                  "first_last_bn": bn.profile.first_last}))
    claims.append(Claim.check(
        f"Adam (lr {ADAM_LR:g}) recovers the {L}-layer sigmoid MLP: accuracy gain > 0.2 "
        "over SGD",
        adam.accuracy - sig.accuracy, above=0.2,
        measured={"accuracy_adam": adam.accuracy, "accuracy_sgd": sig.accuracy,
                  "first_last_grad_at_init": adam.profile.first_last,
                  "first_last_update_ratio_adam_step1": upd_adam,
                  "first_last_update_ratio_sgd_step1": upd_sgd,
                  "layers_unchanged_by_step1_adam": frozen_adam,
                  "layers_unchanged_by_step1_sgd": frozen_sgd}))

    # 6: CNNs
    Lc = sz.cnn_depth
    cnn = {
        "plain CNN": _run(cfg, data, sz, "plain CNN", Lc, 4000, act="sigmoid", init="default",
                          conv=True, epochs=sz.cnn_epochs),
        "residual CNN": _run(cfg, data, sz, "residual CNN", Lc, 4010, act="sigmoid",
                             init="default", residual=True, conv=True, epochs=sz.cnn_epochs),
    }
    cp, cr = cnn["plain CNN"], cnn["residual CNN"]
    claims.append(Claim.check(
        f"A plain {Lc}-layer sigmoid CNN loses the gradient (first/last < 1e-3) ...",
        cp.profile.first_last, below=1e-3, measured={"first_last_residual": cr.profile.first_last}))
    claims.append(Claim.check(
        "... its residual twin keeps it within 10x between first and last hidden conv "
        "(|log10 ratio| < 1)",
        abs(math.log10(cr.profile.hidden_first_last)), below=1.0,
        measured={"hidden_first_last": cr.profile.hidden_first_last,
                  "first_last_ratio": cr.profile.first_last}))
    claims.append(Claim.check(
        "The residual CNN trains better than the plain one (accuracy difference > 0.2)",
        cr.accuracy - cp.accuracy, above=0.2,
        measured={"accuracy_plain": cp.accuracy, "accuracy_residual": cr.accuracy}))

    # 7: cost
    ratio, ts, tr = _time_ratio(cfg, sz, L)
    claims.append(Claim.check(
        "ReLU is much cheaper than sigmoid: forward+backward time sigmoid/ReLU > 1.5",
        ratio, above=1.5, measured={"sigmoid_ms": 1e3 * ts, "relu_ms": 1e3 * tr}))

    # plots and tables
    x_l = tuple(float(i + 1) for i in range(L))
    bound_curve = tuple(
        sig.profile.norms[-1] * (0.25 * sig.profile.gain) ** (L - 1 - i) for i in range(L))
    plots.append(Plot(
        "profile_init", f"Gradient norm per layer at init, depth {L}", "layer (input -> output)",
        "||dL/dW|| at init",
        (*(Series(k, x_l, r.profile.norms) for k, r in top.items()),
         Series("sigmoid: last x (0.25 sigma_w)^(L-l)", x_l, bound_curve)),
        logy=True, reference={f"0.25^{L}": 0.25**L}))
    plots.append(Plot(
        "accuracy_depth", "Test accuracy after the same SGD budget", "depth (weight layers)",
        "test accuracy",
        tuple(Series(k, tuple(float(r.depth) for r in v), tuple(r.accuracy for r in v))
              for k, v in runs.items()),
        reference={"chance": 0.1}))
    plots.append(Plot(
        "init_profiles", f"tanh MLP, depth {L}: gradient norm per layer by init",
        "layer (input -> output)", "||dL/dW|| at init",
        tuple(Series(k, x_l, r.profile.norms) for k, r in init_runs.items()), logy=True))
    x_c = tuple(float(i + 1) for i in range(Lc))
    plots.append(Plot(
        "cnn_profiles", f"Sigmoid CNN, depth {Lc}: gradient norm per layer at init",
        "layer (input -> output)", "||dL/dW|| at init",
        tuple(Series(k, x_c, r.profile.norms) for k, r in cnn.items()), logy=True))

    def fmt(v: float, spec: str) -> str:
        return format(v, spec) if math.isfinite(v) else "-"  # "nan" would read back as a float

    def row(r: _Run) -> tuple[str, ...]:
        p = r.profile
        return (r.label, str(r.depth), fmt(p.first_last, ".3g"), fmt(p.factor, ".3f"),
                fmt(p.gain, ".3f"), fmt(r.accuracy, ".3f"))

    cols = ("configuration", "depth", "first/last grad", "per-layer factor", "sigma_w",
            "test accuracy")
    tables.append(Table("Depth sweep (SGD, same budget)", cols,
                        tuple(row(r) for v in runs.values() for r in v)))
    tables.append(Table("Init (tanh) and mitigations (sigmoid), CNNs", cols,
                        tuple(row(r) for r in [*init_runs.values(), bn, adam, cp, cr])))
    tables.append(Table(f"Dying ReLU after Adam at lr {HIGH_LR:g}, depth {dead_d}",
                        ("activation", "lr", "units inactive on all images", "test accuracy"),
                        tuple(dead_rows)))
    tables.append(Table("Forward+backward time (median, interleaved)",
                        ("activation", "ms", "batch x width x depth"),
                        (("sigmoid", f"{1e3 * ts:.3f}", f"{sz.time_batch}x{sz.time_width}x{L}"),
                         ("relu", f"{1e3 * tr:.3f}", f"{sz.time_batch}x{sz.time_width}x{L}"))))
    setup = {
        "data": f"scikit-learn digits: {sz.n_train} train / 500 test images, standardised",
        "models": f"MLP width {sz.width}, depths {sz.depths}; CNN {sz.cnn_channels} channels, "
        f"3x3 convs, depth {Lc}",
        "training": f"plain SGD lr {LR:g}, batch {sz.batch}, {sz.epochs} epochs "
        f"({sz.cnn_epochs} for CNNs); Adam lr {ADAM_LR:g}; dying ReLU: Adam lr {HIGH_LR:g}",
        "profile": "per-layer ||dL/dW|| at init (gradwatch.Watch, float64, 256 images); factor = "
        "geometric mean of successive hidden-layer ratios",
        "inits": "default = PyTorch U(+-1/sqrt(fan_in)); He N(0, 2/fan_in); Xavier "
        "N(0, 2/(fan_in+fan_out))",
    }
    return LabResult("depth", "Depth: vanishing gradients and their remedies", cfg, setup,
                     tuple(claims), tuple(tables), tuple(plots))
