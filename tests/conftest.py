"""Shared fixtures: real models trained on shipped data (seconds on CPU), the CLI in-process, recipes.

Nothing is mocked: the digits CNN is trained here from scikit-learn's bundled digits with the example's
own training script, and every test that audits it runs the real pipeline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Progress lines (stderr not a terminal under click's runner and in subprocesses) off by default, so that
# tests of stderr read what they test; tests of the progress lines set AUDIT_PROGRESS themselves.
os.environ.setdefault("AUDIT_PROGRESS", "none")
sys.path.insert(0, str(ROOT))  # the examples are importable as packages: examples.digits.train

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None) -> CliResult:
    """Run `audit ...` in-process with click's runner (fast: torch is imported once per test session)."""
    from click.testing import CliRunner

    from audit.cli import main

    runner = CliRunner()
    old = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        res = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(old)
    return CliResult(res.exit_code, res.stdout, res.stderr)


def assert_failed_run(out: Path, exit_code: int | None = None) -> dict:
    """--out after a run that stopped with an error: a failure report that cannot pass (passed false, the
    error line, the exit code), a page saying so, and no result files of this run."""
    import json

    r = json.loads((out / "report.json").read_text())
    assert r["passed"] is False and r["run_status"] == "failed" and r["verdict"] == "error", r
    assert isinstance(r["error"], str) and r["error"] and r["metrics"] == [] and r["gates"] == []
    if exit_code is not None:
        assert r["exit_code"] == exit_code, r
    assert "RUN FAILED" in (out / "report.html").read_text()
    assert not (out / "examples.npz").exists()
    return r


def signals_default() -> None:
    """preexec_fn for a child that a test interrupts: SIGINT and SIGTERM at their default actions. A shell
    that starts pytest in the background without job control (`cmd &` in a script) makes it ignore SIGINT,
    children inherit that through exec, and Python then installs no KeyboardInterrupt handler: the child
    would shrug off the test's Ctrl-C (which is right for audit, and wrong for the test)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_subprocess(*args: str, cwd: Path | None = None, timeout: float = 300) -> CliResult:
    """Run the real console entry point in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-m", "audit", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """The digits CNN trained with examples/digits/train.py (few epochs: seconds), saved as safetensors."""
    import torch
    from safetensors.torch import save_file
    from examples.digits.train import train

    torch.set_num_threads(2)
    net = train(epochs=12, seed=0)
    path = tmp_path_factory.mktemp("digits") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def credit_checkpoint(tmp_path_factory) -> Path:
    """The credit MLP trained with examples/credit/train.py (30 epochs: seconds), saved as safetensors."""
    import torch
    from safetensors.torch import save_file

    from examples.credit import train as credit_train

    torch.set_num_threads(2)
    net = credit_train.train(epochs=30, seed=0)
    path = tmp_path_factory.mktemp("credit") / "credit.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def digits_recipe() -> Path:
    return ROOT / "recipes" / "digits.toml"


@pytest.fixture()
def write_recipe(tmp_path):
    """Write a recipe next to the test's files; relative paths in it resolve against tmp_path."""

    def write(text: str, name: str = "recipe.toml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return write


DIGITS_MODEL = f'''
[model]
factory = "{ROOT / 'examples' / 'digits' / 'model.py'}:DigitsCNN"
num_classes = 10
input_bounds = [0.0, 1.0]
input_shape = [1, 8, 8]
mean = [0.5]
std = [0.5]
'''

DIGITS_DATA = '''
[data]
source = "sklearn"
name = "digits"
'''
