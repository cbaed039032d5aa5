import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from gradwatch import cli
from gradwatch._demo import depth_demo

runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli._app(), [str(a) for a in args])


def test_demo_prints_the_measured_profile_and_the_bound():
    result = invoke("demo", "--depth", "8")
    assert result.exit_code == 0, result.output
    assert "0.25^8 = 1.53e-05" in result.output
    assert "first / last" in result.output and "ReLU MLP, He init" in result.output


def test_demo_numbers_show_the_three_regimes():
    rows = {r.model.split()[0] + r.model.split()[1]: r for r in depth_demo(depth=12, batch=64)}
    sig, relu, res = rows["sigmoidMLP"], rows["ReLUMLP,"], rows["sigmoidresidual"]
    # Sigmoid: per-layer factor at most 0.25 x its weight gain; ReLU+He and residual near 1.
    assert sig.per_layer <= 0.25 * sig.weight_gain * 1.05
    assert sig.first_over_last < 1e-6
    assert 0.7 < relu.per_layer < 1.3 and 0.7 < res.per_layer < 1.3


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(textwrap.dedent("""
        from torch import nn

        def sigmoid_mlp():
            layers = []
            for _ in range(20):
                layers += [nn.Linear(16, 16), nn.Sigmoid()]
            return nn.Sequential(*layers, nn.Linear(16, 4))

        def rnn():
            return nn.RNN(3, 32, num_layers=2)

        def lstm_cell():
            return nn.LSTMCell(3, 16)

        not_a_model = 3

        def returns_int():
            return 3
    """))
    return path


def test_probe_prints_the_table_and_the_findings(models, tmp_path):
    out = tmp_path / "probe.html"
    result = invoke("probe", f"{models}:sigmoid_mlp", "--input-shape", "32,16", "--loss", "ce",
                    "--html", out)
    assert result.exit_code == 0, result.output
    assert "grad/weight" in result.output and "vanishing" in result.output
    assert "Sigmoid" in result.output and out.stat().st_size > 1000


def test_probe_by_dotted_module_name(models, monkeypatch):
    monkeypatch.chdir(models.parent)
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    result = invoke("probe", "my_models:sigmoid_mlp", "--input-shape", "8,16")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("spec,message", [
    ("nomodule_xyz:f", "cannot import 'nomodule_xyz'"),
    ("{models}:missing", "has no attribute 'missing'"),
    ("{models}:not_a_model", "is not callable"),
    ("{models}:returns_int", "returned int, not an nn.Module"),
    ("no_colon", "expected e.g. 'mymodels:make_net'"),
])
def test_bad_factory_is_one_readable_line(models, spec, message):
    result = invoke("probe", spec.format(models=models), "--input-shape", "8,16")
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_bad_input_shape_and_loss(models):
    result = invoke("probe", f"{models}:sigmoid_mlp", "--input-shape", "8,x,y")
    assert result.exit_code == 1 and "--input-shape" in result.output
    result = invoke("probe", f"{models}:sigmoid_mlp", "--input-shape", "8,16", "--loss", "l1")
    assert result.exit_code == 1 and "--loss" in result.output


def test_verbose_shows_the_traceback(models):
    result = invoke("--verbose", "probe", f"{models}:missing", "--input-shape", "8,16")
    assert result.exit_code == 1 and "Traceback" in result.output


def test_meanfield_prints_the_critical_point_and_writes_the_phase_diagram(tmp_path):
    out = tmp_path / "phase.png"
    result = invoke("meanfield", "--act", "relu", "--out", out)
    assert result.exit_code == 0, result.output
    assert "critical sigma_w for relu at sigma_b=0: 1.41421" in result.output
    assert out.read_bytes()[:4] == b"\x89PNG"
    result = invoke("meanfield", "--act", "tanhh")
    assert result.exit_code == 1 and "unknown activation 'tanhh'" in result.output


def test_lyapunov_on_a_random_rnn_and_on_a_module(models):
    result = invoke("lyapunov", "--random-rnn", "--g", "2.0", "--n", "100", "--k", "3",
                    "--steps", "200", "--warmup", "50")
    assert result.exit_code == 0, result.output
    assert "chaotic" in result.output and "std. error" in result.output
    result = invoke("lyapunov", "--random-rnn", "--g", "0.5", "--n", "50", "--k", "2",
                    "--steps", "100")
    assert "ordered" in result.output
    for name in ("rnn", "lstm_cell"):
        result = invoke("lyapunov", f"{models}:{name}", "--k", "2", "--steps", "50")
        assert result.exit_code == 0, result.output
    result = invoke("lyapunov")
    assert result.exit_code == 1 and "either MODULE:FACTORY or --random-rnn" in result.output


def test_report_of_a_saved_run(tmp_path):
    from torch import nn

    import gradwatch as gw

    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(12) for m in (nn.Linear(8, 8), nn.Sigmoid())])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tmp_path / "run.jsonl"
    with gw.Watch(model, optimizer=opt) as w:
        w.save(run)
        for _ in range(4):
            model(torch.randn(16, 8)).square().mean().backward()
            opt.step()
            opt.zero_grad()
    out = tmp_path / "report.html"
    result = invoke("report", run, "-o", out)
    assert result.exit_code == 0, result.output
    assert "vanishing" in result.output and out.read_text().count("<svg") >= 2
    result = invoke("report", tmp_path / "missing.jsonl")
    assert result.exit_code == 1 and "cannot read" in result.output


def test_missing_cli_extra_names_the_pip_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "typer", None)  # makes `import typer` raise ImportError
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    assert "pip install 'gradwatch[cli]'" in capsys.readouterr().err


def test_labs_command_runs_prints_verdicts_and_writes_the_report(tmp_path):
    from gradwatch.labs import REGISTRY, Claim, LabConfig, LabResult, register

    @register("_ok")
    def ok(cfg: LabConfig) -> LabResult:
        return LabResult("_ok", "OK lab", cfg, {}, (Claim.check("tiny", 1e-9, below=1e-6),))

    @register("_boom")
    def boom(cfg: LabConfig) -> LabResult:
        raise RuntimeError("kaput")

    try:
        result = invoke("labs", "_ok", "--smoke", "-o", tmp_path / "rep")
        assert result.exit_code == 0, result.output
        assert "holds" in result.output and (tmp_path / "rep" / "index.html").exists()
        result = invoke("labs", "_boom", "_ok", "--smoke", "-o", tmp_path / "rep2")
        assert result.exit_code == 1 and "lab _boom crashed: RuntimeError: kaput" in result.output
        assert "OK lab" in (tmp_path / "rep2" / "index.html").read_text()  # the others still ran
        result = invoke("labs", "nope", "--smoke")
        assert result.exit_code == 1 and "unknown lab(s) nope" in result.output
        result = invoke("labs", "_ok", "--smoke", "--full")
        assert result.exit_code == 1 and "choose one size" in result.output
    finally:
        REGISTRY.pop("_ok", None)
        REGISTRY.pop("_boom", None)


@pytest.mark.parametrize("command", ["report", "probe", "meanfield", "labs"])
def test_every_command_that_writes_has_force(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "--force" in result.output
