"""Several processes under torchrun: who this rank is, how ranks wait for each other, and how one rank's
failure reaches every other rank.

Only PyTorch's own machinery is used: torchrun starts the processes and sets RANK / WORLD_SIZE /
LOCAL_RANK; ``torch.distributed`` (a Gloo process group, on GPU machines too, and the c10d key-value
store for the control messages) carries the rows and the messages. Rows travel as pickled numpy arrays,
one block (or check task) at a time from its owner to every rank (:meth:`World.stream`), so no rank ever
holds every rank's rows in flight.

Why a control protocol on top of the collectives: a collective only returns when every rank enters it,
so a rank that raised (and left) or hangs would leave the others blocked until the process group's
timeout, and they could not say which rank. Instead, before each collective every rank marks itself done
in the store and waits, polling, until all ranks are done, some rank posted an error (then every rank
stops with that rank's line), or some rank not done has shown no progress for ``timeout_s`` (its
heartbeat, renewed on every forward pass of the model and while loading, stopped changing; measured on the waiting rank's own clock, so
clock skew between nodes does not matter). A rank killed outright (SIGKILL, out of memory) is seen by
torchrun, which sends SIGTERM to the others; their line then names the rank whose process is gone when it
ran on the same host.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from audit.engine import progress as _progress
from audit.errors import AuditError, ExitCode

DEFAULT_TIMEOUT_S = 300.0

# The heartbeat of this process while it evaluates the model: WrappedModel.forward calls pulse() on every
# forward pass (every attack step of every attack, AutoAttack's and the checks' included), so "progress"
# means "the model is being evaluated"; a rank stuck inside a forward stops beating. None: one process.
_pulse_target: "World | None" = None


def pulse() -> None:
    w = _pulse_target
    if w is not None:
        w.beat()
    _progress.observe_pulse()  # the same beat feeds the plain progress lines of a log (audit.engine.progress)


class RankFailed(AuditError):
    """Another rank failed (raised, hung or vanished): this rank stops too."""

    def __init__(self, message: str, exit_code: int = int(ExitCode.INTERNAL)):
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[assignment]


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


@dataclass
class World:
    """This process's place among the ranks. ``World()`` is a single process: every method is then free."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S
    backend: str | None = None
    hosts: list[str] = field(default_factory=list)
    _store: Any = None
    _last_beat: float = 0.0
    _last_what: str = ""
    _beats: int = 0
    _seen: dict[int, tuple[str, float]] = field(default_factory=dict)
    _seq: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, timeout_s: float = DEFAULT_TIMEOUT_S) -> "World":
        """The world torchrun describes (WORLD_SIZE > 1), its process group started; else one process."""
        size = env_world_size()
        if size <= 1:
            return cls()
        import datetime

        import torch.distributed as dist

        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        # Gloo, on GPU machines too: everything the ranks exchange is host memory (numpy rows, control
        # messages); NCCL would copy each gathered row to a GPU and back. Each rank's model still runs on
        # its own GPU (cuda:LOCAL_RANK, chosen by the runner).
        backend = "gloo"
        # the process group's own timeout is only the backstop: the control protocol above stops first
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s + 120))
        w = cls(rank=rank, size=size, local_rank=local, timeout_s=timeout_s, backend=backend)
        w._store = dist.distributed_c10d._get_default_store()
        w._store.set(f"audit/host/{rank}", f"{socket.gethostname()}|{os.getpid()}")
        w.beat("started", force=True)
        w.hosts = w.allgather_object(socket.gethostname(), "start")
        global _pulse_target
        _pulse_target = w
        return w

    def beating(self, what: str) -> "_Beating":
        """A context in which a thread beats every second: for work that evaluates no model and shows no
        progress, but is not stuck (loading the checkpoint and the data)."""
        return _Beating(self, what)

    # ---------------------------------------------------------------------------------- control messages

    def beat(self, what: str | None = None, force: bool = False) -> None:
        """Progress: this rank is alive and working on ``what`` (kept as its current activity; written to
        the store at most once a second unless ``force``)."""
        if what is not None:
            self._last_what = what
            _progress.observe_activity(what)
        if self._store is None:
            return
        now = time.monotonic()
        if force or now - self._last_beat >= 1.0:
            self._last_beat = now
            self._beats += 1
            self._store.set(f"audit/beat/{self.rank}", f"{self._beats}|{self._last_what}")

    def post_error(self, line: str, code: int, follow_on: bool = False) -> None:
        """Tell the other ranks that this one failed, and why (best effort: the store may be gone). A
        ``follow_on`` stop (this rank stops because another failed) is kept apart, so that every rank
        names the rank where the failure began, not the first rank that passed it on."""
        if self._store is None:
            return
        try:
            if follow_on:
                self._store.set(f"audit/stopped/{self.rank}", f"{code}|{line}")
            else:
                self._store.set(f"audit/error/{self.rank}", f"{code}|{line}")
                self._store.add("audit/errors", 1)
        except Exception:  # noqa: BLE001 - the line is printed here anyway
            pass

    def _posted(self, kind: str, r: int) -> tuple[int, str] | None:
        key = f"audit/{kind}/{r}"
        if not self._store.check([key]):
            return None
        code, _, line = self._store.get(key).decode().partition("|")
        return int(code), line

    def _first_error(self) -> tuple[int, int, str] | None:
        """(rank, exit code, line) of the lowest rank that posted a failure of its own."""
        if self._store.add("audit/errors", 0) == 0:  # one round trip while nothing failed
            return None
        for r in range(self.size):
            if r != self.rank:
                err = self._posted("error", r)
                if err is not None:
                    return r, err[0], err[1]
        return None

    def wait_all(self, phase: str) -> None:
        """Block until every rank reached ``phase``; raise :class:`RankFailed` if one failed or hangs."""
        if not self.distributed:
            return
        self._seq += 1  # every rank calls wait_all in the same order, so (seq, phase) names one meeting
        try:
            self._wait(f"{self._seq}:{phase}", phase)
        except RankFailed:
            raise
        except Exception as e:  # noqa: BLE001 - the store lives in rank 0's agent: it is gone with it
            raise RankFailed(f"rank {self.rank}: lost contact with the other ranks while waiting at {phase} "
                             f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); another rank or its node "
                             "stopped") from None

    def _wait(self, key: str, phase: str) -> None:
        count_key = f"audit/done/{key}"
        # arrive first, count second: a rank that sees the count complete may leave at once, and every
        # rank still waiting must find its arrival mark
        self._store.set(f"audit/at/{key}/{self.rank}", "1")
        self._store.add(count_key, 1)
        self._seen.clear()  # silence is measured from this wait's start, never from an earlier wait
        while True:
            err = self._first_error()
            if err is not None:
                r, code, line = err
                raise RankFailed(f"rank {self.rank}: stopped because rank {r} failed: {line}", code)
            if self._store.add(count_key, 0) >= self.size:
                return
            now = time.monotonic()
            for r in range(self.size):
                if r == self.rank or self._store.check([f"audit/at/{key}/{r}"]):
                    continue
                beat_key = f"audit/beat/{r}"
                beat = self._store.get(beat_key).decode() if self._store.check([beat_key]) else "0|not started"
                last = self._seen.get(r)
                if last is None or last[0] != beat:
                    self._seen[r] = (beat, now)
                elif now - last[1] > self.timeout_s and not self._store.check([f"audit/at/{key}/{r}"]):
                    what = beat.partition("|")[2] or "?"
                    raise RankFailed(
                        f"rank {self.rank}: stopped because rank {r} made no progress for {self.timeout_s:g} s "
                        f"(last seen: {what}; waiting at: {phase}). Raise [run] rank_timeout if its batches are "
                        "that slow", int(ExitCode.INTERNAL))
            self.beat(f"waiting at {phase}")
            time.sleep(0.1)

    def posted_error(self, wait_s: float = 0.0) -> tuple[int, int, str] | None:
        """(rank, exit code, line) of a failure another rank posted, waiting up to ``wait_s`` for one (a
        collective that failed because a peer closed its connection: that peer is about to post why)."""
        if self._store is None:
            return None
        end = time.monotonic() + wait_s
        while True:
            try:
                err = self._first_error()
            except Exception:  # noqa: BLE001 - the store is gone too
                return None
            if err is not None or time.monotonic() >= end:
                return err
            time.sleep(0.1)

    def first_error(self) -> str:
        """The line of the rank where the failure began (or, failing that, of a rank that stopped
        because of it), or empty."""
        if self._store is None:
            return ""
        try:
            err = self._first_error()
            if err is not None:
                return err[2]
            for r in range(self.size):
                if r != self.rank:
                    stop = self._posted("stopped", r)
                    if stop is not None:
                        return stop[1]
        except Exception:  # noqa: BLE001 - the store may be gone
            pass
        return ""

    def lost_ranks(self) -> str:
        """The ranks on this host whose process is gone, in words (empty when none can be named)."""
        if self._store is None:
            return ""
        gone = []
        host = socket.gethostname()
        for r in range(self.size):
            if r == self.rank:
                continue
            try:
                h, _, pid = self._store.get(f"audit/host/{r}").decode().partition("|")
            except Exception:  # noqa: BLE001 - the store itself may be gone with rank 0
                return ""
            if h == host:
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    gone.append(f"rank {r} (pid {pid})")
                except PermissionError:
                    pass
        return ", ".join(gone)

    # ----------------------------------------------------------------------------------------- collectives

    def allgather_object(self, obj: Any, phase: str) -> list[Any]:
        """``obj`` of every rank, in rank order, on every rank (after :meth:`wait_all`)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        self.wait_all(phase)
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def stream(self, phase: str, owner: list[int], mine: dict[int, Any], consume: Any) -> None:
        """Every item, in order, to every rank: item i is sent by its owner (``owner[i]``) with one
        broadcast, and ``consume(item)`` runs on every rank before the next is sent, so a rank never holds
        more than its own items and one in flight (a gather of every rank's rows at once would not fit in
        memory for big tables). One process: ``consume`` on its own items."""
        if not self.distributed:
            for i in range(len(owner)):
                consume(mine[i])
            return
        import torch.distributed as dist

        self.wait_all(phase)
        for i, src in enumerate(owner):
            box = [mine.get(i) if src == self.rank else None]
            dist.broadcast_object_list(box, src=src)
            consume(box[0])
            mine.pop(i, None)
            self.beat(f"receiving {phase}")

    def close(self) -> None:
        """Leave after the last gather. No rank waits for the others here: rank 0 still summarises and
        writes the report (no heartbeat to judge it by), and the others have nothing left to give it; a
        failure of rank 0 from here on is its own exit code, which torchrun reports."""
        self.abort()

    def abort(self) -> None:
        """Leave without waiting for the others (after a failure, or after the last gather)."""
        global _pulse_target
        if self._store is None:
            return
        import torch.distributed as dist

        self._store = None
        _pulse_target = None
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - tearing down after a failure: nothing left to report
            pass


class _Beating:
    def __init__(self, world: World, what: str):
        self.world, self.what = world, what
        self._stop = None
        self._phase: Any = None

    def __enter__(self) -> None:
        import threading

        self._phase = _progress.observe_phase(self.what)  # a phase line in a log, on rank 0
        self._phase.__enter__()
        if not self.world.distributed:
            return
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.wait(1.0):
                try:
                    self.world.beat(self.what, force=True)
                except Exception:  # noqa: BLE001 - the store is gone: the main thread will hear of it
                    return

        threading.Thread(target=run, daemon=True).start()

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._phase is not None:
            self._phase.__exit__(*exc)
