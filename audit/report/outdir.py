"""The output folder of one run: run id, lock, the previous run moved aside, staged writes, failure report.

Every command that writes a report into ``--out`` (``audit run``, ``audit repro``, and any later one such as
``audit harden``) opens the folder with :class:`RunFolder` *first*, before it reads the recipe:

    with RunFolder.open(out, command="run", inputs={...}) as folder:
        ...                                   # any error in here leaves a failure report
        folder.write(report, table)           # the run's own files, staged, report.json last

What the folder guarantees, from the moment the command starts:

- **One run at a time.** An advisory ``fcntl.flock`` on ``--out/.audit.lock``; a second run exits 2 naming the
  process that holds it. The kernel drops the lock when its process dies, so a lock left by a killed run is
  no obstacle (the stale file is simply locked again).
- **No stale report.** The previous run's files are moved (never deleted) into
  ``--out/previous-runs/<its run id>/`` and a placeholder report.json with ``passed: false`` ("did not finish")
  takes their place at once; a run killed with SIGKILL leaves that placeholder. A run that fails replaces it
  with a failure report (``passed: false``, the error line, the exit code) and an HTML page, JUnit file and
  summary that say the run failed. Only a finished run writes a report that can pass.
- **One run id per run**, ``<UTC time>-<random>``, in report.json (``run_id``, ``provenance.run_id``) and in
  every file of that run (examples.npz ``meta:run_id``, the HTML, JUnit and Markdown files), so files of two
  runs side by side are detectable (:func:`check_siblings`, used by ``audit gate``).
"""

from __future__ import annotations

import errno
import json
import os
import platform
import secrets
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from audit import __version__
from audit.errors import AuditError, Terminated, error_line

OUTPUT_FILES = ("report.json", "examples.npz", "report.html", "junit.xml", "summary.md")
RUN_DIRS = ("runs",)  # `audit repro`'s child runs belong to the study that made them
LOCK_NAME = ".audit.lock"
PREVIOUS_DIR = "previous-runs"
SCHEMA = "audit.report/1"

# run_status of a report: a finished run's report is the only kind that can pass
FINISHED, FAILED, INCOMPLETE = "finished", "failed", "incomplete"


def new_run_id(now: datetime | None = None) -> str:
    """``20261201T090102Z-3f9a1c2b``: sortable by start time, unique by its random tail."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def now_iso() -> str:
    """A run's creation time as reports record it (UTC, to the second)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stamp_report(report: dict[str, Any], run_id: str) -> dict[str, Any]:
    """``report`` with its run id (top level and provenance) and ``run_status: finished``: what a finished
    run's report.json holds, whether a folder wrote it or it stays in memory (``audit.run``)."""
    out = dict(report)
    out["run_id"] = run_id
    out["run_status"] = FINISHED
    if isinstance(out.get("provenance"), dict):
        out["provenance"] = dict(out["provenance"], run_id=run_id)
    return out


def failure_report(*, run_id: str, command: str, argv: list[str], created: str, inputs: dict[str, Any],
                   status: str, error: str, exit_code: int | None) -> dict[str, Any]:
    """A report.json for a run that did not finish: it can never pass (``passed`` is false, no gate holds),
    and ``audit gate`` on it exits non-zero (``read_report``)."""
    return {
        "schema": SCHEMA,
        "run_id": run_id,
        "run_status": status,
        "verdict": "error" if status == FAILED else "incomplete",
        "passed": False,
        "exit_code": exit_code,
        "error": error,
        "command": command,
        "inputs": inputs,
        "provenance": {"tool": {"name": "audit", "version": __version__}, "python": sys.version.split()[0],
                       "platform": platform.platform(), "command": argv, "created": created, "run_id": run_id,
                       "pid": os.getpid()},
        "suites": {}, "metrics": [], "checks": [], "gates": [],
    }


