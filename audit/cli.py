"""The `audit` command line. Heavy imports (torch, numpy, sklearn) happen inside commands so that
`audit --help` answers instantly.

Exit codes: 0 all gates pass, 1 a gate failed, 2 usage or input error, 3 internal error,
4 the evaluation is invalid (a validity check failed).
"""

from __future__ import annotations

import functools
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click

from audit import __version__
from audit.errors import AuditError, ExitCode

EXIT_CODES_HELP = (
    "Exit codes: 0 all gates pass; 1 a gate failed; 2 usage or input error (bad recipe, missing file, "
    "unsafe checkpoint refused, bad data); 3 internal error; 4 the evaluation is invalid (a validity check "
    "failed)."
)


def _fail(message: str, code: int) -> None:
    click.echo(f"audit: error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One line on stderr and the right exit code for every error; the traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AuditError as e:
            if debug:
                traceback.print_exc()
            _fail(str(e), int(e.exit_code))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - the last line of defence: exit 3, never a raw traceback
            if debug:
                traceback.print_exc()
            msg = " ".join(str(e).split())[:400]
            _fail(f"internal error: {type(e).__name__}: {msg} (re-run with --debug for the traceback, and "
                  "please report it)", int(ExitCode.INTERNAL))

    return wrapper


debug_option = click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars or summary on stderr.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="audit")
def main() -> None:
    """Audit a trained PyTorch classifier before it ships.

    Robustness, fairness, calibration, PR/ROC performance and reproducibility, as one HTML report,
    report.json and JUnit XML; the exit code gates CI. Start with `make demo` or:

        audit run model.safetensors --recipe recipes/digits.toml --out out/
    """


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--recipe", "-r", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Recipe TOML (see docs/recipe.md).")
@click.option("--suite", "suites", multiple=True, metavar="NAME",
              help="Run only this suite (repeatable). Default: the suites the recipe has tables for.")
@click.option("--out", "-o", default=Path("out"), show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.json, report.html, junit.xml, summary.md and examples.npz.")
@click.option("--seed", type=click.IntRange(min=0), help="Master seed (overrides [run] seed).")
@click.option("--device", type=click.STRING, metavar="auto|cpu|cuda[:N]", help="Device (overrides [run] device).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Examples per batch (overrides [run] batch_size).")
@click.option("--trust-checkpoint", is_flag=True,
              help="Allow checkpoints that can run code when loaded (pickled modules, TorchScript, .pt2). "
                   "Only for files you trust; the report flags it.")
@quiet_option
@debug_option
@handle_errors
def run(model: Path, recipe: Path, suites: tuple[str, ...], out: Path, seed: int | None, device: str | None,
        batch_size: int | None, trust_checkpoint: bool, quiet: bool) -> None:
    """Audit MODEL (a state_dict, training checkpoint or safetensors file; TorchScript or .pt2 with
    --trust-checkpoint) as RECIPE describes, and write the report to --out."""
    import re

    from audit.runner import RunOptions, execute

    if device is not None and not re.match(r"^(auto|cpu|cuda(:\d+)?)$", device):
        raise AuditError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    opts = RunOptions(recipe=recipe, model_path=model, out=out, suites=list(suites), seed=seed, device=device,
                      batch_size=batch_size, quiet=quiet, trust_checkpoint=trust_checkpoint)
    report, code = execute(opts)
    if not quiet:
        _summary(report, out)
    sys.exit(code)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("report_path", metavar="REPORT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--recipe", "-r", type=click.Path(dir_okay=False, path_type=Path),
              help="Recipe whose [[gates]] and [validity] to apply (default: the gates stored in the report).")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Also write JUnit XML here.")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), help="Also write a Markdown summary here.")
@quiet_option
@debug_option
@handle_errors
def gate(report_path: Path, recipe: Path | None, junit: Path | None, markdown: Path | None, quiet: bool) -> None:
    """Re-evaluate gates on a saved REPORT (report.json) without the model or the data."""
    from audit.report.build import read_report, regate

    report = read_report(report_path)
    if recipe is not None:
        from audit.recipe import load_recipe

        r = load_recipe(recipe)
        gates, downgrade = r.gates, r.section("validity")["downgrade"]
    else:
        stored = report.get("recipe", {})
        gates = stored.get("gates", [])
        downgrade = stored.get("sections", {}).get("validity", {}).get("downgrade", [])
    result = regate(report, gates, downgrade)
    if junit is not None:
        from audit.report.junit import render_junit

        junit.write_text(render_junit(result), encoding="utf-8")
    if markdown is not None:
        from audit.report.markdown import render_markdown

        markdown.write_text(render_markdown(result), encoding="utf-8")
    if not quiet:
        _summary(result, None)
    sys.exit(result["exit_code"])


def _summary(report: dict[str, Any], out: Path | None) -> None:
    """A few lines on stderr: the verdict, the gates, the failed checks."""
    from audit.report.markdown import gate_line

    v = report["verdict"]
    colour = {"pass": "green", "fail": "red", "invalid": "magenta"}[v]
    for c in report["checks"]:
        if c["status"] != "pass":
            click.echo(f"  check {c['id']}: {c['status'].upper()}", err=True)
    for g in report["gates"]:
        click.echo("  " + gate_line(g), err=True)
    where = f" -> {out / 'report.html'}" if out is not None else ""
    click.secho(f"audit: {v.upper()} (exit {report['exit_code']}){where}", fg=colour, err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
