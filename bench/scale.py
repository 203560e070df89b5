"""Benchmark of sharded and resumable audits: the same robustness audit on 1 and 2 processes, the cost of
the resume cache, and peak memory at scale.

    python bench/scale.py                 # (a) 1 vs 2 processes, (b) cache on vs off: digits CNN, CPU
    python bench/scale.py --memory        # (c) peak memory: 1,000,000 tabular rows; 100,000 images
    python bench/scale.py --device cuda   # (a) on a GPU machine: 1 GPU process vs 2 processes sharing it

(a) `audit run` of the digits recipe's robustness suite (PGD and noise, every validity check) as one
    process with T threads, and as `torchrun --standalone --nproc_per_node=2` with T/2 threads each (the
    same cores in total), plus one process with T/2 threads (what each rank gets alone). The phases are
    rank 0's: inference, the robustness fill (attacks and noise on this rank's blocks, then the gather),
    the checks (this rank's share of the check tasks), the summary. Medians of --repeats runs.
(b) The same single-process audit with the row cache (the default: every finished block written to
    --out/cache) and with --no-cache, and the time spent inside the cache in one run: the cache's cost.
(c) Peak resident memory (the process's ru_maxrss) of `audit run` on 1,000,000 tabular rows (24 float32
    features, the credit MLP; the calibration suite, then the performance suite) and on 100,000 8x8 images
    (the digits CNN, the robustness suite with FGSM and one noise level), next to the size of the inputs
    and of the per-example table (examples.npz, uncompressed): what memory is made of.

Every run is a fresh `python -m audit` process, so imports are included in the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def train_digits(d: Path) -> Path:
    from safetensors.torch import save_file

    from examples.digits.train import train

    net = train(epochs=12, seed=0)
    path = d / "digits.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def recipe(d: Path) -> Path:
    text = (ROOT / "recipes" / "digits.toml").read_text().replace("../examples", f"{ROOT}/examples")
    p = d / "digits.toml"
    p.write_text(text)
    return p


def run(args: list[str], nproc: int, threads: int, device: str) -> tuple[float, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    launch = [sys.executable, "-m", "audit"] if nproc == 1 else TORCHRUN + [f"--nproc_per_node={nproc}", "-m", "audit"]
    out = Path(args[args.index("--out") + 1])
    t0 = time.perf_counter()
    proc = subprocess.run(launch + args + ["--device", device], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1, 4):
        raise SystemExit(f"audit failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, json.loads((out / "report.json").read_text())["timing"]


PHASES = ("inference_s", "robustness.fill_s", "robustness.checks_s", "robustness.summarise_s", "total_s")


def scaling(a: argparse.Namespace, d: Path) -> None:
    model, rec = train_digits(d), recipe(d)
    t = a.threads
    setups = [("1 process", 1, t), ("2 processes (torchrun)", 2, max(1, t // 2)), ("1 process, half the threads", 1,
                                                                                 max(1, t // 2))]
    results: dict[str, list[tuple[float, dict]]] = {name: [] for name, _, _ in setups}
    cache_runs: dict[str, list[float]] = {"cache": [], "no cache": []}
    for r in range(a.repeats):  # interleaved, so drift in the machine's speed hits every setup alike
        for name, nproc, threads in setups:
            out = d / f"out-{nproc}-{threads}-{r}"
            results[name].append(run([ "run", str(model), "--recipe", str(rec), "--suite", "robustness", "--out",
                                      str(out), "--quiet"], nproc, threads, a.device))
        for name, flag in (("cache", []), ("no cache", ["--no-cache"])):
            out = d / f"out-cache-{name.replace(' ', '')}-{r}"
            wall, timing = run(["run", str(model), "--recipe", str(rec), "--suite", "robustness", "--out", str(out),
                                "--quiet", *flag], 1, t, a.device)
            cache_runs[name].append(timing["total_s"])
    print(f"(a) digits recipe, robustness suite, {a.device}, median of {a.repeats} runs (seconds, rank 0's phases)")
    print(f"{'setup':32s} {'wall':>7s} " + " ".join(f"{p[:-2]:>20s}" for p in PHASES))
    med: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        med[name] = {p: statistics.median(tm.get(p, float('nan')) for _, tm in runs) for p in PHASES}
        med[name]["wall"] = statistics.median(w for w, _ in runs)
        print(f"{name:32s} {med[name]['wall']:7.2f} " + " ".join(f"{med[name][p]:20.2f}" for p in PHASES))
    one, two = med["1 process"], med["2 processes (torchrun)"]
    attack = lambda m: m["robustness.fill_s"] + m["robustness.checks_s"]  # noqa: E731
    print(f"speed-up of 2 processes over 1 (same cores): attack phase (fill + checks) "
          f"{attack(one) / attack(two):.2f}x, fill {one['robustness.fill_s'] / two['robustness.fill_s']:.2f}x, "
          f"checks {one['robustness.checks_s'] / two['robustness.checks_s']:.2f}x, wall {one['wall'] / two['wall']:.2f}x")
    half = med["1 process, half the threads"]
    print(f"speed-up of 2 processes over 1 process with the threads of one rank: attack phase "
          f"{attack(half) / attack(two):.2f}x")
    c, nc = statistics.median(cache_runs["cache"]), statistics.median(cache_runs["no cache"])
    print(f"(b) row cache: total {c:.2f} s with it, {nc:.2f} s without (--no-cache): {100 * (c / nc - 1):+.1f}% "
          "(two medians: run-to-run noise included)")
    spent, total = cache_time(model, rec, d / "out-cache-timed", a.device)
    print(f"    time inside the cache (encoding, hashing, writing every entry; timed in-process): {spent:.3f} s of "
          f"{total:.2f} s = {100 * spent / total:.1f}%")


def cache_time(model: Path, rec: Path, out: Path, device: str) -> tuple[float, float]:
    """The row cache's own cost, measured directly: one in-process run with RowCache.get/put timed."""
    from audit.cli import main as cli
    from audit.engine import cache as C

    spent = [0.0]

    def timed(f):
        def g(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t0
        return g

    C.RowCache.get, C.RowCache.put = timed(C.RowCache.get), timed(C.RowCache.put)
    t0 = time.perf_counter()
    try:
        cli(["run", str(model), "--recipe", str(rec), "--suite", "robustness", "--out", str(out), "--quiet",
             "--device", device])
    except SystemExit:
        pass
    return spent[0], time.perf_counter() - t0


def memory(a: argparse.Namespace, d: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from examples.credit.model import CreditMLP
    from examples.digits.model import DigitsCNN

    rng = np.random.default_rng(0)
    # (1) 1,000,000 tabular rows
    n = 1_000_000
    x = rng.normal(size=(n, 24)).astype(np.float32)
    net = CreditMLP(24)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).argmax(1).numpy()
    flip = rng.random(n) < 0.2
    y = np.where(flip, 1 - y, y).astype(np.int64)
    np.savez(d / "tab.npz", x=x, y=y)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(d / "tab.safetensors"))
    (d / "tab.toml").write_text(f'''
[model]
factory = "{ROOT}/examples/credit/model.py:CreditMLP"
kwargs = {{ num_features = 24 }}
num_classes = 2

[data]
source = "npz"
path = "{d / 'tab.npz'}"

[calibration]
''')
    (d / "tab-perf.toml").write_text((d / "tab.toml").read_text().replace("[calibration]", "[performance]"))
    # (2) 100,000 images: the digits, tiled, with a little noise so that no two are equal
    from sklearn.datasets import load_digits

    dig = load_digits()
    reps = -(-100_000 // len(dig.target))
    xi = np.tile(dig.images[:, None].astype(np.float32) / 16.0, (reps, 1, 1, 1))[:100_000]
    xi = np.clip(xi + rng.normal(scale=0.02, size=xi.shape).astype(np.float32), 0, 1)
    yi = np.tile(dig.target, reps)[:100_000].astype(np.int64)
    np.savez(d / "img.npz", x=xi, y=yi)
    save_file({k: v.contiguous() for k, v in DigitsCNN().state_dict().items()}, str(d / "img.safetensors"))
    (d / "img.toml").write_text(f'''
[model]
factory = "{ROOT}/examples/digits/model.py:DigitsCNN"
num_classes = 10
input_bounds = [0.0, 1.0]
input_shape = [1, 8, 8]

[data]
source = "npz"
path = "{d / 'img.npz'}"

[robustness]
attacks = ["fgsm"]
eps = ["8/255"]
noise = {{ gaussian = [0.1] }}
noise_draws = 1
check_examples = 10
''')
    print("(c) peak resident memory of `audit run` (a fresh process; imports included)")
    for name, model, rec, xs in (("1M tabular rows: calibration", "tab.safetensors", "tab.toml", x),
                                 ("1M tabular rows: performance", "tab.safetensors", "tab-perf.toml", x),
                                 ("100k images: robustness", "img.safetensors", "img.toml", xi)):
        out = d / f"out-{model}"
        code = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)")
        proc = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "audit", "run", str(d / model),
                               "--recipe", str(d / rec), "--out", str(out), "--quiet", "--device", a.device],
                              capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode not in (0, 1, 4):
            raise SystemExit(proc.stderr[-2000:])
        peak_mb = int(proc.stdout.strip().splitlines()[-1]) / 1024
        with np.load(out / "examples.npz") as z:
            table_mb = sum(z[k].nbytes for k in z.files) / 2**20
        timing = json.loads((out / "report.json").read_text())["timing"]
        print(f"  {name:46s} peak {peak_mb:7.0f} MiB; inputs {xs.nbytes / 2**20:6.0f} MiB; per-example table "
              f"{table_mb:6.1f} MiB; total {timing['total_s']:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads of the 1-process run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory", action="store_true", help="(c) peak memory at 1M tabular rows / 100k images")
    a = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        if a.memory:
            memory(a, Path(tmp))
        else:
            scaling(a, Path(tmp))


if __name__ == "__main__":
    main()
