"""Which rows a rank fills: blocks of consecutive examples, dealt round-robin.

The examples (positions 0..n-1 in the data as loaded) are cut into blocks of ``block_rows`` consecutive
rows; block b belongs to rank ``b % world_size``. No padding: the last block may be short and ranks may
get one block more than others. Batches never cross a block, so every batch of a sharded run is the same
set of examples as in a single-process run with the same block size: the per-example results are then
bitwise identical whatever the world size (batched kernels may round differently for another batch), and
a run resumed under another world size reuses its cached blocks as they are.

The validity checks' work on their examples (a fixed subset, chosen from the whole clean table) is cut
into tasks (one check at one eps on those examples; the reference attack per 128 survivors), dealt by
estimated cost (:func:`owners`): each task runs exactly the batches a single process would, so its
columns are the same bitwise.
"""

from __future__ import annotations

import numpy as np

RULE = "blocks of consecutive rows, block b on rank b % world_size"
MIN_BLOCKS = 32  # a default block is small enough that n examples make this many blocks (up to 4 batches each)


def block_size(configured: int | None, n: int, *batch_sizes: int | None) -> int:
    """``[run] block_rows`` when set. Else a whole number of batches (a batch never crosses a block, so a
    block smaller than a batch would shrink the batch): B = the largest batch size, times k = n / (32 B)
    rounded up and kept within 1..4, so that big data makes at least 32 blocks (ranks stay balanced, a
    killed run loses little) and a block holds at most 4 batches. It depends on n and the batch sizes,
    never on the number of ranks: that is what keeps a sharded report equal to a single-process one."""
    if configured:
        return int(configured)
    b = max([1] + [int(x) for x in batch_sizes if x])
    k = min(4, max(1, -(-n // (MIN_BLOCKS * b))))
    return b * k


def blocks(n: int, size: int) -> list[np.ndarray]:
    """Positions of every block, in order."""
    return [np.arange(s, min(s + size, n), dtype=np.int64) for s in range(0, n, size)]


def chunks(positions: np.ndarray, size: int) -> list[np.ndarray]:
    """``positions`` (a subset, in order) cut into consecutive chunks of ``size``."""
    return [positions[s:s + size] for s in range(0, len(positions), size)]


def owners(n_items: int, world_size: int, costs: list[float] | None = None) -> list[int]:
    """The rank that fills each item: item i on rank i % world size, or, given an estimated cost per item,
    the longest-processing-time-first deal (each item, costliest first, to the rank with the least work so
    far; ties to the lower rank). Who computes an item never changes its result (an item runs the same
    batches on any rank), so the deal may depend on the world size."""
    if costs is None or world_size == 1:
        return [i % world_size for i in range(n_items)]
    load = [0.0] * world_size
    owner = [0] * n_items
    for i in sorted(range(n_items), key=lambda i: (-costs[i], i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += costs[i]
    return owner


def take(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``x[positions]``, as a view when the positions are one consecutive run (a block): no copy of the
    inputs, and the same memory layout as the whole array's rows, so kernels that pick their algorithm
    from the strides compute what they would on the whole array."""
    positions = np.asarray(positions)
    if len(positions) and positions[-1] - positions[0] == len(positions) - 1 and (np.diff(positions) == 1).all():
        return x[int(positions[0]):int(positions[-1]) + 1]
    return x[positions]
