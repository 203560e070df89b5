"""diff.html, diff.md and diff.json from the diff dict alone (nothing is computed while rendering), written
atomically into the output folder."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from audit.errors import AuditError

DIFF_FILES = ("diff.json", "diff.html", "diff.md")
FLIP_CAP = 50  # flips listed in HTML and Markdown; diff.json holds all of them
_ORDER = ("regressed", "improved", "changed", "inconclusive", "unchanged", "not_compared")


def change_text(changes: list[dict[str, Any]]) -> str:
    """``correct → wrong; robust → broken (worst linf 8/255)``: one flip's changes in words."""
    words = {"correct_to_wrong": "correct → wrong", "wrong_to_correct": "wrong → correct",
             "robust_to_broken": "robust → broken", "broken_to_robust": "broken → robust"}
    out = []
    for c in changes:
        text = words.get(c["what"], c["what"])
        if "eps" in c:
            text += f" ({c['attack']} {c['norm']} {c['eps']})"
        out.append(text)
    return "; ".join(out)


def render_diff_html(diff: dict[str, Any]) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    from audit.report.html import fmt, templates_dir

    env = Environment(loader=FileSystemLoader(str(templates_dir())), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    verdicts = [v for v in _ORDER if v in diff["counts"]]
    return env.get_template("diff.html.j2").render(d=diff, verdicts=verdicts, flip_cap=FLIP_CAP, change_text=change_text,
                                                   moved_metrics=moved(diff), test_names=TEST_NAMES)


TEST_NAMES = {"mcnemar_exact": "McNemar exact", "paired_bootstrap": "paired bootstrap",
              "intervals_unpaired": "intervals (unpaired)"}


def moved(diff: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics that are not unchanged, regressions first, then improvements, changes, inconclusive."""
    rows = [m for m in diff["metrics"] if m["verdict"] != "unchanged"]
    return sorted(rows, key=lambda m: _ORDER.index(m["verdict"]) if m["verdict"] in _ORDER else len(_ORDER))


def _f(v: Any) -> str:  # one number as the HTML report writes it
    from audit.report.html import fmt

    return fmt(v)


def render_diff_markdown(diff: dict[str, Any]) -> str:
    """A short summary for a pull request: pairing, verdict counts, what moved, flips, gate changes."""
    c = diff["counts"]
    lines = ["## audit diff: " + ", ".join(f"{c.get(v, 0)} {v.replace('_', ' ')}" for v in _ORDER if c.get(v, 0)
                                           or v in ("regressed", "improved")), ""]
    lines.append(f"BASE `{diff['base']['path']}` (run {diff['base']['run_id']}) → NEW `{diff['new']['path']}` "
                 f"(run {diff['new']['run_id']})")
    lines.append("")
    if diff["paired"]:
        lines.append(f"**Paired** on {diff['n_paired']} examples (McNemar's exact test for proportions, paired "
                     f"bootstrap of {diff['options']['bootstrap']} resamples otherwise; alpha "
                     f"{diff['options']['alpha']}, tolerance ±{diff['options']['tolerance']}).")
    else:
        lines.append(f"**NOT PAIRED**: {diff['unpaired_reason']}. Metrics compared through the reports' intervals only.")
    if diff.get("gated_regressions"):
        lines += ["", f"**A gated metric regressed**: {', '.join(diff['gated_regressions'])}"]
    # every metric a gate reads first, whatever its verdict (a reviewer looks for those), then what moved
    rows = [m for m in diff["metrics"] if m["gated"]]
    rows += [m for m in moved(diff) if m["verdict"] != "not_compared" and not m["gated"]]
    lines += ["", "| metric | base | new | delta [interval] | p | verdict |", "|---|---:|---:|---:|---:|---|"]
    for m in rows[:FLIP_CAP]:
        ci = f" [{_f(m['ci_low'])}, {_f(m['ci_high'])}]" if m["ci_low"] is not None else ""
        gated = " (gated)" if m["gated"] else ""
        lines.append(f"| `{m['key']}`{gated} | {_f(m['base'])} | {_f(m['new'])} | {_f(m['delta'])}{ci} | "
                     f"{_f(m['p_value'])} | **{m['verdict']}** |")
    if not rows:
        lines.append("| every metric | | | | | unchanged |")
    elif len(rows) > FLIP_CAP:
        lines.append(f"| … {len(rows) - FLIP_CAP} more in diff.json | | | | | |")
    if diff["paired"]:
        t = diff["flip_counts"]["total"]
        lines += ["", f"**Flips**: {len(diff['flips'])} of {t['n']} examples changed; {t['correct_to_wrong']} correct → "
                      f"wrong, {t['wrong_to_correct']} wrong → correct."]
        for attr, groups in diff["flip_counts"]["by_group"].items():
            parts = [f"{g}: −{v['correct_to_wrong']}/+{v['wrong_to_correct']}" for g, v in groups.items()]
            lines.append(f"- by {attr} (correct → wrong / wrong → correct): {', '.join(parts)}")
        if diff["flips"]:
            lines += ["", "| index | class | groups | what changed |", "|---:|---|---|---|"]
            for f in diff["flips"][:FLIP_CAP]:
                groups = ", ".join(f"{a}={g}" for a, g in f["groups"].items()) or "—"
                lines.append(f"| {f['index']} | {f['class']} | {groups} | {change_text(f['changes'])} |")
            if len(diff["flips"]) > FLIP_CAP:
                lines.append(f"| … | {len(diff['flips']) - FLIP_CAP} more in diff.json | | |")
    changed = [g for g in diff["gates"] if g["changed"]]
    if changed:
        lines += ["", "| gate | base | new |", "|---|---|---|"]
        for g in changed:
            lines.append(f"| `{g['id']}` | {g['base_status'] or '—'} ({_f(g['base_value'])}) | "
                         f"{g['new_status'] or '—'} ({_f(g['new_value'])}) |")
    env = diff["environment"]["differences"]
    if env:
        shown = ", ".join(f"{e['key']}: {_f(e['base'])} → {_f(e['new'])}" for e in env[:8])
        lines += ["", f"**Environment**: {shown}" + (f" (and {len(env) - 8} more)" if len(env) > 8 else "")]
    return "\n".join(lines) + "\n"


def clear_diff(out: Path) -> None:
    """Remove an earlier diff's files from ``out`` before a new comparison starts, so a comparison that fails
    never leaves an older diff.json that reads as its result."""
    for name in DIFF_FILES:
        p = Path(out) / name
        try:
            if p.is_symlink() or p.is_file():
                p.unlink()
            elif p.exists():
                raise AuditError(f"--out {out}: {name} there is not a file; remove it or choose another folder")
        except OSError as e:
            raise AuditError(f"--out {out}: cannot remove the earlier {name} ({e.strerror or e})") from None


def write_diff(diff: dict[str, Any], out: Path) -> None:
    """diff.json, diff.html and diff.md in ``out`` (created if needed). Each is written beside its final
    name and moved into place when all three were written, diff.json last: a reader never sees a mix of
    two comparisons, and a failure leaves no diff.json."""
    from audit.report.build import dumps

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise AuditError(f"--out {out}: exists and is not a folder; choose a folder for the diff") from None
    except OSError as e:
        raise AuditError(f"--out {out}: cannot create it ({e.strerror or e})") from None
    text = dumps(diff)
    saved = json.loads(text)  # renderers get exactly what diff.json holds
    texts = {"diff.html": render_diff_html(saved), "diff.md": render_diff_markdown(saved), "diff.json": text}
    from audit.report.outdir import move_staged, stage_texts

    staged: list[tuple[Path, Path]] = []
    try:
        staged = stage_texts(out, texts, secrets.token_hex(4))
        move_staged(staged)  # diff.json is last in ``texts``
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
