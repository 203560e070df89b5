"""Which rows a rank fills: blocks of consecutive examples, dealt round-robin.

The examples (positions 0..n-1 in the data as loaded) are cut into blocks of ``block_rows`` consecutive
rows; block b belongs to rank ``b % world_size``. No padding: the last block may be short and ranks may
get one block more than others. Batches never cross a block, so every batch of a sharded run is the same
set of examples as in a single-process run with the same block size: the per-example results are then
bitwise identical whatever the world size (batched kernels may round differently for another batch), and
a run resumed under another world size reuses its cached blocks as they are.

The validity checks' examples (a fixed subset, chosen from the whole clean table) are cut the same way
into chunks, dealt round-robin too (:func:`chunks`).
"""

from __future__ import annotations

import numpy as np

RULE = "blocks of consecutive rows, block b on rank b % world_size"
DEFAULT_BLOCK_ROWS = 1024


def block_size(configured: int | None, *batch_sizes: int | None) -> int:
    """``[run] block_rows`` when set, else 1024 or the largest batch size if that is larger (a batch
    never crosses a block, so a block smaller than a batch would shrink the batch)."""
    if configured:
        return int(configured)
    return max([DEFAULT_BLOCK_ROWS] + [int(b) for b in batch_sizes if b])


def blocks(n: int, size: int) -> list[np.ndarray]:
    """Positions of every block, in order."""
    return [np.arange(s, min(s + size, n), dtype=np.int64) for s in range(0, n, size)]


def chunks(positions: np.ndarray, size: int) -> list[np.ndarray]:
    """``positions`` (a subset, in order) cut into consecutive chunks of ``size``."""
    return [positions[s:s + size] for s in range(0, len(positions), size)]


def mine(items: list, rank: int, world_size: int) -> list[tuple[int, object]]:
    """(item number, item) of the items that ``rank`` fills."""
    return [(i, it) for i, it in enumerate(items) if i % world_size == rank]
