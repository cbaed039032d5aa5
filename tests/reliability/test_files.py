"""Files: gradwatch writes a path the user named only if it is absent or a file gradwatch wrote
itself (known by a marker in the file's head, never by its name), never over the run file a
report is drawn from (not even with force), and refuses everything else in one line."""

import os
import re
import shutil

import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import gradwatch as gw
from gradwatch import cli
from gradwatch.report import render_labs, render_run, run_figures, write_html

REFUSED = "refusing to overwrite it (pass force=True / --force, or choose another path)"
FOREIGN = {
    "train.py": b"import torch\n\nprint('training')\n",
    "notes.txt": b"my notes\n",
    "page.html": b"<!DOCTYPE html>\n<html><head><title>mine</title></head><body>hi</body></html>\n",
    # The old footer names gradwatch, but only the generator marker in the head counts.
    "old.html": b"<!DOCTYPE html>\n<html><body><footer>Written by gradwatch 0.1.0.</footer>\n",
    "empty": b"",
}


def invoke(*args):
    return CliRunner().invoke(cli._app(), [str(a) for a in args])


def _error_line(result):
    """The CLI's one error line (and nothing else but the --verbose hint)."""
    assert result.exit_code == 1, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert lines[-1] == "(run with --verbose for the traceback)"
    assert "Traceback" not in result.output
    return lines[-2]


def _refusal(name, path, what="report"):
    return f"{name}: {str(path)!r} exists and is not a gradwatch {what}; {REFUSED}"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    path = tmp_path_factory.mktemp("run") / "run.jsonl"
    with gw.Watch(model) as watch:
        watch.save(path)
        for _ in range(3):
            model(torch.randn(8, 4)).square().mean().backward()
            watch.step()
            model.zero_grad()
    return path


@pytest.fixture
def foreign(tmp_path):
    """Write one foreign file and return (path, its bytes)."""

    def write(name, data=None):
        data = FOREIGN.get(name, b"data\n") if data is None else data
        path = tmp_path / name
        path.write_bytes(data)
        return path, data

    return write


def _plain_figure(tmp_path, name="plain.png"):
    """A real figure file (format from the name) drawn by matplotlib, but not by gradwatch."""
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([1, 2])
    path = tmp_path / name
    fig.savefig(path)
    return path


# ---------------------------------------------------------------- gw.report / report RUN -o X


@pytest.mark.parametrize("name", list(FOREIGN))
def test_report_refuses_a_file_gradwatch_did_not_write(run, foreign, tmp_path, name):
    path, data = foreign(name)
    with pytest.raises(FileExistsError) as err:
        gw.report(run, path)  # type: ignore[operator]
    assert str(err.value) == _refusal("out", path)
    assert _error_line(invoke("report", run, "-o", path)) == (
        f"gradwatch: error: FileExistsError: {_refusal('--out', path)}"
    )
    assert path.read_bytes() == data  # untouched, byte for byte
    assert sorted(os.listdir(tmp_path)) == [name]  # and no temporary file left beside it


