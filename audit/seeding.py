"""Every random stream derives from the master seed and a name, so streams are independent of each
other, of batch size and of the order in which suites run."""

from __future__ import annotations

import hashlib

import numpy as np


def stream_key(*names: object) -> int:
    """A stable 64-bit integer for a tuple of names (Python's hash() is salted per process)."""
    h = hashlib.sha256("\x1f".join(map(str, names)).encode()).digest()
    return int.from_bytes(h[:8], "little")


def rng(seed: int, *names: object) -> np.random.Generator:
    """A numpy Generator for the stream ``names`` under master ``seed``."""
    return np.random.default_rng([int(seed), stream_key(*names)])


def example_seeds(seed: int, indices: np.ndarray, *names: object) -> np.ndarray:
    """One 63-bit seed per example, a function of (master seed, stream name, global example index) only,
    so per-example randomness does not depend on batch size, order or sharding."""
    base = np.uint64(stream_key(seed, *names))
    idx = np.asarray(indices, dtype=np.uint64)
    # splitmix64 finaliser: a bijective mix of (base + index).
    with np.errstate(over="ignore"):
        z = base + idx * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(1)).astype(np.int64)
