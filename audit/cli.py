"""The `audit` command line. Heavy imports (torch, numpy, sklearn) happen inside commands so that
`audit --help` answers instantly.

Exit codes: 0 all gates pass, 1 a gate failed, 2 usage or input error, 3 internal error,
4 the evaluation is invalid (a validity check failed).
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click

from audit import __version__
from audit.errors import AuditError, error_line

EXIT_CODES_HELP = (
    "Exit codes: 0 all gates pass; 1 a gate failed; 2 usage or input error (bad recipe, missing file, "
    "unsafe or corrupt checkpoint refused, bad data, --out in use by another run); 3 internal error; 4 the "
    "evaluation is invalid (a validity check failed); 5 training diverged (audit harden); 130 interrupted (Ctrl-C); "
    "143 terminated (SIGTERM). A run that fails leaves a "
    "failure report in --out (passed: false) and moves the previous run's files to --out/previous-runs/."
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
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - the last line of defence: one line, never a traceback
            if debug and not isinstance(e, KeyboardInterrupt):
                traceback.print_exc()
            line, code = error_line(e)
            if kwargs.get("output_format") == "json":  # stdout still holds one JSON object
                from audit.report.ci import error_json

                click.echo(json.dumps(error_json(fn.__name__, line, int(code)), sort_keys=True))
            _fail(line, code)

    return wrapper


debug_option = click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress or summary on stderr.")
format_option = click.option(
    "--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="json: one JSON object on stdout (verdict, passed, exit_code, every gate with its status, value, threshold "
         "and reason, the failed checks, the report paths; an error too is an object, with its line); the human "
         "summary stays on stderr. GitHub annotations are then not printed (stdout is the object's alone).")


# click >= 8.2 raises this for a bare group call; older versions print the help themselves (exit 0).
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


# The commands that write a report into --out, and their default --out.
OUT_DEFAULTS = {"run": Path("out"), "repro": Path("out/repro"), "harden": Path("out/harden")}


def _out_of(argv: list[str]) -> tuple[str, Path] | None:
    """The command and --out of `audit run|repro ...` whose options click refused (a bad value, an unknown
    option), read from the raw arguments; None when there is no folder to speak of."""
    if not argv or argv[0] not in OUT_DEFAULTS:
        return None
    out = OUT_DEFAULTS[argv[0]]
    i = 1
    while i < len(argv):
        a = str(argv[i])
        if a == "--":
            break
        if a in ("--out", "-o"):
            if i + 1 >= len(argv):
                return None  # `--out` without a value: nowhere to write
            out = Path(str(argv[i + 1]))
            i += 2
            continue
        if a.startswith("--out="):
            out = Path(a[len("--out="):])
        elif a.startswith("-o") and not a.startswith("--") and len(a) > 2:
            out = Path(a[2:])
        i += 1
    return argv[0], out


def _record_usage_failure(argv: list[str], message: str) -> None:
    """A run refused by click's own option parsing fails like any other: --out gets a failure report and the
    previous run's files are moved aside, so `audit gate out/report.json` after a typo in CI fails instead
    of passing the previous model. Only a folder that exists is touched (a typo never creates one: there
    is no earlier report to hide), and nothing happens when --out cannot be used (taken by a running
    audit, a file, unwritable): the error line is printed either way."""
    from audit.report.outdir import RunFolder

    found = _out_of(argv)
    if found is None or not found[1].is_dir():
        return
    command, out = found
    try:
        with RunFolder.open(out, command, ["audit", *map(str, argv)]) as folder:
            folder.fail(message, 2)
    except AuditError:
        pass


def _wants_json(argv: list[str]) -> bool:
    """Did the raw arguments ask for --format json (read when click refused them)?"""
    for i, a in enumerate(argv):
        if a == "--":
            break
        if a == "--format=json" or (a == "--format" and i + 1 < len(argv) and argv[i + 1] == "json"):
            return True
    return False


class _Group(click.Group):
    """click's group with the project's error contract for click's own usage errors too (a missing option,
    a bad value, an unknown command): one line `audit: error: ...` and exit 2, instead of click's
    three-line usage block."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        kwargs["prog_name"] = "audit"  # also under `python -m audit.cli` and click's test runner
        try:
            rv = super().main(*args, **kwargs)
        except _NO_ARGS_IS_HELP as e:  # bare `audit`: the help, as click prints it
            click.echo(e.ctx.get_help() if getattr(e, "ctx", None) is not None else e.format_message())
            sys.exit(2)
        except click.UsageError as e:
            where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
            message = " ".join(e.format_message().split()) + where
            argv = [str(a) for a in (kwargs.get("args") or (args[0] if args else sys.argv[1:]))]
            if e.ctx is not None and e.ctx.command.name in OUT_DEFAULTS:
                _record_usage_failure(argv, message)
            if _wants_json(argv):  # --format json asked for an object on stdout, errors included
                from audit.report.ci import error_json

                command = e.ctx.command.name if e.ctx is not None and e.ctx.command.name else "audit"
                click.echo(json.dumps(error_json(command, message, 2), sort_keys=True))
            _fail(message, 2)
        except click.ClickException as e:
            _fail(" ".join(e.format_message().split()), e.exit_code)
        except click.exceptions.Abort:
            _fail("aborted", 1)
        # standalone_mode=False returns the exit code of click.exceptions.Exit (--help, --version) instead
        # of exiting with it
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="audit")
def main() -> None:
    """Audit a trained PyTorch classifier before it ships.

    Robustness, fairness, calibration, PR/ROC performance and reproducibility, as one HTML report,
    report.json and JUnit XML; the exit code gates CI. Start with `make demo` or:

        audit run model.safetensors --recipe recipes/digits.toml --out out/

    Compare two audits (before/after a fine-tune): audit diff out/base out/new

    Harden a model and audit what it cost: audit harden MODEL --recipe R --method pgd

    In CI: progress lines when stderr is not a terminal (AUDIT_PROGRESS=auto|bars|lines|none), --format json
    for a verdict on stdout, the GitHub job summary and annotations, `audit gate --out` to re-render a
    report with other gates; see docs/ci.md.

    Start a recipe from the model and the data: audit init MODEL --data test.npz --out recipe.toml

    From Python (a notebook): report = audit.run(model, x, y, recipe=...); see the README.
    """


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--recipe", "-r", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Recipe TOML (see docs/recipe.md).")
@click.option("--suite", "suites", multiple=True, metavar="NAME",
              help="Run only this suite (repeatable). Default: the suites the recipe has tables for.")