def test_report_rewrites_its_own_earlier_report(run, tmp_path):
    out = tmp_path / "report.html"
    first = gw.report(run, out).read_bytes()  # type: ignore[operator]
    assert gw.report(run, out).read_bytes() == first  # type: ignore[operator]
    result = invoke("report", run, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == first  # the CLI's page is the same page: same title, same bytes
    # Known by its content, not its name: a report renamed to .txt is still ours to replace.
    os.replace(out, tmp_path / "renamed.txt")
    assert gw.report(run, tmp_path / "renamed.txt").read_bytes() == first  # type: ignore[operator]


def test_force_overwrites_a_foreign_file(run, foreign):
    path, _ = foreign("train.py")
    gw.report(run, path, force=True)  # type: ignore[operator]
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    path.write_bytes(FOREIGN["notes.txt"])
    result = invoke("report", run, "-o", path, "--force")
    assert result.exit_code == 0, result.output
    assert "<svg" in path.read_text(encoding="utf-8")


def test_a_report_is_never_written_over_its_own_run_file(run, tmp_path):
    own = tmp_path / "run.jsonl"
    shutil.copy(run, own)
    run = own
    data = run.read_bytes()
    same = tmp_path / ".." / tmp_path.name / run.name  # another spelling of the same file
    link = tmp_path / "link.jsonl"
    link.symlink_to(run)
    for path in (run, same, link):
        for force in (False, True):
            with pytest.raises(FileExistsError) as err:
                gw.report(run, path, force=force)  # type: ignore[operator]
            assert str(err.value) == (
                f"out: {str(path)!r} is the run file this report is drawn from; refusing to "
                "overwrite it, even with force (choose another path)"
            )
            line = _error_line(invoke("report", run, "-o", path, *(["--force"] * force)))
            assert line == ("gradwatch: error: FileExistsError: --out: "
                            f"{str(path)!r} is the run file this report is drawn from; refusing "
                            "to overwrite it, even with force (choose another path)")
    assert run.read_bytes() == data and link.is_symlink()


def test_the_old_checks_still_come_first(run, tmp_path):
    with pytest.raises(ValueError, match=r"out: .* is a directory; give a file name"):
        gw.report(run, tmp_path, force=True)  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"out: directory .* does not exist; create it first"):
        gw.report(run, tmp_path / "missing" / "r.html")  # type: ignore[operator]


def test_the_marker_is_in_the_head_and_only_the_head_counts(run, tmp_path):
    out = gw.report(run, tmp_path / "r.html")  # type: ignore[operator]
    head = out.read_bytes()[:300].decode()
    assert re.search(r'<meta name="generator" content="gradwatch [^"]+">', head)
    # The marker far down a large foreign file (say, pasted into a note) does not make it ours.
    text = out.read_text(encoding="utf-8")
    buried = tmp_path / "notes.html"
    buried.write_text("<!DOCTYPE html>\n<p>" + "x" * 100_000 + "</p>\n" + text, encoding="utf-8")
    with pytest.raises(FileExistsError, match="is not a gradwatch report"):
        gw.report(run, buried)  # type: ignore[operator]


# ---------------------------------------------------------------- --png DIR / png_dir


def test_png_dir_refuses_to_replace_a_foreign_file_with_a_figure_name(run, tmp_path):
    figs = tmp_path / "figs"
    figs.mkdir()
    plain = _plain_figure(figs, "grad-flow.png")  # a real PNG, only not gradwatch's
    data = plain.read_bytes()
    out = tmp_path / "r.html"
    target = figs / "grad-flow.png"
    with pytest.raises(FileExistsError) as err:
        gw.report(run, out, png_dir=figs)  # type: ignore[operator]
    assert str(err.value) == _refusal("png_dir", target, "figure")
    line = _error_line(invoke("report", run, "-o", out, "--png", figs))
    assert line == f"gradwatch: error: FileExistsError: {_refusal('--png', target, 'figure')}"
    assert plain.read_bytes() == data and not out.exists()  # refused before writing anything
    assert os.listdir(figs) == ["grad-flow.png"]
    result = invoke("report", run, "-o", out, "--png", figs, "--force")
    assert result.exit_code == 0, result.output
    assert Image.open(target).info["Software"].startswith("gradwatch ")


def test_png_dir_may_be_new_empty_or_hold_an_earlier_report_and_other_files(run, tmp_path):
    ids = [f.id for f in run_figures(gw.load_run(run))]
    fresh = tmp_path / "a" / "b"  # created, parents too
    gw.report(run, tmp_path / "r.html", png_dir=fresh)  # type: ignore[operator]
    assert sorted(os.listdir(fresh)) == sorted(f"{i}.png" for i in ids)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("report", run, "-o", tmp_path / "r.html", "--png", empty)
    assert result.exit_code == 0, result.output
    before = {n: (fresh / n).read_bytes() for n in os.listdir(fresh)}
    (fresh / "notes.txt").write_bytes(b"mine\n")  # a file we would not touch does not block
    _plain_figure(fresh, "mine.png")
    result = invoke("report", run, "-o", tmp_path / "r.html", "--png", fresh)
    assert result.exit_code == 0, result.output
    assert {n: (fresh / n).read_bytes() for n in before} == before
    assert (fresh / "notes.txt").read_bytes() == b"mine\n"
    for i in ids:
        assert Image.open(fresh / f"{i}.png").info["Software"].startswith("gradwatch ")
    assert "gradwatch" not in Image.open(fresh / "mine.png").info.get("Software", "")


