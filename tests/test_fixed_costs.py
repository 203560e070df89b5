"""Fixed costs (issue 14): imports only where used, plots drawn without matplotlib, the seeded split
without scikit-learn (and equal to it), and `audit repro`'s child runs without pages.

Costs themselves are measured by bench/fixed_costs.py, not timed here; these tests pin what makes them
small: which modules a command imports, and that the hand-written SVG shows what the report holds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import ROOT, signals_default

SVG_NS = "{http://www.w3.org/2000/svg}"
HEAVY = ("torch", "numpy", "scipy", "sklearn", "pandas", "matplotlib", "fairlearn", "torchattacks", "jinja2")


def _modules_after(code: str, cwd=ROOT) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (which may exit)."""
    probe = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: sys.__stderr__.write('\\nMODULES=' + json.dumps(sorted(sys.modules)) + '\\n'))\n"
        + code
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES=")]
    assert line, proc.stderr[-2000:]
    return set(json.loads(line[-1][len("MODULES="):]))


def _top(mods: set[str]) -> set[str]:
    return {m.split(".")[0] for m in mods}


# ------------------------------------------------------------------------------------------- imports


def test_import_audit_and_the_help_import_nothing_heavy():
    mods = _modules_after("import audit, audit.cli\nfrom audit.cli import main\nmain(['--help'])")
    assert not _top(mods) & set(HEAVY), sorted(_top(mods) & set(HEAVY))
    mods = _modules_after("from audit.cli import main\nmain(['run', '--help'])")
    assert not _top(mods) & set(HEAVY), sorted(_top(mods) & set(HEAVY))


def test_suites_runner_and_renderers_import_no_scipy_sklearn_pandas_or_matplotlib():
    """Reading a recipe imports every suite (to validate its section); rendering imports the figure
    modules. None of that may pull in what only some computation needs."""
    mods = _modules_after(
        "from audit.suites import all_suites\nall_suites()\n"
        "import audit.runner, audit.report.html, audit.report.plots, audit.report.outdir, audit.loading.data\n"
        "import audit.report.figures.performance, audit.report.figures.fairness, audit.report.figures.calibration\n"
        "import audit.report.figures.robustness, audit.report.figures.repro, audit.report.figures.harden\n"
        "import audit.metrics.calibration, audit.repro.study\n")
    unwanted = {"scipy", "sklearn", "pandas", "matplotlib", "fairlearn", "torchattacks"}
    assert not _top(mods) & unwanted, sorted(_top(mods) & unwanted)


@pytest.fixture(scope="module")
def performance_run(credit_checkpoint, tmp_path_factory):
    """`audit run --suite performance` on the credit test split (300 rows), in a fresh interpreter."""
    out = tmp_path_factory.mktemp("perf-only")
    mods = _modules_after(
        "from audit.cli import main\n"
        f"main(['run', {str(credit_checkpoint)!r}, '--recipe', {str(ROOT / 'recipes' / 'credit.toml')!r}, "
        f"'--suite', 'performance', '--out', {str(out)!r}, '--quiet'])\n")
    return mods, out


def test_a_performance_run_imports_no_matplotlib_scikit_learn_or_scipy_stats(performance_run):
    mods, out = performance_run
    report = json.loads((out / "report.json").read_text())
    assert report["suites_run"] == ["performance"] and report["run_status"] == "finished"
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 3 and 'aria-label="perf-roc"' in html  # confusion matrix, ROC, PR
    for name in ("matplotlib", "torchattacks", "fairlearn", "sklearn", "scipy.stats"):
        assert name not in mods, name
    assert "torch" in mods  # the model runs: torch is a floor (bench/fixed_costs.py measures it)


# ----------------------------------------------------------------------------- the split, exactly sklearn's