@click.option("--out", "-o", default=Path("out"), show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.json, report.html, junit.xml, summary.md and examples.npz. One run at a "
                   "time (locked); the previous run's files are moved to previous-runs/, and a run that fails "
                   "leaves a failure report (passed: false).")
@click.option("--seed", type=click.IntRange(min=0), help="Master seed (overrides [run] seed).")
@click.option("--device", type=click.STRING, metavar="auto|cpu|cuda[:N]", help="Device (overrides [run] device).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Examples per batch (overrides [run] batch_size).")
@click.option("--trust-checkpoint", is_flag=True,
              help="Allow checkpoints that can run code when loaded (pickled modules, TorchScript, .pt2). "
                   "Only for files you trust; the report flags it.")
@click.option("--resume", is_flag=True,
              help="Reuse the rows a killed or failed run of the same audit left in --out/cache (same model, data, "
                   "recipe, seed and tool version; any world size) and compute only the missing ones. Without it "
                   "the cache is emptied and every row computed.")
@click.option("--no-cache", is_flag=True,
              help="Do not save finished rows in --out/cache (a killed run then starts from zero; --resume has "
                   "nothing to read).")
# `audit repro`'s child runs: their study renders the one report.html and junit.xml from their report.json
# files, so each child writes report.json, summary.md and examples.npz only. Not a user option (hidden).
@click.option("--no-pages", is_flag=True, hidden=True)
@format_option
@quiet_option
@debug_option
@handle_errors
def run(model: Path, recipe: Path, suites: tuple[str, ...], out: Path, seed: int | None, device: str | None,
        batch_size: int | None, trust_checkpoint: bool, resume: bool, no_cache: bool, no_pages: bool,
        output_format: str, quiet: bool) -> None:
    """Audit MODEL (a state_dict, training checkpoint or safetensors file; TorchScript or .pt2 with
    --trust-checkpoint) as RECIPE describes, and write the report to --out.

    Under torchrun (`torchrun --nproc_per_node=K -m audit run ...`) the examples are sharded over the
    ranks and rank 0 writes the report; see the README, "Several GPUs and several nodes"."""
    from audit.runner import RunOptions, execute

    opts = RunOptions(recipe=recipe, model_path=model, out=out, suites=list(suites), seed=seed, device=device,
                      batch_size=batch_size, quiet=quiet, trust_checkpoint=trust_checkpoint, resume=resume, cache=not no_cache,
                      pages=not no_pages)
    report, code = execute(opts)
    if report:  # under torchrun only rank 0 has one
        _finish(report, "run", _out_paths(out), quiet, output_format)
    sys.exit(code)


