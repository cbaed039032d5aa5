import json
import math

from gradwatch.labs import Claim, LabConfig, LabResult, Plot, Series, Table
from gradwatch.report.labreport import render_labs


def _result(name="chain", value=1e-20):
    return LabResult(
        name, "The chain rule <b>", LabConfig("smoke"), {"layers": "<script>alert(1)</script>"},
        (Claim.check("30 sigmoid layers shrink the gradient", value, below=1e-6,
                     measured={"per-layer factor": 0.14}),),
        (Table("per layer", ("layer", "|g|"), (("0", "1e-20"), ("1", "1e-19"))),),
        (Plot("profile", "gradient per layer", "layer", "|g|",
              (Series("sigmoid", (0.0, 1.0, 2.0), (1e-20, 1e-10, math.nan)),),
              logy=True, reference={"0.25^30": 0.25**30}),
         Plot("phase", "chi1", "sigma_w", "log10 chi1",
              (Series("b=0", (1.0, 2.0), (-0.1, 0.2)), Series("b=1", (1.0, 2.0), (-0.2, 0.1))),
              kind="heatmap")),
        seconds=0.5)


def test_page_has_verdicts_sections_figures_and_escapes(tmp_path):
    page = render_labs([_result(), _result("other", 1e-3)], tmp_path / "rep",
                       crashed=[("bad<lab>", "ValueError: boom")], png=True)
    text = page.read_text()
    assert text.count("<svg") == 4 and "holds" in text and "does not hold" in text
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)" in text
    assert "bad&lt;lab&gt; crashed" in text and "The chain rule &lt;b&gt;" in text
    assert "(1 non-finite or non-positive points omitted)" in text
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert len(pngs) == 4 and all((tmp_path / "rep" / p).stat().st_size > 1000 for p in pngs)
    data = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert [LabResult.from_json(json.dumps(d)).claims for d in data] == [
        _result().claims, _result("other", 1e-3).claims]


def test_same_results_same_bytes(tmp_path):
    a = render_labs([_result()], tmp_path / "a").read_bytes()
    b = render_labs([_result()], tmp_path / "b").read_bytes()
    assert a == b


def test_the_package_is_callable_as_the_design_sketches(tmp_path):
    import torch
    from torch import nn

    import gradwatch as gw
    import gradwatch.report as report_pkg

    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    with gw.Watch(model) as watch:
        watch.save(tmp_path / "run.jsonl")
        for _ in range(3):
            model(torch.randn(8, 4)).square().mean().backward()
            watch.step()
    from_file = gw.report(tmp_path / "run.jsonl", tmp_path / "a.html")  # type: ignore[operator]
    assert from_file.read_text().count("<svg") >= 2
    live = report_pkg.report_file(watch.history, tmp_path / "b.html")
    assert live.exists() and report_pkg.render_run is gw.report.render_run
