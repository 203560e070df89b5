"""Benchmark of `audit harden`'s training loop, in one run on the same model and data.

    python bench/harden.py                      # digits CNN (trained here), CPU
    python bench/harden.py --device cuda        # also bf16 against fp32 epoch time

(a) One epoch of our PGD-k training (``audit.harden.loop.Trainer``: eval-mode attack with per-example seeded
    starts and no weight gradients, train-mode update, clean accuracy, gradient clipping, the divergence
    guard) against one plain training epoch (cross-entropy on clean inputs): expect about k + 1 times.
(b) The same epoch against a bare hand-written PGD-AT loop with the same steps, step, batch size and
    optimiser (torch.rand start, sign steps, no bookkeeping): our overhead (target at most 10%).
(c) fast (FGSM with random start) against pgd: epoch time, and validation PGD accuracy after the same
    number of epochs.

Times are training time only (the validation pass after each epoch is excluded), medians over --rounds rounds
(each configuration in turn) of --repeats
epochs after one warm-up epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit.engine.wrapper import WrappedModel  # noqa: E402
from audit.harden.loop import Settings, Split, Trainer  # noqa: E402
from audit.loading.data import sklearn_split  # noqa: E402
from examples.digits.train import train as train_digits  # noqa: E402


def settings(method: str, steps: int, epochs: int, amp: str = "off") -> Settings:
    eps = 0.1
    return Settings(method=method, epochs=epochs, eps=eps, eps_label="0.1", norm="linf", steps=steps,
                    step=2.5 * eps / steps, beta=6.0, sigma=0.25, optimizer="adamw", lr=0.002, momentum=0.9,
                    weight_decay=5e-4, schedule="constant", warmup_epochs=0, batch_size=128, clip_grad_norm=10.0,
                    amp=amp, patience=0, collapse_drop=0.2, seed=0)


def ours(base: torch.nn.Module, method: str, steps: int, epochs: int, data: tuple, device: torch.device,
         amp: str = "off") -> tuple[list[float], float]:
    """Training seconds per epoch (after the first) and the final validation robust accuracy."""
    net = copy.deepcopy(base).to(device)
    wrapped = WrappedModel(net, [0.5], [0.5], [0.0, 1.0], 10).to(device)
    for p in net.parameters():
        p.requires_grad_(True)
    (xt, yt, it), (xv, yv, iv) = data
    tr = Split(xt.to(device), yt.to(device), it)
    va = Split(xv.to(device), yv.to(device), iv)
    path = Path("/tmp/bench-harden-checkpoint.pt")
    trainer = Trainer(net, lambda x: net(wrapped.normalise(x)), settings(method, steps, epochs, amp), tr, va, device,
                      (0.0, 1.0), {}, path)
    out = trainer.run()
    return [r["train_seconds"] for r in out.history[2:]], out.history[-1]["val_robust_accuracy"]


def bare(base: torch.nn.Module, steps: int, epochs: int, data: tuple, device: torch.device, adversarial: bool,
         frozen: bool = False) -> list[float]:
    """A hand-written loop: PGD-AT (Madry) or plain training, the same optimiser, batch size and step.
    ``frozen``: the attack runs with the parameters' requires_grad off (no weight backward), as ours does;
    without it, as such loops are usually written."""
    net = copy.deepcopy(base).to(device)
    mean = torch.tensor([0.5], device=device)
    opt = torch.optim.AdamW(net.parameters(), lr=0.002, weight_decay=5e-4)
    (xt, yt, _), _ = data
    xt, yt = xt.to(device), yt.to(device)
    eps, step = 0.1, 2.5 * 0.1 / steps
    gen = torch.Generator(device=device).manual_seed(0)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(yt), generator=gen, device=device)
        for i in range(0, len(yt), 128):
            xb, yb = xt[perm[i:i + 128]], yt[perm[i:i + 128]]
            if adversarial:
                net.eval()
                if frozen:
                    for p in net.parameters():
                        p.requires_grad_(False)
                adv = (xb + eps * (2 * torch.rand(xb.shape, generator=gen, device=device) - 1)).clamp(0, 1)
                for _ in range(steps):
                    adv.requires_grad_(True)
                    loss = F.cross_entropy(net((adv - mean) / mean), yb)
                    (g,) = torch.autograd.grad(loss, adv)
                    adv = torch.min(torch.max(adv.detach() + step * g.sign(), xb - eps), xb + eps).clamp(0, 1)
                xb = adv
                if frozen:
                    for p in net.parameters():
                        p.requires_grad_(True)
            net.train()
            loss = F.cross_entropy(net((xb - mean) / mean), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[1:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2, help="timed epochs per round (after one warm-up epoch)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over the configurations")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = train_digits(epochs=12, seed=0)
    x, y, idx, _ = sklearn_split("digits", "train", 0.25, 0)
    val = np.zeros(len(y), dtype=bool)
    val[np.random.default_rng(0).choice(len(y), len(y) // 10, replace=False)] = True
    data = ((torch.from_numpy(x[~val]), torch.from_numpy(y[~val]), idx[~val]),
            (torch.from_numpy(x[val]), torch.from_numpy(y[val]), idx[val]))
    e = args.repeats + 1
    k = args.steps
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, device {device}; digits CNN, {len(data[0][1])} training examples, batch 128")
    # rounds: every configuration trains e epochs (the first a warm-up) in turn, so that load on the
    # machine hits all of them alike; medians over the rounds' timed epochs
    plain, hand, hand_frozen, pgd_t, fast_t = [], [], [], [], []
    for _ in range(args.rounds):
        plain += bare(base, k, e, data, device, adversarial=False)
        hand += bare(base, k, e, data, device, adversarial=True)
        hand_frozen += bare(base, k, e, data, device, adversarial=True, frozen=True)
        t, pgd_acc = ours(base, "pgd", k, e, data, device)
        pgd_t += t
        t, fast_acc = ours(base, "fast", k, e, data, device)
        fast_t += t
    med = statistics.median
    print(f"(a) PGD-{k} epoch (ours) / plain epoch: {med(pgd_t) / med(plain):.2f}x  (ours {med(pgd_t):.3f} s, plain "
          f"{med(plain):.3f} s; k + 1 = {k + 1})")
    print(f"(b) ours / bare PGD-AT loop with weight gradients off in the attack (as ours): {med(pgd_t) / med(hand_frozen):.3f}x "
          f"(bare {med(hand_frozen):.3f} s; overhead {100 * (med(pgd_t) / med(hand_frozen) - 1):+.1f}%)")
    print(f"    ours / bare PGD-AT loop as usually written (weight gradients on in the attack): "
          f"{med(pgd_t) / med(hand):.3f}x (bare {med(hand):.3f} s)")
    print(f"(c) fast / pgd epoch time: {med(fast_t) / med(pgd_t):.3f}x ({med(fast_t):.3f} s vs {med(pgd_t):.3f} s); "
          f"validation PGD accuracy after {e} epochs: fast {fast_acc:.3f}, pgd {pgd_acc:.3f}")
    if device.type == "cuda":
        bf_t, _ = ours(base, "pgd", k, e, data, device, amp="bf16")
        print(f"(d) bf16 / fp32 PGD-{k} epoch: {med(bf_t) / med(pgd_t):.3f}x")
    with contextlib.suppress(OSError):
        Path("/tmp/bench-harden-checkpoint.pt").unlink()


if __name__ == "__main__":
    main()