class RunFolder:
    """``--out`` held by one run (see the module docstring). Open it with :meth:`open`; use it as a context
    manager so that any exception, Ctrl-C included, leaves a failure report before it propagates."""

    def __init__(self, out: Path, command: str, argv: list[str] | None = None,
                 inputs: dict[str, Any] | None = None, extra_files: tuple[str, ...] = (), pages: bool = True,
                 run_id: str | None = None, created: str | None = None):
        self.out = Path(out)
        # report.html and junit.xml. Without them (``audit repro``'s child runs, whose study renders the one
        # page and JUnit file from their report.json files) the folder holds report.json, summary.md and
        # examples.npz: what the parent reads and what a person reads, without the rendering cost.
        self.pages = pages
        # the command's own files and folders besides the report's (`audit harden`: the model, its
        # checkpoint, the before/after audits): moved aside with the report, so none outlives its run
        self.extra_files = tuple(extra_files)
        self.command = command
        self.argv = list(sys.argv if argv is None else argv)
        self.inputs = {k: str(v) for k, v in (inputs or {}).items() if v is not None}
        now = datetime.now(timezone.utc)
        # given: a report made in memory (``audit.Report.save``) keeps the id and time of the run that made it
        self.created = created or now.isoformat(timespec="seconds")
        self.run_id = run_id or new_run_id(now)
        self.moved_to: Path | None = None  # where the previous run's files went
        self.finished = False
        self._lock_fd: int | None = None
        self._old_sigterm: Any = None

    # ----------------------------------------------------------------------------------------- opening

    @classmethod
    def open(cls, out: Path, command: str, argv: list[str] | None = None,
             inputs: dict[str, Any] | None = None, extra_files: tuple[str, ...] = (), pages: bool = True,
             run_id: str | None = None, created: str | None = None) -> "RunFolder":
        folder = cls(out, command, argv, inputs, extra_files, pages, run_id, created)
        folder._prepare()
        folder._lock()
        try:
            folder._move_previous_aside()
            folder._write_placeholder()
            folder._catch_sigterm()
        except BaseException:
            folder.close()
            raise
        return folder

    @classmethod
    def hold(cls, out: Path, command: str) -> "RunFolder":
        """The folder's lock alone (``audit gate --out`` re-rendering a finished report in place): no run
        can start writing there meanwhile, and nothing is moved aside. Release it with close()."""
        folder = cls(out, command)
        folder._prepare()
        folder._lock()
        return folder

    def _catch_sigterm(self) -> None:
        """SIGTERM (a cancelled CI job) stops the run like Ctrl-C, so it records a failure (exit 143) instead
        of leaving the did-not-finish placeholder. Only from the main thread, and only over the default
        handler (a host program's own handler is left alone); restored by close()."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_sigterm(signum: int, frame: Any) -> None:
            raise Terminated()

        self._old_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    def _prepare(self) -> None:
        """Create --out (or check it), so an unwritable folder fails in a second, not after the audit."""
        out = self.out
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / f".audit-write-test-{self.run_id}"
            probe.write_text("")
            probe.unlink()
        except FileExistsError:
            raise AuditError(f"--out {out}: exists and is not a folder; choose a folder for the report") from None
        except OSError as e:
            raise AuditError(f"--out {out}: cannot write there ({e.strerror or e}); choose a writable folder") from None
        for name in OUTPUT_FILES:
            p = out / name
            if p.exists() and not p.is_file():
                raise AuditError(f"--out {out}: {name} there is not a file; remove it or choose another folder")

    def _lock(self) -> None:
        import fcntl

        path = self.out / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise AuditError(f"--out {self.out}: cannot create the lock file {LOCK_NAME} ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise AuditError(f"--out {self.out}: cannot lock the folder ({e.strerror or e})") from None
            raise AuditError(f"--out {self.out}: in use by another audit run ({describe_holder(path)}); wait for "
                             "it to finish or choose another --out") from None
        holder = {"pid": os.getpid(), "run_id": self.run_id, "command": self.command, "started": self.created,
                  "host": platform.node()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self._lock_fd = fd

    def _move_previous_aside(self) -> None:
        """Move every file of an earlier run (and staged leftovers of a killed one) into previous-runs/<id>/."""
        out = self.out
        names = [n for n in OUTPUT_FILES + RUN_DIRS + self.extra_files if os.path.lexists(out / n)]
        names += sorted(p.name for p in out.glob(".*.partial"))
        if not names:
            return
        old_id = _previous_run_id(out)
        dest = out / PREVIOUS_DIR / old_id
        i = 1
        while dest.exists():
            i += 1
            dest = out / PREVIOUS_DIR / f"{old_id}-{i}"
        try:
            dest.mkdir(parents=True)
            for n in names:
                os.replace(out / n, dest / n)
        except OSError as e:
            raise AuditError(f"--out {out}: cannot move the previous run's files aside to {dest} "
                             f"({e.strerror or e})") from None
        self.moved_to = dest

    def _write_placeholder(self) -> None:
        """From now until the run ends, the folder says: this run has not finished (what SIGKILL leaves)."""
        pid = os.getpid()
        self._write_failure(INCOMPLETE, f"audit {self.command} (run {self.run_id}, pid {pid}, started {self.created}) "
                                        "has not finished: it is still running, or it was killed", None)

    # ----------------------------------------------------------------------------------------- writing

    def stamp(self, report: dict[str, Any]) -> dict[str, Any]:
        """The report with this run's id (top level and provenance) and ``run_status: finished``."""
        return stamp_report(report, self.run_id)

    def write(self, report: dict[str, Any], table: Any | None = None) -> dict[str, Any]:
        """Write the run's report and files, staged (each beside its final name, moved into place when all
        were written, report.json last). Returns the report as written."""
        from audit.report.build import dumps

        report = self.stamp(report)
        text = dumps(report)
        # Renderers get exactly what report.json holds, so re-rendering a saved report gives the same files.
        self._stage_and_replace(self._rendered(json.loads(text), text), table)
        self.finished = True
        return report

    def fail(self, message: str, exit_code: int) -> None:
        """Record this run's failure (the one line the user sees, and the exit code)."""
        self._write_failure(FAILED, message, exit_code)
        self.finished = True

    def _write_failure(self, status: str, message: str, exit_code: int | None) -> None:
        from audit.report.build import dumps

        report = failure_report(run_id=self.run_id, command=self.command, argv=self.argv, created=self.created,
                                inputs=self.inputs, status=status, error=message, exit_code=exit_code)
        if self.moved_to is not None:
            report["previous_run"] = str(self.moved_to)
        # examples.npz of this run does not exist: remove a half-written one (never an earlier run's: moved)
        (self.out / "examples.npz").unlink(missing_ok=True)
        self._stage_and_replace(self._rendered(report, dumps(report)), None)

    def _rendered(self, report: dict[str, Any], text: str) -> dict[str, str]:
        """The files of ``report`` (``text`` is its report.json): summary.md always, the page and the JUnit
        file unless this folder does without them, report.json last (the order they are moved in)."""
        from audit.report.markdown import render_markdown

        texts = {}
        if self.pages:
            from audit.report.html import render_html
            from audit.report.junit import render_junit

            texts = {"report.html": render_html(report), "junit.xml": render_junit(report)}
        texts["summary.md"] = render_markdown(report, self.out / "report.html" if self.pages else None)
        texts["report.json"] = text
        return texts

    def _stage_and_replace(self, texts: dict[str, str], table: Any | None) -> None:
        out = self.out
        staged: list[tuple[Path, Path]] = []
        try:
            if table is not None:
                tmp = out / f".examples.npz.{self.run_id}.partial"
                staged.append((tmp, out / "examples.npz"))
                try:
                    table.save(tmp, meta={"run_id": self.run_id})
                except OSError as e:
                    raise AuditError(f"{out / 'examples.npz'}: cannot write ({e.strerror or e})") from None
            staged += stage_texts(out, texts, self.run_id)
            staged.sort(key=lambda tf: tf[1].name == "report.json")  # the verdict file last
            move_staged(staged)
        finally:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)

    # ----------------------------------------------------------------------------------------- closing

    def close(self) -> None:
        """Release the lock. The lock file stays: deleting it would let a third run lock a new file while a
        second still waits on the old one."""
        if self._old_sigterm is not None:
            import signal

            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if exc is not None and not self.finished:
                message, code = error_line(exc)
                try:
                    self.fail(message, code)
                except Exception:  # noqa: BLE001 - a full disk must not hide the original error
                    pass
        finally:
            self.close()


