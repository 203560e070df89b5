"""Benchmark of the robustness suite's attack engine, on one trained model and one data set.

    python bench/robustness.py                          # digits CNN (trained here, seconds), CPU, the recipe's grid
    python bench/robustness.py --model resnet --device cuda --n 2048   # CIFAR-size ResNet-18, random data

(a) Our 5-eps PGD-10 sweep (nested balls: only clean-correct examples, only survivors at each larger eps,
    early stop on success, one verification forward) against the naive loop (a fresh torchattacks.PGD on
    every example at every eps): wall-time ratio, forward/backward rows, and both robust-accuracy curves
    (ours must be equal or lower at every eps: never a weaker evaluation).
(b) Our PGD's per-step overhead against a bare hand-written loop of k forward+backward passes on the same
    batch (our attack run without early stop, so both do exactly k forward+backward passes).
(c) --losses: strength and cost of the PGD losses and step schedules on three digits CNNs (the bundled
    one, the same with logits x10, and an adversarially trained one): the old default (plain float32
    cross-entropy, 2.5 eps / steps) and the new one (log-space CE + CW margin, a step of eps halved at 1/2
    and 3/4 of the steps) against a much stronger reference (100 steps x 2 restarts x CE, margin and
    targeted margin to 3 classes), with backward rows and wall time.

Timings are medians of --repeats interleaved runs. Random data for the ResNet: labels are the model's own
predictions, so every example is clean-correct (the sweep then has the most work to do).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples" / "digits"))

from audit.attacks import sweep as S  # noqa: E402
from audit.attacks.adapters import PGDAttack  # noqa: E402
from audit.attacks.config import AttackConfig, StepSize, to_eps  # noqa: E402
from audit.engine.wrapper import WrappedModel  # noqa: E402
from audit.metrics.robustness import robust_accuracy  # noqa: E402


class Counting(nn.Module):
    """Counts rows through forward and backward passes of the wrapped model (hooks, no change in maths)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.fwd = 0
        self.bwd = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.fwd += len(x)
        if out.requires_grad:
            n = len(x)
            out.register_hook(lambda g: self._bwd(n) or g)
        return out

    def _bwd(self, n: int) -> None:
        self.bwd += n

    def reset(self) -> None:
        self.fwd = self.bwd = 0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ models


def digits_setup(device: torch.device):
    from train import train

    from audit.loading.data import sklearn_split

    torch.manual_seed(0)
    net = train(epochs=12, seed=0)
    x, y, _, _ = sklearn_split("digits", "test", 0.25, 0)
    model = WrappedModel(net, [0.5], [0.5], (0.0, 1.0), 10).to(device)
    # The grid the bundled digits recipe audits (recipes/digits.toml), so the benchmark measures what users run.
    eps = [str(e) for e in tomllib.loads((ROOT / "recipes" / "digits.toml").read_text())["robustness"]["eps"]]
    return model, x, y, eps, "digits CNN (examples/digits, 12 epochs), sklearn digits test split"


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.sc = nn.Sequential()
        if stride != 1 or cin != cout:
            self.sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(out)) + self.sc(x))


