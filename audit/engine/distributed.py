"""Several processes under torchrun: who this rank is, how ranks wait for each other, and how one rank's
failure reaches every other rank.

Only PyTorch's own machinery is used: torchrun starts the processes and sets RANK / WORLD_SIZE /
LOCAL_RANK; ``torch.distributed`` (Gloo on CPU, NCCL on CUDA for the process group, the c10d key-value
store for the control messages) carries the rows and the messages. Rows travel as pickled numpy arrays
through ``all_gather_object`` (Gloo sends CPU tensors whatever the device).

Why a control protocol on top of the collectives: a collective only returns when every rank enters it,
so a rank that raised (and left) or hangs would leave the others blocked until the process group's
timeout, and they could not say which rank. Instead, before each collective every rank marks itself done
in the store and waits, polling, until all ranks are done, some rank posted an error (then every rank
stops with that rank's line), or some rank not done has shown no progress for ``timeout_s`` (its
heartbeat, renewed as batches complete, stopped changing; measured on the waiting rank's own clock, so
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

from audit.errors import AuditError, ExitCode

DEFAULT_TIMEOUT_S = 300.0


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
    _seen: dict[int, tuple[str, float]] = field(default_factory=dict)
    _seq: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, timeout_s: float = DEFAULT_TIMEOUT_S, device: str = "auto") -> "World":
        """The world torchrun describes (WORLD_SIZE > 1), its process group started; else one process."""
        size = env_world_size()
        if size <= 1:
            return cls()
        import datetime

        import torch
        import torch.distributed as dist

        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local)
        # the process group's own timeout is only the backstop: the control protocol above stops first
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s + 120))
        w = cls(rank=rank, size=size, local_rank=local, timeout_s=timeout_s, backend=backend)
        w._store = dist.distributed_c10d._get_default_store()
        w._store.set(f"audit/host/{rank}", f"{socket.gethostname()}|{os.getpid()}")
        w.beat("started", force=True)
        w.hosts = w.allgather_object(socket.gethostname(), "start")
        return w

    # ---------------------------------------------------------------------------------- control messages

    def beat(self, what: str = "", force: bool = False) -> None:
        """Progress: this rank is alive and working (a new description is written at once, the same one at
        most once a second)."""
        if self._store is None:
            return
        now = time.monotonic()
        if force or what != self._last_what or now - self._last_beat >= 1.0:
            self._last_beat, self._last_what = now, what
            self._store.set(f"audit/beat/{self.rank}", f"{time.time():.3f}|{what}")

    def post_error(self, line: str, code: int) -> None:
        """Tell the other ranks that this one failed, and why (best effort: the store may be gone)."""
        if self._store is None:
            return
        try:
            self._store.set(f"audit/error/{self.rank}", f"{code}|{line}")
        except Exception:  # noqa: BLE001 - the line is printed here anyway
            pass

    def _error_of(self, r: int) -> tuple[int, str] | None:
        key = f"audit/error/{r}"
        if not self._store.check([key]):
            return None
        code, _, line = self._store.get(key).decode().partition("|")
        return int(code), line

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
        self._store.set(f"audit/done/{key}/{self.rank}", "1")
        pending = set(range(self.size))
        while True:
            for r in range(self.size):
                if r == self.rank:
                    continue
                err = self._error_of(r)
                if err is not None:
                    raise RankFailed(f"rank {self.rank}: stopped because rank {r} failed: {err[1]}", err[0])
            pending = {r for r in pending if not self._store.check([f"audit/done/{key}/{r}"])}
            if not pending:
                return
            now = time.monotonic()
            for r in sorted(pending):
                beat_key = f"audit/beat/{r}"
                beat = self._store.get(beat_key).decode() if self._store.check([beat_key]) else "0|not started"
                last = self._seen.get(r)
                if last is None or last[0] != beat:
                    self._seen[r] = (beat, now)
                elif now - last[1] > self.timeout_s:
                    what = beat.partition("|")[2] or "?"
                    raise RankFailed(
                        f"rank {self.rank}: stopped because rank {r} made no progress for {self.timeout_s:g} s "
                        f"(last seen: {what}; waiting at: {phase}). Raise [run] rank_timeout if its batches are "
                        "that slow", int(ExitCode.INTERNAL))
            self.beat(f"waiting at {phase}")
            time.sleep(0.05)

    def first_error(self) -> str:
        """The line of the first rank (in rank order) that posted one, or empty."""
        if self._store is None:
            return ""
        try:
            for r in range(self.size):
                if r != self.rank:
                    err = self._error_of(r)
                    if err is not None:
                        return err[1]
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

    def close(self) -> None:
        if self._store is None:
            return
        import torch.distributed as dist

        try:
            self.wait_all("end")
            dist.destroy_process_group()
        finally:
            self._store = None

    def abort(self) -> None:
        """Leave without waiting for the others (after a failure)."""
        if self._store is None:
            return
        import torch.distributed as dist

        self._store = None
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - tearing down after a failure: nothing left to report
            pass
