"""The environment fingerprint: everything outside the model, the data and the seed that can change a
number (versions, device, deterministic flags, TF32 and matmul precision, thread counts, environment
variables), and a ranked comparison of two fingerprints.

Recorded in every report (``provenance.fingerprint``), so ``audit repro --compare base/report.json``
can say what changed between the machine that made a baseline and this one.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
import warnings
from typing import Any

# Environment variables that change numerics, determinism or thread counts. Unset ones are recorded as
# null so that "set on one machine, unset on the other" shows up as a change.
ENV_VARS = (
    "CUBLAS_WORKSPACE_CONFIG", "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING", "TORCH_CUDNN_V8_API_DISABLED", "PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "KMP_DETERMINISTIC_REDUCTION",
    "MKL_CBWR", "ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "WORLD_SIZE",
)
VERSION_PACKAGES = ("numpy", "scipy", "scikit-learn", "torchattacks")


def _get(fn: Any, default: Any = None) -> Any:
    """Read a flag that may not exist in this torch build (or may warn that it is deprecated)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    except Exception:  # noqa: BLE001 - a missing flag is recorded as null, never an error
        return default


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def fingerprint(device: Any = None) -> dict[str, Any]:
    """The fingerprint of this process for ``device`` (a torch.device; default: CUDA if present, else CPU).

    Sections: versions, device, flags (deterministic algorithms, cuDNN, TF32, matmul precision, oneDNN),
    threads, env. Flag values are read at call time, so a runner that changed them is recorded as it ran.
    """
    import torch

    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev: dict[str, Any] = {"type": device.type}
    if device.type == "cuda":
        idx = device.index if device.index is not None else _get(torch.cuda.current_device, 0)
        dev.update(name=_get(lambda: torch.cuda.get_device_name(idx)),
                   capability=_get(lambda: ".".join(map(str, torch.cuda.get_device_capability(idx)))),
                   count=_get(torch.cuda.device_count))
    else:
        dev.update(name=platform.processor() or platform.machine(), capability=None, count=None)
    bk = torch.backends
    return {
        "versions": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": _get(bk.cudnn.version) if _get(bk.cudnn.is_available, False) else None,
            "hip": getattr(torch.version, "hip", None),
            **{p: _version(p) for p in VERSION_PACKAGES},
        },
        "device": dev,
        "flags": {
            "deterministic_algorithms": _get(torch.are_deterministic_algorithms_enabled),
            "deterministic_warn_only": _get(torch.is_deterministic_algorithms_warn_only_enabled),
            "fill_uninitialized_memory": _get(lambda: bool(torch.utils.deterministic.fill_uninitialized_memory)),
            "cudnn_enabled": _get(lambda: bool(bk.cudnn.enabled)),
            "cudnn_benchmark": _get(lambda: bool(bk.cudnn.benchmark)),
            "cudnn_deterministic": _get(lambda: bool(bk.cudnn.deterministic)),
            "cuda_matmul_allow_tf32": _get(lambda: bool(bk.cuda.matmul.allow_tf32)),
            "cudnn_allow_tf32": _get(lambda: bool(bk.cudnn.allow_tf32)),
            "cuda_matmul_fp16_reduced_precision": _get(
                lambda: bool(bk.cuda.matmul.allow_fp16_reduced_precision_reduction)),
            "cuda_matmul_bf16_reduced_precision": _get(
                lambda: bool(bk.cuda.matmul.allow_bf16_reduced_precision_reduction)),
            "float32_matmul_precision": _get(torch.get_float32_matmul_precision),
            "cpu_capability": _get(bk.cpu.get_cpu_capability),
            "mkldnn_enabled": _get(lambda: bool(bk.mkldnn.enabled and bk.mkldnn.is_available())),
            "mkl_available": _get(bk.mkl.is_available),
        },
        "threads": {
            "torch_num_threads": _get(torch.get_num_threads),
            "torch_num_interop_threads": _get(torch.get_num_interop_threads),
            "cpu_count": os.cpu_count(),
        },
        "env": {k: os.environ.get(k) for k in ENV_VARS},
    }


# ------------------------------------------------------------------------------------------ compare

HIGH, MEDIUM, LOW = 3, 2, 1
IMPACT_NAMES = {HIGH: "high", MEDIUM: "medium", LOW: "low"}

