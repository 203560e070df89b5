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
