"""Counter-based per-example random numbers: a value depends only on (example seed, element position).

``audit.seeding.example_seeds`` gives one 63-bit seed per global example index. From it, element ``j`` of
an example's draw is ``splitmix64(seed + (j + 1) * golden)``, a bijective 64-bit mix (Steele, Lea & Flood,
"Fast splittable pseudorandom number generators", OOPSLA 2014). Everything is vectorised numpy over
(examples x elements), so no per-example Generator objects are created, and an example's random start or
noise draw is the same whatever batch, chunk or shard it lands in.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def uniform01(seeds: np.ndarray, dim: int, offset: int = 0) -> np.ndarray:
    """Uniform draws in [0, 1), shape (len(seeds), dim), float64 with 53 random bits.

    ``offset`` selects a disjoint block of counters (e.g. a second, independent stream for Box-Muller).
    """
    s = np.asarray(seeds, dtype=np.int64).astype(np.uint64)[:, None]
    j = np.arange(offset * dim + 1, offset * dim + dim + 1, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        z = _mix(s + j * _GOLDEN)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def normal(seeds: np.ndarray, dim: int) -> np.ndarray:
    """Standard normal draws, shape (len(seeds), dim), by Box-Muller from two uniform blocks."""
    u1 = uniform01(seeds, dim, offset=0)
    u2 = uniform01(seeds, dim, offset=1)
    r = np.sqrt(-2.0 * np.log1p(-u1))  # 1 - u1 in (0, 1]: no log(0)
    return r * np.cos(2.0 * np.pi * u2)
