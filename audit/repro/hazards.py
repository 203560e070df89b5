"""Nondeterministic operations: the ops a model runs, and which of them PyTorch documents as
nondeterministic.

Two sources of evidence, both reported with an op name and a phase (inference, attack_gradient,
training):

* observed: ops that raised PyTorch's nondeterminism alert on *this* device, captured while the run
  executes under ``torch.use_deterministic_algorithms(True, warn_only=True)`` (``parse_alert`` reads the
  op name out of the warning);
* latent: ops the model runs forward and backward, recorded with a ``TorchDispatchMode``
  (``record_model_ops``) and matched against ``DOCUMENTED``, the ops PyTorch documents as
  nondeterministic on CUDA. This finds GPU hazards while auditing on a CPU.

``DOCUMENTED`` follows the docstring of ``torch.use_deterministic_algorithms`` in torch 2.13 (the
installed version when this table was written; ``TABLE_TORCH_VERSION``) and the reproducibility notes
for cuBLAS and cuDNN. Names are aten overload-packet names as a dispatch mode sees them (trailing
underscores of in-place variants are ignored when matching).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TABLE_TORCH_VERSION = "2.13"

FIXED = "deterministic mode selects a deterministic implementation"
RAISES = "no deterministic implementation: torch.use_deterministic_algorithms(True) raises an error"


@dataclass(frozen=True)
class Hazard:
    ops: tuple[str, ...]
    what: str  # what PyTorch documents, in words
    when: str  # the condition (device, forward/backward, arguments)
    deterministic_mode: str  # FIXED or RAISES, or a specific remedy
    devices: str = "cuda"  # "cuda" or "cpu and cuda"
    backward_only: bool = False  # the hazard is in the backward pass (the op name is a *_backward op)


DOCUMENTED: tuple[Hazard, ...] = (
    Hazard(("convolution", "_convolution", "conv1d", "conv2d", "conv3d", "cudnn_convolution",
            "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "cudnn_convolution_transpose",
            "convolution_backward"),
           "cuDNN convolutions (torch.nn.Conv*d, ConvTranspose*d) may choose nondeterministic algorithms, "
           "and cudnn.benchmark = True picks algorithms by timing", "on a CUDA tensor",
           FIXED + "; also set torch.backends.cudnn.benchmark = False and torch.backends.cudnn.deterministic = True"),
    Hazard(("mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "addmv", "mv", "_addmm_activation"),
           "cuBLAS matrix products are nondeterministic on CUDA >= 10.2 unless the workspace is fixed",
           "on a CUDA tensor, CUBLAS_WORKSPACE_CONFIG unset",
           "set CUBLAS_WORKSPACE_CONFIG=:4096:8 (or :16:8) before the process starts; deterministic mode "
           "raises without it"),
    Hazard(("replication_pad1d_backward", "replication_pad2d_backward", "replication_pad3d_backward"),
           "ReplicationPad*d backward", "differentiated on CUDA", FIXED, backward_only=True),
    Hazard(("index_put", "_index_put_impl"),
           "Tensor.__getitem__ with a list of index tensors, and index_put (its backward), accumulate into "
           "repeated indices in arbitrary order", "index_put with accumulate=False, or accumulate=True on CPU",
           FIXED, devices="cpu and cuda"),
    Hazard(("put",), "Tensor.put_", "accumulate=False (any device), or accumulate=True on CUDA", RAISES,
           devices="cpu and cuda"),
    Hazard(("scatter_add",), "Tensor.scatter_add_", "on a CUDA tensor", FIXED),
    Hazard(("gather",), "torch.gather (its backward is scatter_add)", "on a CUDA tensor that requires grad",
           FIXED),
    Hazard(("index_add",), "torch.index_add", "on a CUDA tensor", FIXED),
    Hazard(("index_select", "index_select_backward"), "torch.index_select (its backward is index_add)",
           "differentiated on CUDA", FIXED),
    Hazard(("repeat_interleave",), "torch.repeat_interleave", "differentiated on CUDA", FIXED),
    Hazard(("index_copy",), "Tensor.index_copy", "on a CPU or CUDA tensor", FIXED, devices="cpu and cuda"),
    Hazard(("scatter",), "Tensor.scatter with a tensor src", "on a CUDA tensor", FIXED),
    Hazard(("scatter_reduce",), "Tensor.scatter_reduce", "reduce='sum'/'mean' on CUDA (fixed); reduce='prod' on "
           "CUDA (raises)", FIXED + " for sum/mean; prod raises"),
    Hazard(("max_pool3d_with_indices_backward",), "MaxPool3d backward", "differentiated on CUDA", FIXED,
           backward_only=True),
    Hazard(("avg_pool3d_backward",), "AvgPool3d backward", "differentiated on CUDA", RAISES, backward_only=True),
    Hazard(("adaptive_avg_pool2d_backward", "_adaptive_avg_pool2d_backward"), "AdaptiveAvgPool2d backward",
           "differentiated on CUDA", RAISES, backward_only=True),
    Hazard(("adaptive_avg_pool3d_backward", "_adaptive_avg_pool3d_backward"), "AdaptiveAvgPool3d backward",
           "differentiated on CUDA", RAISES, backward_only=True),
    Hazard(("adaptive_max_pool2d_backward",), "AdaptiveMaxPool2d backward", "differentiated on CUDA", RAISES,
           backward_only=True),
    Hazard(("fractional_max_pool2d_backward", "fractional_max_pool3d_backward"), "FractionalMaxPool*d backward",
           "differentiated on CUDA", RAISES, backward_only=True),
    Hazard(("max_unpool1d", "max_unpool2d", "max_unpool3d"), "MaxUnpool1d/2d/3d", "any device", RAISES,
           devices="cpu and cuda"),
    Hazard(("upsample_linear1d_backward", "upsample_bilinear2d_backward", "upsample_bicubic2d_backward",
            "upsample_trilinear3d_backward", "_upsample_bilinear2d_aa_backward", "_upsample_bicubic2d_aa_backward"),
           "interpolate(mode='linear'|'bilinear'|'bicubic'|'trilinear') backward", "differentiated on CUDA",
           RAISES, backward_only=True),
    Hazard(("reflection_pad1d_backward", "reflection_pad2d_backward", "reflection_pad3d_backward"),
           "ReflectionPad*d backward", "differentiated on CUDA", RAISES, backward_only=True),
    Hazard(("nll_loss2d_forward", "nll_loss2d"), "NLLLoss (spatial form)", "on a CUDA tensor", RAISES),
    Hazard(("_ctc_loss_backward", "ctc_loss"), "CTCLoss backward", "differentiated on CUDA", RAISES),
    Hazard(("_embedding_bag_backward", "_embedding_bag_dense_backward"), "EmbeddingBag backward with mode='max'",
           "differentiated on CUDA", RAISES, backward_only=True),
    Hazard(("histc",), "torch.histc", "on a CUDA tensor", RAISES),
    Hazard(("bincount",), "torch.bincount with weights", "on a CUDA tensor", RAISES),
    Hazard(("median",), "torch.median with indices", "on a CUDA tensor", RAISES),
    Hazard(("grid_sampler_2d_backward", "grid_sampler_3d_backward"), "grid_sample backward",
           "differentiated on CUDA", RAISES, backward_only=True),
    Hazard(("cumsum",), "torch.cumsum on floating point", "on a CUDA tensor", RAISES),
)

_BY_OP: dict[str, Hazard] = {op: h for h in DOCUMENTED for op in h.ops}

PHASES = ("inference", "attack_gradient", "training")


def op_key(name: str) -> str:
    """Normalise an aten name for matching: 'aten.index_put_.default' and 'index_put_' -> 'index_put'."""
    name = name.split(".")[1] if name.startswith("aten.") else name.split(".")[0]
    return name.rstrip("_") if not name.startswith("_") else "_" + name[1:].rstrip("_")


def match(ops_by_phase: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Latent hazards: each recorded op that ``DOCUMENTED`` lists, with its phase and what PyTorch says."""
    out = []
    for phase, ops in ops_by_phase.items():
        for op in ops:
            h = _BY_OP.get(op_key(op))
            if h is None:
                continue
            out.append({"op": op_key(op), "phase": phase, "documented": h.what, "when": h.when,
                        "devices": h.devices, "deterministic_mode": h.deterministic_mode})
    out.sort(key=lambda d: (PHASES.index(d["phase"]) if d["phase"] in PHASES else 9, d["op"]))
    return out


