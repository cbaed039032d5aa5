"""The genomics lab: a long-range interaction in synthetic DNA; hierarchy shortens the path.

Every number is measured in this run on DNA generated from ``cfg``'s generators: test
accuracies after a fixed training budget, ||dL/dx_t|| at every base of one-hot inputs (in
log space, so a gradient of 1e-1000 is still a number), per-step gradient profiles from
:func:`gradwatch.bptt_profile` and per-layer gradient norms from :class:`gradwatch.Watch`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from gradwatch.core.bptt import bptt_profile
from gradwatch.labs import register
from gradwatch.labs.base import Claim, LabConfig, LabResult, Plot, Series, Table, one_thread
from gradwatch.labs.base import steps as progress
from gradwatch.watch import Watch

__all__ = ["genomics"]

PAIRS = ((1, 2), (0, 3))  # base codes (A, C, G, T = 0..3): type 0 elements are C/G, type 1 A/T
KERNEL = 10  # conv front end: bases per filter
Z_BIAS = 2.0  # GRU update-gate bias at init (both GRUs): keeps state, like an LSTM forget bias
LR, BATCH = 3e-3, 32  # Adam, the same for every model
CHANCE_BAND = 0.1  # "at chance": |accuracy - 0.5| below this
HIER_ACC = 0.8  # the hierarchical model must beat this
GAP_DECADES = 2.0  # log10(hierarchical ratio) - log10(flat ratio) must exceed this
CHUNK = 100  # bases per backward chunk of the log-space flat-GRU gradient
PREDICT_TOL = 0.1  # relative error of the decay-factor extrapolation (claim 6)
PROFILE_STEPS = 300  # steps of the flat GRU's bptt_profile window (before the end)
_F64 = torch.float64


# ---------------------------------------------------------------- sizes and data
@dataclass(frozen=True)
class _Task:
    length: int  # bases per sequence
    element: int  # bases per enhancer / promoter element
    dist: tuple[int, int]  # enhancer start this many bases upstream of the promoter start
    decoys: int  # decoy stretches of EACH type per sequence (element // 4 bases long)


@dataclass(frozen=True)
class _Sizes:
    task: _Task
    token: int  # bases per token of the hierarchical model (avg-pooled)
    channels: int
    hidden: int
    hier_steps: int
    local_steps: int
    flat_task: _Task  # the flat GRU trains at the longest length that fits its budget
    flat_steps: int
    n_test: int
    n_grad: int  # sequences for the gradient measurement


def _sizes(cfg: LabConfig) -> _Sizes:
    s = cfg.pick(
        _Sizes(_Task(500, 10, (100, 450), 1), 10, 8, 16, 30, 20,
               _Task(100, 2, (20, 90), 1), 4, 64, 4),
        _Sizes(_Task(5000, 100, (1000, 4500), 2), 100, 16, 32, 400, 150,
               _Task(1000, 20, (200, 900), 2), 30, 500, 8),
        _Sizes(_Task(50000, 1000, (10000, 45000), 2), 1000, 16, 32, 800, 300,
               _Task(5000, 100, (1000, 4500), 2), 200, 1000, 8),
    )
    assert isinstance(s, _Sizes)
    return s


@dataclass(frozen=True)
class _Batch:
    x: torch.Tensor  # (n, L) base codes 0..3
    y: torch.Tensor  # (n,) float label
    enh: torch.Tensor  # (n,) first base of the enhancer element
    prom: torch.Tensor  # (n,) first base of the promoter element


def _element(kind: torch.Tensor, m: int, gen: torch.Generator) -> torch.Tensor:
    """(n, m) bases of elements of type ``kind`` (n,): C/G for type 0, A/T for type 1."""
    pairs = torch.tensor(PAIRS)[kind]  # (n, 2)
    pick = torch.randint(0, 2, (len(kind), m), generator=gen)  # (n, m)
    return pairs.gather(1, pick)


def _genome(task: _Task, n: int, gen: torch.Generator, rule: str = "match") -> _Batch:
    """n random sequences with an enhancer (upstream) and a promoter (near the end).

    rule "match": label 1 when the two elements have the same type (no single element says
    anything about it); rule "presence": label = the enhancer's type (a local shortcut).
    """
    L, M = task.length, task.element
    x = torch.randint(0, 4, (n, L), generator=gen)  # (n, L)
    rows = torch.arange(n)[:, None]  # (n, 1)
    m = max(M // 4, 1)
    for k in range(2 * task.decoys):  # short stretches of both types, anywhere
        pos = torch.randint(0, L - m + 1, (n,), generator=gen)
        kind = torch.full((n,), k % 2, dtype=torch.long)
        x[rows, pos[:, None] + torch.arange(m)] = _element(kind, m, gen)
    t_enh = torch.randint(0, 2, (n,), generator=gen)
    t_prom = torch.randint(0, 2, (n,), generator=gen)
    prom = L - M - torch.randint(0, L // 100 + 1, (n,), generator=gen)  # (n,)
    enh = prom - torch.randint(task.dist[0], task.dist[1] + 1, (n,), generator=gen)
    assert int(enh.min()) >= 0 and task.dist[0] >= M
    x[rows, enh[:, None] + torch.arange(M)] = _element(t_enh, M, gen)
    x[rows, prom[:, None] + torch.arange(M)] = _element(t_prom, M, gen)
    y = (t_enh == t_prom) if rule == "match" else (t_enh == 1)
    return _Batch(x, y.float(), enh, prom)


def _onehot(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return F.one_hot(x, 4).to(dtype)  # (n, L, 4)


# ---------------------------------------------------------------- models
class _FrontEnd(nn.Module):
    """Conv over bases, ReLU, average pool: ``token`` bases -> one token (DanQ's front end)."""

    def __init__(self, channels: int, token: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, channels, KERNEL)
        self.token = token

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, L, 4)
        h = F.relu(self.conv(F.pad(x.transpose(1, 2), (0, KERNEL - 1))))  # (B, C, L)
        return F.avg_pool1d(h, self.token).transpose(1, 2)  # (B, T, C)


