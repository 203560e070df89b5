"""Numerical precision of the passes whose outputs the report states.

On CUDA, PyTorch runs float32 matmuls and convolutions in TF32 by default (10-bit mantissa). That is
fine for proposing attack steps, but not for the logits the report is built from or for deciding whether
an example is broken: TF32 moves logits by ~1e-3, so predictions near the decision boundary would depend
on the GPU generation and the batch size. Every stated number therefore comes from a full-fp32 pass.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def fp32_decisions() -> Iterator[None]:
    """Turn off TF32 for matmuls and cuDNN convolutions inside the block (no-op without CUDA)."""
    if not torch.cuda.is_available():
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
