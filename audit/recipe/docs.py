"""Generate the recipe reference (docs/recipe.md) from the section and metric declarations.

    python -m audit.recipe.docs > docs/recipe.md      (or: make docs)

A test checks that the committed file equals this output, so the reference cannot drift from the code.
"""

from __future__ import annotations

from audit.recipe.fields import REQUIRED, Section
from audit.recipe.load import all_sections, metric_catalogue

INTRO = """# Recipe reference

A recipe is a TOML file that tells `audit` which model to load, which data to evaluate, which suites to run
with which parameters, and which gates decide the exit code. Paths in a recipe are relative to the recipe
file. Validation is strict: an unknown key, a wrong type, a missing file or a bad value stops the run with
one line that names the file, the key and what was expected (exit code 2).

*This file is generated from the code (`make docs`); a test fails when it is out of date.*

A complete example (`recipes/digits.toml`):

```toml
{example}
```
"""


def _default(f) -> str:
    if f.default is REQUIRED:
        return "**required**"
    if f.default is None:
        return "—"
    if isinstance(f.default, str):
        return f'`"{f.default}"`'
    if isinstance(f.default, bool):
        return f"`{str(f.default).lower()}`"
    if isinstance(f.default, (dict, list)) and not f.default:
        return "`{}`" if isinstance(f.default, dict) else "`[]`"
    return f"`{f.default}`"


def _section(s: Section) -> str:
    head = f"[[{s.name}]]" if s.array else f"[{s.name}]"
    lines = [f"## `{head}`" + (" (required)" if s.required else ""), "", s.doc, "",
             "| key | type | default | meaning |", "|---|---|---|---|"]
    for f in s.fields:
        doc = f.doc.replace("|", "\\|")
        if f.example is not None:
            doc += f" Example: `{f.name} = {f.example}`."
        lines.append(f"| `{f.name}` | {f.type.replace('|', 'or')} | {_default(f)} | {doc} |")
    if s.example:
        lines += ["", "```toml", s.example, "```"]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """A "|" inside a table cell, even within backticks, splits the cell on GitHub: escape it."""
    return text.replace("|", "\\|")


def render() -> str:
    from pathlib import Path

    example_path = Path(__file__).resolve().parents[2] / "recipes" / "digits.toml"
    example = example_path.read_text().strip() if example_path.is_file() else ""
    parts = [INTRO.format(example=example)]
    sections = all_sections()
    for s in sections.values():
        parts.append(_section(s))
    cat = metric_catalogue()
    lines = ["## Metric catalogue", "",
             "What a `[[gates]]` entry may name as `metric` (write `suite.name` when a name exists in several "
             "suites) and the `params` that select one record. A gate whose params match several records is an "
             "error; with no params, the record without params is used. *better*: which way is an improvement "
             "(what `audit diff` calls improved or regressed; — : no direction, only changed or unchanged).", ""]
    for suite, metrics in cat.items():
        lines += [f"### {suite}", "", "| metric | params | better | meaning |", "|---|---|---|---|"]
        for name, spec in metrics.items():
            params = "<br>".join(f"`{k}`: {v}" for k, v in spec.params.items()) or "—"
            lines.append(f"| `{name}` | {_cell(params)} | {spec.better or '—'} | {_cell(spec.doc)} |")
        lines.append("")
    parts.append("\n".join(lines).rstrip())
    parts.append(_checks())
    return "\n\n".join(parts) + "\n"


def _checks() -> str:
    """The validity checks a run can record: what [validity] downgrade may name."""
    from audit.runner import CORE_CHECK_IDS
    from audit.suites import all_suites

    lines = ["## Validity checks", "",
             "Checks of the evaluation itself, recorded as `{id, suite, status, message}`. A `fail` makes the run "
             "invalid (exit 4) unless `[validity] downgrade` names the check; a `warn` is shown and does not change "
             "the exit code. `eps_within_input_range` only ever warns; `reference_attack_agrees` warns (skipped) "
             "when the model has no `[model] input_bounds`.", "",
             "| suite | check ids |", "|---|---|",
             f"| core (every run) | {', '.join(f'`{c}`' for c in CORE_CHECK_IDS)} |"]
    for suite in all_suites():
        if suite.check_ids:
            lines.append(f"| {suite.name} | {', '.join(f'`{c}`' for c in suite.check_ids)} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(render())
