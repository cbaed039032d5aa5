import sys

import pytest
from typer.testing import CliRunner

from gradwatch import cli
from gradwatch._demo import depth_demo


def test_demo_prints_the_measured_profile_and_the_bound():
    result = CliRunner().invoke(cli._app(), ["demo", "--depth", "8"])
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


def test_bad_option_is_one_readable_error():
    result = CliRunner().invoke(cli._app(), ["demo", "--depth", "1"])
    assert result.exit_code != 0 and "depth" in result.output


def test_missing_cli_extra_names_the_pip_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "typer", None)  # makes `import typer` raise ImportError
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    assert "pip install 'gradwatch[cli]'" in capsys.readouterr().err
