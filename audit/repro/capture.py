"""The determinism capture hook of ``audit run`` (used by ``audit repro``'s capture run).

With the environment variable ``AUDIT_DETERMINISM_CAPTURE=1``, ``audit.runner.execute``:

1. calls ``torch.use_deterministic_algorithms(True, warn_only=True)`` before loading anything, so every
   op without a deterministic implementation on this device warns instead of silently running;
2. records every warning per phase (``phase()``): the clean inference pass is "inference", a suite that
   follows gradients (``Suite.needs_logits``: attacks) is "attack_gradient", other suites "inference";
3. at the end (``finish()``) records the ops the model runs forward and backward on a few examples
   (``audit.repro.hazards.record_model_ops``: phases inference, attack_gradient, training), matches them
   against the ops PyTorch documents as nondeterministic on CUDA, and probes batch-size invariance
   (logits with batch size 1 against the configured batch size);
4. puts the result into ``report["determinism"]``.

Without the variable, ``DeterminismCapture.from_env()`` returns a disabled capture whose ``phase()`` does
nothing, so ``audit run`` behaves exactly as before.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Iterator

import numpy as np

ENV_VAR = "AUDIT_DETERMINISM_CAPTURE"
HAZARD_EXAMPLES = 8  # examples used to record the ops the model runs (the op set rarely depends on n)


class DeterminismCapture:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.alerts: dict[tuple[str, str, str], dict[str, Any]] = {}

    @classmethod
    def from_env(cls) -> "DeterminismCapture":
        enabled = os.environ.get(ENV_VAR, "") == "1"
        if enabled:
            import torch

            torch.use_deterministic_algorithms(True, warn_only=True)
        return cls(enabled)

    @contextlib.contextmanager
    def phase(self, phase: str, suite: str = "core") -> Iterator[None]:
        """Record the nondeterminism alerts raised inside the block under ``phase``; other warnings are
        re-issued unchanged."""
        if not self.enabled:
            yield
            return
        from audit.repro.hazards import parse_alert

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            text = str(w.message)
            op = parse_alert(text)
            if op is None:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                continue
            key = (op, phase, suite)
            rec = self.alerts.setdefault(key, {"op": op, "phase": phase, "suite": suite, "count": 0,
                                               "message": " ".join(text.split())[:400]})
            rec["count"] += 1

    def finish(self, model: Any, x: np.ndarray, device: Any, batch_size: int, logits: np.ndarray,
               cfg: dict[str, Any]) -> dict[str, Any]:
        """Op recording, hazard matching and the batch-invariance probe; returns report["determinism"]."""
        import torch

        from audit.engine.inference import predict_logits
        from audit.repro.hazards import TABLE_TORCH_VERSION, match, record_model_ops

        ops = record_model_ops(model, x[:HAZARD_EXAMPLES], device,
                               phase_context=lambda ph: self.phase(ph, suite="op-recording"))
        out: dict[str, Any] = {
            "enabled": True,
            "mode": "torch.use_deterministic_algorithms(True, warn_only=True)",
            "alerts": sorted(self.alerts.values(), key=lambda a: (a["phase"], a["suite"], a["op"])),
            "ops": ops,
            "latent_hazards": match(ops),
            "hazard_table": f"ops documented as nondeterministic on CUDA in torch {TABLE_TORCH_VERSION} "
                            f"(audit.repro.hazards); this run: torch {torch.__version__}",
            "hazard_examples": int(min(HAZARD_EXAMPLES, len(x))),
        }
        if cfg.get("batch_invariance", True):
            m = int(min(len(x), cfg.get("batch_invariance_examples", 256)))
            with self.phase("inference", suite="batch-invariance"):
                single = predict_logits(model, x[:m], device, 1)
            ref = logits[:m]
            diff = float(np.max(np.abs(single.astype(np.float64) - ref.astype(np.float64)))) if m else 0.0
            out["batch_invariance"] = {
                "examples": m, "batch_size": int(batch_size), "max_abs_diff": diff,
                "flips": int((single.argmax(1) != ref.argmax(1)).sum()) if m else 0,
                "identical": bool(np.array_equal(single, ref)),
            }
        return out