def test_seeded_split_equals_sklearn_train_test_split():
    """Same rows in the same order as scikit-learn's train_test_split, and an error exactly where it
    raises one, over random sizes, class counts (labels as ints and as strings), fractions and seeds."""
    from sklearn.model_selection import train_test_split

    from audit.loading.split import SplitError, seeded_split

    rng = np.random.default_rng(14)
    agreed_errors = compared = 0
    for trial in range(400):
        n = int(rng.integers(1, 300))
        y = rng.integers(0, int(rng.integers(1, 12)), n)
        if trial % 3 == 0:
            y = np.array([f"class {v}" for v in y])
        test_size = float(rng.choice([0.1, 0.25, 0.3, 0.5, 0.99, rng.uniform(0.01, 0.99)]))
        seed = int(rng.integers(0, 2**31 - 1))
        for stratify in (True, False):
            try:
                ref = train_test_split(np.arange(n), test_size=test_size, random_state=seed,
                                       stratify=y if stratify else None)
            except ValueError:
                with pytest.raises(SplitError):
                    seeded_split(y, test_size, seed, stratify)
                agreed_errors += 1
                continue
            got = seeded_split(y, test_size, seed, stratify)
            assert np.array_equal(ref[0], got[0]) and np.array_equal(ref[1], got[1]), (n, test_size, seed)
            compared += 1
    assert compared > 600 and agreed_errors > 20  # both paths exercised


def test_recipe_splits_are_unchanged(credit_checkpoint):
    """The bundled recipes' test splits are the rows scikit-learn chose before (train and test disjoint)."""
    from sklearn.model_selection import train_test_split

    from audit.loading.data import split_indices

    y = np.random.default_rng(0).integers(0, 2, 1000)
    ref = np.sort(train_test_split(np.arange(1000), test_size=0.3, random_state=0, stratify=y)[1])
    assert np.array_equal(split_indices(y, "test", 0.3, 0), ref)
    train = split_indices(y, "train", 0.3, 0)
    assert len(np.intersect1d(train, ref)) == 0 and len(train) + len(ref) == 1000


# ------------------------------------------------------------------------------------------------ SVG


def _svg(fig: str) -> ET.Element:
    """The <svg> of a figure, parsed as XML (it must be well-formed)."""
    assert fig.startswith('<figure class="plot" aria-label="') and fig.endswith("</svg></figure>")
    return ET.fromstring(fig[fig.index("<svg"):-len("</figure>")])


def _texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG_NS}text")]


def test_blues_is_matplotlibs_colour_map():
    from matplotlib import colormaps

    from audit.report.svg import blues

    for v in np.linspace(0, 1, 41):
        want = np.array(colormaps["Blues"](v)[:3]) * 255
        got = np.array([int(blues(v)[i:i + 2], 16) for i in (1, 3, 5)])
        assert np.abs(got - want).max() <= 2.5, (v, got, want)  # matplotlib's 256-entry table quantises


def test_ticks_are_round_and_cover_the_range():
    from audit.report.svg import nice_ticks, tick_labels

    assert nice_ticks(-0.01, 1.02) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert tick_labels(nice_ticks(-0.01, 1.02)) == ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    assert tick_labels([0.0, 0.025, 0.05]) == ["0", "0.025", "0.050"]
    assert tick_labels([-10.0, -5.0, 0.0, 5.0]) == ["\u221210", "\u22125", "0", "5"]
    for lo, hi in ((0.0, 557.0), (-3.2, 12.7), (0.001, 0.0042), (5.0, 5.5)):
        t = nice_ticks(lo, hi)
        assert 3 <= len(t) <= 9 and lo - 1e-12 <= t[0] and t[-1] <= hi + 1e-12, (lo, hi, t)
        step = t[1] - t[0]
        assert t[0] - step < lo and t[-1] + step > hi  # no room for another tick inside


def test_interval_bars_show_values_intervals_undefined_and_muted_groups():
    from audit.report.plots import interval_bars_svg

    fig = interval_bars_svg(["g <1> & $x^$", "g2"], {"rate": ([0.5, None], [0.25, None], [0.75, None]),
                                                    "other": ([1.0, 0.2], [None, 0.1], [None, 0.3])},
                            "Rates & <things>", "t-bars", xlabel="rate", muted=[True, False],
                            vlines=[(0.8, "0.8")])
    root = _svg(fig)
    texts = _texts(root)
    # user text is escaped, not markup (and "$" is a dollar sign)
    assert "g <1> & $x^$" in texts and "Rates & <things>" in root.find(f"{SVG_NS}title").text
    assert "undefined" in texts and "0.8" in texts and "rate" in texts and "other" in texts  # legend: 2 series
    clip = root.find(f".//{SVG_NS}clipPath/{SVG_NS}rect")
    x0, width = float(clip.get("x")), float(clip.get("width"))
    bars = [r for r in root.iter(f"{SVG_NS}rect") if r.get("clip-path") and "url(#t-bars-hatch" not in r.get("fill")]
    widths = sorted(round(float(r.get("width")) / width, 3) for r in bars)
    assert widths == [0.2, 0.5, 1.0]  # every value's bar, to scale, from 0
    hatched = [r for r in root.iter(f"{SVG_NS}rect") if r.get("fill", "").startswith("url(#t-bars-hatch")]
    assert len(hatched) == 2  # both bars of the muted group
    spans = []
    for p in root.iter(f"{SVG_NS}path"):
        m = re.fullmatch(r"M([\d.]+),([\d.]+)H([\d.]+)M.*", p.get("d", ""))
        if m:
            spans.append(((float(m.group(1)) - x0) / width, (float(m.group(3)) - x0) / width))
    assert sorted((round(a, 3), round(b, 3)) for a, b in spans) == [(0.1, 0.3), (0.25, 0.75)]  # None: none drawn


