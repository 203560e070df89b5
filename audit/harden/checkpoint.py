"""`audit harden`'s resumable checkpoint: everything a killed run needs to continue bitwise where the last
finished epoch left it, in a file that ``torch.load(weights_only=True)`` reads (tensors, numbers, strings,
lists, tuples and dicts only: no pickled object, so resuming never needs ``--trust-checkpoint``).

Contents (``FORMAT``): the network's weights; the best epoch's weights and score (what model.safetensors
holds); the optimiser's state; the learning-rate schedule's position (epoch, step: the schedule is a pure
function of them, ``audit.harden.loop.learning_rate``); the GradScaler's state; every RNG state (Python's
``random``, numpy's legacy global generator, torch's CPU generator and every CUDA device's); the history
so far; the early-stopping counter; why training stopped, if it did; and the fingerprint of what made it
(method, settings, model, data, seed), so that ``--resume`` refuses a checkpoint of another run.

Written after every epoch, atomically: to a temporary file beside it, flushed to disk, then renamed over
``checkpoint.pt``; a run killed at any moment leaves the previous epoch's checkpoint or the new one, never a
torn file.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audit.errors import AuditError

FORMAT = "audit.harden.checkpoint/1"
NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain values."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                   "gauss": None if gauss is None else float(gauss)},
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        # only where CUDA is in use: asking would otherwise initialise it on every GPU of a CPU run
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return out


def set_rng_state(s: dict[str, Any]) -> None:
    py = s["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = s["numpy"]
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                         nps["cached"]))
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"][: torch.cuda.device_count()])


def save(path: Path, state: dict[str, Any]) -> None:
    """``state`` (plus the format tag) to ``path``, atomically."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise AuditError(f"{path}: cannot write the checkpoint ({e.strerror or e})") from None


def load(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, read with ``weights_only=True``; exit 2 if it is not one of ours."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line, not a traceback
        # torch's own advice (retry with weights_only=False) is not ours to give: that would run code
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise AuditError(f"{path}: not a readable `audit harden` checkpoint ({type(e).__name__}: {first[:160]}); "
                         "remove it, or run without --resume") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise AuditError(f"{path}: not an `audit harden` checkpoint (format {state.get('format') if isinstance(state, dict) else None!r}, "
                         f"expected {FORMAT!r}); remove it, or run without --resume")
    return state


def mismatch(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """What differs between two fingerprints, in words, nested tables key by key (empty: the same run)."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += mismatch(a, b, f"{prefix}{key}.")
            continue
        key = prefix + key
        if a != b:
            if isinstance(a, str) and isinstance(b, str) and len(a) == 64 and len(b) == 64:
                out.append(f"{key} (sha256 {a[:12]} then, {b[:12]} now)")
            else:
                out.append(f"{key} ({a!r} then, {b!r} now)")
    return out