def _kwarg(ctx: Any, param: Any, values: tuple[str, ...]) -> dict[str, Any]:
    """--kwarg NAME=VALUE: VALUE read as a TOML value (16, 0.5, true, "text"), else kept as a string."""
    import tomllib

    out: dict[str, Any] = {}
    for v in values:
        name, eq, text = v.partition("=")
        if not eq or not name.isidentifier():
            raise click.BadParameter(f"{v!r}: expected NAME=VALUE, e.g. width=16")
        try:
            out[name] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            out[name] = text
    return out


def _floats(ctx: Any, param: Any, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected numbers separated by commas, e.g. 0.5 or 0.485,0.456,0.406") from None


INIT_EPILOG = ("Exit codes: 0 the recipe was written; 2 usage or input error (an existing --out without --force, a "
               "checkpoint refused or unreadable, data that cannot be read, a missing --factory, --label or "
               "--num-classes): one line naming what to give.")


@main.command(epilog=INIT_EPILOG)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", "-d", metavar="FILE|sklearn:NAME",
              help="Evaluation data: a .npz or .csv file, or a scikit-learn dataset (sklearn:digits). The input shape, "
                   "range, labels and CSV columns are read from it, and the model is run on it.")
@click.option("--out", "-o", default=Path("recipe.toml"), show_default=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The recipe to write; paths in it are relative to its folder.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--factory", metavar="FILE.py:NAME|module:callable",
              help="The architecture the weights load into (needed for a state_dict, training checkpoint or safetensors file).")
@click.option("--kwarg", "kwargs", multiple=True, metavar="NAME=VALUE", callback=_kwarg,
              help="A keyword argument of the factory (repeatable), e.g. --kwarg width=16.")
@click.option("--num-classes", type=click.IntRange(min=2), help="Number of classes, when the model cannot be run on data.")
@click.option("--label", metavar="COLUMN", help="CSV: the label column (default: a column named label, target, y or class).")
@click.option("--features", metavar="A,B,...", callback=lambda c, p, v: None if v is None else [s.strip() for s in v.split(",")],
              help="CSV: the model's input columns in training order (default: every other column, in file order; "
                   "a sensitive column is added when the model's first layer needs it).")
@click.option("--sensitive", multiple=True, metavar="NAME",
              help="A sensitive attribute (CSV column or npz array), repeatable: kept aside and audited by [fairness].")
