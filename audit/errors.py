"""Exit codes and the exceptions that map onto them.

The CLI turns these into one line on stderr and the matching exit code; `--debug` adds the traceback.
Codes follow pytest's spirit: 0 all gates pass, 1 a gate failed, 2 usage or input error,
3 internal error, 4 the evaluation itself is invalid.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    GATE_FAILED = 1
    USAGE = 2
    INTERNAL = 3
    INVALID = 4
    DIVERGED = 5  # `audit harden`: training diverged (NaN or infinite loss or gradient)


class AuditError(Exception):
    """An error the user can fix: bad recipe, missing file, refused checkpoint, bad data (exit 2).

    The message must be one line that names the file, the field and the fix.
    """

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str):
        # One line, always: a multi-line message from a library is folded so that stderr stays one line.
        super().__init__(" ".join(str(message).split()))


class RecipeError(AuditError):
    """A recipe key is unknown, of the wrong type, missing, or has a bad value."""


class CheckpointError(AuditError):
    """The checkpoint cannot be loaded safely or does not fit the architecture."""


class DataError(AuditError):
    """The data cannot be read or does not fit the recipe or the model."""


class ReportError(AuditError):
    """A report.json given to `audit gate` / `audit diff` is missing or malformed."""


class InvalidEvaluation(Exception):
    """Raised only where an evaluation cannot go on at all (e.g. the model outputs NaN): one line and
    exit 4, no report. Failed validity checks are normally recorded in the report and turned into exit 4
    by the gate step."""

    exit_code: ExitCode = ExitCode.INVALID

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class TrainingDiverged(Exception):
    """`audit harden` stopped because the loss or the gradient became NaN or infinite (exit 5). The message
    names the epoch, the step and the likely cause; the last good checkpoint stays in --out."""

    exit_code: ExitCode = ExitCode.DIVERGED

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


INTERRUPTED = 130  # the shell's code for SIGINT (128 + 2), as for any interrupted command
TERMINATED = 143  # 128 + SIGTERM (15): what a CI runner sends when a job is cancelled


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run (raised by the handler ``audit.report.outdir.RunFolder`` installs), so the run
    stops like an interrupted one and records why. A KeyboardInterrupt, so ``except Exception`` in user
    code (a factory, a data callable) cannot swallow it."""


def error_line(e: BaseException) -> tuple[str, int]:
    """The one line the user sees for ``e`` and the exit code it maps to (the CLI prints the line; a run's
    failure report records both)."""
    if isinstance(e, (AuditError, InvalidEvaluation, TrainingDiverged)):
        return str(e), int(e.exit_code)
    if isinstance(e, Terminated):
        return "terminated (SIGTERM)", TERMINATED
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", INTERRUPTED
    if isinstance(e, SystemExit):
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return f"exited with code {code}", code
    msg = " ".join(str(e).split())[:400]
    return (f"internal error: {type(e).__name__}: {msg} (re-run with --debug for the traceback, and please "
            "report it)", int(ExitCode.INTERNAL))
