"""The resume cache: finished rows, saved as they complete, so that a killed audit does not start from zero.

Layout, inside the output folder::

    cache/key.json                            what the rows depend on (below)
    cache/<key hash>/<unit>/<item>.<sha>.npz  one finished block (or check task): its positions, columns,
                                              column metadata, the suite's mergeable partial results, and
                                              a digest of the table rows it was computed from

``unit`` is what filled the rows (``core`` for the clean pass, a suite name, ``<suite>.checks``), ``item``
the block or chunk number (:mod:`audit.engine.shard`). Every entry is written to a temporary name in the
same folder and renamed (atomic on POSIX), and its file name carries the first 16 hex digits of the
SHA-256 of its bytes: an entry that is truncated, altered or unreadable fails that check, is reported in
one line, deleted and computed again; it is never read.

The key holds the model's SHA-256, the data's SHA-256, the validated recipe, the seed, the sharding rule
and block size, the batch sizes, the device type and the tool's version. With ``--resume`` a cache under
another key is ignored with a one-line notice saying which of these differ (and removed); without
``--resume`` the cache is emptied first, so a run starts clean, as without a cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

from audit.engine.table import Part

CACHE_DIR = "cache"


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class RowCache:
    root: Path
    key: dict[str, Any]
    notice: Callable[[str], None]
    enabled: bool = True  # False (--no-cache): nothing is read or written
    readable: bool = True  # False: entries are written but none is read (a run without --resume)

    @cached_property
    def folder(self) -> Path:
        """Where this audit's entries live: under its key's hash, so entries of another audit (a node's
        --out that rank 0 never cleared) are never even looked at."""
        return self.root / key_hash(self.key)[:16]

    @classmethod
    def prepare(cls, out: Path, key: dict[str, Any], resume: bool, notice: Callable[[str], None]) -> "RowCache":
        """The cache of ``out`` for ``key``, as rank 0 opens it: emptied without ``resume``; with it, kept
        when its key.json is this key, else emptied with a notice. The other ranks open theirs after rank 0
        did (the runner waits for that), reading only under this key's hash and only with --resume."""
        root = out / CACHE_DIR
        cache = cls(root, key, notice)
        old = cache._stored_key()
        if not resume:
            shutil.rmtree(root, ignore_errors=True)
        elif old is None and root.exists() and any(root.iterdir()):
            notice(f"{root}: no readable key.json: its rows were ignored and the cache started again")
            shutil.rmtree(root, ignore_errors=True)
        elif old is not None and key_hash(old) != key_hash(key):
            differ = [k for k in sorted(set(old) | set(key)) if old.get(k) != key.get(k)]
            notice(f"{root} holds rows of another audit (different {', '.join(differ)}): ignored, every row "
                   "is computed again")
            shutil.rmtree(root, ignore_errors=True)
        elif old is None:
            notice(f"--resume: no rows cached in {root} yet; every row is computed")
        root.mkdir(parents=True, exist_ok=True)
        _atomic_write(root / "key.json", json.dumps(key, sort_keys=True, indent=1, default=str).encode())
        return cache

    def _stored_key(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.root / "key.json").read_text())
        except (OSError, ValueError):
            return None

    def get(self, unit: str, item: int, expect: str = "") -> Part | None:
        """The cached rows of ``unit`` / ``item``, or None: absent, failed its checksum (then removed, with
        a notice), or computed from other rows than ``expect`` describes (:func:`rows_digest`)."""
        if not (self.enabled and self.readable):
            return None
        folder = self.folder / unit
        for path in sorted(folder.glob(f"{item:06d}.*.npz")) if folder.is_dir() else []:
            try:
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest()[:16] != path.name.split(".")[1]:
                    raise ValueError("checksum mismatch")
                part, made_from = _decode(data)
            except Exception as e:  # noqa: BLE001 - any unreadable entry is recomputed, never trusted
                self.notice(f"cache entry {path} is damaged ({type(e).__name__}: {e}): computed again")
                path.unlink(missing_ok=True)
                continue
            if made_from != expect:  # e.g. the clean pass was recomputed and predicted otherwise
                path.unlink(missing_ok=True)
                continue
            return part
        return None

    def put(self, unit: str, item: int, part: Part, made_from: str = "") -> None:
        if not self.enabled:
            return
        data = _encode(part, made_from)
        folder = self.folder / unit
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{item:06d}.{hashlib.sha256(data).hexdigest()[:16]}.npz"
        _atomic_write(path, data)
        for old in folder.glob(f"{item:06d}.*.npz"):  # an earlier run's entry for the same item
            if old != path:
                old.unlink(missing_ok=True)


def rows_digest(positions: np.ndarray, task: Any, rows: Any = None) -> str:
    """What a part is computed from besides the data and the key: its positions, its task and the table
    rows it reads (their columns, bytes and names). Stored in the entry and compared on reading."""
    h = hashlib.sha256(np.asarray(positions, dtype=np.int64).tobytes())
    h.update(json.dumps(task, sort_keys=True, default=str).encode())
    if rows is not None:
        for name in sorted(rows.columns):
            h.update(name.encode())
            h.update(np.ascontiguousarray(rows.columns[name]).tobytes())
    return h.hexdigest()


def fill_cached(cache: RowCache | None, unit: str, item: int, compute: Callable[[], Part], expect: str = ""
                ) -> tuple[Part, bool]:
    """(the cached part, True) when there is one, else (``compute()``, False), saved before it is returned."""
    if cache is not None:
        got = cache.get(unit, item, expect)
        if got is not None:
            return got, True
    part = compute()
    if cache is not None:
        cache.put(unit, item, part, expect)
    return part, False


def _encode(part: Part, made_from: str) -> bytes:
    arrays = {f"col:{k}": np.asarray(v) for k, v in part.columns.items()}
    arrays["made_from"] = np.asarray(made_from)
    arrays["positions"] = np.asarray(part.positions, dtype=np.int64)
    arrays["column_meta"] = np.asarray(json.dumps(part.column_meta, sort_keys=True))
    arrays["partials"] = np.asarray(json.dumps(part.partials, sort_keys=True))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _decode(data: bytes) -> Part:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        cols = {k[4:]: z[k] for k in z.files if k.startswith("col:")}
        part = Part(z["positions"], cols, json.loads(str(z["column_meta"])), json.loads(str(z["partials"])))
        made_from = str(z["made_from"])
    for k, v in part.columns.items():
        if len(v) != len(part.positions):
            raise ValueError(f"column {k} has {len(v)} rows for {len(part.positions)} positions")
    return part, made_from


def _atomic_write(path: Path, data: bytes) -> None:
    # No fsync: after a power loss an entry may be empty or short, and its checksum then fails, so it is
    # computed again; syncing every block would cost more than the blocks it could save.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
