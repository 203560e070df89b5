"""`python -m audit.envcheck`: verify the installation the Makefile made.

torchattacks must import (it is installed with --no-deps), its stale pins must not have downgraded
requests, and torchvision must not have been pulled in (it does not import with the CPU torch build).
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import sys


def problems() -> list[str]:
    out = []
    try:
        import torchattacks  # noqa: F401
    except Exception as e:  # noqa: BLE001
        out.append(f"torchattacks does not import: {type(e).__name__}: {e} (pip install --no-deps torchattacks==3.5.1)")
    if importlib.util.find_spec("torchvision") is not None:
        out.append("torchvision is installed; audit does not need it (and the CPU torch build cannot import it)")
    try:
        v = md.version("requests")
        major, minor = (int(p) for p in v.split(".")[:2])
        if (major, minor) < (2, 26):
            out.append(f"requests was downgraded to {v} (torchattacks' stale pin); reinstall a current requests")
    except md.PackageNotFoundError:
        pass
    return out


def main() -> int:
    found = problems()
    for p in found:
        print(f"audit.envcheck: {p}", file=sys.stderr)
    if not found:
        import torch

        print(f"audit.envcheck: ok (torch {torch.__version__}, cuda available: {torch.cuda.is_available()})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