@click.option("--x", "x_name", metavar="NAME", help="npz: the array of inputs (default: x).")
@click.option("--y", "y_name", metavar="NAME", help="npz: the array of labels (default: y).")
@click.option("--mean", callback=_floats, metavar="M[,M...]", help="Normalisation mean, if known (default: tried on the data).")
@click.option("--std", callback=_floats, metavar="S[,S...]", help="Normalisation std, with --mean.")
@click.option("--limit", type=click.IntRange(min=1), help="Write [data] limit = N (a quick first audit).")
@click.option("--trust-checkpoint", is_flag=True, help="As for `audit run`: allow checkpoints that can run code when loaded.")
@quiet_option
@debug_option
@handle_errors
def init(model: Path, data: str | None, out: Path, force: bool, factory: str | None, kwargs: dict[str, Any],
         num_classes: int | None, label: str | None, features: list[str] | None, sensitive: tuple[str, ...],
         x_name: str | None, y_name: str | None, mean: list[float] | None, std: list[float] | None,
         limit: int | None, trust_checkpoint: bool, quiet: bool) -> None:
    """Write a commented recipe for MODEL from what can be read from it and from --data: the checkpoint's
    format, the number of classes (the model's output width), the input shape and range, the normalisation
    (tried on the data), the CSV's columns, with every suite's table and example gates. Each guessed value
    carries a `# guessed:` comment. The recipe is checked as `audit run` checks one before it is written.

        audit init model.safetensors --factory model.py:Net --data test.npz --out recipe.toml
    """
    if (mean is None) != (std is None):
        raise AuditError("--mean and --std go together: give both or neither")
    from audit.init_recipe import InitOptions, init_recipe

    path, notes = init_recipe(InitOptions(
        model_path=model, out=out, data=data, factory=factory, kwargs=kwargs, num_classes=num_classes, label=label,
        features=features, sensitive=list(sensitive), x_name=x_name, y_name=y_name, mean=mean, std=std, limit=limit,
        trust_checkpoint=trust_checkpoint, force=force))
    if not quiet:
        for n in notes:
            click.echo(f"  guessed: {n}", err=True)
        click.echo(f"audit init: wrote {path}; check its `# guessed:` lines, then: audit run {model} --recipe {path}",
                   err=True)
    sys.exit(0)


@main.command(epilog=EXIT_CODES_HELP + " A gate of --recipe whose params select no record of the report (an eps, a "
              "noise level, a class, an attribute or group it does not have), or several, exits 2 naming the valid "
              "values; without --recipe the report's own gates are judged as the run judged them.")
@click.argument("report_path", metavar="REPORT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--recipe", "-r", type=click.Path(dir_okay=False, path_type=Path),
              help="Recipe whose [[gates]] and [validity] to apply. Default: the gates and thresholds stored in "
                   "the report itself, which anyone who can edit report.json can change; in CI pass the "
                   "recipe from your own repository.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Re-render report.json, report.html, junit.xml and summary.md there with the gates just "
                   "evaluated (the report's own folder, or an empty one, which also gets a copy of examples.npz). "
                   "The files keep the run id of the run that measured and say in report.json (regated) and on the "
                   "page which recipe judged them; `audit gate DIR/report.json` then reaches the same verdict.")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write JUnit XML here (one file, anywhere; --out writes the whole set).")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a Markdown summary here (one file, anywhere; --out writes the whole set).")
@format_option
@quiet_option
@debug_option
@handle_errors
def gate(report_path: Path, recipe: Path | None, out: Path | None, junit: Path | None, markdown: Path | None,
         output_format: str, quiet: bool) -> None:
    """Re-evaluate gates on a saved REPORT (report.json) without the model or the data."""
    from audit.report.build import read_report, regate, regate_with_recipe, stored_gates
    from audit.report.outdir import write_text

    report = read_report(report_path)
    recipe_sha = None
    if recipe is not None:
        import hashlib

        from audit.recipe import load_recipe

        r = load_recipe(recipe, gates_only=True)
        recipe_sha = hashlib.sha256(recipe.read_bytes()).hexdigest()
        gates, downgrade = r.gates, r.section("validity")["downgrade"]
        # mistakes in the gates file (an eps or group the report lacks) are exit 2 before anything is written
        result = regate_with_recipe(report, gates, downgrade, recipe, r.present, report_path)
    else:
        gates, downgrade = stored_gates(report, report_path)
        result = regate(report, gates, downgrade)
    paths: dict[str, Path | None] = {"json": report_path}
    if out is not None:
        from audit.report.build import stamp_regated
        from audit.report.outdir import write_regated

        result = stamp_regated(result, report, "audit gate", recipe, recipe_sha, report_path,
                               gates if recipe is not None else None,
                               r.section("validity") if recipe is not None else None)
        paths = dict(write_regated(result, report_path, out))
    if junit is not None:
        from audit.report.junit import render_junit

        write_text(junit, render_junit(result))
        paths["junit"] = junit
    if markdown is not None:
        from audit.report.markdown import render_markdown

        write_text(markdown, render_markdown(result, paths.get("html")))
        paths["summary"] = markdown
    _finish(result, "gate", paths, quiet, output_format)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("model", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--recipe", "-r", type=click.Path(dir_okay=False, path_type=Path),
              help="Recipe TOML (see docs/recipe.md); its [repro] section sets the defaults.")
