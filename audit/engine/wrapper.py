"""The wrapped model every suite uses: eval mode, normalisation inside, inputs in natural bounds.

Attacks and noise operate in input space (e.g. images in [0, 1]); the (x - mean) / std step is part of
the model, so an epsilon means the same thing for every model and no attack library has to know about
normalisation (torchattacks' own ``set_normalization_used`` expects already-normalised inputs: a trap).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from audit.engine.distributed import pulse
from audit.errors import AuditError


class WrappedModel(nn.Module):
    def __init__(self, net: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 bounds: Sequence[float] | None = None, num_classes: int | None = None):
        super().__init__()
        self.net = net
        self.register_buffer("mean", None if mean is None else torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", None if std is None else torch.tensor(list(std), dtype=torch.float32))
        self.bounds: tuple[float, float] | None = None if bounds is None else (float(bounds[0]), float(bounds[1]))
        self.num_classes = num_classes
        # The network is evaluated, never trained, here: parameters need no gradients (input gradients
        # are all attacks need, and skipping weight gradients halves the backward work).
        self._was_training = net.training
        self._param_grad = [p.requires_grad for p in net.parameters()]
        _set_eval(net)
        for p in net.parameters():
            p.requires_grad_(False)
        self.eval()

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return x
        shape = (1, -1) + (1,) * (x.dim() - 2) if self.mean.numel() > 1 else (1,)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pulse()  # under torchrun: this rank's heartbeat (``audit.engine.distributed``); else nothing
        return self.net(self.normalise(x))

    def train(self, mode: bool = True) -> "WrappedModel":
        # The audit never trains through the wrapper; refusing keeps dropout/batch-norm in eval mode even
        # if an attack library calls model.train() (some do, to restore the caller's state).
        self.training = False
        _set_eval(self.net)
        return self

    def restore(self) -> None:
        """Give the user's module back as it came (mode and requires_grad), for library use."""
        try:
            self.net.train(self._was_training)
        except NotImplementedError:  # torch.export modules have no train/eval switch
            pass
        for p, g in zip(self.net.parameters(), self._param_grad):
            p.requires_grad_(g)


def _set_eval(net: nn.Module) -> None:
    try:
        net.eval()
    except NotImplementedError:
        # torch.export modules refuse eval()/train(): they were exported in the mode they run in.
        pass


def resolve_device(spec: str, source: str | None = None) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU is a usage error. ``source`` names
    where the value came from in the message (default: the --device option)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AuditError(f"{source or '--device ' + spec}: CUDA is not available on this machine (use cpu or auto)")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise AuditError(f"{source or '--device ' + spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    return torch.device("cpu")


@contextlib.contextmanager
def no_grad_inference() -> Iterator[None]:
    with torch.inference_mode():
        yield
