"""Security: run files are never unpickled (and src/ holds no unpickler at all); HTML reports
escape every string that comes from a model or a file; the CLI's MODULE:FACTORY runs only the
module and the callable the user named."""

import math
import os
import pickle
import re
import tokenize
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import gradwatch
import gradwatch as gw
from gradwatch import cli
from gradwatch._factory import load_factory

SRC = Path(gradwatch.__file__).parent

# ---------------------------------------------------------------- no unpickling


class _Payload:
    """Unpickling this creates a file: proof that something unpickled it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _code_tokens(path):
    """(type, string) of every token that is code: comments and strings dropped."""
    with open(path, "rb") as f:
        toks = list(tokenize.tokenize(f.readline))
    return [(t.type, t.string, t.start[0]) for t in toks
            if t.type not in (tokenize.COMMENT, tokenize.STRING, tokenize.ENCODING)]


UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve",
              "jsonpickle", "joblib"}


def test_src_has_no_unpickler_no_eval_and_only_safe_torch_load():
    offences = []
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        toks = _code_tokens(path)
        rel = path.relative_to(SRC)
        for i, (kind, text, line) in enumerate(toks):
            if kind != tokenize.NAME:
                continue
            prev = toks[i - 1][1] if i else ""
            if text in UNPICKLERS:
                offences.append(f"{rel}:{line}: {text}")
            if text in ("eval", "exec", "compile") and prev != "." and toks[i + 1][1] == "(":
                offences.append(f"{rel}:{line}: {text}(")
            if text == "load" and prev == "." and toks[i - 2][1] in ("torch", "np", "numpy"):
                depth, j, call = 0, i + 1, []
                while True:  # the call's tokens, to its closing parenthesis
                    call.append(toks[j][1])
                    depth += {"(": 1, ")": -1}.get(toks[j][1], 0)
                    if depth == 0:
                        break
                    j += 1
                args = " ".join(call)
                if "weights_only = True" not in args and "allow_pickle = False" not in args:
                    offences.append(f"{rel}:{line}: {toks[i - 2][1]}.load without a safe flag")
            if text in ("import_module", "__import__", "exec_module") and rel.name not in (
                "_factory.py",  # MODULE:FACTORY, the user's own named module
                "sinks.py",  # _need(): imports a fixed optional dependency by name
            ) and str(rel) != os.path.join("labs", "__init__.py"):  # its own lab modules
                offences.append(f"{rel}:{line}: dynamic import {text}")
    assert not offences, offences


@pytest.mark.parametrize("where", ["whole file", "after the header", "inside a record"])
def test_a_pickle_payload_in_a_run_file_is_never_unpickled(tmp_path, where):
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Payload(marker))
    head = (b'{"format": "gradwatch-run", "version": 1, "layers": ["a"], "layer_kinds": ["L"], '
            b'"activations": [], "activation_kinds": []}\n')
    content = {
        "whole file": payload,
        "after the header": head + payload + b"\n",
        "inside a record": head + b'{"step": 1, "grad_norm": "' + payload.hex().encode()
        + b'"}\n',
    }[where]
    path = tmp_path / "run.jsonl"
    path.write_bytes(content)
    try:
        gw.load_run(path)
    except ValueError as err:  # the whole-file and binary cases: one clear line
        assert str(path) in str(err)
    assert not marker.exists()


def test_a_torch_save_file_is_refused_not_loaded(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "run.jsonl"
    torch.save({"evil": _Payload(marker)}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(ValueError, match="binary"):
        gw.load_run(path)
    assert not marker.exists()


# ---------------------------------------------------------------- HTML escaping

NASTY = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "</title><script>x</script>",
    "a\x00b\x1bc&amp;",
]


class _Page(HTMLParser):
    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.text = [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data):
        self.text.append(data)


def _nasty_run(tmp_path):
    """A run whose layer, activation and recurrent names and meta are all markup."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module(NASTY[0], nn.GRU(3, 4, batch_first=True))
            self.add_module(NASTY[1], nn.Sigmoid())
            self.add_module(NASTY[2], nn.Linear(4, 4))
            self.add_module(NASTY[3], nn.Linear(4, 2))

        def forward(self, x):
            c = dict(self.named_children())
            h = c[NASTY[1]](c[NASTY[2]](c[NASTY[0]](x)[0][:, -1]))
            return c[NASTY[3]](h)

    torch.manual_seed(0)
    model = Net()
    meta = {NASTY[4]: NASTY[1], NASTY[0]: NASTY[3]}
    name = "<img src=x onerror=alert(1)>.jsonl"
    path = tmp_path / name
    with gw.Watch(model, meta=meta, detail_every=1, recurrent_every=2) as w:
        w.save(path)
        for step in range(4):
            model(torch.randn(4, 5, 3)).sum().backward()
            if step == 2:  # a finding that names a layer
                getattr(model, NASTY[2]).weight.grad[0, 0] = math.nan
            w.step()
            model.zero_grad()
    return path