@click.option("--seeds", type=int, metavar="N", help="Number of seeds, from the master seed up (default: [repro] seeds).")
@click.option("--repeats", type=int, metavar="N",
              help="Same-seed repeats of the first seed (default: [repro] repeats).")
@click.option("--suite", "suites", multiple=True, metavar="NAME",
              help="Run only this suite in every run (repeatable). Default: as `audit run`.")
@click.option("--out", "-o", default=Path("out/repro"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the study's report.json, report.html, junit.xml, summary.md, and runs/ (locked, "
                   "the previous study moved to previous-runs/, a failure report on failure, as for `audit run`).")
@click.option("--seed", type=click.IntRange(min=0), help="First seed (overrides [run] seed).")
@click.option("--device", type=click.STRING, metavar="auto|cpu|cuda[:N]", help="Device (overrides [run] device).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Examples per batch (overrides [run] batch_size).")
@click.option("--jobs", "-j", type=int, metavar="N", help="Runs at once (default: [repro] jobs).")
@click.option("--compare", "compare", type=click.Path(dir_okay=False, path_type=Path), metavar="REPORT",
              help="A baseline report.json: what in the environment changed, ranked by likely impact. Without "
                   "MODEL, only that comparison (against this machine) is printed.")
@click.option("--trust-checkpoint", is_flag=True, help="As for `audit run`.")
@format_option
@quiet_option
@debug_option
@handle_errors
def repro(model: Path | None, recipe: Path | None, seeds: int | None, repeats: int | None, suites: tuple[str, ...],
          out: Path, seed: int | None, device: str | None, batch_size: int | None, jobs: int | None,
          compare: Path | None, trust_checkpoint: bool, output_format: str, quiet: bool) -> None:
    """Seed and determinism study of MODEL: the audit under N seeds and repeated under one seed, each run in
    a fresh process; bitwise repeatability, nondeterministic ops, batch-size invariance, the spread of every
    metric across seeds, and the environment fingerprint. Gates on repro.* metrics decide the exit code."""
    # Checks of the options happen inside the study, once --out is held (a failure there is recorded in it);
    # the comparison alone writes no folder.
    from audit.engine.distributed import env_world_size

    if env_world_size() > 1:
        raise AuditError(f"audit repro does not run under torchrun (WORLD_SIZE = {env_world_size()}): it starts its "
                         "own `audit run` processes, one per seed and repeat; run it as one process (`audit repro "
                         "...`), or shard single runs with `torchrun ... -m audit run`")
    if model is None:
        if compare is None:
            raise AuditError("give MODEL and --recipe for a study, or --compare REPORT to compare this environment "
                             "with a report's")
        import re

        if device is not None and not re.match(r"^(auto|cpu|cuda(:\d+)?)$", device):
            raise AuditError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
        from audit.repro.study import compare_environment

        changes = compare_environment(compare, device)
        if output_format == "json":  # stdout holds the object alone
            from audit.report.ci import VERDICT_SCHEMA

            click.echo(json.dumps({"schema": VERDICT_SCHEMA, "command": "repro", "exit_code": 0, "passed": True,
                                   "compare": str(compare), "environment_changes": changes}, sort_keys=True,
                                  default=str))
        else:
            _print_env_changes(changes, compare)
        sys.exit(0)
    from audit.repro.study import ReproOptions, execute_repro

    opts = ReproOptions(recipe=recipe, model_path=model, out=out, seeds=seeds, repeats=repeats, suites=list(suites),
                        seed=seed, device=device, batch_size=batch_size, trust_checkpoint=trust_checkpoint,
                        compare=compare, jobs=jobs, quiet=quiet)
    report, code = execute_repro(opts, log=lambda line: click.echo(line, err=True))
    if not quiet:
        _repro_summary(report)
    _finish(report, "repro", _out_paths(out), quiet, output_format, code)


@main.command(epilog=EXIT_CODES_HELP + " Exit 5: training diverged (a NaN or infinite loss, gradient or weights); the "
              "last checkpoint stays in --out.")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--recipe", "-r", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Recipe TOML; its [harden] table sets the defaults (docs/recipe.md).")
