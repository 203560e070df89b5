"""Train the credit example (an MLP on the German credit data) in a few seconds and save it as safetensors.

    python examples/credit/train.py [--out examples/credit/model.safetensors] [--epochs 60] [--seed 0]

The training rows are the 'train' split of recipes/credit.toml's own [data] section, loaded by audit's
data loader, so the features are encoded exactly as the audit encodes them and train/test never overlap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))  # the repo root: audit and examples

from examples.credit.model import CreditMLP  # noqa: E402

from audit.loading.data import load_data  # noqa: E402
from audit.recipe import load_recipe  # noqa: E402


def train_split(recipe_path: Path = ROOT / "recipes" / "credit.toml"):
    recipe = load_recipe(recipe_path)
    recipe.section("data")["split"] = "train"
    return load_data(recipe)


def train(epochs: int = 60, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    data = train_split()
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(data.y)
    net = CreditMLP(num_features=x.shape[1])
    net.mean.copy_(x.mean(0))
    net.std.copy_(x.std(0).clamp_min(1e-6))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "model.safetensors")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(min(4, torch.get_num_threads()))
    net = train(args.epochs, args.seed)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(args.out))
    print(f"saved {args.out}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
