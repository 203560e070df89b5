"""Progress for logs that are not terminals (CI): plain lines on stderr instead of tqdm bars.

A terminal gets tqdm's bars (``audit.runner.make_progress``). A log file or a CI job gets, on stderr:

- a line when each phase starts and ends (loading, inference, each suite, its validity checks, summarising,
  writing the report; ``audit repro``'s runs, ``audit harden``'s epochs), with its duration;
- a line when an attack or a noise sweep moves to its next eps or level, and when a bar of work that took
  a second or more ends;
- a heartbeat when nothing else was printed for a while: the phase, the current work's done/total and
  the elapsed time, so a job that is slow is told apart from one that hangs.

Bounded, whatever the run's length: the heartbeat interval starts at ``interval`` seconds and grows with
the elapsed time (``elapsed / 30``: about 100 heartbeats in an hour, 170 in ten), bar lines stop after
``max_bar_lines``, and every line stops after ``max_lines`` (one line says so).

What feeds it: the same hooks as the torchrun heartbeat (``audit.engine.distributed``): every forward pass
of the model (``pulse``), the work item a rank is on (``World.beat``), the phases that beat while no model
runs (``World.beating``), and the tqdm-shaped bars the suites already create. Only rank 0 prints (the
runner makes a silent factory elsewhere).
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TextIO

_current: "PlainProgress | None" = None  # the instance the distributed hooks report to (one per process)


def observe_pulse() -> None:
    """A forward pass of the model (``audit.engine.distributed.pulse``)."""
    p = _current
    if p is not None:
        p.pulse()


def observe_activity(what: str) -> None:
    """The work item this process is on (``World.beat``: "core block 3", "robustness.checks task 1")."""
    p = _current
    if p is not None:
        p.activity = what


@contextmanager
def observe_phase(what: str) -> Iterator[None]:
    """A phase marked by ``World.beating`` (loading, summarising): lines from the current instance."""
    p = _current
    if p is None:
        yield
        return
    with p.phase(what):
        yield


def _clock_text(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class PlainBar:
    """The subset of tqdm's interface the suites use (update, set_postfix, set_postfix_str, close)."""

    def __init__(self, owner: "PlainProgress", total: int | None, desc: str):
        self.owner, self.total, self.desc = owner, total, desc
        self.n = 0
        self.postfix = ""
        self.t0 = owner.clock()
        self.closed = False
        owner.bars.append(self)

    def update(self, n: int = 1) -> None:
        self.n += n
        self.owner.maybe_heartbeat()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:  # noqa: ARG002 - tqdm's signature
        """A new stage of this bar (the sweep's next eps): a line, when it changes."""
        if s and s != self.postfix:
            self.postfix = s
            self.owner.bar_line(f"{self.desc}: {s} ({self.done_text()})")

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:  # noqa: ARG002
        """Numbers that change every step (a loss): shown by the heartbeat, never a line of their own."""
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k} {v}" for k, v in items.items())

    def done_text(self) -> str:
        if self.total:
            return f"{self.n}/{self.total}, {100 * self.n / self.total:.0f}%"
        return str(self.n)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self in self.owner.bars:
            self.owner.bars.remove(self)
        took = self.owner.clock() - self.t0
        if took >= 1.0:
            self.owner.bar_line(f"{self.desc}: done, {self.done_text()} in {took:.1f} s")

    def __enter__(self) -> "PlainBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class PlainProgress:
    """A progress factory with tqdm's call shape, ``progress(total=..., desc=...)``, printing plain lines."""

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0, max_lines: int = 400,
                 max_bar_lines: int = 200, clock: Callable[[], float] = time.monotonic, label: str = "audit",
                 thread: bool = True):
        self.stream = stream
        self.interval, self.max_lines, self.max_bar_lines = interval, max_lines, max_bar_lines
        self.clock, self.label, self.thread = clock, label, thread
        self.t0 = clock()
        self.last_line = self.t0
        self.lines = self.bar_lines = 0
        self.phases: list[tuple[str, float]] = []
        self.bars: list[PlainBar] = []
        self.activity = ""
        self.forward_passes = 0
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None

    # ----------------------------------------------------------------------------------- the factory

    def __call__(self, total: int | None = None, desc: str = "", **_: Any) -> PlainBar:
        return PlainBar(self, total, desc)

    @contextmanager
    def phase(self, what: str) -> Iterator[None]:
        """``start: what`` now and ``done: what (t s)`` at the end (``failed`` when it raised); a heartbeat
        thread runs while any phase is open, so a phase that evaluates nothing still shows it is alive."""
        t = self.clock()
        self.line(f"start: {what}")
        self.phases.append((what, t))
        if len(self.phases) == 1:
            self._start_thread()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.phases.pop()
            if not self.phases:
                self._stop_thread()
            if ok:  # a phase that raised says nothing more: the error line that follows says it all
                self.line(f"done: {what} ({self.clock() - t:.1f} s)")

    def pulse(self) -> None:
        self.forward_passes += 1
        self.maybe_heartbeat()

    # ----------------------------------------------------------------------------------- the lines

    def due(self) -> bool:
        elapsed = self.clock() - self.t0
        return self.clock() - self.last_line >= max(self.interval, elapsed / 30.0)

    def maybe_heartbeat(self) -> None:
        if self.due():
            self.heartbeat()

    def heartbeat(self) -> None:
        """``still working: <phase> — <bar> done/total (postfix), <activity>, N forward passes``."""
        parts = []
        if self.phases:
            parts.append(self.phases[-1][0])
        bar = next((b for b in reversed(self.bars) if not b.closed), None)
        if bar is not None:
            parts.append(f"{bar.desc} {bar.done_text()}" + (f" ({bar.postfix})" if bar.postfix else ""))
        if self.activity:
            parts.append(self.activity)
        if self.forward_passes:
            parts.append(f"{self.forward_passes} forward passes")
        self.line("still working: " + (" — ".join(parts) if parts else "(no phase)"))

    def bar_line(self, text: str) -> None:
        if self.bar_lines < self.max_bar_lines:
            self.bar_lines += 1
            self.line("  " + text)
            if self.bar_lines == self.max_bar_lines:
                self.line("  (further per-attack lines left out; heartbeats and phases continue)")

    def line(self, text: str) -> None:
        with self._lock:
            if self.lines >= self.max_lines:
                return
            self.lines += 1
            now = self.clock()
            self.last_line = now
            body = text if self.lines < self.max_lines else "(progress lines stop here: the limit is reached)"
            stream = self.stream if self.stream is not None else sys.stderr
            try:
                print(f"{self.label}: [{_clock_text(now - self.t0)}] {body}", file=stream, flush=True)
            except (OSError, ValueError):  # a closed or broken stderr: progress is not worth an error
                pass

    # ----------------------------------------------------------------------------------- the thread

    def _start_thread(self) -> None:
        if not self.thread:
            return
        stop = threading.Event()
        self._stop = stop

        def run() -> None:
            while not stop.wait(min(1.0, self.interval)):
                if self.due():
                    self.heartbeat()

        threading.Thread(target=run, name="audit-progress", daemon=True).start()

    def _stop_thread(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None


class _Quiet:
    """No output: under --quiet, on ranks other than 0. Same shape as the others."""

    def __call__(self, total: int | None = None, desc: str = "", **_: Any) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=True)

    @contextmanager
    def phase(self, what: str) -> Iterator[None]:  # noqa: ARG002
        yield


