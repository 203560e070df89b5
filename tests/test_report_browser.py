"""The HTML report in a real browser (Debian's headless Chromium): it renders, it loads nothing, its table of
contents stays in view, its sections collapse and expand, its gallery's images decode, and at 800 px wide
nothing runs off the page. The gallery's records are checked without a browser too.

The browser tests are skipped where Chromium is not installed; .ci/run installs it so CI runs these.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import CHROMIUM, run_cli

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium")

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


@pytest.mark.browser
@needs_chromium
def test_report_loads_nothing_from_the_network(report_html, tmp_path):
    assert page_requests(report_html, tmp_path) == []
    # the probe itself can fail: a page with one external image is caught
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="https://example.com/pixel.png"></body></html>')
    assert page_requests(bad, tmp_path) == ["https://example.com/pixel.png"]


@pytest.mark.browser
@needs_chromium
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


# A probe appended to a copy of the report (the report itself has no script): after load it measures what a
# reader sees, clicks like a reader, and writes the answers into the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener('load', () => {
  const out = {};
  const toc = document.querySelector('nav.toc');
  out.toc_links = [...toc.querySelectorAll('a')].map(a => a.getAttribute('href'));
  out.toc_targets = out.toc_links.every(h => document.querySelector(h) !== null);
  window.scrollTo(0, document.body.scrollHeight / 2);
  out.toc_top_after_scroll = Math.round(toc.getBoundingClientRect().top);
  out.scrolled = Math.round(window.scrollY);
  const v = document.querySelector('#validity > details');
  const vt = v.querySelector('table');
  const h = el => Math.round(el.getBoundingClientRect().height);
  out.validity_open_before = v.open;
  out.validity_table_seen_before = vt.checkVisibility();
  out.validity_h_before = h(v);
  v.querySelector('summary').click();
  out.validity_open_after = v.open;
  out.validity_table_seen_after = vt.checkVisibility();
  out.validity_h_after = h(v);
  const r = document.querySelector('#suite-robustness > details');
  const fig = r.querySelector('figure.plot');
  out.rob = [[h(r), fig.checkVisibility()]];
  r.querySelector('summary').click();
  out.rob.push([h(r), fig.checkVisibility()]);
  r.querySelector('summary').click();
  out.rob.push([h(r), fig.checkVisibility()]);
  const imgs = [...document.querySelectorAll('#gallery img')];
  out.gallery_images = imgs.length;
  out.gallery_decoded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  out.gallery_shown_w = imgs.length ? Math.round(imgs[0].getBoundingClientRect().width) : 0;
  out.page_w = document.documentElement.scrollWidth;
  out.view_w = window.innerWidth;
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def probe(html: Path, tmp: Path, width: int) -> dict:
    page = tmp / f"probe-{width}.html"
    page.write_text(html.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium(f"--window-size={width},900", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()).stdout
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert m, dom[-2000:]
    import html as h

    return json.loads(h.unescape(m.group(1)))


@pytest.mark.browser
@needs_chromium
@pytest.mark.parametrize("width", [1400, 800])
def test_contents_collapsing_and_gallery_work_in_chromium(report_html, tmp_path, width):
    p = probe(report_html, tmp_path, width)
    # the table of contents names every section, each link lands on one, and it stays in view when scrolled
    assert {"#summary", "#validity", "#suite-performance", "#suite-robustness", "#suite-calibration", "#gallery",
            "#provenance"} <= set(p["toc_links"]) and p["toc_targets"], p
    assert p["scrolled"] > 1000 and p["toc_top_after_scroll"] == 0, p
    # every check passed, so the validity table starts collapsed; a click expands it
    assert p["validity_open_before"] is False and p["validity_table_seen_before"] is False, p
    assert p["validity_open_after"] is True and p["validity_table_seen_after"] is True, p
    assert p["validity_h_after"] > p["validity_h_before"] + 300, p
    # a suite collapses to its heading and expands again
    (open_h, seen1), (closed_h, seen2), (again_h, seen3) = p["rob"]
    assert seen1 and not seen2 and seen3 and closed_h < 80 < 1000 < open_h == again_h, p
    # the gallery's PNGs decode (4 examples x 3 images, and the confident errors) and are drawn enlarged
    assert p["gallery_images"] >= 12 and p["gallery_decoded"] == p["gallery_images"] and p["gallery_shown_w"] >= 60, p
    # nothing runs off the page: wide tables scroll inside their own box
    assert p["page_w"] <= p["view_w"] == width, p


def test_one_validity_table_and_no_duplicate_headline_metrics(report_html):
    html = report_html.read_text()
    assert html.count("<th>check</th>") == 1  # the robustness section links to the one validity table
    assert "(micro)" not in html and "Shown once: micro-averaged precision, recall and F1 equal accuracy" in html
    assert "<td>auroc (macro)</td>" in html and "<td>auroc (weighted)</td>" in html  # multiclass: they differ


def test_gallery_records_the_inputs_that_broke_each_example(report_html, digits_checkpoint):
    """The adversarial inputs in report.json are the sweep's: each breaks its example (checked on the real
    model from the stored pixels), at the smallest eps the per-example table records for it, within that eps
    (up to the pixels' rounding); the confident errors are the most confident misclassified examples."""
    import base64

    import numpy as np
    import torch
    from safetensors.torch import load_file

    from examples.digits.model import DigitsCNN

    out = report_html.parent
    r = json.loads((out / "report.json").read_text())
    adv = r["suites"]["robustness"]["tables"]["gallery"]["adversarial"]
    assert 1 <= len(adv) <= 4 and len({a["label"] for a in adv}) == len(adv)
    z = np.load(out / "examples.npz", allow_pickle=False)
    cols = {k: z[k] for k in z.files}
    where = {int(i): j for j, i in enumerate(cols["index"])}
    worst = cols["robust:worst:linf:eps_broken"]
    breaks = worst[np.isfinite(worst) & (worst > 0)]
    net = DigitsCNN()
    net.load_state_dict(load_file(str(digits_checkpoint)))
    net.eval()

    def pixels(img):
        h, w, c = img["shape"]
        return np.frombuffer(base64.b64decode(img["b64"]), dtype=np.uint8).reshape(h, w, c).astype(np.float64) / 255

    for a in adv:
        j = where[a["index"]]
        assert a["eps_value"] == worst[j] == breaks.min(), a  # its smallest breaking eps, the grid's smallest break
        clean, bad = pixels(a["clean"]), pixels(a["adversarial"])
        assert np.abs(bad - clean).max() <= a["eps_value"] + 1 / 255 + 1e-9
        x = torch.tensor(bad.transpose(2, 0, 1)[None], dtype=torch.float32)
        with torch.no_grad():
            pred = int(net((x - 0.5) / 0.5).argmax(1))
        assert str(pred) == a["pred"] != a["label"] == str(int(cols["label"][j])), a
    errs = r["suites"]["performance"]["tables"]["gallery"]["errors"]
    logits = cols["logits"].astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    pred = p.argmax(1)
    for c in np.unique(cols["label"][pred != cols["label"]]):
        wrong = np.flatnonzero((cols["label"] == c) & (pred != c))
        top = sorted(wrong, key=lambda i: (-p[i, pred[i]], cols["index"][i]))[:2]
        assert [e["index"] for e in errs if e["y"] == c] == [int(cols["index"][i]) for i in top]
    assert all(e["image"]["shape"] == [8, 8, 1] for e in errs)