def test_png_dir_that_is_a_file_is_refused(run, foreign, tmp_path):
    path, data = foreign("notes.txt")
    with pytest.raises(ValueError, match=r"png_dir: .* exists and is not a directory"):
        gw.report(run, tmp_path / "r.html", png_dir=path, force=True)  # type: ignore[operator]
    assert path.read_bytes() == data and not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------- the library's own writers


def test_write_html_and_render_run_follow_the_same_rule(run, foreign, tmp_path):
    path, data = foreign("train.py")
    with pytest.raises(FileExistsError, match=re.escape(_refusal("path", path))):
        write_html("t", [], path)
    h = gw.load_run(run)
    with pytest.raises(FileExistsError, match=re.escape(_refusal("path", path))):
        render_run(h, [], path)
    assert path.read_bytes() == data
    write_html("t", [], path, force=True)
    render_run(h, [], path)  # now it is a gradwatch page
    assert write_html("t", [], path).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_report_accepts_a_probe_result_and_refuses_a_foreign_file_for_it(foreign, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(10) for m in (nn.Linear(8, 8), nn.Sigmoid())])
    result = gw.probe(model, torch.randn(16, 8), lambda y: y.square().mean())
    path, data = foreign("notes.txt")
    with pytest.raises(FileExistsError, match=re.escape(_refusal("out", path))):
        gw.report(result, path)  # type: ignore[operator]
    assert path.read_bytes() == data
    out = gw.report(result, tmp_path / "probe.html")  # type: ignore[operator]
    assert "vanishing" in out.read_text(encoding="utf-8")


# ---------------------------------------------------------------- probe --html, meanfield -o


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "tiny_models_for_files.py"
    path.write_text("from torch import nn\n\n"
                    "def mlp():\n    return nn.Sequential(nn.Linear(4, 4), nn.Tanh())\n")
    return path


def test_probe_html_refuses_a_foreign_file_and_before_probing(models, foreign):
    path, data = foreign("page.html")
    line = _error_line(invoke("probe", f"{models}:mlp", "--input-shape", "8,4", "--html", path))
    assert line == f"gradwatch: error: FileExistsError: {_refusal('--html', path)}"
    assert path.read_bytes() == data
    result = invoke("probe", f"{models}:mlp", "--input-shape", "8,4", "--html", path, "--force")
    assert result.exit_code == 0, result.output
    again = invoke("probe", f"{models}:mlp", "--input-shape", "8,4", "--html", path)
    assert again.exit_code == 0, again.output  # its own earlier page


@pytest.mark.parametrize("suffix", ["png", "svg", "pdf"])
def test_meanfield_out_refuses_a_foreign_file_and_replaces_its_own(tmp_path, suffix):
    plain = _plain_figure(tmp_path, f"phase.{suffix}")  # matplotlib's, not gradwatch's
    data = plain.read_bytes()
    line = _error_line(invoke("meanfield", "--act", "relu", "-o", plain))
    assert line == f"gradwatch: error: FileExistsError: {_refusal('--out', plain, 'figure')}"
    assert plain.read_bytes() == data
    result = invoke("meanfield", "--act", "relu", "-o", plain, "--force")
    assert result.exit_code == 0, result.output
    first = plain.read_bytes()
    assert first != data and b"gradwatch" in first
    result = invoke("meanfield", "--act", "relu", "-o", plain)  # its own figure: replaced
    assert result.exit_code == 0, result.output
    assert plain.read_bytes() == first  # and drawn the same, byte for byte