# dotted key (or a prefix ending in ".") -> (impact, why it matters). The first match wins.
_IMPACT: tuple[tuple[str, int, str], ...] = (
    ("versions.torch", HIGH, "a different torch build can change kernels, their numerics and which ops are "
                             "deterministic"),
    ("versions.cuda", HIGH, "CUDA libraries (cuBLAS, cuFFT) pick different kernels and reduction orders"),
    ("versions.cudnn", HIGH, "cuDNN versions ship different convolution algorithms"),
    ("versions.hip", HIGH, "a different ROCm stack changes kernels"),
    ("device.type", HIGH, "CPU and GPU kernels never agree bitwise"),
    ("device.name", HIGH, "another GPU or CPU model runs other kernels (tiling, fused multiply-add, vector width)"),
    ("device.capability", HIGH, "another compute capability selects other kernels"),
    ("flags.deterministic_algorithms", HIGH, "torch.use_deterministic_algorithms switches ops between "
                                             "deterministic and nondeterministic implementations"),
    ("flags.cudnn_benchmark", HIGH, "cudnn.benchmark picks convolution algorithms by timing, which can differ "
                                    "from run to run"),
    ("flags.cudnn_deterministic", HIGH, "cudnn.deterministic restricts cuDNN to deterministic algorithms"),
    ("flags.cuda_matmul_allow_tf32", HIGH, "TF32 matmuls keep ~10 mantissa bits instead of 23"),
    ("flags.cudnn_allow_tf32", HIGH, "TF32 convolutions keep ~10 mantissa bits instead of 23"),
    ("flags.float32_matmul_precision", HIGH, "'high'/'medium' allow TF32 or bfloat16 internally for float32 "
                                             "matmuls"),
    ("flags.cuda_matmul_", MEDIUM, "reduced-precision reductions in half/bfloat16 matmuls"),
    ("env.CUBLAS_WORKSPACE_CONFIG", HIGH, "without :4096:8 or :16:8, cuBLAS may be nondeterministic on CUDA >= "
                                          "10.2"),
    ("env.NVIDIA_TF32_OVERRIDE", HIGH, "overrides TF32 use in CUDA libraries"),
    ("env.TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", HIGH, "turns TF32 on for cuBLAS"),
    ("env.CUDA_VISIBLE_DEVICES", MEDIUM, "may select another GPU"),
    ("flags.cpu_capability", MEDIUM, "another SIMD level (AVX2 vs AVX-512) changes vectorised reductions"),
    ("env.ATEN_CPU_CAPABILITY", MEDIUM, "forces a SIMD level for CPU kernels"),
    ("env.DNNL_MAX_CPU_ISA", MEDIUM, "limits the instruction set oneDNN uses"),
    ("env.ONEDNN_MAX_CPU_ISA", MEDIUM, "limits the instruction set oneDNN uses"),
    ("flags.mkldnn_enabled", MEDIUM, "oneDNN and the native CPU kernels order sums differently"),
    ("flags.mkl_available", MEDIUM, "MKL and the fallback BLAS order sums differently"),
    ("env.MKL_CBWR", MEDIUM, "MKL conditional numerical reproducibility mode"),
    ("env.KMP_DETERMINISTIC_REDUCTION", MEDIUM, "OpenMP reduction order"),
    ("threads.torch_num_threads", MEDIUM, "intra-op threads split reductions differently on some kernels"),
    ("threads.torch_num_interop_threads", LOW, "inter-op threads rarely change results"),
    ("env.OMP_NUM_THREADS", MEDIUM, "sets the intra-op thread count"),
    ("env.MKL_NUM_THREADS", MEDIUM, "sets MKL's thread count"),
    ("env.OPENBLAS_NUM_THREADS", MEDIUM, "sets OpenBLAS's thread count"),
    ("env.VECLIB_MAXIMUM_THREADS", MEDIUM, "sets Accelerate's thread count"),
    ("versions.numpy", MEDIUM, "metric computations and random streams use numpy"),
    ("versions.scipy", MEDIUM, "interval computations use scipy"),
    ("versions.scikit-learn", MEDIUM, "curve computations use scikit-learn"),
    ("versions.torchattacks", MEDIUM, "AutoAttack runs through torchattacks"),
    ("flags.", LOW, "a flag that rarely changes results"),
    ("threads.cpu_count", LOW, "a machine with another core count (the thread counts above matter more)"),
    ("env.PYTHONHASHSEED", LOW, "audit does not depend on Python's hash order, but user code might"),
    ("env.WORLD_SIZE", MEDIUM, "a distributed run shards examples differently"),
    ("versions.python", LOW, "Python itself rarely changes numerics"),
    ("versions.platform", LOW, "the operating system or C library changed"),
    ("", LOW, "other difference"),
)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def impact_of(key: str) -> tuple[int, str]:
    """(impact level, reason) of a dotted fingerprint key: an entry matches exactly, or as a prefix when it
    ends in '.' or '_'; the empty entry matches everything."""
    for prefix, level, why in _IMPACT:
        if key == prefix or prefix == "" or (prefix[-1] in "._" and key.startswith(prefix)):
            return level, why
    return LOW, "other difference"  # pragma: no cover - the "" entry always matches


def compare_fingerprints(base: dict[str, Any], now: dict[str, Any]) -> list[dict[str, Any]]:
    """Every key whose value differs, as ``{key, base, now, impact, why}``, ranked by likely impact on the
    numbers (high: versions of torch/CUDA/cuDNN, device, deterministic and TF32 flags, cuBLAS workspace;
    medium: SIMD level, BLAS/oneDNN, thread counts, numerical libraries; low: the rest), then by key."""
    a, b = _flatten(base), _flatten(now)
    changes = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if va == vb:
            continue
        level, why = impact_of(key)
        changes.append({"key": key, "base": va, "now": vb, "impact": IMPACT_NAMES[level], "rank": level, "why": why})
    changes.sort(key=lambda c: (-c["rank"], c["key"]))
    for c in changes:
        c.pop("rank")
    return changes