# ----------------------------------------------------------------------------------------- alerts

_ALERT = re.compile(r"^\s*(?P<op>[\w:.<>]+) does not have a deterministic implementation")


def parse_alert(message: str) -> str | None:
    """The op name in one of PyTorch's nondeterminism alerts, or None when the message is not one.

    PyTorch words them "<op> does not have a deterministic implementation, but you set
    'torch.use_deterministic_algorithms(True, warn_only=True)'..." (``at::globalContext().alertNotDeterministic``),
    and for cuBLAS "Deterministic behavior was enabled ... but this operation is not deterministic because
    it uses CuBLAS ... set CUBLAS_WORKSPACE_CONFIG".
    """
    m = _ALERT.match(message)
    if m:
        return m.group("op")
    if "CUBLAS_WORKSPACE_CONFIG" in message and "deterministic" in message.lower():
        return "cublas (CUBLAS_WORKSPACE_CONFIG unset)"
    if "deterministic" in message.lower() and "use_deterministic_algorithms" in message:
        return "unknown op"
    return None


# --------------------------------------------------------------------------------------- recording


def record_model_ops(model: Any, x: Any, device: Any, phase_context: Any = None) -> dict[str, list[str]]:
    """The aten ops ``model`` runs on the batch ``x`` (a numpy array), by phase:

      inference        forward under torch.no_grad()
      attack_gradient  forward + backward of the cross-entropy w.r.t. the input (what gradient attacks do)
      training         forward + backward of the cross-entropy w.r.t. the parameters (what fine-tuning
                       does; the model stays in eval mode, so dropout/batch-norm train-mode ops are not seen)

    Recorded with a ``TorchDispatchMode``, which sees every aten op, backward ones included.
    ``phase_context(phase)`` (optional) wraps each phase, e.g. to capture nondeterminism alerts.
    """
    import contextlib

    import torch
    import torch.nn.functional as F
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            self.ops.add(func._overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    ctx = phase_context or (lambda phase: contextlib.nullcontext())
    xb = torch.from_numpy(x).to(device)
    out: dict[str, list[str]] = {}
    was_training = model.training
    model.eval()
    try:
        rec = Recorder()
        with ctx("inference"), torch.no_grad(), rec:
            logits = model(xb)
        out["inference"] = sorted(rec.ops)
        target = logits.argmax(1).detach()

        rec = Recorder()
        xg = xb.clone().requires_grad_(True)
        with ctx("attack_gradient"), rec:
            loss = F.cross_entropy(model(xg), target)
            torch.autograd.grad(loss, xg)
        out["attack_gradient"] = sorted(rec.ops)

        params = [p for p in model.parameters() if p.is_floating_point()]
        if params:
            rec = Recorder()
            with ctx("training"), rec:
                flags = [p.requires_grad for p in params]
                for p in params:
                    p.requires_grad_(True)
                try:
                    loss = F.cross_entropy(model(xb), target)
                    torch.autograd.grad(loss, params, allow_unused=True)
                finally:
                    for p, f in zip(params, flags):
                        p.requires_grad_(f)
            out["training"] = sorted(rec.ops)
    finally:
        model.train(was_training)
    return out
