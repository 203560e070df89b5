"""CI output: progress lines in logs, --format json, GitHub's job summary and annotations, `audit gate --out`,
summary.md, and recipe mistakes that are input errors (exit 2) naming the valid values.

One audit of the digits CNN per module (performance, a small FGSM sweep with noise, a two-group sensitive
attribute); every other test reads or re-gates its saved report."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from audit.engine.progress import PlainProgress
from audit.report.ci import annotations as github_annotations, escape_data, escape_property
from conftest import DIGITS_MODEL, ROOT, run_cli

GATES = '''
[[gates]]
id = "acc"
metric = "accuracy"
op = ">="
threshold = 0.5

[[gates]]
id = "robust-8"
metric = "robust_accuracy"
params = { norm = "linf", eps = "8/255" }
op = ">="
threshold = 0.1
'''


def _recipe(tmp: Path, gates: str = GATES) -> Path:
    from audit.loading.data import sklearn_split

    x, y, _, _ = sklearn_split("digits", "test", 0.25, 0)
    site = np.where(np.arange(len(y)) % 3 == 0, "north", "south")
    np.savez(tmp / "d.npz", x=x, y=y, site=site)
    # no input_bounds: the reference attack of the checks works in a box and would triple the run's time
    model = "\n".join(ln for ln in DIGITS_MODEL.splitlines() if not ln.startswith("input_bounds"))
    text = (model + '\n[data]\nsource = "npz"\npath = "d.npz"\nsensitive = { site = "site" }\n'
            "[performance]\nbootstrap = 20\nbootstrap_ranking = 10\n"
            '[robustness]\nattacks = ["fgsm"]\nnorm = "linf"\neps = ["4/255", "8/255"]\n'
            "noise = { gaussian = [0.1] }\nnoise_draws = 1\n" + gates)
    (tmp / "r.toml").write_text(text)
    return tmp / "r.toml"


@pytest.fixture(scope="module")
def ci_run(digits_checkpoint, tmp_path_factory):
    """One audit, as a GitHub Actions step would run it: log progress lines, --format json, a job summary."""
    tmp = tmp_path_factory.mktemp("ci")
    recipe = _recipe(tmp)
    env = {"AUDIT_PROGRESS": "lines", "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp / "step.md")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        res = run_cli("run", digits_checkpoint, "--recipe", recipe, "--out", tmp / "o", "--format", "json")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert res.exit_code == 0, res.stderr
    return res, tmp


@pytest.fixture()
def github(monkeypatch, tmp_path):
    """A fake GitHub Actions step: GITHUB_ACTIONS=true and a job summary file that already holds text."""
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step's summary\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    return summary


def _copy(ci_run, tmp_path, name="o"):
    """The saved report folder, copied (tests that write beside it must not change the module's)."""
    dst = tmp_path / name
    shutil.copytree(ci_run[1] / "o", dst)
    return dst


def _gates(tmp_path, text, name="g.toml"):
    (tmp_path / name).write_text(text)
    return tmp_path / name


def _gate(metric, params, op=">=", threshold=0.5, gid="g", extra=""):
    p = ", ".join(f"{k} = {json.dumps(v)}" for k, v in params.items())
    return (f'[[gates]]\nid = "{gid}"\nmetric = "{metric}"\nparams = {{ {p} }}\nop = "{op}"\n'
            f"threshold = {threshold}\n{extra}")


def _error_line(res, code, *frags):
    assert res.exit_code == code, (res.exit_code, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("audit: error: ") and "Traceback" not in res.stderr, res.stderr
    for f in frags:
        assert f in lines[0], (f, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------- progress


def test_progress_lines_in_a_log_name_every_phase(ci_run):
    res, _ = ci_run
    lines = [ln for ln in res.stderr.splitlines() if re.match(r"audit: \[\d+:\d\d\] ", ln)]
    text = "\n".join(lines)
    for phase in ("loading the model and the data", "inference (450 examples)", "suite performance",
                  "suite robustness", "robustness: validity checks", "summarising robustness", "writing the report"):
        assert f"start: {phase}" in text and f"done: {phase}" in text, (phase, text)
    assert "fgsm: eps 4/255" in text and "fgsm: eps 8/255" in text  # the sweep says which eps it attacks
    assert len(lines) < 100  # a short run: a few dozen lines, not one per batch
    # start before done, in order
    assert text.index("start: loading") < text.index("done: loading") < text.index("start: suite performance")
    assert text.index("start: writing the report") < text.index("done: writing the report")


def test_progress_heartbeat_says_phase_done_total_and_is_bounded():
    now = [0.0]
    out = io.StringIO()
    p = PlainProgress(stream=out, interval=10.0, max_lines=60, max_bar_lines=5, clock=lambda: now[0], thread=False)
    with p.phase("suite robustness"):
        bar = p(total=1000, desc="pgd-linf")
        bar.set_postfix_str("eps 8/255")
        for _ in range(100):
            now[0] += 1.0
            bar.update(10)
        bar.close()
    lines = out.getvalue().splitlines()
    beats = [ln for ln in lines if "still working" in ln]
    assert len(beats) == 10  # every 10 s over 100 s
    assert "suite robustness — pgd-linf 100/1000, 10% (eps 8/255)" in beats[0]
    assert lines[0].endswith("start: suite robustness") and lines[-1].endswith("done: suite robustness (100.0 s)")
    assert any("pgd-linf: done, 1000/1000, 100% in 100.0 s" in ln for ln in lines)
    assert re.match(r"audit: \[1:40\] ", lines[-1])
    # ten hours of steady work: the interval grows with the elapsed time and the lines stop at the cap
    out2 = io.StringIO()
    q = PlainProgress(stream=out2, interval=10.0, max_lines=400, clock=lambda: now[0], thread=False)
    now[0], start = 0.0, 0.0
    q.t0 = q.last_line = start
    with q.phase("long"):
        bar = q(total=36000, desc="work")
        for _ in range(36000):
            now[0] += 1.0
            bar.update(1)
    n = len(out2.getvalue().splitlines())
    assert 100 < n < 250, n  # about 30 ln(T/300) + 30 heartbeats, never one per update
    # the hard cap, with one line saying so
    out3 = io.StringIO()
    r = PlainProgress(stream=out3, max_lines=20, max_bar_lines=5, clock=lambda: now[0], thread=False)
    b = r(total=10, desc="x")
    for i in range(50):
        b.set_postfix_str(f"eps {i}")
    for i in range(50):
        with r.phase(f"p{i}"):
            pass
    got = out3.getvalue().splitlines()
    assert len(got) == 20 and "limit is reached" in got[-1]
    assert sum("eps" in ln for ln in got) == 5 and "further per-attack lines left out" in got[5]


def test_progress_of_a_training_epoch_shows_its_numbers_in_heartbeats_only():
    """`audit harden`'s epoch bars: set_postfix(loss=...) changes every step, so it is shown by the heartbeat,
    never as a line of its own; the epoch's end is one line."""
    now = [0.0]
    out = io.StringIO()
    p = PlainProgress(stream=out, interval=10.0, clock=lambda: now[0], thread=False)
    bar = p(total=40, desc="epoch 1/5")
    for i in range(40):
        now[0] += 0.5
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}", acc="0.900")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 + 1, lines  # heartbeats at 10 s and 20 s (the numbers of the step before), the end
    assert "still working: epoch 1/5 20/40, 50% (loss 0.053, acc 0.900)" in lines[0]
    assert lines[-1].endswith("epoch 1/5: done, 40/40, 100% in 20.0 s")


def test_progress_heartbeat_thread_runs_while_a_phase_is_open():
    import time

    out = io.StringIO()
    p = PlainProgress(stream=out, interval=0.05)
    with p.phase("loading"):
        time.sleep(0.4)
    time.sleep(0.15)
    text = out.getvalue()
    n = text.count("still working: loading")
    assert n >= 2, text
    assert text.count("still working") == n  # the thread stopped with the phase


def test_progress_mode_from_the_environment(monkeypatch, tmp_path):
    from audit.engine.progress import make_progress

    monkeypatch.setenv("AUDIT_PROGRESS", "lines")
    assert isinstance(make_progress(False), PlainProgress)
    assert not isinstance(make_progress(True), PlainProgress)  # --quiet wins
    monkeypatch.setenv("AUDIT_PROGRESS", "none")
    assert not isinstance(make_progress(False), PlainProgress)
    monkeypatch.setenv("AUDIT_PROGRESS", "sometimes")
    res = run_cli("run", tmp_path / "missing.pt", "--recipe", ROOT / "recipes" / "digits.toml", "--out",
                  tmp_path / "o")  # the mode is read before the model
    _error_line(res, 2, "AUDIT_PROGRESS='sometimes'", "auto, bars, lines, none")


# ------------------------------------------------------------------------------------------- --format json


def test_format_json_puts_one_verdict_object_on_stdout(ci_run):
    res, tmp = ci_run
    v = json.loads(res.stdout)  # stdout is the object alone: no annotation lines with --format json
    assert v["schema"] == "audit.verdict/1" and v["command"] == "run"
    assert v["passed"] is True and v["exit_code"] == 0 and v["verdict"] == "pass" and v["no_gates"] is False
    report = json.loads((tmp / "o" / "report.json").read_text())
    assert v["run_id"] == report["run_id"]
    assert [g["id"] for g in v["gates"]] == ["acc", "robust-8"]
    g = v["gates"][1]
    rg = report["gates"][1]
    assert (g["status"], g["value"], g["threshold"], g["op"], g["params"]) == (
        "pass", rg["value"], 0.1, ">=", {"norm": "linf", "eps": "8/255"})
    assert "holds" in g["reason"] and g["blocking"] is False
    assert v["reports"] == {k: str(tmp / "o" / f) for k, f in (("json", "report.json"), ("html", "report.html"),
                                                                 ("junit", "junit.xml"), ("summary", "summary.md"))}
    assert "audit: PASS (exit 0)" in res.stderr  # the human summary stays on stderr


def test_format_json_error_is_an_object_too(tmp_path):
    res = run_cli("gate", tmp_path / "none.json", "--format", "json")
    assert res.exit_code == 2
    v = json.loads(res.stdout)
    assert v["passed"] is False and v["exit_code"] == 2 and v["verdict"] == "error"
    assert "report file not found" in v["error"] and v["command"] == "gate"
    _error_line(res, 2, "report file not found")


def test_gate_format_json_lists_failed_gates_and_checks(ci_run, tmp_path):
    out = _copy(ci_run, tmp_path)
    g = _gates(tmp_path, _gate("accuracy", {}, threshold=0.999, gid="strict")
               + _gate("robust_accuracy", {"norm": "linf", "eps": "8/255"}, threshold=0.1, gid="small-n",
                       extra="min_n = 10000\n"))
    res = run_cli("gate", out / "report.json", "--recipe", g, "--format", "json")
    assert res.exit_code == 1, res.stderr
    v = json.loads(res.stdout)
    assert v["failed_gates"] == ["strict", "small-n"] and v["passed"] is False and v["exit_code"] == 1
    small = v["gates"][1]
    assert small["status"] == "inconclusive" and small["reason"] == "n = 450 < min_n = 10000"
    assert v["failed_checks"] == [] and v["reports"] == {"json": str(out / "report.json")}


# ------------------------------------------------------------------------------------------- GitHub


def test_github_escaping_follows_the_runner():
    assert escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert escape_property("gate a:b, c%\n") == "gate a%3Ab%2C c%25%0A"
    assert escape_data("a:b, c") == "a:b, c"  # the message keeps ':' and ','


def test_github_job_summary_is_appended_by_the_run(ci_run):
    res, tmp = ci_run
    step = (tmp / "step.md").read_text()
    summary = (tmp / "o" / "summary.md").read_text()
    assert step == summary  # the same Markdown as summary.md, appended
    assert "## audit: PASS" in step and f"Full report: `{tmp / 'o' / 'report.html'}`" in step


def test_github_annotations_for_failed_and_inconclusive_gates_and_failed_checks(ci_run, tmp_path, github):
    out = _copy(ci_run, tmp_path)
    report = json.loads((out / "report.json").read_text())
    # a failed validity check (as a gradient-masking run would have it), in the saved report
    c = next(c for c in report["checks"] if c["id"] == "inference_deterministic")
    c.update(status="fail", message="Two inference passes differ: the model is random at inference, 50% flips.")
    (out / "report.json").write_text(json.dumps(report))
    g = _gates(tmp_path, _gate("accuracy", {}, threshold=0.999, gid="strict, acc: v2")
               + _gate("robust_accuracy", {"norm": "linf", "eps": "8/255"}, threshold=0.1, gid="small-n",
                       extra="min_n = 10000\n")
               + _gate("accuracy", {}, threshold=0.999, gid="advisory", extra='severity = "warn"\n'))
    res = run_cli("gate", out / "report.json", "--recipe", g)
    assert res.exit_code == 4, res.stderr  # the invalid evaluation outranks the gates
    ann = [ln for ln in res.stdout.splitlines() if ln.startswith("::")]
    assert ann[0].startswith("::error title=audit gate%3A validity check inference_deterministic failed::"
                             "Two inference passes differ: the model")  # ':' stays in the message
    assert "50%25 flips." in ann[0] and "[validity] downgrade" in ann[0]
    assert ann[1].startswith("::error title=audit gate%3A gate strict%2C acc%3A v2%3A FAIL::performance.accuracy")
    assert ann[2].startswith("::warning title=audit gate%3A gate small-n%3A INCONCLUSIVE (blocking)::")
    assert "n = 450 < min_n = 10000" in ann[2]
    assert ann[3].startswith("::warning title=audit gate%3A gate advisory%3A FAIL (not blocking)::")
    assert len(ann) == 4
    step = github.read_text()
    assert step.startswith("earlier step's summary\n<!-- audit-run-id: ")  # appended, not overwritten
    assert "\n## audit: INVALID EVALUATION" in step
    assert "`inference_deterministic` (fail)" in step and "n = 450 \\< min\\_n = 10000" in step
    # the failed check's message and its fix on stderr, not only its id
    assert ("check inference_deterministic: FAIL — Two inference passes differ: the model is random at inference, "
            "50% flips.") in res.stderr
    assert 'what to do: fix the cause the message names, or, if you accept it, add "inference_deterministic" to ' \
           "[validity] downgrade" in res.stderr


def test_no_github_output_outside_github(ci_run, tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    out = _copy(ci_run, tmp_path)
    res = run_cli("gate", out / "report.json")
    assert res.exit_code == 0 and res.stdout == ""


def test_unwritable_step_summary_warns_and_keeps_the_verdict(ci_run, tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "no" / "such" / "dir" / "s.md"))
    out = _copy(ci_run, tmp_path)
    res = run_cli("gate", out / "report.json")
    assert res.exit_code == 0 and "audit: warning: GITHUB_STEP_SUMMARY=" in res.stderr


def test_no_gates_is_said_everywhere(ci_run, tmp_path, github):
    out = _copy(ci_run, tmp_path)
    g = _gates(tmp_path, '[validity]\ndowngrade = []\n')
    res = run_cli("gate", out / "report.json", "--recipe", g, "--format", "json", "--out", out)
    assert res.exit_code == 0, res.stderr
    assert "no gates: nothing was checked" in res.stderr
    v = json.loads(res.stdout)
    assert v["no_gates"] is True and v["notes"] == ["no gates: nothing was checked"] and v["gates"] == []
    assert "**No gates: nothing was checked.**" in (out / "summary.md").read_text()
    assert "No gates: nothing was checked" in github.read_text()


# ------------------------------------------------------------------------------------------- audit gate --out


def test_gate_out_rerenders_every_file_of_the_folder_with_the_new_verdict(ci_run, tmp_path):
    out = _copy(ci_run, tmp_path)
    before = json.loads((out / "report.json").read_text())
    assert before["passed"] is True and "PASS" in (out / "report.html").read_text()
    g = _gates(tmp_path, _gate("accuracy", {}, threshold=0.999, gid="strict-acc"), "stricter.toml")
    res = run_cli("gate", out / "report.json", "--recipe", g, "--out", out)
    assert res.exit_code == 1, res.stderr
    after = json.loads((out / "report.json").read_text())
    assert after["passed"] is False and after["verdict"] == "fail" and after["exit_code"] == 1
    assert [x["id"] for x in after["gates"]] == ["strict-acc"] and after["run_id"] == before["run_id"]
    assert after["regated"]["recipe"] == str(g) and after["regated"]["previous_verdict"] == "pass"
    assert after["metrics"] == before["metrics"]  # nothing is measured again
    html = (out / "report.html").read_text()
    assert '<span class="badge fail">FAIL</span>' in html and "strict-acc" in html and str(g) in html
    assert "the run measured PASS (exit 0)" in html
    md = (out / "summary.md").read_text()
    assert "## audit: FAIL" in md and "`strict-acc`" in md and f"Full report: `{out / 'report.html'}`" in md
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "1" and [c.get("name") for c in suite.iter("testcase")
                                               if c.find("failure") is not None] == ["strict-acc"]
    # no leftovers of the staged write, and one run's files: `audit gate` on the folder agrees with itself
    assert not list(out.glob(".*.partial"))
    res2 = run_cli("gate", out / "report.json")
    assert res2.exit_code == 1 and "gate strict-acc: FAIL" in res2.stderr


def test_gate_out_into_another_folder_is_a_complete_report_folder(ci_run, tmp_path):
    src = _copy(ci_run, tmp_path)
    g = _gates(tmp_path, _gate("accuracy", {}, threshold=0.5, gid="ok"))
    res = run_cli("gate", src / "report.json", "--recipe", g, "--out", tmp_path / "regated")
    assert res.exit_code == 0, res.stderr
    files = sorted(p.name for p in (tmp_path / "regated").iterdir() if not p.name.startswith("."))
    assert files == ["examples.npz", "junit.xml", "report.html", "report.json", "summary.md"]
    assert run_cli("gate", tmp_path / "regated" / "report.json").exit_code == 0
    # a folder holding another run's files is refused: it would mix two runs
    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.md").write_text("<!-- audit-run-id: 20200101T000000Z-deadbeef -->\n")
    res = run_cli("gate", src / "report.json", "--recipe", g, "--out", other)
    _error_line(res, 2, f"--out {other}: summary.md there is from run 20200101T000000Z-deadbeef",
                "choose an empty folder or the report's own folder")
    assert sorted(p.name for p in other.iterdir()) == [".audit.lock", "summary.md"]


def test_gate_out_with_a_stored_gate_that_excused_nothing_stays_coherent(ci_run, tmp_path):
    """A new gate on a suite the report lacks blocks; re-gating the written report with its stored gates
    must say the same (suites_excused is what the new gates were judged with)."""
    out = _copy(ci_run, tmp_path)
    g = _gates(tmp_path, _gate("ece", {"binning": "equal_width", "kind": "top_label"}, op="<=", threshold=0.2,
                               gid="calibrated"))
    res = run_cli("gate", out / "report.json", "--recipe", g, "--out", out)
    assert res.exit_code == 1 and "gate calibrated: NOT_RUN (blocking)" in res.stderr
    assert run_cli("gate", out / "report.json").exit_code == 1


def test_summary_md_gives_reasons_and_html_path(ci_run, tmp_path):
    md = (ci_run[1] / "o" / "summary.md").read_text()
    assert f"Full report: `{ci_run[1] / 'o' / 'report.html'}`" in md
    out = _copy(ci_run, tmp_path)
    g = _gates(tmp_path, _gate("accuracy", {}, threshold=0.5, gid="small", extra="min_n = 10000\n")
               + _gate("ece", {"binning": "equal_width", "kind": "top_label"}, op="<=", threshold=0.2, gid="cal"))
    res = run_cli("gate", out / "report.json", "--recipe", g, "--markdown", tmp_path / "s.md")
    assert res.exit_code == 1
    md = (tmp_path / "s.md").read_text()
    assert "**Why gates were not decided**" in md
    assert "- `small` inconclusive (blocking): n = 450 \\< min\\_n = 10000" in md
    assert "- `cal` not\\_run (blocking): suite 'calibration' is not in this report" in md


def test_summary_md_has_the_repro_verdict():
    from audit.report.markdown import render_markdown

    report = {"verdict": "pass", "exit_code": 0, "model": {}, "data": {"n": 10}, "gates": [], "checks": [],
              "suites": {"repro": {"notes": [], "config": {"seeds": [0, 1, 2], "repeats": 2},
                                   "tables": {"same_seed": {"bitwise_identical": False, "max_abs_logit_diff": 2.5e-7,
                                                            "prediction_flips": 1},
                                              "seeds": {"varying": ["performance.accuracy"],
                                                        "metrics": [{}, {}, {}]}}}}}
    md = render_markdown(report, "out/repro/report.html")
    assert ("**Reproducibility**: 3 seeds, 2 same-seed repeat(s): NOT bitwise identical (max \\|delta logit\\| "
            "2.5e-07, 1 prediction flip(s)); 1 of 3 metrics vary across seeds.") in md
    assert md.rstrip().endswith("Full report: `out/repro/report.html`")


# ------------------------------------------------------------------------------------------- mistakes: exit 2


def test_gate_eps_written_as_a_number_is_exit_2_naming_the_labels(ci_run, tmp_path):
    out = _copy(ci_run, tmp_path)
    g = _gates(tmp_path, _gate("robust_accuracy", {"norm": "linf", "eps": 0.03137}, gid="robust-8"), "stricter.toml")
    res = run_cli("gate", out / "report.json", "--recipe", g, "--out", out, "--junit", tmp_path / "j.xml")
    _error_line(res, 2, f"{g}: gate 'robust-8': no record of robustness.robust_accuracy",
                "eps = 0.03137 is not one of the values with norm = 'linf': '4/255', '8/255'",
                "did you mean '8/255' (= 0.0313725)?")
    assert not (tmp_path / "j.xml").exists()  # nothing written for a mistake
    assert json.loads((out / "report.json").read_text())["passed"] is True


@pytest.mark.parametrize("params,frags", [
    ({"noise": "gaussian", "level": 0.2}, ["level = 0.2 is not one of the values with noise = 'gaussian': '0.1'"]),
    ({"class": "11"}, ["class = '11' is not one of the values in this report: '0', '1'", "'9'"]),
    ({"attribute": "site", "group": "east"}, ["group = 'east' is not one of the values with attribute = 'site'",
                                              "'north', 'south'"]),
    ({"attribute": "sex", "group": "north"}, ["attribute = 'sex' is not one of the values", "'site'"]),
])
def test_gate_params_selecting_nothing_are_exit_2(ci_run, tmp_path, params, frags):
    out = _copy(ci_run, tmp_path)
    metric = "noise_accuracy" if "noise" in params else "recall" if "class" in params else "clean_accuracy"
    g = _gates(tmp_path, _gate("accuracy", {}, gid="fine") + _gate(metric, params, gid="typo"))
    res = run_cli("gate", out / "report.json", "--recipe", g)
    _error_line(res, 2, "gate 'typo': no record of", *frags)


def test_gate_params_that_exist_apart_but_not_together_are_exit_2(ci_run, tmp_path):
    out = _copy(ci_run, tmp_path)
    g = _gates(tmp_path, _gate("f1", {"average": "macro", "class": "3"}, gid="f1-typo"))
    res = run_cli("gate", out / "report.json", "--recipe", g)
    _error_line(res, 2, "gate 'f1-typo'", "no record has these params together (average, class)",
                "(average) or (class)")


def test_run_gate_on_a_group_the_data_lacks_is_exit_2_before_any_suite(digits_checkpoint, tmp_path):
    recipe = _recipe(tmp_path, _gate("clean_accuracy", {"attribute": "site", "group": "east"}, gid="east"))
    res = run_cli("run", digits_checkpoint, "--recipe", recipe, "--out", tmp_path / "o")
    _error_line(res, 2, f"{recipe}: [[gates]] #1 (east) params: group = 'east' is not one of the values of 'site': "
                        "'north', 'south'")
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    assert r["run_status"] == "failed" and r["exit_code"] == 2 and r["metrics"] == []
    recipe.write_text(recipe.read_text().replace('attribute = "site"', 'attribute = "region"'))
    res = run_cli("run", digits_checkpoint, "--recipe", recipe, "--out", tmp_path / "o")
    _error_line(res, 2, "attribute = 'region' is not one of the values of the data: 'site'")


def test_run_eps_written_as_a_number_suggests_the_label(digits_checkpoint, tmp_path):
    recipe = _recipe(tmp_path, _gate("robust_accuracy", {"norm": "linf", "eps": 0.03137}, gid="r8"))
    res = run_cli("run", digits_checkpoint, "--recipe", recipe, "--out", tmp_path / "o")
    _error_line(res, 2, "params: eps = 0.03137 is not one of '4/255', '8/255' (what [robustness] runs); "
                        "did you mean '8/255'?")


def test_stored_gates_keep_the_runs_verdict(ci_run, tmp_path):
    """Without --recipe the report's own gates are judged as the run judged them (exit 1 for an ERROR gate
    in a saved report, as in the run): only gates given now are checked for mistakes."""
    out = _copy(ci_run, tmp_path)
    report = json.loads((out / "report.json").read_text())
    report["recipe"]["gates"][1]["params"]["eps"] = "3/255"
    (out / "report.json").write_text(json.dumps(report))
    res = run_cli("gate", out / "report.json")
    assert res.exit_code == 1 and "gate robust-8: ERROR (blocking)" in res.stderr
    assert "eps = '3/255' is not one of the values with norm = 'linf': '4/255', '8/255'" in res.stderr


def test_annotations_pure_function_on_a_report_without_gates():
    lines = github_annotations({"gates": [], "checks": [], "run_status": "finished"}, "run")
    assert lines == ["::warning title=audit run%3A no gates::no gates: nothing was checked (the recipe has no "
                     "[[gates]])"]


# ------------------------------------------------------------------------------------------- docs


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def test_ci_docs_workflows_are_valid_yaml_and_use_real_commands():
    doc = (ROOT / "docs" / "ci.md").read_text()
    blocks = _yaml_blocks(doc)
    assert len(blocks) >= 2
    for b in blocks:
        assert "\t" not in b
    github, gitlab = blocks[0], blocks[1]
    assert "audit run" in github and "audit gate" in github and "--out out" in github
    assert "junit" in gitlab and "reports:" in gitlab and "artifacts:" in gitlab
    assert "docs/ci.md" in (ROOT / "README.md").read_text()
    from click.testing import CliRunner

    from audit.cli import main

    # every `audit ...` option the examples use exists
    helps = {cmd: CliRunner().invoke(main, [cmd, "--help"]).output for cmd in ("run", "gate")}
    for cmd, opt in re.findall(r"audit (run|gate)\b[^\n]*?(--[a-z-]+)", doc):
        assert opt in helps[cmd], (cmd, opt)


def test_ci_docs_workflows_parse_as_yaml():
    yaml = pytest.importorskip("yaml")  # PyYAML is not a dependency: the parse runs where it is installed
    github, gitlab = _yaml_blocks((ROOT / "docs" / "ci.md").read_text())[:2]
    gh = yaml.safe_load(github)
    assert "jobs" in gh and any("steps" in job for job in gh["jobs"].values())
    gl = yaml.safe_load(gitlab)
    job = next(v for v in gl.values() if isinstance(v, dict) and "script" in v)
    assert "junit" in job["artifacts"]["reports"]


def test_repro_compare_alone_with_format_json_prints_one_object(ci_run):
    _, tmp = ci_run
    res = run_cli("repro", "--compare", tmp / "o" / "report.json", "--format", "json")
    assert res.exit_code == 0, res.stderr
    v = json.loads(res.stdout)
    assert v["command"] == "repro" and v["passed"] is True and v["compare"] == str(tmp / "o" / "report.json")
    assert isinstance(v["environment_changes"], list)  # the same process's environment: little or nothing


def test_gate_on_a_metric_the_report_never_measured_stays_a_gate_error():
    """Not a typo in params: the metric has no record at all (a fairness suite on data without sensitive
    attributes). Nothing names a valid value, so the gate stays an ERROR (exit 1, as in the run)."""
    from audit.report.gates import evaluate_gate

    gate = {"id": "dp", "suite": "fairness", "name": "demographic_parity_difference", "params": {"attribute": "sex"},
            "op": "<=", "threshold": 0.1, "use": "value", "severity": "error"}
    g = evaluate_gate(gate, [], ["fairness"])
    assert g["status"] == "error" and "params_mistake" not in g
    assert g["message"].endswith("the fairness suite recorded no demographic_parity_difference at all in this "
                                 "report (see its notes)")
    rec = {"suite": "fairness", "name": "demographic_parity_difference", "params": {"attribute": "site"},
           "value": 0.05, "ci_low": None, "ci_high": None, "n": 450}
    g = evaluate_gate(gate, [rec], ["fairness"])
    assert g["status"] == "error" and g["params_mistake"] is True
    assert "attribute = 'sex' is not one of the values in this report: 'site'" in g["message"]


def test_gate_params_matching_several_records_are_exit_2_listing_them(ci_run, tmp_path):
    out = _copy(ci_run, tmp_path)
    g = _gates(tmp_path, _gate("robust_accuracy", {"norm": "linf"}, gid="which-eps"))
    res = run_cli("gate", out / "report.json", "--recipe", g)
    line = _error_line(res, 2, "gate 'which-eps':", "records of robustness.robust_accuracy match; add params to pick "
                                                    "one:")
    assert "'eps': '4/255'" in line and "'eps': '8/255'" in line


@pytest.mark.distributed
@pytest.mark.slow
def test_under_torchrun_rank_0_alone_prints_progress_and_the_verdict(digits_checkpoint, tmp_path):
    import subprocess
    import sys

    recipe = tmp_path / "r.toml"
    recipe.write_text(DIGITS_MODEL + '[data]\nsource = "sklearn"\nname = "digits"\n'
                      "[performance]\nbootstrap = 0\nbootstrap_ranking = 0\n" + _gate("accuracy", {}, gid="acc"))
    env = dict(os.environ, AUDIT_PROGRESS="lines", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "audit", "run", str(digits_checkpoint), "--recipe", str(recipe), "--out",
                             str(tmp_path / "o"), "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks: nothing left behind
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish: {stderr[-2000:]}")
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["passed"] is True  # one object: rank 1 prints none
    assert stderr.count("start: loading the model and the data") == 1, stderr
    assert stderr.count("done: writing the report") == 1 and stderr.count("audit: PASS (exit 0)") == 1


def test_format_json_usage_error_is_an_object_too(ci_run):
    res = run_cli("gate", ci_run[1] / "o" / "report.json", "--format", "json", "--no-such-option")
    v = json.loads(res.stdout)
    assert v["exit_code"] == 2 and v["command"] == "gate" and "--no-such-option" in v["error"]
    _error_line(res, 2, "No such option '--no-such-option'")


def test_run_gates_are_checked_against_the_default_sweep_and_bounds(tmp_path, write_recipe):
    """Without a [robustness] table the suite runs its defaults, and a gate is checked against those when
    the recipe loads; a gate on salt-and-pepper noise, which is skipped without [model] input_bounds, is
    refused then too, with the reason (both were ERROR gates and exit 1 after the whole run)."""
    model = DIGITS_MODEL.replace("input_bounds = [0.0, 1.0]\n", "")
    assert "input_bounds" not in model
    data = '[data]\nsource = "sklearn"\nname = "digits"\n'
    recipe = write_recipe(model + data + _gate("robust_accuracy", {"norm": "linf", "eps": 0.03137}, gid="r8"))
    res = run_cli("run", tmp_path / "never-read.pt", "--recipe", recipe, "--out", tmp_path / "o")
    _error_line(res, 2, "params: eps = 0.03137 is not one of", "(what [robustness] runs); did you mean '8/255'")
    recipe = write_recipe(model + data + _gate("noise_accuracy", {"noise": "salt_pepper", "level": 0.05}, gid="sp"))
    res = run_cli("run", tmp_path / "never-read.pt", "--recipe", recipe, "--out", tmp_path / "o")
    _error_line(res, 2, "params: noise = 'salt_pepper' is not run: salt-and-pepper sets values to the input "
                        "bounds", "set input_bounds")