def test_curves_and_reliability_keep_legends_labels_and_counts():
    from audit.report.figures.calibration import reliability_svg
    from audit.report.plots import curves_svg

    roc = _svg(curves_svg([{"class": "good", "fpr": [0, 0.5, 1], "tpr": [0, 0.8, 1], "auc": 0.75}], "fpr", "tpr",
                          "false positive rate", "true positive rate", "ROC", "r", diagonal=True,
                          value_key="auc", value_label="AUC "))
    texts = _texts(roc)
    assert "good (AUC 0.750)" in texts and "chance" in texts and "false positive rate" in texts
    assert "true positive rate" in texts and "ROC" in texts
    b = {"lower": [0.0, 0.5], "upper": [0.5, 1.0], "count": [3, 40], "mean_confidence": [0.4, 0.8],
         "accuracy": [0.33, 0.9]}
    rel = _svg(reliability_svg(b, "Reliability (ECE 0.05, n = 43)", "rel"))
    texts = _texts(rel)
    assert {"3", "40", "perfect calibration", "accuracy", "confidence above accuracy", "count"} <= set(texts)
    assert "confidence (predicted class probability)" in texts


def test_report_figures_are_valid_svg_with_document_unique_ids(performance_run):
    _, out = performance_run
    html = (out / "report.html").read_text()
    figs = re.findall(r'<figure class="plot".*?</svg></figure>', html, flags=re.S)
    assert len(figs) == 3
    ids = []
    for fig in figs:
        root = _svg(fig)
        ids += [e.get("id") for e in root.iter() if e.get("id")]
        refs = set(re.findall(r"url\(#([^)]+)\)", fig))
        assert refs <= set(ids), refs - set(ids)  # every reference resolves inside its figure
    assert len(ids) == len(set(ids)) and ids
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html


def test_plots_are_deterministic():
    from audit.report.plots import line_svg

    args = ([0.0, 0.1, 0.2], {"worst case": [0.9, 0.5, None]}, "eps", "accuracy", "t", "det")
    assert line_svg(*args, bands={"worst case": ([0.85, 0.4, None], [0.95, 0.6, None])}) == \
        line_svg(*args, bands={"worst case": ([0.85, 0.4, None], [0.95, 0.6, None])})


# ------------------------------------------------------------------------------------------- repro


def test_no_pages_is_not_a_user_option():
    from click.testing import CliRunner

    from audit.cli import main

    res = CliRunner().invoke(main, ["run", "--help"])
    assert res.exit_code == 0 and "--no-pages" not in res.output


# ---------------------------------------------------------------------- Ctrl-C while torch is imported


def test_ctrl_c_during_torchs_import_is_delivered_after_it():
    """With validation no longer importing SciPy, a run reaches `import torch` right after it writes its
    placeholder, where an early Ctrl-C used to land inside torch's C++ start-up (the process then died by
    SIGINT instead of exiting 130, or hung). import_torch holds SIGINT back until torch is imported: the
    KeyboardInterrupt comes right after, with torch whole (and numpy's BLAS threads, which exist by then,
    cannot take the signal past it)."""
    code = (
        "import builtins, os, signal, sys\n"
        "real = builtins.__import__\n"
        "def imp(name, *a, **k):\n"
        "    if name == 'torch' and 'torch' not in sys.modules:\n"
        "        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as torch's import starts\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = imp\n"
        "from audit.runner import import_torch\n"
        "try:\n"
        "    import_torch()\n"
        "    print('not interrupted')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted after the import:', hasattr(sys.modules.get('torch'), 'Tensor'))\n"
        "print('handler restored:', signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=signals_default)
    assert proc.stdout.splitlines() == ["interrupted after the import: True", "handler restored: True"], proc.stderr