def _assert_inert(text):
    page = _Page(text)
    assert not {"script", "img", "iframe", "object", "embed", "link"} & set(page.tags)
    assert not [k for k, _ in page.attrs if k.startswith("on")]
    assert "\x00" not in text and "\x1b" not in text
    assert "<script" not in text.lower() and "onerror=" not in text.replace("onerror=alert", "")
    assert not re.search(r"<(img|svg)[^>]*\son(error|load)=", text)
    return page


def test_every_string_from_a_model_or_file_is_escaped_in_the_report(tmp_path):
    path = _nasty_run(tmp_path)
    h = gw.load_run(path)
    assert NASTY[0] in h.layers and NASTY[1] in h.activations and h.recurrent
    out = gw.report(path, tmp_path / "report.html")
    text = out.read_text(encoding="utf-8")
    page = _assert_inert(text)
    joined = "".join(page.text)
    for s in (NASTY[0], NASTY[1], NASTY[3]):
        assert s in joined  # shown as text, not dropped
    title = "gradwatch: <img src=x onerror=alert(1)>.jsonl"  # the file name, as text
    assert title in page.text


def test_cli_report_of_a_nasty_file_name_is_escaped_too(tmp_path):
    path = _nasty_run(tmp_path)
    out = tmp_path / "cli.html"
    result = CliRunner().invoke(cli._app(), ["report", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    _assert_inert(out.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- MODULE:FACTORY


@pytest.fixture
def factories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zoo.py").write_text(
        "import pathlib\n"
        "from torch import nn\n"
        "pathlib.Path('imported').touch()\n"
        "def chosen():\n"
        "    pathlib.Path('chosen').touch()\n"
        "    return nn.Linear(4, 2)\n"
        "def other():\n"
        "    pathlib.Path('other').touch()\n"
        "    return nn.Linear(4, 2)\n"
    )
    (tmp_path / "neighbour.py").write_text("import pathlib\npathlib.Path('neighbour').touch()\n")
    return tmp_path


def _ran(folder):
    return sorted(p.name for p in folder.iterdir() if "." not in p.name and p.name[0] != "_")


@pytest.mark.parametrize("spec", ["zoo.py:chosen", "zoo:chosen"])
def test_factory_runs_only_the_named_module_and_callable(factories, spec, monkeypatch):
    monkeypatch.delitem(__import__("sys").modules, "zoo", raising=False)
    model = load_factory(spec)
    assert isinstance(model, nn.Linear)
    assert _ran(factories) == ["chosen", "imported"]  # not other(), not neighbour.py


@pytest.mark.parametrize("spec", [
    "zoo.py:__import__('os').system('touch other')",
    "zoo.py:other()",
    "zoo.py:chosen.__globals__",
    "zoo.py",
    ":chosen",
    "zoo.py:",
])
def test_a_factory_spec_is_a_name_never_code(factories, spec, monkeypatch):
    monkeypatch.delitem(__import__("sys").modules, "zoo", raising=False)
    with pytest.raises(ValueError, match="MODULE:FACTORY"):
        load_factory(spec)
    assert "other" not in _ran(factories) and "chosen" not in _ran(factories)
    assert "neighbour" not in _ran(factories)


def test_cli_probe_runs_only_the_named_factory(factories, monkeypatch):
    monkeypatch.delitem(__import__("sys").modules, "zoo", raising=False)
    result = CliRunner().invoke(cli._app(), ["probe", "zoo.py:chosen", "--input-shape", "3,4"])
    assert result.exit_code == 0, result.output
    assert _ran(factories) == ["chosen", "imported"]
    result = CliRunner().invoke(cli._app(), ["probe", "zoo.py:nothing", "--input-shape", "3,4"])
    assert result.exit_code != 0 and "has no attribute 'nothing'" in result.output
    assert "other" not in _ran(factories)


def test_report_page_loads_nothing_from_anywhere(tmp_path):
    path = _nasty_run(tmp_path)
    text = gw.report(path, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+", text))
    assert urls <= {"http://www.w3.org"}, urls  # the SVG namespace names only
