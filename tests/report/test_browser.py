"""The report in a real browser: headless Chromium renders it, with no console error."""

import html
import os
import re
import subprocess

import matplotlib.image
import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
NASTY = "<script>alert(1)</script>"


def _chromium(tmp_path, page, *args):
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y chromium); "
            "these tests open the report in a real browser and are never skipped"
        )
    profile = tmp_path / f"profile-{len(os.listdir(tmp_path))}"
    profile.mkdir()
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _page_messages(stderr):
    """Console output of the page (errors, CSP violations, uncaught exceptions)."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


@pytest.fixture(scope="module")
def report(lstm):
    # The session's LSTM run (conftest.py): a recurrent finding, five figures, nasty names.
    _, found, _, page = lstm
    assert found, "the LSTM task should give a recurrent finding to draw"
    return page, found


def test_the_dom_holds_the_findings_and_the_figures_and_no_script(report, tmp_path):
    page, found = report
    done = _chromium(tmp_path, page, "--dump-dom")
    dom = done.stdout
    assert _page_messages(done.stderr) == []
    for f in found:
        for part in (f.summary, f.cause, f.fix):
            assert html.escape(part, quote=False) in dom
    ids = re.findall(r'<figure id="fig-([a-z-]+)">', dom)
    assert ids == ["grad-flow", "grad-norms", "update-ratios", "activations", "recurrent"]
    assert dom.count("<svg") == 5
    assert "<script" not in dom.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # the layer name, as text


def test_the_screenshot_shows_figures_and_colour_coded_findings(report, tmp_path):
    page, found = report
    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1280,2400")
    assert _page_messages(done.stderr) == []
    img = matplotlib.image.imread(shot)[..., :3]  # (H, W, 3) in 0..1
    assert img.shape[:2] == (2400, 1280)
    rgb = np.round(img * 255).astype(np.int64)  # (H, W, 3)
    colours = np.unique(rgb.reshape(-1, 3) @ np.array([65536, 256, 1]))
    non_white = (rgb.min(axis=2) < 235).mean()
    assert len(colours) > 500 and non_white > 0.05, (len(colours), non_white)
    # The warning's border is drawn in the warning colour (#e08600).
    assert found[0].severity == "warning"
    warn = (np.abs(rgb - np.array([0xE0, 0x86, 0x00])).max(axis=2) < 8).sum()
    assert warn > 300, warn


def test_the_console_check_catches_a_page_error(tmp_path):
    # The check above must be able to fail: a page that throws is caught.
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><p>x</p><script>throw new Error("canary")</script>')
    done = _chromium(tmp_path, bad, "--dump-dom")
    assert any("Uncaught Error: canary" in ln for ln in _page_messages(done.stderr))
