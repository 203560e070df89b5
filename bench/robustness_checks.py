"""What the robustness suite's validity checks cost, against a hand-written loop of the same attacks.

    python bench/robustness_checks.py                  # bundled digits CNN, recipes/digits.toml, CPU
    python bench/robustness_checks.py --model resnet --device cuda --n 1024   # CIFAR-size ResNet, random data

The suite (``audit run --suite robustness``, in this process, checks included) against a hand loop of the
same attacks with the same settings and no checks: at every eps a fresh run (no nesting), FGSM from a
gradient at the clean input, then PGD with every restart running every loss in turn (the targeted loss
once per target class) on the examples still unbroken at that eps, each run all its steps (no early
stop), the per-example worst case. Both on the clean-correct examples.

Counted by a global forward hook on the network (every forward row, and every row a backward pass goes
through), so every part of the suite is counted: the sweeps, the checks' attacks (the reference attack's
torchattacks calls included), the gradient statistics, noise and the random-ball baseline. CPU time is
the process's (all threads), per phase. The suite's checks are split by task (``fill_checks``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit.attacks.adapters import FGSMAttack, PGDAttack  # noqa: E402
from audit.attacks.config import AttackConfig, to_eps  # noqa: E402
from audit.attacks.losses import top_targets  # noqa: E402


class Rows:
    """Forward and backward rows through every module of class ``cls`` (a global hook)."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.fwd = 0
        self.bwd = 0
        self.handle = torch.nn.modules.module.register_module_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        # by name: the suite loads its own copy of the class (from the recipe's factory file)
        if type(module).__name__ != self.cls.__name__ or not isinstance(out, torch.Tensor):
            return
        n = len(out)
        self.fwd += n
        if out.requires_grad:
            out.register_hook(lambda g: self._b(n))

    def _b(self, n: int) -> None:
        self.bwd += n

    def snap(self) -> tuple[int, int, float, float]:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return self.fwd, self.bwd, time.process_time(), time.perf_counter()


def hand_loop(model: nn.Module, x: np.ndarray, y: np.ndarray, eps: list[str], steps: int, restarts: int,
              losses: tuple[str, ...], targets: int, bs: int, bounds: tuple[float, float],
              device: torch.device) -> dict[str, list[float]]:
    """The same attacks, written plainly: a fresh run per eps, no early stop, no checks."""
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    with torch.no_grad():
        pred = torch.cat([model(xt[i:i + bs]).argmax(1) for i in range(0, len(xt), bs)])
    cc = pred == yt
    xc, yc = xt[cc], yt[cc]
    n = len(y)
    cfg = AttackConfig("pgd", "linf", to_eps(eps), steps=steps, restarts=restarts,
                       random_start=True, losses=losses, targets=targets)
    g = torch.Generator(device=device).manual_seed(0)
    out: dict[str, list[float]] = {"fgsm": [], "pgd": [], "clean_correct": int(cc.sum())}
    fgsm = FGSMAttack(model, bounds=bounds)
    for e in cfg.eps:
        for name in ("fgsm", "pgd"):
            broken = torch.zeros(len(xc), dtype=torch.bool, device=device)
            for s in range(0, len(xc), bs):
                xb, yb = xc[s:s + bs], yc[s:s + bs]
                if name == "fgsm":
                    adv = fgsm.at(xb, fgsm.grad_sign(xb, yb), e.value)
                    with torch.no_grad():
                        broken[s:s + bs] = model(adv).argmax(1) != yb
                    continue
                with torch.no_grad():
                    tg = top_targets(model(xb), yb, targets)
                for _ in range(restarts):
                    for loss in losses:
                        for j in (range(tg.shape[1]) if loss == "targeted" else [None]):
                            sel = (~broken[s:s + bs]).nonzero().squeeze(1)
                            if len(sel) == 0:
                                continue
                            atk = PGDAttack(model, eps=e.value, alpha=cfg.alphas(e.value), steps=steps, norm="linf",
                                            bounds=bounds, early_stop=False, loss=loss)
                            start = 2 * torch.rand(xb[sel].shape, generator=g, device=device) - 1
                            adv, found = atk(xb[sel], yb[sel], start, target=None if j is None else tg[sel, j])
                            with torch.no_grad():
                                wrong = model(adv).argmax(1) != yb[sel]
                            broken[s + sel[wrong | found]] = True
            out[name].append(float((~broken).sum()) / n)
    return out