def stage_texts(out: Path, texts: dict[str, str], tag: str) -> list[tuple[Path, Path]]:
    """Each text written beside its final name (``.NAME.TAG.partial``); returns (staged, final) pairs for
    :func:`move_staged`. A failure removes what it staged; after that, leftovers are the caller's."""
    staged: list[tuple[Path, Path]] = []
    try:
        for name, body in texts.items():
            tmp = out / f".{name}.{tag}.partial"
            staged.append((tmp, out / name))
            write_text(tmp, body)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return staged


def move_staged(staged: list[tuple[Path, Path]]) -> None:
    """Move staged files into place, in order (the verdict file last, by the caller's order)."""
    for tmp, final in staged:
        try:
            os.replace(tmp, final)
        except OSError as e:
            raise AuditError(f"{final}: cannot write ({e.strerror or e})") from None


def write_text(path: Path, text: str) -> None:
    """Write an output file; failure is a user error (exit 2) naming the path, not a traceback."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise AuditError(f"{path}: cannot write ({e.strerror or e})") from None


def describe_holder(lock_path: Path) -> str:
    """Who holds a lock, from what it wrote into the lock file: "pid 123, run ..., started ..."."""
    try:
        info = json.loads(lock_path.read_text(encoding="utf-8"))
        parts = [f"pid {int(info['pid'])}"]
        if info.get("host") and info["host"] != platform.node():
            parts[0] += f" on {info['host']}"
        parts += [f"audit {info.get('command', '?')} (run {info.get('run_id', '?')})",
                  f"started {info.get('started', '?')}"]
        return ", ".join(parts)
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet written its pid"


def _previous_run_id(out: Path) -> str:
    """The run id of the files now in ``out`` (from report.json), or a name made from its time."""
    rj = out / "report.json"
    try:
        rid = json.loads(rj.read_text(encoding="utf-8")).get("run_id")
        # the id becomes a folder name: only ids of our own shape, never "../x" from an edited report
        if isinstance(rid, str) and 0 < len(rid) <= 64 and all(c.isalnum() or c in "-_" for c in rid):
            return rid
    except (OSError, ValueError, AttributeError):
        pass
    candidates = [out / n for n in OUTPUT_FILES + RUN_DIRS if os.path.lexists(out / n)]
    mtime = max((p.lstat().st_mtime for p in candidates), default=None)
    when = datetime.fromtimestamp(mtime, timezone.utc) if mtime is not None else datetime.now(timezone.utc)
    return f"{when:%Y%m%dT%H%M%SZ}-unknown-run"


# ------------------------------------------------------------------------------------- reading run ids


def run_id_of(path: Path) -> str | None:
    """The run id a file of a run carries, or None when it carries none (a file of an older version)."""
    import re

    name = path.name
    try:
        if name == "examples.npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as z:
                return str(z["meta:run_id"]) if "meta:run_id" in z.files else None
        if name == "report.json":
            rid = json.loads(path.read_text(encoding="utf-8")).get("run_id")
            return rid if isinstance(rid, str) else None
        text = path.read_text(encoding="utf-8", errors="replace")[:200_000]
    except Exception:  # noqa: BLE001 - unreadable: it carries no id we can trust
        return None
    m = re.search(r'audit-run-id(?:" value="|: )([0-9]{8}T[0-9]{6}Z-[0-9a-z-]+)', text)
    return m.group(1) if m else None


def check_siblings(report_path: Path, run_id: str | None) -> None:
    """Raise when a file beside report.json comes from another run (a folder two runs wrote into)."""
    if run_id is None or report_path.name != "report.json":
        return
    for name in OUTPUT_FILES:
        p = report_path.parent / name
        if name == "report.json" or not p.is_file():
            continue
        other = run_id_of(p)
        if other is not None and other != run_id:
            raise AuditError(f"{p}: written by run {other}, but {report_path} by run {run_id}: the folder mixes "
                             "files of two runs; re-run the audit into an empty --out")


def write_regated(report: dict[str, Any], source: Path, out: Path) -> dict[str, Path]:
    """``audit gate --out``: the re-gated ``report`` (its gates, verdict and ``regated`` note) written to
    ``out`` as report.json, report.html, junit.xml and summary.md, staged and moved into place with
    report.json last, under the folder's lock. Returns the paths written.

    The files keep the run id of the run that measured (examples.npz beside them is still that run's), so
    the folder stays one run's, and all four files state the one new verdict: none of the old verdict's
    files is left beside them. ``out`` may be the report's own folder; another folder must be empty of
    other runs' files (refused otherwise, exit 2), and gets a copy of the run's examples.npz when there is
    one, so it is a complete report folder (``audit diff`` reads it)."""
    import shutil

    from audit.report.build import dumps
    from audit.report.html import render_html
    from audit.report.junit import render_junit
    from audit.report.markdown import render_markdown

    out = Path(out)
    folder = RunFolder.hold(out, "gate")
    try:
        same = out.resolve() == Path(source).resolve().parent
        rid = report.get("run_id")
        if not same:
            for name in OUTPUT_FILES:
                p = out / name
                if p.is_file() and run_id_of(p) != rid:
                    other = run_id_of(p)
                    raise AuditError(f"--out {out}: {name} there is from {'run ' + other if other else 'another run'}, "
                                     f"not from run {rid} of {source}; choose an empty folder or the report's own "
                                     "folder")
        text = dumps(report)
        texts = {"report.html": render_html(report), "junit.xml": render_junit(report),
                 "summary.md": render_markdown(report, out / "report.html"), "report.json": text}
        tag = f"gate-{secrets.token_hex(4)}"
        staged: list[tuple[Path, Path]] = []
        try:
            npz = Path(source).parent / "examples.npz"
            if not same and npz.is_file():
                tmp = out / f".examples.npz.{tag}.partial"
                try:
                    shutil.copyfile(npz, tmp)
                except OSError as e:
                    raise AuditError(f"{out / 'examples.npz'}: cannot write ({e.strerror or e})") from None
                staged.append((tmp, out / "examples.npz"))
            staged += stage_texts(out, texts, tag)
            staged.sort(key=lambda tf: tf[1].name == "report.json")  # the verdict file last
            move_staged(staged)
        finally:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
    finally:
        folder.close()
    return {"json": out / "report.json", "html": out / "report.html", "junit": out / "junit.xml",
            "summary": out / "summary.md"}