@click.option("--method", type=click.Choice(["pgd", "trades", "fast", "noise"]),
              help="pgd (Madry), trades (TRADES), fast (FGSM with random start), noise (Gaussian augmentation). "
                   "Default: [harden] method.")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs at most (overrides [harden] epochs).")
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), help="Peak learning rate (overrides [harden] lr).")
@click.option("--eps", type=click.STRING, metavar="EPS", help="Training eps, a number or a fraction such as 8/255 "
              "(overrides [harden] eps).")
@click.option("--seed", type=click.IntRange(min=0), help="Master seed (overrides [run] seed).")
@click.option("--device", type=click.STRING, metavar="auto|cpu|cuda[:N]", help="Device (overrides [run] device).")
@click.option("--out", "-o", default=Path("out/harden"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for model.safetensors, checkpoint.pt, history.json, before/ and after/ (the two audits), "
                   "diff.json/html/md and the hardened model's report.json/html (locked; the previous run's files "
                   "are moved to previous-runs/, a failure report on failure, as for `audit run`).")
@click.option("--resume", is_flag=True,
              help="Continue from --out/checkpoint.pt (after its last finished epoch; bitwise the same weights as an "
                   "uninterrupted run on CPU). Refused, naming what changed, when the checkpoint was made with other "
                   "[harden] settings or flags, another [model], model file or model class, other training data or "
                   "validation split, or another seed; changes that do not touch training (gates, the audits' "
                   "settings, the evaluation data) are accepted.")
@quiet_option
@debug_option
@handle_errors
def harden(model: Path, recipe: Path, method: str | None, epochs: int | None, lr: float | None, eps: str | None,
           seed: int | None, device: str | None, out: Path, resume: bool, quiet: bool) -> None:
    """Fine-tune MODEL (weights of the recipe's [model] factory) to resist the recipe's threat, then audit the
    original and the hardened model on the evaluation data and compare them (`audit diff`). The recipe's
    gates apply to the hardened model."""
    from audit.harden.command import HardenOptions, execute_harden

    opts = HardenOptions(recipe=recipe, model_path=model, out=out, method=method, epochs=epochs, lr=lr, eps=eps,
                         seed=seed, device=device, resume=resume, quiet=quiet)
    report, code = execute_harden(opts, log=lambda line: click.echo(line, err=True))
    if not quiet:
        _harden_summary(report)
    _finish(report, "harden", _out_paths(out), quiet, "text", code)


def _harden_summary(report: dict[str, Any]) -> None:
    h = report["suites"]["harden"]
    t = h["tables"]
    c = h["config"]
    threat = f"sigma {c['sigma']:g}" if c["method"] == "noise" else f"eps {c['eps_label']} ({c['norm']})"
    click.echo(f"harden: {c['method']} at {threat}, best epoch "
               f"{t['best_epoch']} of {len(t['history']) - 1}" + (f"; {t['stopped']}" if t["stopped"] else ""), err=True)
    def f(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}"

    for r in t["tradeoff"]:
        click.echo(f"  {r['norm']} eps {r['eps']}: robust accuracy {f(r['before'])} -> {f(r['after'])} "
                   f"({r['verdict']}); clean accuracy {f(r['clean_before'])} -> {f(r['clean_after'])}", err=True)
    for r in t.get("noise_tradeoff", []):
        if c["method"] == "noise" and r["noise"] == "gaussian":
            click.echo(f"  gaussian noise {r['level']}: accuracy {f(r['before'])} -> {f(r['after'])} ({r['verdict']})",
                       err=True)
    d = t["diff"]
    click.echo(f"  diff: {'paired' if d['paired'] else 'NOT paired'}; " +
               ", ".join(f"{k} {v}" for k, v in (d["counts"] or {}).items()) + f"; {d['flips']} per-example flip(s)",
               err=True)


@main.command(epilog="Exit codes: 0 compared (regressions or not, unless --fail-on-regression); 1 with "
                    "--fail-on-regression, a metric that a gate of NEW reads regressed; 2 usage or input error (a "
                    "missing file, not a report, the report of a failed or unfinished run, an unreadable examples.npz).")
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--out", "-o", default=Path("out/diff"), show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for diff.json, diff.html and diff.md (an earlier diff there is removed first).")
@click.option("--fail-on-regression", is_flag=True, help="Exit 1 when a metric that a gate of NEW reads regressed.")
@click.option("--alpha", type=float, default=0.05, show_default=True,
              help="Significance level of the tests (and 1 - the level of the difference's interval).")
