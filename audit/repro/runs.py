"""Child runs of ``audit repro``: each a real ``python -m audit run ... --quiet`` in a fresh interpreter,
so nothing (RNG state, cuDNN autotuner caches, thread pools, imported modules) carries over between them.

Each child writes ``runs/<label>/``: report.json, examples.npz and summary.md (a person's one-page read of
that run), plus stderr.txt; not report.html or junit.xml (``--no-pages``), which the study renders once for
all runs from these files.

A child's exit code 0, 1 or 4 is a result (gates pass, fail, or the evaluation is invalid): its
report.json and examples.npz are read. Exit 2 (usage/input error) or 3 (internal error), or any other
code, stops the study with one line naming the run and the child's own error line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from audit.errors import AuditError, ExitCode
from audit.repro.capture import ENV_VAR

RESULT_CODES = (0, 1, 4)


class ChildRunError(AuditError):
    """A child run failed with a usage/input error (exit 2) or crashed (exit 3)."""

    def __init__(self, message: str, exit_code: ExitCode):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ChildRun:
    role: str  # "seed" | "repeat" | "capture"
    seed: int
    out: Path
    label: str
    capture: bool = False
    exit_code: int | None = None
    seconds: float | None = None
    stderr: str = ""

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "role": self.role, "seed": self.seed, "out": str(self.out),
                "capture": self.capture, "exit_code": self.exit_code,
                "seconds": None if self.seconds is None else round(self.seconds, 2)}


@dataclass
class ChildArgs:
    """What every child gets: the same model, recipe and options as the study."""

    model: Path
    recipe: Path
    suites: list[str]
    device: str | None = None
    batch_size: int | None = None
    trust_checkpoint: bool = False

    def command(self, seed: int, out: Path) -> list[str]:
        cmd = [sys.executable, "-m", "audit", "run", str(self.model), "--recipe", str(self.recipe),
               "--seed", str(seed), "--out", str(out), "--quiet", "--no-pages"]  # the study renders the page
        for s in self.suites:
            cmd += ["--suite", s]
        if self.device:
            cmd += ["--device", self.device]
        if self.batch_size:
            cmd += ["--batch-size", str(self.batch_size)]
        if self.trust_checkpoint:
            cmd.append("--trust-checkpoint")
        return cmd


def _error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("audit: error:"):
            return ln[len("audit: error:"):].strip()
    return lines[-1] if lines else "(no output)"


def run_child(run: ChildRun, args: ChildArgs) -> ChildRun:
    """Run one child to completion (no timeout: a long audit is a long audit)."""
    env = dict(os.environ)
    # the study writes the job summary and the annotations once, for itself: a child run must not add its own
    for var in ("GITHUB_STEP_SUMMARY", "GITHUB_ACTIONS"):
        env.pop(var, None)
    env.pop(ENV_VAR, None)
    if run.capture:
        env[ENV_VAR] = "1"
    run.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    proc = subprocess.run(args.command(run.seed, run.out), capture_output=True, text=True, env=env)
    run.seconds = time.perf_counter() - t
    run.exit_code = proc.returncode
    run.stderr = proc.stderr
    (run.out / "stderr.txt").write_text(proc.stderr, encoding="utf-8")
    return run


def check_child(run: ChildRun) -> None:
    """Raise ChildRunError unless the child produced a result."""
    what = f"repro run {run.label} (seed {run.seed}, log {run.out / 'stderr.txt'})"
    if run.exit_code == int(ExitCode.USAGE):
        raise ChildRunError(f"{what} failed: {_error_line(run.stderr)}", ExitCode.USAGE)
    if run.exit_code not in RESULT_CODES:
        raise ChildRunError(f"{what} failed with exit {run.exit_code}: {_error_line(run.stderr)}", ExitCode.INTERNAL)
    for name in ("report.json", "examples.npz"):
        if not (run.out / name).is_file():
            if run.exit_code == int(ExitCode.INVALID):  # stopped before any report (e.g. NaN logits): say why
                raise ChildRunError(f"{what}: {_error_line(run.stderr)}", ExitCode.INVALID)
            raise ChildRunError(f"{what} exited {run.exit_code} but wrote no {name}", ExitCode.INTERNAL)


def run_all(runs: list[ChildRun], args: ChildArgs, jobs: int, on_done: Callable[[ChildRun], None]) -> None:
    """Run ``runs`` with at most ``jobs`` at once; ``on_done`` after each. Stops at the first failed child
    (runs already started finish; queued ones are cancelled)."""
    if jobs <= 1:
        for r in runs:
            run_child(r, args)
            on_done(r)
            check_child(r)
        return
    with ThreadPoolExecutor(max_workers=jobs) as ex:
        futures = [ex.submit(run_child, r, args) for r in runs]
        try:
            for fut in as_completed(futures):
                r = fut.result()
                on_done(r)
                check_child(r)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