class _Bars(_Quiet):
    """A terminal: tqdm bars (transient), no phase lines."""

    def __call__(self, total: int | None = None, desc: str = "", **_: Any) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


MODES = ("auto", "bars", "lines", "none")


def progress_mode(env: Any = None) -> str:
    """AUDIT_PROGRESS: ``auto`` (default: bars on a terminal, lines otherwise), ``bars``, ``lines`` or
    ``none``. An unknown value is an input error (exit 2), not silently ``auto``."""
    import os

    from audit.errors import AuditError

    mode = (os.environ if env is None else env).get("AUDIT_PROGRESS", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise AuditError(f"AUDIT_PROGRESS={mode!r}: expected one of {', '.join(MODES)}")
    return mode


def make_progress(quiet: bool) -> Any:
    """The progress factory for this process: nothing (``quiet``, AUDIT_PROGRESS=none), tqdm bars
    (stderr is a terminal), or plain lines (it is not: CI, a log file). The plain one becomes the instance
    the distributed hooks report to, until :func:`release`."""
    global _current
    mode = progress_mode()
    if quiet or mode == "none":
        return _Quiet()
    if mode == "bars" or (mode == "auto" and sys.stderr.isatty()):
        return _Bars()
    _current = PlainProgress()
    return _current


def phase_of(progress: Any, what: str) -> Any:
    """``progress.phase(what)``, or a context that does nothing for a factory without phases (a plain
    tqdm-shaped callable handed in by a caller)."""
    from contextlib import nullcontext

    phase = getattr(progress, "phase", None)
    return phase(what) if callable(phase) else nullcontext()


def release_all() -> None:
    """Stop reporting the distributed hooks anywhere (the command that made the instance ended)."""
    global _current
    _current = None