class _Local(nn.Module):
    """Per-token logits averaged over tokens: no interaction beyond token + KERNEL - 1 bases."""

    def __init__(self, channels: int, token: int) -> None:
        super().__init__()
        self.front = _FrontEnd(channels, token)
        self.out = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.front(x)).mean((1, 2))  # (B,)


def _gru(n_in: int, hidden: int) -> nn.GRU:
    gru = nn.GRU(n_in, hidden, batch_first=True)
    with torch.no_grad():  # gate order r, z, n: the update gate z starts near sigmoid(2)
        gru.get_parameter("bias_hh_l0")[hidden:2 * hidden].fill_(Z_BIAS)
        gru.get_parameter("bias_ih_l0")[hidden:2 * hidden].zero_()
    return gru


class _Recurrent(nn.Module):
    """GRU over tokens (hierarchical, with a front end) or over bases (flat, front end None).

    Training reads the mean over all steps' outputs (additive over steps, so the two elements
    can only interact through the recurrent state; a max over steps would let the readout
    OR together "a type-0 element here" and "a type-1 element there" and solve the match
    label from the set of types present, with no memory at all). ``last=True`` reads only the
    last step, the one state that has seen both elements (used for the gradient measurement).
    """

    def __init__(self, front: _FrontEnd | None, n_in: int, hidden: int) -> None:
        super().__init__()
        self.front = front
        self.gru = _gru(n_in, hidden)
        self.out = nn.Linear(hidden, 1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.front(x) if self.front is not None else x  # (B, T, D)

    def forward(self, x: torch.Tensor, last: bool = False) -> torch.Tensor:
        o, _ = self.gru(self.tokens(x))  # (B, T, H)
        return self.out(o[:, -1] if last else o.mean(1)).squeeze(1)  # (B,)


def _build(kind: str, s: _Sizes, gen: torch.Generator) -> nn.Module:
    """PyTorch's default init, drawn from a seed taken from ``gen`` (global RNG untouched)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "local":
            return _Local(s.channels, s.token)
        if kind == "hier":
            return _Recurrent(_FrontEnd(s.channels, s.token), s.channels, s.hidden)
        return _Recurrent(None, 4, s.hidden)


# ---------------------------------------------------------------- training
def _train(
    model: nn.Module, task: _Task, n_steps: int, gen: torch.Generator, label: str,
    rule: str = "match", watch: Watch | None = None,
) -> float:
    """Adam on fresh batches from the generator; returns the last batch's loss."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss = torch.tensor(math.nan)
    for _ in progress(n_steps, label):
        b = _genome(task, BATCH, gen, rule)
        loss = F.binary_cross_entropy_with_logits(model(_onehot(b.x)), b.y)
        opt.zero_grad()
        loss.backward()
        if watch is not None:
            watch.step()
        opt.step()
    return float(loss.detach())


def _accuracy(model: nn.Module, data: _Batch) -> float:
    with torch.no_grad():
        logits = torch.cat([model(_onehot(x)) for x in data.x.split(100)])  # (n,)
    return float(((logits > 0).float() == data.y).float().mean())


def _local_accuracy(
    s: _Sizes, task: _Task, gen: torch.Generator, rule: str = "match"
) -> tuple[float, float]:
    """Test accuracy and final loss of the local CNN trained on ``rule``'s labels."""
    model = _build("local", s, gen)
    loss = _train(model, task, s.local_steps, gen, f"local CNN, {task.length} bases", rule)
    return _accuracy(model, _genome(task, s.n_test, gen, rule)), loss


# ---------------------------------------------------------------- gradients
def _log10_input_grad(model: _Recurrent, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, L) log10 ||dL/dx_t|| of the last-step loss, per example, float64 throughout.

    Hierarchical: one plain backward. Flat: backward through chunks of CHUNK bases with the
    adjoint renormalised at every chunk boundary and its log norm carried, so gradients far
    below the float64 range (1e-308) are still resolved.
    """
    m = copy.deepcopy(model).to(_F64)
    x = x.to(_F64).requires_grad_(True)  # (B, L, 4)
    if m.front is not None:
        loss = F.binary_cross_entropy_with_logits(m(x, last=True), y.to(_F64), reduction="sum")
        (g,) = torch.autograd.grad(loss, x)  # (B, L, 4)
        return g.norm(dim=2).log10()
    return _flat_log10_grad(m, x.detach(), y.to(_F64))


def _flat_log10_grad(m: _Recurrent, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    B, L, _ = x.shape
    starts = list(range(0, L, CHUNK))
    hs = []  # state entering each chunk, (1, B, H)
    h = x.new_zeros(1, B, m.gru.hidden_size)
    with torch.no_grad():
        for a in starts:
            hs.append(h)
            _, h = m.gru(x[:, a:a + CHUNK], h)
    h = h.requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(m.out(h[0]).squeeze(1), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, h)  # (1, B, H)
    out = x.new_empty(B, L)
    log_scale = x.new_zeros(B)  # log10 of the adjoint's norm, per example
    for a, h0 in zip(reversed(starts), reversed(hs), strict=True):
        n = g.norm(dim=2, keepdim=True)  # (1, B, 1)
        log_scale = log_scale + n[0, :, 0].log10()
        g = g / n
        xc = x[:, a:a + CHUNK].clone().requires_grad_(True)  # (B, C, 4)
        h0 = h0.clone().requires_grad_(True)
        _, h1 = m.gru(xc, h0)
        gx, g = torch.autograd.grad(h1, (xc, h0), grad_outputs=g)
        out[:, a:a + CHUNK] = log_scale[:, None] + gx.norm(dim=2).log10()
    return out


def _log10_norm(logs: torch.Tensor) -> torch.Tensor:
    """log10 of the 2-norm of values given by their log10 (last dim), without leaving logs."""
    return 0.5 * torch.logsumexp(2 * math.log(10) * logs, dim=-1) / math.log(10)


def _element_log_ratio(log_g: torch.Tensor, data: _Batch, element: int) -> torch.Tensor:
    """(B,) log10(||dL/dx|| over the enhancer's bases / over the promoter's bases)."""
    idx = torch.arange(element)
    rows = torch.arange(len(data.y))[:, None]
    enh = _log10_norm(log_g[rows, data.enh[:, None] + idx])
    prom = _log10_norm(log_g[rows, data.prom[:, None] + idx])
    return enh - prom


def _binned(log_g: torch.Tensor, bins: int, label: str) -> Series:
    """Mean over examples of log10 ||dL/dx_t||, averaged in ``bins`` bins, against bases
    upstream of the sequence end."""
    L = log_g.shape[1]
    prof = log_g.mean(0).flip(0)  # (L,) index = bases before the end
    width = max(L // bins, 1)
    k = L // width
    y = prof[: k * width].reshape(k, width).mean(1)  # (k,)
    x = (torch.arange(k) * width + (width - 1) / 2).tolist()
    return Series(label, tuple(float(v) for v in x), tuple(float(v) for v in y))


# ---------------------------------------------------------------- claims
def _chance_claim(acc: float, who: str, measured: dict[str, float] | None = None) -> Claim:
    return Claim.check(
        f"{who} stays at chance on the match label: |test accuracy - 0.5|",
        abs(acc - 0.5), below=CHANCE_BAND, measured={"test accuracy": acc, **(measured or {})})


def _gap_claim(
    flat: float, hier: float, when: str, measured: dict[str, float] | None = None
) -> Claim:
    """Claim on mean log10(enhancer / promoter input gradient) of the two models."""
    return Claim.check(
        f"Hierarchy shortens the path ({when}): the enhancer's share of the input gradient "
        f"(||dL/dx|| at its bases / at the promoter's) is > {10**GAP_DECADES:g}x larger in the "
        f"hierarchical model than in the flat GRU; value = log10(hierarchical ratio) - "
        f"log10(flat ratio), mean over sequences",
        hier - flat, above=GAP_DECADES,
        measured={"log10 ratio, flat GRU": flat, "log10 ratio, hierarchical": hier,
                  **(measured or {})})


# ---------------------------------------------------------------- the lab
@register("genomics")
def genomics(cfg: LabConfig) -> LabResult:
    """A long-range enhancer-promoter interaction: flat GRU over bases vs conv + pool + GRU.

    Data: random DNA with a promoter element near the end and an enhancer element 20% to 90%
    of the sequence upstream; each is type 0 (C/G only) or type 1 (A/T only); the label is
    whether the two types match, and short decoy stretches of both types lie anywhere. No
    single element says anything about the label.

    Claims:
        1. Mere presence does not decide the label: a local CNN (per-token logits averaged,
           receptive field token + 9 bases, far shorter than the distance) stays at chance.
        2. The hierarchical model (conv front end, average pool of ``token`` bases into one
           token, GRU over ~50 tokens, mean readout over tokens; DanQ's pattern) learns the
           interaction: test accuracy > 0.8 after the fixed budget.
        3. A flat GRU over bases, trained at the longest length that fits the budget (stated
           in ``setup``), stays at chance.
        4-5. At init and after training, the gradient that reaches the enhancer's bases from
           the last-step loss, relative to the promoter's, is > 100x larger in the
           hierarchical model (path: distance / token GRU steps) than in the flat GRU
           (path: distance steps). Flat gradients are resolved in log space, far below 1e-308.
        6. bptt_profile's per-step decay factor of the flat GRU (last 300 bases), raised to
           the mean enhancer distance, predicts its measured log10 ratio within 10%.

    Both GRUs start with update-gate bias 2 (sigma(2) = 0.88 of the state kept per step; with
    PyTorch's default 0 about half is kept, 0.5^45 ~ 1e-14 over 45 tokens). Both read out the
    mean over steps: a max over steps reaches high accuracy from the set of element types
    present (an OR of local detections) without using the long-range path, so it would not
    test the claim.

    Args:
        cfg: size ("smoke", "quick", "full"), seed and device (the lab runs on the CPU).

    Returns:
        A :class:`LabResult` with 6 claims, 2 tables and 5 plots.

    Example:
        >>> res = genomics(LabConfig(size="smoke"))                 # doctest: +SKIP
        >>> [c.verdict for c in res.claims]                          # doctest: +SKIP

    Papers: Quang & Xie 2016, "DanQ: a hybrid convolutional and recurrent deep neural network
    for quantifying the function of DNA sequences"; Bengio, Simard & Frasconi 1994, "Learning
    long-term dependencies with gradient descent is difficult"; Hochreiter 1991; El Hihi &
    Bengio 1996, "Hierarchical recurrent neural networks for long-term dependencies".
    """
    if not isinstance(cfg, LabConfig):
        raise TypeError(f"cfg: expected a LabConfig, got {type(cfg).__name__}")
    s = _sizes(cfg)
    # Many small ops: on a shared 2-core CPU one thread is faster. Restored on exit.
    with one_thread():
        return _run(cfg, s)


def _run(cfg: LabConfig, s: _Sizes) -> LabResult:
    task, ftask = s.task, s.flat_task
    T = task.length // s.token
    test = _genome(task, s.n_test, cfg.generator(1))
    grad_data = _genome(task, s.n_grad, cfg.generator(2))
    gx = _onehot(grad_data.x)  # (n_grad, L, 4)

    # 1. local CNN
    acc_local, loss_local = _local_accuracy(s, task, cfg.generator(3))

    # 2-3. hierarchical and flat models, gradients at init and after training
    gen_h, gen_f = cfg.generator(4), cfg.generator(5)
    hier = _build("hier", s, gen_h)
    flat = _build("flat", s, gen_f)
    assert isinstance(hier, _Recurrent) and isinstance(flat, _Recurrent)
    log_g = {("hier", "init"): _log10_input_grad(hier, gx, grad_data.y),
             ("flat", "init"): _log10_input_grad(flat, gx, grad_data.y)}
    prof_init = _profiles(hier, flat, gx, grad_data.y, s.token, "init")
    with Watch(hier, every=max(s.hier_steps // 50, 1), activations=False, detail_every=0,
               recurrent_every=0) as watch:
        loss_hier = _train(hier, task, s.hier_steps, gen_h,
                           f"hierarchical, {task.length} bases", watch=watch)
    hist = watch.history
    loss_flat = _train(flat, ftask, s.flat_steps, gen_f, f"flat GRU, {ftask.length} bases")
    acc_hier = _accuracy(hier, test)
    acc_flat = _accuracy(flat, _genome(ftask, s.n_test, cfg.generator(6)))
    log_g[("hier", "trained")] = _log10_input_grad(hier, gx, grad_data.y)
    log_g[("flat", "trained")] = _log10_input_grad(flat, gx, grad_data.y)
    prof_trained = _profiles(hier, flat, gx, grad_data.y, s.token, "trained")
    ratio = {k: float(_element_log_ratio(v, grad_data, task.element).mean())
             for k, v in log_g.items()}
    dist = (grad_data.prom - grad_data.enh).double()  # (n_grad,)
    mean_dist = float(dist.mean())

    claims = [
        _chance_claim(acc_local, f"A local CNN (receptive field {s.token + KERNEL - 1} bases, "
                      f"distance >= {task.dist[0]})",
                      {"final training loss": loss_local, "steps": float(s.local_steps)}),
        Claim.check(
            f"The hierarchical model (conv + pool {s.token} bases -> 1 token, GRU over {T} "
            f"tokens) learns the long-range match: test accuracy after {s.hier_steps} steps",
            acc_hier, above=HIER_ACC,
            measured={"final training loss": loss_hier, "test sequences": float(s.n_test)}),
        _chance_claim(acc_flat, f"A flat GRU over bases, trained at {ftask.length} bases for "
                      f"{s.flat_steps} steps (the budget),",
                      {"final training loss": loss_flat}),
    ]
    for when in ("init", "trained"):
        claims.append(_gap_claim(
            ratio[("flat", when)], ratio[("hier", when)],
            "at init" if when == "init" else "after training",
            {"mean enhancer-promoter distance (bases)": mean_dist,
             "flat GRU: log10 ratio per 1000 bases": 1000 * ratio[("flat", when)] / mean_dist,
             "hierarchical: log10 ratio per token step":
                 ratio[("hier", when)] / (mean_dist / s.token)}))
    pred = mean_dist * math.log10(prof_init.flat_decay)
    claims.append(Claim.check(
        "The flat GRU's per-step decay factor from bptt_profile (last "
        f"{min(PROFILE_STEPS, task.length)} steps, at init), raised to the mean distance, "
        "predicts its measured log10 enhancer/promoter ratio: |predicted / measured - 1|",
        abs(pred / ratio[("flat", "init")] - 1), below=PREDICT_TOL,
        measured={"predicted log10 ratio": pred, "measured log10 ratio": ratio[("flat", "init")],
                  "decay factor per base": prof_init.flat_decay,
                  "hierarchical decay factor per token": prof_init.hier_decay}))

    plots = [
        Plot("input_gradient_init", "Input gradient at init, by distance from the end "
             "(log10; the flat GRU's is resolved below 1e-308)", "bases before the end",
             "log10 ||dL/dx_t|| (mean over sequences)",
             (_binned(log_g[("flat", "init")], 100, "flat GRU"),
              _binned(log_g[("hier", "init")], 100, "hierarchical"))),
        Plot("input_gradient_trained", "Input gradient after training, by distance from the end",
             "bases before the end", "log10 ||dL/dx_t|| (mean over sequences)",
             (_binned(log_g[("flat", "trained")], 100, "flat GRU"),
              _binned(log_g[("hier", "trained")], 100, "hierarchical"))),
        Plot("bptt_profile", "||dL/dh_t|| through time (bptt_profile), last-step loss",
             "bases before the end", "||dL/dh_t||",
             prof_init.series + prof_trained.series, logy=True),
        Plot("accuracy", "Test accuracy after the budget", "model (0 local CNN, 1 flat GRU, "
             "2 hierarchical)", "test accuracy",
             (Series("test accuracy", (0.0, 1.0, 2.0), (acc_local, acc_flat, acc_hier)),),
             kind="scatter", reference={"chance": 0.5, "claim 2 threshold": HIER_ACC}),
        Plot("hier_training_gradients", "Hierarchical model: per-layer gradient norm during "
             "training (Watch)", "step", "||dL/dW||",
             tuple(Series(name, tuple(float(v) + 1 for v in hist.steps.tolist()),
                          tuple(float(v) for v in hist["grad_norm"][:, i].tolist()))
                   for i, name in enumerate(hist.layers)), logy=True),
    ]
    tables = [
        Table("Models after the fixed budget (Adam lr 3e-3, batch 32)",
              ("model", "trained at (bases)", "steps", "path enhancer -> loss",
               "test accuracy", "log10 ratio init", "log10 ratio trained"),
              (("local CNN", str(task.length), str(s.local_steps),
                f"none (receptive field {s.token + KERNEL - 1})", f"{acc_local:.3f}", "-", "-"),
               ("flat GRU", str(ftask.length), str(s.flat_steps),
                f"~{mean_dist:.0f} GRU steps", f"{acc_flat:.3f}",
                f"{ratio[('flat', 'init')]:.1f}", f"{ratio[('flat', 'trained')]:.1f}"),
               ("hierarchical", str(task.length), str(s.hier_steps),
                f"~{mean_dist / s.token:.0f} GRU steps", f"{acc_hier:.3f}",
                f"{ratio[('hier', 'init')]:.2f}", f"{ratio[('hier', 'trained')]:.2f}"))),
        Table("Per sequence: log10(||dL/dx|| enhancer / promoter), last-step loss",
              ("sequence", "distance (bases)", "flat init", "hier init", "flat trained",
               "hier trained"),
              tuple((str(i), str(int(dist[i])),
                     *(f"{float(_element_log_ratio(log_g[k], grad_data, task.element)[i]):.2f}"
                       for k in (("flat", "init"), ("hier", "init"), ("flat", "trained"),
                                 ("hier", "trained"))))
                    for i in range(s.n_grad))),
    ]
    setup = {
        "data": f"{task.length}-base random DNA (uniform A/C/G/T); promoter element "
                f"({task.element} bases) ending within the last {task.length // 100} bases; "
                f"enhancer element ({task.element} bases) {task.dist[0]} to {task.dist[1]} bases "
                f"upstream; type 0 = C/G only, type 1 = A/T only; label = same type; "
                f"{task.decoys} decoy stretch(es) of each type ({max(task.element // 4, 1)} "
                f"bases) anywhere; fresh batches from cfg's generator, {s.n_test} test sequences",
        "local CNN": f"Conv1d(4, {s.channels}, {KERNEL}) + ReLU + avg pool {s.token} -> "
                     f"per-token linear logit, averaged over tokens; {s.local_steps} steps",
        "hierarchical": f"same front end -> {T} tokens -> GRU({s.channels}, {s.hidden}) -> mean "
                        f"over tokens -> linear; {s.hier_steps} steps. Mean, not max: a max "
                        f"readout solves the label from the set of element types present "
                        f"(an OR of local detections), without the long-range path",
        "flat GRU": f"GRU(4, {s.hidden}) over bases -> mean over steps -> linear; trained at "
                    f"{ftask.length} bases (element {ftask.element}, distance {ftask.dist[0]} "
                    f"to {ftask.dist[1]}): the longest length whose BPTT fits this size's "
                    f"budget; {s.flat_steps} steps; gradients measured at {task.length} bases",
        "training": f"Adam lr {LR:g}, batch {BATCH}, BCE; both GRUs: update-gate bias "
                    f"{Z_BIAS:g} at init, PyTorch's default init otherwise",
        "gradients": f"||dL/dx_t|| of the one-hot input, float64, loss = BCE of the last "
                     f"step's readout (the only state that has seen both elements), "
                     f"{s.n_grad} sequences; flat GRU in log space (backward in chunks of "
                     f"{CHUNK} bases, adjoint renormalised); bptt_profile: hierarchical over "
                     f"all tokens, flat over the last {min(PROFILE_STEPS, task.length)} bases",
        "device": "cpu, one torch thread (restored after the run)",
    }
    return LabResult(
        name="genomics",
        title="Genomics: a 5,000-50,000-base interaction, flat GRU vs conv + pool + GRU",
        config=cfg,
        setup=setup,
        claims=tuple(claims),
        tables=tuple(tables),
        plots=tuple(plots),
    )


@dataclass(frozen=True)
class _Profiles:
    series: tuple[Series, ...]  # ||dL/dh_t|| against bases before the end
    flat_decay: float  # bptt_profile's per-step (per-base) factor of the flat GRU
    hier_decay: float  # per token step of the hierarchical GRU


def _profiles(
    hier: _Recurrent, flat: _Recurrent, x: torch.Tensor, y: torch.Tensor, token: int, when: str
) -> _Profiles:
    """bptt_profile of both GRUs under the last-step loss, float64.

    The hierarchical GRU over all its tokens; the flat GRU over its last PROFILE_STEPS bases,
    started from its own state there.
    """
    y = y.to(_F64)
    series, decay = [], []
    for name, model in (("hierarchical", hier), ("flat GRU", flat)):
        m = copy.deepcopy(model).to(_F64)
        with torch.no_grad():
            seq = m.tokens(x.to(_F64))  # (B, T, D)
        h0 = None
        if m.front is None and seq.shape[1] > PROFILE_STEPS:
            with torch.no_grad():
                _, h0 = m.gru(seq[:, :-PROFILE_STEPS])  # (1, B, H)
            seq = seq[:, -PROFILE_STEPS:]
        head = m.out

        def loss_fn(
            out: torch.Tensor, target: torch.Tensor, head: nn.Module = head
        ) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(
                head(out[:, -1]).squeeze(1), target, reduction="sum")  # out (B, T, H)

        prof = bptt_profile(m.gru, seq, loss_fn, y, h0=h0, lags=())
        per = token if m.front is not None else 1
        keep = prof.grad_norm > 0  # (T,) log axis
        xs = (prof.lag * per + (per - 1) / 2)[keep]
        series.append(Series(f"{name}, {when}", tuple(float(v) for v in xs.tolist()),
                             tuple(float(v) for v in prof.grad_norm[keep].tolist())))
        decay.append(prof.decay_factor)
    return _Profiles(tuple(series), flat_decay=decay[1], hier_decay=decay[0])