@click.option("--tolerance", type=float, default=0.01, show_default=True,
              help="A difference whose whole interval lies within +-tolerance is 'unchanged'.")
@click.option("--bootstrap", type=int, default=1000, show_default=True,
              help="Paired bootstrap resamples for the metrics that are not a proportion of examples.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the paired bootstrap.")
@format_option
@quiet_option
@debug_option
@handle_errors
def diff(base: Path, new: Path, out: Path, fail_on_regression: bool, alpha: float, tolerance: float, bootstrap: int,
         seed: int, output_format: str, quiet: bool) -> None:
    """Compare two audits: BASE and NEW are report.json files or the folders holding them (as `audit run`
    writes them). Paired example by example when both ran on the same data and kept examples.npz
    (McNemar's exact test, a paired bootstrap, per-example flips); else compared through the reports'
    intervals, and the diff says why. Verdict per metric: improved, regressed, unchanged, inconclusive."""
    from audit.diff import compare_reports, diff_exit_code, write_diff
    from audit.diff.render import clear_diff

    if out.exists() and not out.is_dir():
        raise AuditError(f"--out {out}: exists and is not a folder; choose a folder for the diff")
    if out.is_dir():
        clear_diff(out)  # before comparing: a comparison that fails must not leave an older diff.json
    result = compare_reports(base, new, alpha=alpha, tolerance=tolerance, bootstrap=bootstrap, seed=seed)
    write_diff(result, out)
    code = diff_exit_code(result, fail_on_regression)
    if not quiet:
        c = result["counts"]
        how = (f"paired on {result['n_paired']} examples" if result["paired"]
               else f"NOT paired ({result['unpaired_reason']})")
        click.echo(f"audit diff: {how}", err=True)
        flips = (f"{len(result['flips'])} example(s) flipped" if result["paired"]
                 else "per-example flips not computed (nothing is paired)")
        click.echo(f"  {c['regressed']} regressed, {c['improved']} improved, {c['changed']} changed, "
                   f"{c['inconclusive']} inconclusive, {c['unchanged']} unchanged; {flips}", err=True)
        for key in result["gated_regressions"]:
            click.echo(f"  gated metric regressed: {key}", err=True)
        click.secho(f"audit diff: exit {code} -> {out / 'diff.html'}", fg="red" if code else "green", err=True)
    if output_format == "json":
        from audit.report.ci import VERDICT_SCHEMA

        click.echo(json.dumps({
            "schema": VERDICT_SCHEMA, "command": "diff", "passed": code == 0, "exit_code": code,
            "paired": result["paired"], "n_paired": result.get("n_paired"), "counts": result["counts"],
            "gated_regressions": list(result["gated_regressions"]),
            "reports": {k: str(out / f) for k, f in (("json", "diff.json"), ("html", "diff.html"), ("markdown", "diff.md"))
                        if (out / f).is_file()}}, sort_keys=True, default=str))
    sys.exit(code)


def _print_env_changes(changes: list[dict[str, Any]], base: Path) -> None:
    if not changes:
        click.echo(f"environment: identical to {base}")
        return
    click.echo(f"environment: {len(changes)} difference(s) from {base}, most likely to matter first:")
    for c in changes:
        click.echo(f"  [{c['impact']}] {c['key']}: {c['base']} -> {c['now']} ({c['why']})")