def digits(split: str = "test"):
    sys.path.insert(0, str(ROOT / "examples" / "digits"))
    from model import DigitsCNN

    from audit.engine.wrapper import WrappedModel
    from audit.loading.data import sklearn_split
    from safetensors.torch import load_file

    weights = ROOT / "examples" / "digits" / "model.safetensors"
    if not weights.is_file():  # what `make demo` trains (examples/digits/train.py, its defaults)
        from safetensors.torch import save_file
        from train import train

        save_file({k: v.contiguous() for k, v in train().state_dict().items()}, str(weights))
    net = DigitsCNN(width=16)
    net.load_state_dict(load_file(str(weights)))
    net.eval()
    x, y, _, _ = sklearn_split("digits", split, 0.25, 0)
    return (WrappedModel(net, [0.5], [0.5], (0.0, 1.0), 10), DigitsCNN, x, y, weights,
            (ROOT / "recipes" / "digits.toml").read_text().replace('split = "test"', f'split = "{split}"'))


RESNET_DATA = """
import numpy as np

def load(path):
    z = np.load(path)
    return z["x"], z["y"]
"""


def resnet(d: Path, n: int, device: str):
    """A CIFAR ResNet-18 (bench/robustness.py) at its seeded initialisation, on n random 3x32x32 inputs
    labelled with its own predictions (every example clean-correct), in a recipe of its own."""
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT / "bench"))
    from robustness import ResNet18

    from audit.engine.wrapper import WrappedModel

    torch.manual_seed(0)
    net = ResNet18().eval()
    mean, std = [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]
    model = WrappedModel(net, mean, std, (0.0, 1.0), 10).to(device)
    x = np.random.default_rng(0).uniform(0, 1, (n, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        y = torch.cat([model(torch.from_numpy(x[i:i + 256]).to(device)).argmax(1).cpu()
                       for i in range(0, n, 256)]).numpy()
    save_file({k: v.contiguous().cpu() for k, v in net.state_dict().items()}, str(d / "resnet.safetensors"))
    np.savez(d / "data.npz", x=x, y=y)
    (d / "data.py").write_text(RESNET_DATA)
    recipe = f"""[model]
factory = "{ROOT / 'bench' / 'robustness.py'}:ResNet18"
num_classes = 10
input_bounds = [0.0, 1.0]
input_shape = [3, 32, 32]
mean = {mean}
std = {std}

[data]
source = "python"
callable = "{d / 'data.py'}:load"
kwargs = {{ path = "{d / 'data.npz'}" }}

[run]
seed = 0
batch_size = 256
device = "{device}"

[robustness]
attacks = ["fgsm", "pgd"]
eps = ["1/255", "2/255", "4/255", "8/255", "16/255"]
noise = {{}}
"""
    return model, ResNet18, x, y, d / "resnet.safetensors", recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noise", action="store_true", help="keep the recipe's noise levels (default: off, "
                    "so that both sides do the same attacks and nothing else)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", choices=("digits", "resnet"), default="digits")
    ap.add_argument("--split", choices=("test", "all"), default="test",
                    help="digits: the recipe's test split (450), or all 1797 images (the checks' cost is fixed by "
                         "check_examples, the attacks' grows with n)")
    ap.add_argument("--n", type=int, default=512, help="examples for --model resnet")
    ap.add_argument("--device", default="cpu", help="for --model resnet (the digits recipe runs on CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import tomllib

    from click.testing import CliRunner

    import audit.suites.robustness as R
    from audit.cli import main as cli

    tmp = tempfile.TemporaryDirectory()
    if args.model == "digits":
        model, cls, x, y, weights, recipe = digits(args.split)
    else:
        model, cls, x, y, weights, recipe = resnet(Path(tmp.name), args.n, args.device)
    rc = tomllib.loads(recipe)["robustness"]
    eps, steps, restarts = [str(e) for e in rc["eps"]], rc.get("steps", 10), rc.get("restarts", 1)
    losses, targets = tuple(rc.get("losses", ("ce", "targeted"))), rc.get("targets", 3)
    rows = Rows(cls)

    # --- the suite, checks included, with the rows and CPU time of every check task
    per_task: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0])
    fill_checks = R.SUITE.fill_checks

    def counted(fc, plan, positions, rws, task):
        before = rows.snap()
        try:
            return fill_checks(fc, plan, positions, rws, task)
        finally:
            after = rows.snap()
            acc = per_task[task["do"]]
            for i in range(4):
                acc[i] += after[i] - before[i]

    object.__setattr__(R.SUITE, "fill_checks", counted)
    with tempfile.TemporaryDirectory() as d:
        text = recipe.replace("../examples/", str(ROOT / "examples") + "/")
        # the gates are not what is measured (and the noise gate needs noise)
        text = "\n\n".join(b for b in text.split("\n\n") if not b.lstrip().startswith("[[gates]]"))
        if not args.noise:
            text = text.replace("noise = { gaussian", "noise = {}\n# noise = { gaussian")
        (Path(d) / "r.toml").write_text(text)
        s0 = rows.snap()
        res = CliRunner().invoke(cli, ["run", str(weights), "--recipe", str(Path(d) / "r.toml"), "--suite",
                                       "robustness", "--out", str(Path(d) / "o"), "--quiet"], catch_exceptions=False)
        s1 = rows.snap()
        report = json.loads((Path(d) / "o" / "report.json").read_text())
    assert res.exit_code in (0, 1), res.output
    suite = [b - a for a, b in zip(s0, s1)]
    rob = report["suites"]["robustness"]
    sweeps = rob["config"]["work"]
    sweep_b = sum(s.get("backward_rows", 0) for s in sweeps)
    checks = {c["id"]: c["status"] for c in report["checks"] if c["suite"] == "robustness"}
    ra = {m["params"]["eps"]: m["value"] for m in report["metrics"]
          if m["name"] == "robust_accuracy" and set(m["params"]) == {"eps", "norm"}}

    # --- the hand loop
    s0 = rows.snap()
    hand = hand_loop(model, x, y, eps, steps, restarts, losses, targets, 256, (0.0, 1.0), torch.device(args.device))
    s1 = rows.snap()
    hand_ = [b - a for a, b in zip(s0, s1)]

    print("# robustness suite (checks included) vs a hand loop of the same attacks, no checks")
    what = "digits CNN, recipes/digits.toml" if args.model == "digits" else "CIFAR ResNet-18, random data"
    print(f"# machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, device "
          f"{args.device}, {torch.get_num_threads()} threads; {what} ({len(y)} examples, eps {eps}, "
          f"{steps} steps x {restarts} restart(s), losses {list(losses)}, {targets} targets; noise "
          f"{'on' if args.noise else 'off'})")
    print(f"checks: {checks}")
    print("robust accuracy (worst case)  suite: " + " ".join(f"{ra.get(e, float('nan')):.3f}" for e in eps))
    worst = [min(a, b) for a, b in zip(hand["fgsm"], hand["pgd"])]  # type: ignore[call-overload]
    print("robust accuracy (worst case)  hand:  " + " ".join(f"{a:.3f}" for a in worst))
    print(f"\n{'part':34s} {'forward rows':>13s} {'backward rows':>14s} {'CPU s':>8s} {'wall s':>8s}")
    print(f"{'suite, whole run':34s} {suite[0]:>13,} {suite[1]:>14,} {suite[2]:8.2f} {suite[3]:8.2f}")
    print(f"{'  of which the sweeps (report)':34s} {'':>13s} {sweep_b:>14,}")
    for k, (f, b, t, w) in per_task.items():
        print(f"{'  of which check task ' + k:34s} {int(f):>13,} {int(b):>14,} {t:8.2f} {w:8.2f}")
    print(f"{'hand loop (no checks)':34s} {hand_[0]:>13,} {hand_[1]:>14,} {hand_[2]:8.2f} {hand_[3]:8.2f}")
    runs = restarts * sum(targets if x == "targeted" else 1 for x in losses)
    print(f"(a loop that runs every restart and loss on every clean-correct example, skipping none, would do "
          f"{int(hand['clean_correct']) * len(eps) * (runs * steps + 1):,} backward rows: computed, not run)")
    print(f"\nratio suite / hand loop: backward rows {suite[1] / hand_[1]:.2f}x, CPU time {suite[2] / hand_[2]:.2f}x, "
          f"wall time {suite[3] / hand_[3]:.2f}x")
    tmp.cleanup()


if __name__ == "__main__":
    main()
