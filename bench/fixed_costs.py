"""Fixed costs of a small audit, in CPU seconds (user + system of the whole process tree, median of N runs).

    python bench/fixed_costs.py [--reps 5] [--base 9f52e03] [--markdown]

Measures, for this checkout and (with --base REV) for an earlier commit of the same repository in the same
run, on the same model and data:

- `audit --help`;
- `audit run --suite performance` on 100 rows (the credit example's MLP, trained here in seconds, on a
  recipe that holds out 10% of the German credit data: 100 rows);
- `audit repro --seeds 3 --suite performance` on the same 100 rows (3 seeds + 2 repeats + 1 capture
  run: 6 child processes and the study);

then the floors: the CPU cost of importing torch (which any run that evaluates a model pays), and of the
other libraries the fixed path used to import (each on its own, in a fresh interpreter), and where the
import time of this checkout's performance run goes (``-X importtime``, self time summed by top-level
package: import time includes the CPU work of module bodies, so this is a breakdown of the import part).

CPU time is read with resource.getrusage(RUSAGE_CHILDREN) around each subprocess, so every thread and
every grandchild (the repro study's runs) is counted; wall time on a shared machine is noise.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def cpu_seconds(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), proc.returncode


def median_cpu(cmd: list[str], env: dict[str, str], cwd: Path, reps: int, ok=(0, 1)) -> tuple[float, list[float]]:
    xs = []
    for _ in range(reps):
        t, code = cpu_seconds(cmd, env, cwd)
        if code not in ok:
            raise SystemExit(f"bench: {' '.join(cmd)} exited {code}")
        xs.append(t)
    return statistics.median(xs), xs


def checkout(rev: str, dest: Path) -> Path:
    """The tree of commit ``rev`` of this repository, unpacked into ``dest`` (no work tree is touched)."""
    archive = dest / "src.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), rev], check=True)
    with tarfile.open(archive) as tf:
        tf.extractall(dest / "src", filter="data")
    return dest / "src"


def prepare(work: Path) -> tuple[Path, Path]:
    """The credit MLP (30 epochs, seconds) and a recipe auditing 100 held-out rows with it."""
    model = work / "credit.safetensors"
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from safetensors.torch import save_file\n"
        "from examples.credit import train as t\n"
        "torch.set_num_threads(2)\n"
        "net = t.train(epochs=30, seed=0)\n"
        f"save_file({{k: v.contiguous() for k, v in net.state_dict().items()}}, {str(model)!r})\n")
    subprocess.run([PY, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    text = (ROOT / "recipes" / "credit.toml").read_text().replace('"../examples', f'"{ROOT}/examples')
    assert "test_size = 0.3" in text
    recipe = work / "credit100.toml"
    recipe.write_text(text.replace("test_size = 0.3", "test_size = 0.1"))  # 100 of the 1000 rows
    return model, recipe


def import_breakdown(cmd: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """Self import time (s) by top-level package from ``python -X importtime``."""
    proc = subprocess.run([PY, "-X", "importtime", *cmd[1:]], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    out: dict[str, float] = defaultdict(float)
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            out[m.group(2).split(".")[0]] += int(m.group(1)) / 1e6
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="runs per figure (the repro study: max(2, reps // 2))")
    ap.add_argument("--base", default=None, help="an earlier commit to measure in the same run (e.g. 9f52e03)")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, recipe = prepare(work)
        trees = {"this checkout": ROOT}
        if args.base:
            trees[f"base {args.base}"] = checkout(args.base, work)
        reps_repro = max(2, args.reps // 2)

        def commands(out: Path) -> dict[str, tuple[list[str], int]]:
            return {
                "audit --help": ([PY, "-m", "audit", "--help"], max(15, 3 * args.reps)),  # ~0.07 s: more runs
                "audit run --suite performance, 100 rows": (
                    [PY, "-m", "audit", "run", str(model), "--recipe", str(recipe), "--suite", "performance",
                     "--out", str(out / "run"), "--quiet"], args.reps),
                "audit repro --seeds 3 --suite performance, 100 rows": (
                    [PY, "-m", "audit", "repro", str(model), "--recipe", str(recipe), "--seeds", "3",
                     "--suite", "performance", "--out", str(out / "repro"), "--quiet"], reps_repro),
            }

        # The trees take turns run by run (this, base, this, base, ...), so a change in the machine's load
        # during the benchmark falls on both alike.
        results: dict[str, dict[str, tuple[float, list[float]]]] = defaultdict(dict)
        for what, (_, reps) in commands(work).items():
            samples: dict[str, list[float]] = defaultdict(list)
            for _ in range(reps):
                for label, tree in trees.items():
                    cmd = commands(work / re.sub(r"\W+", "-", label))[what][0]
                    t, code = cpu_seconds(cmd, dict(os.environ, PYTHONPATH=str(tree)), work)
                    if code not in (0, 1):
                        raise SystemExit(f"bench: {' '.join(cmd)} exited {code}")
                    samples[label].append(t)
            for label, xs in samples.items():
                results[what][label] = (statistics.median(xs), xs)
                print(f"  {label:>16} | {what}: {statistics.median(xs):.2f} CPU s", file=sys.stderr)

        # Rendering alone: report.html of a full credit audit (performance, fairness with 3 attributes and
        # 9 interval-bar charts, calibration), re-rendered from its report.json by each tree, in a fresh
        # interpreter: the CPU of render_html including the imports it triggers (matplotlib, jinja2).
        full = work / "full"
        subprocess.run([PY, "-m", "audit", "run", str(model), "--recipe", str(ROOT / "recipes" / "credit.toml"),
                        "--out", str(full), "--quiet"], env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=work,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        render = (
            "import json, sys, time\n"
            f"r = json.load(open({str(full / 'report.json')!r}))\n"
            "t = time.process_time()\n"
            "from audit.report.html import render_html\n"
            "html = render_html(r)\n"
            "print(time.process_time() - t, len(html))\n")
        what = "render report.html of a full credit report (300 rows, 3 suites)"
        samples = defaultdict(list)
        for _ in range(args.reps):
            for label, tree in trees.items():
                proc = subprocess.run([PY, "-c", render], env=dict(os.environ, PYTHONPATH=str(tree)), cwd=work,
                                      capture_output=True, text=True, check=True)
                samples[label].append(float(proc.stdout.split()[0]))
        for label, xs in samples.items():
            results[what][label] = (statistics.median(xs), xs)
            print(f"  {label:>16} | {what}: {statistics.median(xs):.2f} CPU s", file=sys.stderr)

        floors = {}
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for what, code in (("python itself", "pass"), ("import torch", "import torch"),
                           ("import torch, pandas (the CSV reader)", "import torch, pandas"),
                           ("import matplotlib.pyplot", "import matplotlib.pyplot"),
                           ("import scipy.stats", "import scipy.stats"),
                           ("import scipy.special", "import scipy.special"),
                           ("import sklearn.metrics", "import sklearn.metrics"),
                           ("import pandas", "import pandas"), ("import numpy", "import numpy"),
                           ("import torch, pandas, scipy.special, jinja2, click (what a performance run needs "
                            "once no sklearn or scipy.stats is imported)",
                            "import torch, pandas, scipy.special, jinja2, click")):
            floors[what] = median_cpu([PY, "-c", code], env, work, args.reps)[0]
        # The run's own work: the same command in-process after every heavy import is paid
        own = (
            "import sys, time\n"
            "import torch, pandas, numpy, sklearn.metrics, scipy.stats, scipy.special, jinja2, click\n"
            "from audit.cli import main\n"
            "t = time.process_time()\n"
            "try:\n"
            f"    main({commands(work / 'own')['audit run --suite performance, 100 rows'][0][3:]!r})\n"
            "except SystemExit:\n"
            "    pass\n"
            "sys.stderr.write(f'OWN={time.process_time() - t}\\n')\n")
        xs = []
        for _ in range(args.reps):
            proc = subprocess.run([PY, "-c", own], env=env, cwd=work, capture_output=True, text=True)
            xs.append(float(re.search(r"OWN=([\d.]+)", proc.stderr).group(1)))
        floors["the performance run's own work, every library imported first (this checkout)"] = statistics.median(xs)
        breakdown = import_breakdown(commands(work / "imp")["audit run --suite performance, 100 rows"][0], env, work)

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"\nMachine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {platform.platform()}")
    print(f"CPU seconds (user + system), median of {args.reps} runs ({reps_repro} for repro, "
          f"{max(15, 3 * args.reps)} for --help)\n")
    labels = list(trees)
    header = ["command"] + labels + (["base / this"] if len(labels) == 2 else [])
    rows = []
    for what, by in results.items():
        row = [what] + [f"{by[lab][0]:.2f}" for lab in labels]
        if len(labels) == 2:
            row.append(f"{by[labels[1]][0] / by[labels[0]][0]:.2f}x")
        rows.append(row)
    _table(header, rows, args.markdown)
    print()
    _table(["floor: a fresh interpreter that only", "CPU s"], [[k, f"{v:.2f}"] for k, v in floors.items()],
           args.markdown)
    print()
    top = sorted(breakdown.items(), key=lambda kv: -kv[1])[:8]
    total = sum(breakdown.values())
    _table(["import time of this checkout's performance run, by package", "s (self)"],
           [[k, f"{v:.2f}"] for k, v in top] + [["all imports", f"{total:.2f}"]], args.markdown)


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in [header] + rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))


if __name__ == "__main__":
    main()