def _repro_summary(report: dict[str, Any]) -> None:
    """The study's findings in a few lines on stderr."""
    s = report["suites"]["repro"]
    same = s["tables"]["same_seed"]
    verdict = "bitwise identical" if same["bitwise_identical"] else (
        f"NOT bitwise identical (max |delta logit| {same['max_abs_logit_diff']:.3g}, "
        f"{same['prediction_flips']} prediction flip(s))")
    cfg = s["config"]
    click.echo(f"repro: {len(cfg['seeds'])} seeds, {cfg['repeats']} same-seed repeat(s): {verdict}", err=True)
    det = s["tables"].get("determinism")
    if det:
        ops = sorted({f"{a['op']} ({a['phase']})" for a in det["alerts"]})
        click.echo(f"  nondeterministic ops on this device: {', '.join(ops) if ops else 'none'}", err=True)
        hz = sorted({h["op"] for h in det["latent_hazards"]})
        click.echo(f"  latent CUDA hazards: {', '.join(hz) if hz else 'none'}", err=True)
        bi = det.get("batch_invariance")
        if bi:
            click.echo(f"  batch size 1 vs {bi['batch_size']}: max |delta| {bi['max_abs_diff']:.3g}, "
                       f"{bi['flips']} flip(s)", err=True)
    seeds = s["tables"]["seeds"]
    click.echo(f"  metrics varying across seeds: {len(seeds['varying'])} of {len(seeds['metrics'])}", err=True)
    for key in seeds["varying"][:5]:
        r = next(m for m in seeds["metrics"] if m["key"] == key)
        click.echo(f"    {key}: mean {r['mean']:.4g}, std {r['std']:.3g}, 95% CI [{r['ci_low']:.4g}, "
                   f"{r['ci_high']:.4g}], worst seed {r['worst_seed']} ({r['worst']:.4g})", err=True)
    cmp_ = s["tables"].get("compare")
    if cmp_:
        click.echo(f"  environment vs {cmp_['base']}: {len(cmp_['changes'])} difference(s)", err=True)
        for c in cmp_["changes"][:5]:
            click.echo(f"    [{c['impact']}] {c['key']}: {c['base']} -> {c['now']}", err=True)
    for note in s["notes"]:
        click.echo(f"  note: {note}", err=True)


def _summary(report: dict[str, Any], html: Path | None) -> None:
    """A few lines on stderr: the failed checks with what they mean and what to do, the gates (or that there
    are none), the verdict and where the page is."""
    from audit.report.ci import check_fix, no_gates_line
    from audit.report.markdown import gate_line

    v = report["verdict"]
    colour = {"pass": "green", "fail": "red", "invalid": "magenta"}[v]
    for c in report["checks"]:
        if c["status"] != "pass":
            if c["status"] != "fail":  # a warning: its id here, its words in the report
                click.echo(f"  check {c['id']}: {c['status'].upper()}", err=True)
                continue
            message = " ".join(str(c.get("message", "")).split())
            click.echo(f"  check {c['id']}: FAIL — {message}", err=True)
            click.echo(f"    what to do: {check_fix(c)}", err=True)
    for g in report["gates"]:
        click.echo("  " + gate_line(g), err=True)
    none = no_gates_line(report)
    if none:
        click.echo(f"  {none} (the recipe has no [[gates]]; the verdict rests on the validity checks alone)", err=True)
    where = f" -> {html}" if html is not None else ""
    click.secho(f"audit: {v.upper()} (exit {report['exit_code']}){where}", fg=colour, err=True)


def _out_paths(out: Path) -> dict[str, Path | None]:
    return {"json": out / "report.json", "html": out / "report.html", "junit": out / "junit.xml",
            "summary": out / "summary.md"}


def _finish(report: dict[str, Any], command: str, paths: dict[str, Path | None], quiet: bool, output_format: str,
            code: int | None = None) -> None:
    """The end of every command that judges a report: the summary on stderr (unless --quiet), the GitHub
    Actions job summary and annotations when running there, the JSON verdict on stdout with --format json,
    and the exit code."""
    from audit.report import ci

    code = report["exit_code"] if code is None else code
    html = paths.get("html")
    html = html if html is not None and Path(html).is_file() else None
    if not quiet:
        _summary(report, html)
    if report.get("run_status", "finished") == "finished":
        from audit.report.markdown import render_markdown

        try:
            ci.append_step_summary(render_markdown(report, html))
        except AuditError as e:  # the job page is a convenience: the verdict and the exit code stand
            click.echo(f"audit: warning: {e}", err=True)
        if ci.in_github_actions() and output_format != "json":
            for line in ci.annotations(report, command):
                click.echo(line)
    if output_format == "json":
        click.echo(json.dumps(ci.verdict_json(dict(report, exit_code=code), command, paths), sort_keys=True,
                              default=str))
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
