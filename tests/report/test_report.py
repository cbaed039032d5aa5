import dataclasses
import html
import math
import os
import re
import sys
from html.parser import HTMLParser

import matplotlib.image
import numpy as np
import pytest
import torch
from report_runs import NASTY, batches, train
from torch import nn

import gradwatch as gw
from gradwatch.core.bptt import BPTTProfile
from gradwatch.report import figures as F
from gradwatch.report import render_run, run_figures, write_html
from gradwatch.watch.history import RecurrentSample, RunHistory


class _Page(HTMLParser):
    """Start tags, attributes and text of a page, as a browser's parser would see them."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.data, self._open = [], [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        self._open.append(tag)

    def handle_endtag(self, tag):
        if tag in self._open:
            while self._open.pop() != tag:
                pass

    def handle_data(self, data):
        self.data.append((self._open[-1] if self._open else "", data))

    def texts(self, tag=None):
        return [d for t, d in self.data if tag is None or t == tag]


def _mlp(depth, act, width=32):
    layers, d = [], 32
    for _ in range(depth - 1):
        layers += [nn.Linear(d, width), act()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, 10))


@pytest.fixture(scope="module")
def sigmoid(tmp_path_factory):
    torch.manual_seed(0)
    w = train(_mlp(30, nn.Sigmoid), batches(8, (64, 32)), detail_every=3)
    h, found = w.history, w.diagnose()
    path = render_run(h, found, tmp_path_factory.mktemp("sig") / "run.html")
    return h, found, path.read_text(encoding="utf-8")


def _figure_ids(text):
    return re.findall(r'<figure id="fig-([a-z-]+)">', text)


def test_page_has_every_finding_then_the_summary_then_every_figure(sigmoid):
    _, found, text = sigmoid
    assert [f.kind for f in found] == ["vanishing"]
    for f in found:
        for part in (f.summary, f.cause, f.fix):
            assert html.escape(part) in text
        assert f'class="finding sev-{f.severity}"' in text
    assert _figure_ids(text) == ["grad-flow", "grad-norms", "update-ratios", "activations"]
    assert text.count("<svg") == 4 and text.count("</svg>") == 4
    assert text.count("<figcaption>") == 4
    assert text.index("Findings") < text.index('id="run"') < text.index("<svg")
    assert "<tr><th>layers</th><td>30</td></tr>" in text
    assert "<tr><th>recorded steps</th><td>8</td></tr>" in text
    assert "<tr><th>first / last step</th><td>1 / 8</td></tr>" in text
    assert "No findings" not in text


def test_page_is_self_contained_and_svg_ids_are_unique(lstm):
    *_, page = lstm
    text = page.read_text(encoding="utf-8")
    assert _figure_ids(text) == [
        "grad-flow",
        "grad-norms",
        "update-ratios",
        "activations",
        "recurrent",
    ]
    parsed = _Page(text)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert "link" not in parsed.tags and "iframe" not in parsed.tags
    assert not [k for k, _ in parsed.attrs if k.startswith("on")]  # no event handlers
    for k, v in parsed.attrs:
        if k in ("src", "href", "xlink:href"):
            assert v.startswith(("#", "data:image/png;base64,")), (k, v)
    # The only URLs are the SVG and XLink namespace names.
    assert set(re.findall(r"https?://[^\"' ]+", text)) == {
        "http://www.w3.org/2000/svg",
        "http://www.w3.org/1999/xlink",
    }
    ids = re.findall(r'\sid="([^"]+)"', text)
    assert len(ids) == len(set(ids)) > 100
    refs = set(re.findall(r"url\(#([^)]+)\)", text)) | set(re.findall(r'href="#([^"]+)"', text))
    assert refs and refs <= set(ids)


def test_model_and_file_strings_are_text_never_tags(lstm):
    h, _, _, page = lstm
    text = page.read_text(encoding="utf-8")
    assert NASTY in h.layers and 'act"$x$' in h.activations
    assert "<script" not in text.lower() and "<img" not in text.lower()
    parsed = _Page(text)
    assert parsed.texts("title") == [f"run {NASTY}"] and parsed.texts("h1") == [f"run {NASTY}"]
    # matplotlib writes the tick label as SVG <text>: escaped there too, and '$' stays plain.
    svg_text = parsed.texts("text")
    assert NASTY in svg_text and 'act"$x$ (relu)' in svg_text
    cells = parsed.texts("td")
    assert "<img src=x onerror=alert(1)> & more" in cells
    assert f"rnn (LSTM) / {NASTY} (Linear)" in cells
    # A finding whose texts hold markup: escaped too.
    bad = gw.Finding("vanishing", "error", (NASTY,), "<b>s</b>", "<i>c</i>", "<u>f</u>")
    small = _synthetic(layers=("a", "b"))
    out = render_run(small, [bad], page.parent / "bad.html")
    parsed = _Page(out.read_text(encoding="utf-8"))
    assert not {"b", "i", "u"} & set(parsed.tags)
    assert {"<b>s</b>", " <i>c</i>", " <u>f</u>"} <= set(parsed.texts("p"))


def test_same_bytes_from_the_run_file_as_from_the_live_history(lstm):
    h, _, d, page = lstm
    loaded = gw.load_run(d / "run.jsonl")
    assert loaded == h and len(loaded.recurrent) == 3
    again = render_run(loaded, gw.diagnose(loaded), d / "loaded.html", title=f"run {NASTY}")
    assert again.read_bytes() == page.read_bytes()


def test_recurrent_figure_draws_each_sampled_profile(lstm):
    h, *_, page = lstm
    text = page.read_text(encoding="utf-8")
    fig = F.recurrent_lags(h)
    (ax,) = fig.axes
    lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("step")]
    assert len(lines) == len(h.recurrent) == 3
    for s, ln in zip(h.recurrent, lines, strict=True):
        order = torch.argsort(s.profile.lag)
        assert np.allclose(ln.get_xdata(), s.profile.lag[order].numpy())
        assert np.allclose(ln.get_ydata(), s.profile.grad_norm[order].double().numpy())
        label = f"step {s.step}: x{s.profile.decay_factor:.3g}/step"
        assert ln.get_label() == label and f">{label}<" in text
    assert ax.get_yscale() == "log"


def test_heatmap_colours_are_log10_of_the_recorded_norms_over_the_data_range(sigmoid):
    h, *_ = sigmoid
    fig = F.grad_flow(h)
    ax = fig.axes[0]
    mesh = ax.collections[0]
    g = h["grad_norm"].T.numpy()  # (L, S)
    shown = np.asarray(mesh.get_array()).reshape(g.shape)
    # The deep sigmoid's first layers get ~1e-20 of the last one's gradient: values, not 0.
    assert (g > 0).all() and g.min() < 1e-15 * g.max()
    assert np.allclose(shown, np.log10(g))
    lo, hi = mesh.get_clim()
    assert lo == pytest.approx(np.log10(g.min())) and hi == pytest.approx(np.log10(g.max()))
    assert [t.get_text() for t in ax.get_yticklabels()] == list(h.layers)
    assert fig.axes[1].get_ylabel() == "log10 ||grad||"
    # The step axis carries the real step numbers: cell centres are the recorded steps.
    xs = mesh.get_coordinates()[0, :, 0]
    assert np.allclose((xs[1:] + xs[:-1]) / 2, h.steps.numpy())
    # A gradient that is truly 0 gets the "exactly 0" colour, below the log scale.
    zeroed = h["grad_norm"].clone()
    zeroed[:, :3] = 0.0
    fig = F.grad_flow(dataclasses.replace(h, layer_stats={**h.layer_stats, "grad_norm": zeroed}))
    mesh = fig.axes[0].collections[0]
    shown = np.asarray(mesh.get_array()).reshape(g.shape)
    assert (shown[:3] < mesh.get_clim()[0]).all()
    assert "exactly 0" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_gradient_norm_lines_and_update_ratios_draw_the_recorded_values(sigmoid):
    h, *_ = sigmoid
    fig = F.grad_norms(h)
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("step")]
    assert [ln.get_label() for ln in lines] == ["step 1", "step 4", "step 8"]
    g = h["grad_norm"].numpy()
    for row, ln in zip((0, 3, 7), lines, strict=True):
        y = np.asarray(ln.get_ydata(), dtype=float)
        pos = g[row] > 0
        assert np.allclose(y[pos], g[row][pos]) and np.isnan(y[~pos]).all()
    assert ax.get_yscale() == "log" and ax.get_ylim()[0] < g[g > 0].min()
    with pytest.raises(ValueError, match=r"steps: step 99 was not recorded; .* 1\.\.8"):
        F.grad_norms(h, steps=[99])
    one = F.grad_norms(h, steps=[5])
    assert one.axes[0].get_lines()[0].get_label() == "step 5"

    fig = F.update_ratios(h)
    ax = fig.axes[0]
    r = h["update_ratio"].numpy()
    sampled = ~np.isnan(r).all(axis=1)
    assert sampled.sum() == 3  # detail_every=3 over 8 steps: 1, 4, 7
    ref = [ln for ln in ax.get_lines() if ln.get_label() == "typical ~1e-3"]
    assert len(ref) == 1 and ref[0].get_ydata()[0] == 1e-3 and ref[0].get_linestyle() == "--"
    series = [ln for ln in ax.get_lines() if ln.get_label().startswith("_series")]
    assert len(series) == len(h.layers)
    last = np.asarray(series[-1].get_ydata(), dtype=float)
    assert np.allclose(series[-1].get_xdata(), h.steps.numpy()[sampled])
    assert np.allclose(last, r[sampled, -1])


def _profile(g):
    t = len(g)
    g = torch.tensor(g, dtype=torch.float64)
    return BPTTProfile(
        grad_norm=g,
        hidden_grad_norm=g,
        grad_norm_per_example=g[:, None],
        lag=torch.arange(t - 1, -1, -1),
        spectral_lags=torch.tensor([0]),
        spectral_norm=torch.tensor([1.0]),
        spectral_norm_per_example=torch.tensor([[1.0]]),
        decay_factor=math.nan,
        loss=1.0,
    )


def _synthetic(layers=("a", "b", "c"), grad=None, update=None, acts=(), recurrent=()):
    n = len(layers)
    steps = torch.tensor([1, 2, 3, 5, 9])
    grad = torch.full((5, n), 0.5, dtype=torch.float64) if grad is None else grad
    update = torch.full((5, n), math.nan, dtype=torch.float64) if update is None else update
    nonfinite = torch.zeros(5, n, dtype=torch.float64)
    act_stats = {
        k: torch.full((5, len(acts)), 0.25, dtype=torch.float64)
        for k in ("saturated", "dead", "mean_abs")
    }
    return RunHistory(
        layers=tuple(layers),
        layer_kinds=("Linear",) * n,
        activations=tuple(acts),
        activation_kinds=("relu",) * len(acts),
        steps=steps,
        layer_stats={
            "grad_norm": grad,
            "param_norm": torch.ones(5, n, dtype=torch.float64),
            "update_ratio": update,
            "nonfinite": nonfinite,
        },
        activation_stats=act_stats,
        recurrent=tuple(recurrent),
    )


def test_inf_nan_and_zero_render_marked_not_hidden(tmp_path):
    nan, inf = math.nan, math.inf
    grad = torch.tensor(
        [[1e-3, 2.0, 1.0], [nan, inf, 1.0], [0.0, 1.0, 1.0], [1e-2, nan, 1.0], [1e-3, 1.0, 1.0]],
        dtype=torch.float64,
    )
    update = torch.full((5, 3), nan, dtype=torch.float64)
    update[0] = torch.tensor([1e-4, inf, 0.0])
    update[3] = torch.tensor([2e-4, 1e-3, 1e-2])
    h = _synthetic(
        grad=grad,
        update=update,
        acts=("r",),
        recurrent=[RecurrentSample("rnn", 2, _profile([inf, 0.0, 1e-2, 1.0]))],
    )
    h.layer_stats["nonfinite"][3, 1] = 7  # NaN norm because the gradient held NaN/Inf
    h.activation_stats["dead"][2, 0] = inf
    figs = {f.id: f.figure for f in run_figures(h)}
    assert list(figs) == ["grad-flow", "grad-norms", "update-ratios", "activations", "recurrent"]
    mesh = figs["grad-flow"].axes[0].collections[0]
    shown = np.ma.getdata(mesh.get_array()).reshape(3, 5)
    mask = np.ma.getmaskarray(mesh.get_array()).reshape(3, 5)
    lo, hi = mesh.get_clim()
    assert (lo, hi) == pytest.approx((-3, math.log10(2)))
    assert mask[0, 1] and mask.sum() == 1  # absent: the only "no gradient" cell
    assert shown[1, 1] > hi and shown[1, 3] > hi and shown[0, 2] < lo  # inf, flagged, zero
    assert "non-finite" in figs["grad-flow"].axes[0].get_title()
    legend = [t.get_text() for t in figs["grad-flow"].legends[0].get_texts()]
    assert legend == ["no gradient", "exactly 0", "non-finite"]
    figs["grad-norms"] = F.grad_norms(h, steps=[2, 5])  # the default steps hold no inf
    for fid in ("grad-norms", "update-ratios"):
        ax = figs[fid].axes[0]
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "non-finite (top edge)" in texts and "non-finite" in ax.get_title()
        ys = np.concatenate(
            [
                np.asarray(ln.get_ydata(), float)
                for ln in ax.get_lines()
                if ln.get_transform() == ax.transData
            ]
        )
        assert not np.isinf(ys).any()
    assert "non-finite" in figs["activations"]._suptitle.get_text()
    assert "non-finite" in figs["recurrent"]._suptitle.get_text()
    png = tmp_path / "png"
    out = render_run(h, [], tmp_path / "bad.html", png_dir=png)
    text = out.read_text(encoding="utf-8")
    assert "No findings: the learning signal looks healthy." in text
    assert text.count("<svg") == 5 and "non-finite" in text
    assert sorted(os.listdir(png)) == sorted(f"{i}.png" for i in figs)
    for name in os.listdir(png):
        data = (png / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        img = matplotlib.image.imread(png / name)
        assert img.shape[0] > 300 and img.shape[1] == 1200 and np.ptp(img[..., :3]) > 0.5


def test_run_without_activations_or_recurrence_skips_those_figures(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16), nn.Linear(16, 10))
    w = train(model, batches(3, (16, 32)))
    h = w.history
    assert not h.activations and not h.recurrent
    assert [f.id for f in run_figures(h)] == ["grad-flow", "grad-norms", "update-ratios"]
    text = render_run(h, w.diagnose(), tmp_path / "p.html").read_text(encoding="utf-8")
    assert _figure_ids(text) == ["grad-flow", "grad-norms", "update-ratios"]
    # A healthy run is not drawn as vanishing: the colour range is the data's, not fixed.
    lo, hi = F.grad_flow(h).axes[0].collections[0].get_clim()
    logs = np.log10(h["grad_norm"].numpy())
    assert (lo, hi) == pytest.approx((logs.min(), logs.max())) and hi - lo < 2
    empty = h.replace(steps=h.steps[:0], layer_stats={k: v[:0] for k, v in h.layer_stats.items()})
    assert run_figures(empty) == []
    text = render_run(empty, [], tmp_path / "e.html").read_text(encoding="utf-8")
    assert "No figures" in text and "<tr><th>first / last step</th><td>none</td></tr>" in text


def test_pages_are_written_atomically(tmp_path, monkeypatch):
    target = tmp_path / "page.html"
    target.write_text("x" * 1_000_000)  # not a gradwatch page: replaced only with force
    out = write_html("t", [("One", "<p>1</p>"), ("Two & three", "<p>2</p>")], target, force=True)
    text = out.read_text(encoding="utf-8")
    assert out == target and text.startswith("<!DOCTYPE html>") and "x" * 10 not in text
    assert '<section id="two-three">\n<h2>Two &amp; three</h2>' in text
    twice = write_html("t", [("A", ""), ("A", "")], tmp_path / "twice.html").read_text()
    assert len(set(re.findall(r'<section id="([^"]+)"', twice))) == 2
    os.remove(tmp_path / "twice.html")
    assert os.listdir(tmp_path) == ["page.html"]

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_html("new", [], target)
    assert target.read_text(encoding="utf-8") == text  # the old page, whole
    assert os.listdir(tmp_path) == ["page.html"]  # no temporary file left


def test_bad_arguments_name_the_argument(tmp_path):
    h = _synthetic()
    with pytest.raises(TypeError, match="history: expected a RunHistory"):
        render_run({"grad_norm": 1}, [], tmp_path / "a.html")
    with pytest.raises(TypeError, match=r"findings\[1\]: expected a Finding, got str"):
        f = gw.Finding("stalled", "info", (), "s", "c", "f")
        render_run(h, [f, "vanishing"], tmp_path / "a.html")
    with pytest.raises(ValueError, match=r"path: directory .* does not exist"):
        render_run(h, [], tmp_path / "missing" / "a.html")
    with pytest.raises(ValueError, match=r"path: .* is a directory"):
        render_run(h, [], tmp_path)
    with pytest.raises(TypeError, match=r"sections\[0\]: expected a \(heading, html\) pair"):
        write_html("t", [("only a heading",)], tmp_path / "a.html")
    with pytest.raises(TypeError, match="history: expected a RunHistory"):
        F.update_ratios("run.jsonl")
    assert not os.listdir(tmp_path)


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError) as err:
        run_figures(_synthetic())
    assert str(err.value) == (
        "gradwatch: figures need the 'plot' extra: pip install 'gradwatch[plot]'"
    )


def test_long_names_are_shortened_for_labels_but_stay_distinct():
    names = [f"encoder.layers.{i}.block.sublayer_{i % 6}.linear_projection" for i in range(12)]
    labels = F._labels(names)
    assert len(set(labels)) == 12 and max(map(len, labels)) <= F.NAME_MAX
    assert labels[11] == "…11.block.sublayer_5.linear_projection"
    assert F._labels(["rnn", "rnn.head"]) == ["rnn", "rnn.head"]  # short: left whole
    assert F._labels(["a" * 50]) == ["a" * 13 + "…" + "a" * 26]
    assert F._labels(["a$b$"]) == [r"a\$b\$"]  # '$' is not mathtext


@pytest.mark.parametrize("run", [None, nn.Linear(2, 2), 3, b"run.jsonl"],
                         ids=["None", "module", "int", "bytes"])
def test_report_of_something_that_is_no_run_names_run(tmp_path, run):
    with pytest.raises(TypeError) as err:
        gw.report(run, tmp_path / "r.html")  # type: ignore[operator]
    assert str(err.value) == (
        "run: expected a RunHistory (watch.history), a ProbeResult (gw.probe) or the path of "
        f"a run file (Watch.save), got {type(run).__name__}"
    )
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("out", [None, 3, ["r.html"]], ids=["None", "int", "list"])
def test_report_to_something_that_is_no_path_names_out(out):
    with pytest.raises(TypeError) as err:
        gw.report(_synthetic(), out)  # type: ignore[operator]
    assert str(err.value) == (
        f"out: expected a file path (str or os.PathLike), got {type(out).__name__}"
    )


def test_report_of_a_probe_result(tmp_path):
    torch.manual_seed(0)
    result = gw.probe(_mlp(20, nn.Sigmoid), torch.randn(32, 32), lambda y: y.square().mean())
    out = gw.report(result, tmp_path / "probe.html")  # type: ignore[operator]
    text = out.read_text(encoding="utf-8")
    parsed = _Page(text)
    assert parsed.texts("title") == ["gradwatch probe"]
    assert 'class="finding sev-warning"' in text and "</span>vanishing</h3>" in text
    assert "<tr><th>layers</th><td>20</td></tr>" in text and text.count("<svg") >= 2
    found = gw.diagnose(RunHistory.from_probe(result))
    assert [f.kind for f in found] == ["vanishing"]
    for f in found:
        assert html.escape(f.fix) in text
