"""The HTML report in a real browser (Debian's headless Chromium): it renders, and it loads nothing.

Skipped where Chromium is not installed; .ci/run installs it so CI runs these.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import CHROMIUM, run_cli

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium")]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
# Chromium itself calls home (time, update, accounts) even with the flags above; those requests are the
# browser's, not the page's.
BROWSER_OWN = re.compile(r"^https?://([a-z0-9-]+\.)*(google\.com|googleapis\.com|gvt1\.com|gstatic\.com)/")


def chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=120)


def page_requests(html: Path, tmp: Path) -> list[str]:
    """Every http(s) URL the page asked for while loading, from Chromium's own network log."""
    log = tmp / "net.json"
    chromium(f"--log-net-log={log}", "--dump-dom", html.as_uri())
    urls = set(re.findall(r'"url":"(https?://[^"]+)"', log.read_text()))
    return sorted(u for u in urls if not BROWSER_OWN.match(u))


@pytest.fixture(scope="module")
def report_html(digits_checkpoint, digits_recipe, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html")
    res = run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--out", out, "--quiet")
    assert res.exit_code == 0, res.stderr
    return out / "report.html"


def test_report_loads_nothing_from_the_network(report_html, tmp_path):
    assert page_requests(report_html, tmp_path) == []
    # the probe itself can fail: a page with one external image is caught
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="https://example.com/pixel.png"></body></html>')
    assert page_requests(bad, tmp_path) == ["https://example.com/pixel.png"]


def test_report_renders_in_chromium(report_html, tmp_path):
    dom = chromium("--dump-dom", report_html.as_uri()).stdout
    assert "<svg" in dom and 'class="badge pass"' in dom and "Confusion matrix" in dom
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,2400", report_html.as_uri())
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] == 2400 and img.shape[1] == 1200
    # not a blank page: plenty of non-white pixels, and the green PASS badge near the top
    rgb = img[..., :3]
    assert (rgb.mean(axis=2) < 0.9).mean() > 0.02
    top = rgb[:300]
    green = (top[..., 1] > 0.4) & (top[..., 0] < 0.3) & (top[..., 2] < 0.35)
    assert green.sum() > 500, "the PASS badge is not visible"
    (Path(tempfile.gettempdir()) / "audit-report-screenshot.png").write_bytes(shot.read_bytes())


def test_report_json_alone_renders_the_same_html(report_html, tmp_path):
    """Renderers read only report.json: re-rendering it gives the identical file."""
    from audit.report.html import render_html

    report = json.loads((report_html.parent / "report.json").read_text())
    assert render_html(report) == report_html.read_text()