def test_meanfield_out_refuses_source_files_and_unknown_formats(foreign, tmp_path):
    path, data = foreign("train.py")
    line = _error_line(invoke("meanfield", "--act", "relu", "-o", path))
    assert "expected a .png, .svg or .pdf file" in line and path.read_bytes() == data
    script, data = foreign("plot.png", FOREIGN["train.py"])  # a script behind a .png name
    line = _error_line(invoke("meanfield", "--act", "relu", "-o", script))
    assert line == f"gradwatch: error: FileExistsError: {_refusal('--out', script, 'figure')}"
    assert script.read_bytes() == data


# ---------------------------------------------------------------- labs -o FOLDER


@pytest.fixture
def fast_lab():
    from gradwatch.labs import REGISTRY, Claim, LabConfig, LabResult, Plot, Series, register

    calls = []

    @register("_files")
    def lab(cfg: LabConfig) -> LabResult:
        calls.append(cfg.size)
        plot = Plot("curve", "a curve", "x", "y", (Series("s", (0.0, 1.0), (1.0, 2.0)),))
        return LabResult("_files", "Files lab", cfg, {},
                         (Claim.check("tiny", 1e-9, below=1e-6),), plots=(plot,))

    yield calls
    REGISTRY.pop("_files", None)


def test_labs_out_refuses_foreign_folder_content_before_running(fast_lab, tmp_path):
    folder = tmp_path / "rep"
    folder.mkdir()
    for name, what in (("index.html", "report"), ("results.json", "labs results file")):
        path = folder / name
        path.write_bytes(FOREIGN["page.html"])
        line = _error_line(invoke("labs", "_files", "--smoke", "-o", folder))
        assert line == f"gradwatch: error: FileExistsError: {_refusal('--out', path, what)}"
        assert path.read_bytes() == FOREIGN["page.html"] and fast_lab == []  # no lab was run
        path.unlink()
    assert os.listdir(folder) == []


def test_labs_out_accepts_new_empty_and_own_folders_and_refuses_foreign_figures(fast_lab,
                                                                                  tmp_path):
    folder = tmp_path / "rep"
    result = invoke("labs", "_files", "--smoke", "-o", folder, "--png")
    assert result.exit_code == 0, result.output
    (png,) = folder.glob("*.png")
    assert Image.open(png).info["Software"].startswith("gradwatch ")
    (folder / "notes.txt").write_bytes(b"mine\n")  # not ours, not touched, not blocking
    result = invoke("labs", "_files", "--smoke", "-o", folder, "--png")
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(folder)) == sorted(["index.html", "results.json", png.name,
                                                 "notes.txt"])
    png.write_bytes(_plain_figure(tmp_path).read_bytes())  # a foreign figure where ours would go
    data = png.read_bytes()
    index = (folder / "index.html").read_bytes()
    line = _error_line(invoke("labs", "_files", "--smoke", "-o", folder, "--png"))
    assert line == f"gradwatch: error: FileExistsError: {_refusal('--out', png, 'figure')}"
    assert png.read_bytes() == data and (folder / "index.html").read_bytes() == index
    result = invoke("labs", "_files", "--smoke", "-o", folder, "--png", "--force")
    assert result.exit_code == 0, result.output
    assert Image.open(png).info["Software"].startswith("gradwatch ")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("labs", "_files", "--smoke", "-o", empty)
    assert result.exit_code == 0, result.output


def test_render_labs_follows_the_rule_too(tmp_path):
    from gradwatch.labs import Claim, LabConfig, LabResult

    res = LabResult("x", "X", LabConfig("smoke"), {}, (Claim.check("c", 1.0, below=2.0),))
    folder = tmp_path / "rep"
    folder.mkdir()
    (folder / "results.json").write_bytes(b'{"mine": true}\n')
    with pytest.raises(FileExistsError, match=re.escape(_refusal("out", folder / "results.json",
                                                                 "labs results file"))):
        render_labs([res], folder)
    assert not (folder / "index.html").exists()
    render_labs([res], folder, force=True)
    render_labs([res], folder)  # its own files now
    render_labs([], folder)  # no results: "[]"
    render_labs([res], folder)  # and "[]" is its own too
    with pytest.raises(ValueError, match=r"out: .* exists and is not a directory"):
        render_labs([res], folder / "index.html", force=True)
