"""Train the digits example in a few seconds on CPU and save it as safetensors.

    python examples/digits/train.py [--out examples/digits/model.safetensors] [--epochs 30] [--seed 0]

The split is audit's own (audit.loading.data.sklearn_split), so the audit's test split never overlaps
training. Normalisation (mean 0.5, std 0.5) is applied here exactly as [model] mean/std applies it in the
audit, by the same wrapper.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repo root: audit and examples

from examples.digits.model import DigitsCNN  # noqa: E402

from audit.engine.wrapper import WrappedModel  # noqa: E402
from audit.loading.data import sklearn_split  # noqa: E402


def train(epochs: int = 30, seed: int = 0, width: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    x, y, _, _ = sklearn_split("digits", "train", 0.25, 0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    net = DigitsCNN(width=width)
    wrapped = WrappedModel(net, mean=[0.5], std=[0.5])
    for p in net.parameters():  # the wrapper freezes parameters for auditing; training needs them back
        p.requires_grad_(True)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(net(wrapped.normalise(xt[idx])), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return net


def train_adversarial(eps: float = 0.15, epochs: int = 15, steps: int = 5, seed: int = 0, width: int = 16) -> nn.Module:
    """PGD adversarial training (Madry et al. 2018) at Linf ``eps``: each batch is replaced by PGD examples
    (random start, ``steps`` sign steps of eps / 2.5, cross-entropy). A few seconds on CPU; the result has
    real, eps-dependent robustness, so the benchmarks and tests can check attacks on a model that resists
    weak ones."""
    torch.manual_seed(seed)
    x, y, _, _ = sklearn_split("digits", "train", 0.25, 0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    net = DigitsCNN(width=width)
    wrapped = WrappedModel(net, mean=[0.5], std=[0.5])
    for p in net.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            xb, yb = xt[perm[i:i + 64]], yt[perm[i:i + 64]]
            net.eval()  # the attack sees the model as it will be evaluated
            adv = (xb + eps * (2 * torch.rand(xb.shape, generator=gen) - 1)).clamp(0, 1)
            for _ in range(steps):
                adv.requires_grad_(True)
                loss = nn.functional.cross_entropy(net(wrapped.normalise(adv)), yb)
                grad = torch.autograd.grad(loss, adv)[0]
                adv = torch.min(torch.max(adv.detach() + eps / 2.5 * grad.sign(), xb - eps), xb + eps).clamp(0, 1)
            net.train()
            loss = nn.functional.cross_entropy(net(wrapped.normalise(adv)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "model.safetensors")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(min(4, torch.get_num_threads()))
    net = train(args.epochs, args.seed)
    from safetensors.torch import save_file

    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(args.out))
    else:
        torch.save(net.state_dict(), args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