class ResNet18(nn.Module):
    """The CIFAR ResNet-18 (He et al. 2016; the variant used by most robustness papers), 11M parameters."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        layers, cin = [], 64
        for cout, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
            layers.append(_Block(cin, cout, stride))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def resnet_setup(device: torch.device, n: int):
    torch.manual_seed(0)
    net = ResNet18()
    model = WrappedModel(net, [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261], (0.0, 1.0), 10).to(device)
    g = np.random.default_rng(0)
    x = g.uniform(0, 1, (n, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        y = torch.cat([model(torch.from_numpy(x[i:i + 256]).to(device)).argmax(1).cpu()
                       for i in range(0, n, 256)]).numpy()
    eps = ["1/255", "2/255", "4/255", "8/255", "16/255"]
    return model, x, y, eps, f"CIFAR ResNet-18 (random init), {n} random 3x32x32 inputs, labels = own predictions"


# ------------------------------------------------------------------------------------------------- runs


def ours(cm: Counting, x, y, eps, bs, device):
    idx = np.arange(len(y), dtype=np.int64)
    with torch.no_grad():
        pred = np.concatenate([cm(torch.from_numpy(x[i:i + bs]).to(device)).argmax(1).cpu().numpy()
                               for i in range(0, len(x), bs)])
    cc = pred == y
    # the naive loop's attack (one cross-entropy run, step 2.5 eps / 10), so that (a) measures what nesting
    # saves; the cost of the default two-loss attack is in (c)
    cfg = AttackConfig("pgd", "linf", eps, steps=10, random_start=True, losses=("ce",),
                       step_size=StepSize(0.25, True), schedule="constant")
    res = S.pgd_sweep(cm, cfg, x, y, idx, cc, bs, device, (0.0, 1.0), seed=0)
    return robust_accuracy(res.eps_broken, [e.value for e in eps])


def naive(cm: Counting, x, y, eps, bs, device):
    accs = []
    for e in eps:
        correct = 0
        for i in range(0, len(x), bs):
            xb = torch.from_numpy(x[i:i + bs]).to(device)
            yb = torch.from_numpy(y[i:i + bs]).to(device)
            atk = torchattacks.PGD(cm, eps=e.value, alpha=2.5 * e.value / 10, steps=10, random_start=True)
            adv = atk(xb, yb)
            with torch.no_grad():
                correct += int((cm(adv).argmax(1) == yb).sum())
        accs.append(correct / len(x))
    return np.array(accs)


class _Scaled(nn.Module):
    def __init__(self, model: nn.Module, k: float):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.k


def losses_comparison(device: torch.device, bs: int, n: int) -> None:
    """(c): the old and the new default PGD, and a few alternatives, against a strong reference, on the
    first ``n`` test digits."""
    from train import train, train_adversarial

    from audit.attacks.config import StepSize
    from audit.loading.data import sklearn_split
    from audit.metrics.robustness import worst_case

    x, y, _, _ = sklearn_split("digits", "test", 0.25, 0)
    x, y = x[:n], y[:n]
    idx = np.arange(len(y), dtype=np.int64)
    eps = to_eps(["8/255", "16/255", "0.1", "0.15", "0.2", "0.25"])
    vals = [e.value for e in eps]
    plain = WrappedModel(train(epochs=12, seed=0), [0.5], [0.5], (0.0, 1.0), 10).to(device)
    models = {"digits CNN": plain, "digits CNN, logits x10": _Scaled(plain, 10.0),
              "adversarially trained (PGD, eps 0.15)": WrappedModel(train_adversarial(), [0.5], [0.5], (0.0, 1.0),
                                                                      10).to(device)}
    old = dict(losses=("float32_ce",), step_size=StepSize(0.25, True), schedule="constant")  # 2.5 eps / 10
    configs = {
        "old default: float32 CE, 2.5 eps/steps": dict(steps=10, **old),
        "new default: CE + targeted (3), step eps decayed": dict(steps=10, losses=("ce", "targeted")),
        "CE + margin, step eps decayed": dict(steps=10, losses=("ce", "margin")),
        "new default, 40 steps, 2 restarts": dict(steps=40, restarts=2, losses=("ce", "targeted")),
    }
    ref_cfg = dict(steps=100, restarts=2, losses=("ce", "margin", "targeted"))
    print("\n## (c) PGD losses and step schedules: robust accuracy (worst case with the reference shown as 'ref'),")
    print("##     largest overstatement vs the reference, backward rows, wall time")
    for mname, model in models.items():
        with torch.no_grad():
            cc = model(torch.from_numpy(x).to(device)).argmax(1).cpu().numpy() == y
        t = time.perf_counter()
        ref = S.pgd_sweep(model, AttackConfig("pgd", "linf", eps, random_start=True, **ref_cfg), x, y, idx, cc, bs,
                          device, (0.0, 1.0), seed=1, stream="reference")
        t_ref = time.perf_counter() - t
        runs = {}
        for cname, kw in configs.items():
            t = time.perf_counter()
            r = S.pgd_sweep(model, AttackConfig("pgd", "linf", eps, random_start=True, **kw), x, y, idx, cc, bs, device,
                            (0.0, 1.0), seed=0)
            runs[cname] = (r, time.perf_counter() - t)
        # the reference curve: the per-example worst case of every run (nothing found anywhere is robust)
        best = worst_case(ref.eps_broken, *[r.eps_broken for r, _ in runs.values()])
        acc_ref = robust_accuracy(best, vals)
        print(f"\n### {mname} (n {len(y)}, clean {cc.mean():.4f}); eps " + ", ".join(e.label for e in eps))
        print(f"{'ref (100 steps x 2 restarts x CE, margin, targeted 3)':58s} "
              + " ".join(f"{a:.3f}" for a in acc_ref) + f"   backward {ref.counter.backward:>9,}  {t_ref:7.1f}s")
        for cname, (r, sec) in runs.items():
            acc = robust_accuracy(r.eps_broken, vals)
            print(f"{cname:58s} " + " ".join(f"{a:.3f}" for a in acc)
                  + f"   backward {r.counter.backward:>9,}  {sec:7.2f}s  overstates by <= {np.max(acc - acc_ref):.3f}")


def bare_loop(model, xb, yb, k, loss_fn=None):
    """k forward+backward passes; ``loss_fn`` per example (default: torch's float32 cross-entropy)."""
    for _ in range(k):
        xa = xb.clone().requires_grad_(True)
        z = model(xa)
        loss = F.cross_entropy(z, yb, reduction="sum") if loss_fn is None else loss_fn(z, yb).sum()
        torch.autograd.grad(loss, xa)


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("digits", "resnet"), default="digits")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=1024, help="random examples for --model resnet; test digits for --losses")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="k for the per-step comparison")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (the project's CI machine has 2 cores)")
    ap.add_argument("--eps", nargs="+", help='the 5 epsilons, e.g. 0.05 0.1 "8/255" (default: per model)')
    ap.add_argument("--losses", action="store_true", help="run (c), the loss and step-schedule comparison, only")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = False
    # Everything in fp32 for both loops: the suite decides broken/not-broken in fp32, and with TF32 the
    # naive loop's decisions (and the labels, for random data) would differ from ours by rounding alone.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    if args.losses:
        print(f"# audit robustness benchmark (c): device {device}, torch {torch.__version__}, threads "
              f"{torch.get_num_threads()}, batch {args.batch_size}")
        losses_comparison(device, args.batch_size, min(args.n, 450))
        return
    model, x, y, eps_raw, what = digits_setup(device) if args.model == "digits" else resnet_setup(device, args.n)
    eps = to_eps([float(e) if "/" not in e else e for e in args.eps] if args.eps else eps_raw)
    cm = Counting(model)
    bs = args.batch_size
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# audit robustness benchmark: {what}")
    print(f"# device {device} ({dev_name}), torch {torch.__version__}, torchattacks {torchattacks.__version__}, "
          f"threads {torch.get_num_threads()}, batch {bs}, n {len(y)}, TF32 off")

    # (a) sweep vs naive
    t_ours, t_naive = [], []
    for _ in range(args.repeats):
        cm.reset()
        t, acc_ours = timed(lambda: ours(cm, x, y, eps, bs, device), device)
        t_ours.append(t)
        f_ours, b_ours = cm.fwd, cm.bwd
        cm.reset()
        torch.manual_seed(0)  # torchattacks draws its random starts from the global RNG
        t, acc_naive = timed(lambda: naive(cm, x, y, eps, bs, device), device)
        t_naive.append(t)
        f_naive, b_naive = cm.fwd, cm.bwd
    to, tn = statistics.median(t_ours), statistics.median(t_naive)
    print("\n## (a) 5-eps PGD-10 sweep: ours (nested, survivors only) vs naive (fresh torchattacks.PGD per eps, all)")
    print(f"wall time: ours {to:.3f}s, naive {tn:.3f}s -> {tn / to:.2f}x faster (median of {args.repeats})")
    print(f"forward rows: ours {f_ours}, naive {f_naive} ({f_naive / max(f_ours, 1):.2f}x); "
          f"backward rows: ours {b_ours}, naive {b_naive} ({b_naive / max(b_ours, 1):.2f}x)")
    torch.manual_seed(1)
    acc_naive1 = naive(cm, x, y, eps, bs, device)
    print(f"{'eps':>8} {'ours':>8} {'naive':>8} {'naive, 2nd seed':>16}")
    for e, a, b, c in zip(eps, acc_ours, acc_naive, acc_naive1):
        print(f"{e.label:>8} {a:8.4f} {b:8.4f} {c:16.4f}{'' if a <= b else '  <-- ours higher than naive'}")
    print("ours <= naive at every eps:", bool(np.all(acc_ours <= acc_naive)),
          f"| naive seed-to-seed spread up to {np.max(np.abs(acc_naive - acc_naive1)):.4f}, "
          f"largest ours-minus-naive {np.max(acc_ours - np.minimum(acc_naive, acc_naive1)):+.4f} (vs the stronger seed)")

    # (b) per-step overhead
    k = args.steps
    xb = torch.from_numpy(x[:bs]).to(device)
    yb = torch.from_numpy(y[:bs]).to(device)
    start = torch.from_numpy(S.unit_start(np.arange(len(xb)), tuple(xb.shape[1:]), "linf")).to(device)
    e = eps[2].value
    atk = PGDAttack(model, eps=e, alpha=2.5 * e / k, steps=k, norm="linf", bounds=(0.0, 1.0), early_stop=False)
    atk_es = PGDAttack(model, eps=e, alpha=2.5 * e / k, steps=k, norm="linf", bounds=(0.0, 1.0), early_stop=True)
    from audit.attacks.losses import ce_log_space

    bare_ce = lambda: bare_loop(model, xb, yb, k)  # noqa: E731
    bare_log = lambda: bare_loop(model, xb, yb, k, ce_log_space)  # noqa: E731
    for _ in range(2):  # warm-up
        bare_ce()
        bare_log()
        atk(xb, yb, start)
    tb, tl, ta, te = [], [], [], []
    for _ in range(max(20, args.repeats)):
        tb.append(timed(bare_ce, device)[0])
        tl.append(timed(bare_log, device)[0])
        ta.append(timed(lambda: atk(xb, yb, start, final_check=False), device)[0])
        te.append(timed(lambda: atk_es(xb, yb, start, final_check=False), device)[0])
    print(f"\n## (b) per-step cost, batch {len(xb)}, k = {k} steps, eps {eps[2].label} ({len(tb)} interleaved runs)")
    print("##     our PGD maximises the log-space cross-entropy; the wrapper's overhead is against a bare loop with")
    print("##     that same loss, the loss's own cost is the bare loop with it against one with torch's cross-entropy")
    for stat in (statistics.median, min):
        mb, ml, ma, me = stat(tb), stat(tl), stat(ta), stat(te)
        print(f"[{stat.__name__}] bare loop, torch CE: {1000 * mb / k:.3f} ms/step; bare loop, log-space CE: "
              f"{1000 * ml / k:.3f} ms/step ({100 * (ml / mb - 1):+.1f}%); our PGD (no early stop): {1000 * ma / k:.3f} "
              f"ms/step -> overhead {100 * (ma / ml - 1):+.1f}% (vs torch CE {100 * (ma / mb - 1):+.1f}%); with early "
              f"stop (as the suite runs it): {1000 * me / k:.3f} ms/step-equivalent ({100 * (me / ml - 1):+.1f}%)")


if __name__ == "__main__":
    main()
