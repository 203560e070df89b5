"""The installation the README's commands make: torchattacks usable without its stale pins."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util

from audit.envcheck import problems


def test_envcheck_reports_no_problem():
    assert problems() == []


def test_torchattacks_imports_and_attacks_a_real_model():
    import torch
    import torchattacks

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    x = torch.rand(8, 4)
    y = model(x).argmax(1)
    adv = torchattacks.PGD(model, eps=0.1, alpha=0.02, steps=5, random_start=False)(x, y)
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_requests_not_downgraded_and_no_torchvision():
    assert importlib.util.find_spec("torchvision") is None
    try:
        v = md.version("requests")
    except md.PackageNotFoundError:
        return  # not installed at all: nothing was downgraded
    assert tuple(int(p) for p in v.split(".")[:2]) >= (2, 26), v
