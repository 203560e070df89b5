"""Where a report came from: tool and package versions, platform, device."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from typing import Any

from audit import __version__

PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "fairlearn", "torchattacks", "safetensors", "pandas",
            "jinja2", "click")
ENV_VARS = ("CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "CUDA_VISIBLE_DEVICES", "WORLD_SIZE", "RANK")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def device_info(device: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"type": device.type, "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        info.update(name=torch.cuda.get_device_name(idx), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), capability=list(torch.cuda.get_device_capability(idx)))
    else:
        info.update(name=platform.processor() or platform.machine(), cpu_count=os.cpu_count())
    return info


def provenance(device: Any, argv: list[str], seed: int) -> dict[str, Any]:
    from audit.repro.fingerprint import fingerprint

    return {
        "tool": {"name": "audit", "version": __version__},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "device": device_info(device),
        "environment": {k: os.environ.get(k) for k in ENV_VARS if os.environ.get(k) is not None},
        "command": argv,
        "seed": seed,
        # versions, device, deterministic/TF32 flags, threads, environment variables (audit repro --compare)
        "fingerprint": fingerprint(device),
    }
