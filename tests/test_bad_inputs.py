"""The bad-input corpus: checkpoints, recipes, data, output folders, concurrent runs and `audit gate`.

Each case is a real file or folder (tiny untrained models, a few dozen rows) handed to the real CLI. For
every refused input the test asserts: the exit code; exactly one stderr line `audit: error: ...` naming the
problem, never a traceback; that no payload ran; and that --out, which held a *passing* report of an
earlier run, now holds a failure report of this run (passed false, the error line, the exit code, an HTML
page that says so), that `audit gate` on it fails, and that the earlier run's files were moved to
previous-runs/<its run id>/ rather than deleted.

Concurrency, locks, SIGINT and SIGKILL use real subprocesses; everything else runs in-process.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli, signals_default

NET = '''
import torch


class Tiny(torch.nn.Module):
    """An untrained two-layer net: d inputs, 16 hidden units, k classes."""

    def __init__(self, d=4, k=3):
        super().__init__()
        self.hidden = torch.nn.Linear(d, 16)
        self.out = torch.nn.Linear(16, k)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x.flatten(1))))


def not_a_module():
    return 42


def boom():
    raise RuntimeError("factory exploded")
'''

RECIPE = '''
[model]
factory = "{base}/net.py:Tiny"
num_classes = 3
input_bounds = [0.0, 1.0]

[data]
source = "npz"
path = "{base}/data.npz"
sensitive = {{ g = "g" }}

[[gates]]
metric = "accuracy"
op = ">="
threshold = 0.0
'''

N = 48


class Payload:
    """Unpickling this runs `touch MARKER`: the file must never appear."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Good inputs every case starts from, and the folder of a passing run made with them."""
    b = tmp_path_factory.mktemp("corpus")
    (b / "net.py").write_text(NET)
    sys.path.insert(0, str(b))
    try:
        import importlib

        net_mod = importlib.import_module("net")
    finally:
        sys.path.remove(str(b))
    torch.manual_seed(0)
    net = net_mod.Tiny()
    sys.modules.pop("net", None)
    torch.save(net.state_dict(), b / "sd.pt")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(b / "good.safetensors"))
    rng = np.random.default_rng(0)
    np.savez(b / "data.npz", x=rng.random((N, 4)).astype(np.float32), y=np.arange(N) % 3,
             g=np.array(["a", "b"] * (N // 2)))
    (b / "recipe.toml").write_text(RECIPE.format(base=b))
    res = run_cli("run", b / "sd.pt", "--recipe", b / "recipe.toml", "--out", b / "pass", "--quiet")
    assert res.exit_code == 0, res.stderr
    return b


def recipe_text(base: Path, replace: dict[str, str] | None = None, append: str = "") -> str:
    text = RECIPE.format(base=base)
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    return text + append


# ------------------------------------------------------------------------------------------ case builders
# Each builder gets (case dir, base dir) and returns the CLI arguments, without --out.


def run_args(model: Path | str, recipe: Path | str, *extra: Any) -> list[Any]:
    return ["run", model, "--recipe", recipe, *extra]


def with_recipe(replace: dict[str, str] | None = None, append: str = "", model: str = "sd.pt",
                extra: tuple = ()) -> Callable[[Path, Path], list[Any]]:
    def build(d: Path, b: Path) -> list[Any]:
        (d / "r.toml").write_text(recipe_text(b, replace, append))
        return run_args(b / model, d / "r.toml", *extra)
    return build


def raw_recipe(text: str | bytes) -> Callable[[Path, Path], list[Any]]:
    def build(d: Path, b: Path) -> list[Any]:
        p = d / "r.toml"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return run_args(b / "sd.pt", p)
    return build


def with_checkpoint(make: Callable[[Path, Path, Path], None], name: str = "m.pt",
                    extra: tuple = ()) -> Callable[[Path, Path], list[Any]]:
    """``make(path, case dir, base dir)`` writes the checkpoint."""
    def build(d: Path, b: Path) -> list[Any]:
        make(d / name, d, b)
        return run_args(d / name, b / "recipe.toml", *extra)
    return build


def with_npz(**arrays: Any) -> Callable[[Path, Path], list[Any]]:
    """The recipe's data replaced by these arrays (None drops the array; callables get the good ones)."""
    def build(d: Path, b: Path) -> list[Any]:
        good = dict(np.load(b / "data.npz"))
        for k, v in arrays.items():
            if v is None:
                good.pop(k, None)
            else:
                good[k] = v(good) if callable(v) else v
        np.savez(d / "data.npz", **good)
        (d / "r.toml").write_text(recipe_text(b, {f'path = "{b}/data.npz"': f'path = "{d}/data.npz"'}))
        return run_args(b / "sd.pt", d / "r.toml")
    return build


CSV_HEAD = "f0,f1,f2,f3,label,g\n"


def csv_rows(n: int = N) -> list[str]:
    rng = np.random.default_rng(1)
    return [",".join(f"{v:.3f}" for v in rng.random(4)) + f",{i % 3},{'ab'[i % 2]}" for i in range(n)]


def with_csv(body: str | bytes | None = None, rows: Callable[[list[str]], list[str]] | None = None,
             data: str = "") -> Callable[[Path, Path], list[Any]]:
    def build(d: Path, b: Path) -> list[Any]:
        p = d / "d.csv"
        if body is not None:
            p.write_bytes(body if isinstance(body, bytes) else body.encode())
        else:
            p.write_text(CSV_HEAD + "\n".join((rows or (lambda r: r))(csv_rows())) + "\n")
        section = ('[data]\nsource = "csv"\npath = "d.csv"\nfeatures = ["f0", "f1", "f2", "f3"]\nlabel = "label"\n'
                   'sensitive = ["g"]\n' + data)
        text = recipe_text(b).split("[data]")[0] + section
        (d / "r.toml").write_text(text)
        return run_args(b / "sd.pt", d / "r.toml")
    return build


def with_python_data(code: str) -> Callable[[Path, Path], list[Any]]:
    def build(d: Path, b: Path) -> list[Any]:
        (d / "src.py").write_text(code)
        text = recipe_text(b).split("[data]")[0] + '[data]\nsource = "python"\ncallable = "src.py:load"\n'
        (d / "r.toml").write_text(text)
        return run_args(b / "sd.pt", d / "r.toml")
    return build


def args_only(*args: Any) -> Callable[[Path, Path], list[Any]]:
    def build(d: Path, b: Path) -> list[Any]:
        return [a(d, b) if callable(a) else a for a in args]
    return build


# ------------------------------------------------------------------------------------------ checkpoints


def _sd(b: Path) -> dict[str, torch.Tensor]:
    return torch.load(b / "sd.pt", weights_only=True)


def _flip(path: Path, entry_suffix: str, n: int = 64) -> None:
    """Flip ``n`` bytes inside the stored bytes of the zip entry ending in ``entry_suffix``."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(entry_suffix))
    raw = bytearray(path.read_bytes())
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    for i in range(start, start + min(n, info.file_size)):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def ck_copy_flipped(entry: str, n: int = 64) -> Callable[[Path, Path, Path], None]:
    def make(p: Path, d: Path, b: Path) -> None:
        shutil.copy(b / "sd.pt", p)
        _flip(p, entry, n)
    return make


def ck_bytes(data: bytes) -> Callable[[Path, Path, Path], None]:
    return lambda p, d, b: p.write_bytes(data)


def ck_torch(obj: Callable[[Path, Path], Any], **kw: Any) -> Callable[[Path, Path, Path], None]:
    return lambda p, d, b: torch.save(obj(d, b), p, **kw)


def ck_pickle(protocol: int) -> Callable[[Path, Path, Path], None]:
    return lambda p, d, b: p.write_bytes(pickle.dumps(Payload(d / "PWNED"), protocol=protocol))


def ck_fake_zip(entries: dict[str, bytes | Callable[[Path], bytes]]) -> Callable[[Path, Path, Path], None]:
    def make(p: Path, d: Path, b: Path) -> None:
        with zipfile.ZipFile(p, "w") as zf:
            for name, data in entries.items():
                zf.writestr(name, data(d) if callable(data) else data)
    return make


def _payload_bytes(d: Path) -> bytes:
    return pickle.dumps(Payload(d / "PWNED"), protocol=2)


def ck_truncated(fraction: float, source: str = "sd.pt") -> Callable[[Path, Path, Path], None]:
    def make(p: Path, d: Path, b: Path) -> None:
        data = (b / source).read_bytes()
        p.write_bytes(data[: int(len(data) * fraction)])
    return make


def ck_fifo(p: Path, d: Path, b: Path) -> None:
    os.mkfifo(p)


def ck_scripted(p: Path, d: Path, b: Path) -> None:
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 3)), str(p))


def ck_safetensors_header(header: bytes, length: int | None = None) -> Callable[[Path, Path, Path], None]:
    def make(p: Path, d: Path, b: Path) -> None:
        n = len(header) if length is None else length
        p.write_bytes(n.to_bytes(8, "little") + header + b"\0" * 16)
    return make


def _nan_weights(d: Path, b: Path) -> dict[str, torch.Tensor]:
    sd = _sd(b)
    sd["out.bias"] = torch.full_like(sd["out.bias"], float("nan"))
    return sd


CHECKPOINT_CASES = [
    ("ck-missing", args_only("run", lambda d, b: d / "nope.pt", "--recipe", lambda d, b: b / "recipe.toml"), 2,
     "checkpoint file not found"),
    ("ck-folder", args_only("run", lambda d, b: d, "--recipe", lambda d, b: b / "recipe.toml"), 2, "is a directory"),
    ("ck-fifo", with_checkpoint(ck_fifo), 2, "is a named pipe, not a regular file"),
    ("ck-empty", with_checkpoint(ck_bytes(b"")), 2, "the file is empty"),
    ("ck-random-bytes", with_checkpoint(ck_bytes(bytes(range(7, 250)))), 2, "unrecognised checkpoint format"),
    ("ck-text", with_checkpoint(ck_bytes(b"weights: 1, 2, 3\n")), 2, "unrecognised checkpoint format"),
    ("ck-gzip", with_checkpoint(lambda p, d, b: p.write_bytes(gzip.compress((b / "sd.pt").read_bytes()))), 2,
     "unrecognised checkpoint format"),
    ("ck-truncated-zip", with_checkpoint(ck_truncated(0.5)), 2, "damaged or truncated zip"),
    ("ck-truncated-zip-head", with_checkpoint(ck_truncated(0.05)), 2, "damaged or truncated zip"),
    ("ck-crc-tensor", with_checkpoint(ck_copy_flipped("/data/0")), 2, "entry 'sd/data/0' fails its CRC-32 check"),
    ("ck-crc-tensor-2", with_checkpoint(ck_copy_flipped("/data/2", 8)), 2, "fails its CRC-32 check"),
    ("ck-crc-data-pkl", with_checkpoint(ck_copy_flipped("/data.pkl", 4)), 2, "entry 'sd/data.pkl' fails its CRC-32"),
    ("ck-zip-without-data-pkl", with_checkpoint(ck_fake_zip({"archive/weights.bin": b"\0" * 64})), 2,
     "a zip archive but not a torch.save checkpoint (no data.pkl entry)"),
    ("ck-torch-zip-named-safetensors", with_checkpoint(lambda p, d, b: shutil.copy(b / "sd.pt", p),
                                                       name="m.safetensors"), 2,
     "named .safetensors but holds a torch.save zip archive"),
    ("ck-pickle-named-safetensors", with_checkpoint(ck_pickle(2), name="m.safetensors"), 2,
     "named .safetensors but holds a pickle"),
    ("ck-safetensors-truncated", with_checkpoint(ck_truncated(0.6, "good.safetensors"), name="m.safetensors"), 2,
     "not a readable safetensors file"),
    ("ck-safetensors-bad-json", with_checkpoint(ck_safetensors_header(b"{not json}"), name="m.safetensors"), 2,
     "not a readable safetensors file"),
    ("ck-safetensors-huge-header", with_checkpoint(ck_safetensors_header(b'{"a":1}', 1 << 40), name="m.safetensors"),
     2, "not a readable safetensors file"),
    ("ck-safetensors-wrong-keys", with_checkpoint(
        lambda p, d, b: __import__("safetensors.torch").torch.save_file({"w": torch.zeros(2)}, str(p)),
        name="m.safetensors"), 2, "does not fit the factory's architecture"),
    ("ck-payload-pickle-p2", with_checkpoint(ck_pickle(2)), 2, "refused"),
    ("ck-payload-pickle-p4", with_checkpoint(ck_pickle(4)), 2, "refused"),
    ("ck-payload-pickle-p5", with_checkpoint(ck_pickle(5)), 2, "refused"),
    ("ck-payload-pickle-p0-text", with_checkpoint(ck_pickle(0)), 2, "unrecognised checkpoint format"),
    ("ck-payload-torch-save", with_checkpoint(ck_torch(lambda d, b: Payload(d / "PWNED"))), 2, "refused"),
    ("ck-payload-in-optimizer-state", with_checkpoint(ck_torch(lambda d, b: {
        "model_state_dict": _sd(b), "optimizer_state_dict": {"state": {0: {"momentum": Payload(d / "PWNED")}}},
        "epoch": 3})), 2, "refused"),
    ("ck-payload-legacy-format", with_checkpoint(ck_torch(lambda d, b: {"state_dict": _sd(b),
                                                                         "x": Payload(d / "PWNED")},
                                                          _use_new_zipfile_serialization=False)), 2, "refused"),
    ("ck-pickled-module", with_checkpoint(ck_torch(lambda d, b: torch.nn.Linear(4, 3))), 2, "refused"),
    ("ck-torchscript", with_checkpoint(ck_scripted), 2, "TorchScript archive carries code"),
    ("ck-fake-torchscript", with_checkpoint(ck_fake_zip({"archive/data.pkl": _payload_bytes,
                                                         "archive/constants.pkl": _payload_bytes,
                                                         "archive/code/__torch__.py": b"import os\n"})), 2,
     "TorchScript archive carries code"),
    ("ck-fake-pt2", with_checkpoint(ck_fake_zip({"archive/archive_format": b"pt2",
                                                 "archive/models/model.json": b"{}"}), name="m.pt2"), 2,
     "torch.export (.pt2) archive carries code"),
    ("ck-wrong-keys", with_checkpoint(ck_torch(lambda d, b: {"fc.weight": torch.zeros(3, 4)})), 2,
     "does not fit the factory's architecture"),
    ("ck-shape-mismatch", with_checkpoint(ck_torch(lambda d, b: {k: torch.zeros(*(s + 1 for s in v.shape))
                                                                 for k, v in _sd(b).items()})), 2, "shape mismatch"),
    ("ck-dict-without-weights", with_checkpoint(ck_torch(lambda d, b: {"epoch": 3, "lr": 0.1})), 2,
     "a dict without weights"),
    ("ck-list", with_checkpoint(ck_torch(lambda d, b: [torch.zeros(2)])), 2, "holds a list"),
    ("ck-tensor", with_checkpoint(ck_torch(lambda d, b: torch.zeros(3))), 2, "holds a Tensor"),
    ("ck-nan-weights", with_checkpoint(ck_torch(_nan_weights)), 4, "outputs NaN logits"),
]


# ------------------------------------------------------------------------------------------ recipes

RECIPE_CASES = [
    ("rc-missing", args_only("run", lambda d, b: b / "sd.pt", "--recipe", lambda d, b: d / "none.toml"), 2,
     "recipe file not found"),
    ("rc-folder", args_only("run", lambda d, b: b / "sd.pt", "--recipe", lambda d, b: d), 2, "is a directory"),
    ("rc-fifo", lambda d, b: (os.mkfifo(d / "r.toml"), run_args(b / "sd.pt", d / "r.toml"))[1], 2,
     "is a named pipe, not a regular file"),
    ("rc-not-toml", raw_recipe("[model\nfactory = 1"), 2, "not valid TOML"),
    ("rc-not-utf8", raw_recipe(b"[model]\nfactory = \"\xff\xfe\"\n"), 2, "not a UTF-8 text file"),
    ("rc-unknown-section", with_recipe(append="\n[modle]\nx = 1\n"), 2, "unknown section [modle]"),
    ("rc-unknown-key", with_recipe({"num_classes = 3": "num_clases = 3"}), 2, "unknown key 'num_clases'"),
    ("rc-num-classes-string", with_recipe({"num_classes = 3": 'num_classes = "three"'}), 2, "num_classes"),
    ("rc-num-classes-zero", with_recipe({"num_classes = 3": "num_classes = 0"}), 2, "num_classes"),
    ("rc-bounds-reversed", with_recipe({"input_bounds = [0.0, 1.0]": "input_bounds = [1.0, 0.0]"}), 2,
     "input_bounds"),
    ("rc-bounds-one-value", with_recipe({"input_bounds = [0.0, 1.0]": "input_bounds = [0.0]"}), 2, "input_bounds"),
    ("rc-factory-file-missing", with_recipe({"/net.py:Tiny": "/nonet.py:Tiny"}), 2, "nonet.py not found"),
    ("rc-factory-file-is-folder", lambda d, b: ((d / "pkg.py").mkdir(), with_recipe(
        {f'"{b}/net.py:Tiny"': f'"{d}/pkg.py:Tiny"'})(d, b))[1], 2, "is a folder, not a file"),
    ("rc-factory-no-callable", with_recipe({"net.py:Tiny": "net.py:Huge"}), 2, "Huge"),
    ("rc-factory-raises", with_recipe({"net.py:Tiny": "net.py:boom"}), 2, "factory exploded"),
    ("rc-factory-not-module", with_recipe({"net.py:Tiny": "net.py:not_a_module"}), 2, "expected a torch.nn.Module"),
    ("rc-factory-syntax-error", lambda d, b: ((d / "bad.py").write_text("def f(:\n"), with_recipe(
        {f'"{b}/net.py:Tiny"': f'"{d}/bad.py:f"'})(d, b))[1], 2, "importing"),
    ("rc-factory-import-raises", lambda d, b: ((d / "bad.py").write_text("raise ImportError('no cuda here')\n"),
                                               with_recipe({f'"{b}/net.py:Tiny"': f'"{d}/bad.py:f"'})(d, b))[1], 2,
     "no cuda here"),
    ("rc-factory-no-colon", with_recipe({"net.py:Tiny": "net.py"}), 2, "factory"),
    ("rc-factory-bad-kwargs", with_recipe(append="", replace={"num_classes = 3": "num_classes = 3\nkwargs = { z = 1 }"}),
     2, "unexpected keyword argument"),
    ("rc-data-source-unknown", with_recipe({'source = "npz"': 'source = "parquet"'}), 2, "source"),
    ("rc-data-path-missing", with_recipe({"/data.npz": "/nodata.npz"}), 2, "nodata.npz not found"),
    ("rc-data-path-folder", with_recipe({"/data.npz\"": "\""}), 2, "is a folder, not a file"),
    ("rc-sklearn-unknown", with_recipe({'source = "npz"\npath': 'source = "sklearn"\nname = "mnist"\n#'}), 2, "mnist"),
    ("rc-gate-unknown-metric", with_recipe({'metric = "accuracy"': 'metric = "acuracy"'}), 2, "acuracy"),
    ("rc-gate-bad-op", with_recipe({'op = ">="': 'op = "=>"'}), 2, "op"),
    ("rc-gate-threshold-string", with_recipe({"threshold = 0.0": 'threshold = "high"'}), 2, "threshold"),
    ("rc-gate-bad-use", with_recipe(append='use = "median"\n'), 2, "use"),
    ("rc-gate-duplicate-ids", with_recipe(append='id = "g"\n[[gates]]\nid = "g"\nmetric = "accuracy"\nop = ">="\n'
                                                 'threshold = 0.1\n'), 2, "ids must be unique"),
    ("rc-gate-min-n-zero", with_recipe(append="min_n = 0\n"), 2, "min_n"),
    ("rc-run-suites-unknown", with_recipe(append='\n[run]\nsuites = ["speed"]\n'), 2, "speed"),
    ("rc-class-names-length", with_recipe({"num_classes = 3": 'num_classes = 3\nclass_names = ["a", "b"]'}), 2,
     "class_names"),
    ("rc-mean-length", with_recipe({"num_classes = 3": "num_classes = 3\nmean = [0.5, 0.5]\nstd = [0.5, 0.5]"}), 2,
     "mean"),
    ("rc-std-zero", with_recipe({"num_classes = 3": "num_classes = 3\nmean = [0.5]\nstd = [0.0]"}), 2, "std"),
    ("cli-suite-unknown", with_recipe(extra=("--suite", "nope")), 2, "--suite nope: unknown suite"),
    ("cli-suite-repro", with_recipe(extra=("--suite", "repro")), 2, "use `audit repro`"),
    ("cli-device-bad", with_recipe(extra=("--device", "tpu")), 2, "--device tpu: expected auto, cpu, cuda"),
    ("cli-seed-negative", with_recipe(extra=("--seed", "-1")), 2, "Invalid value for '--seed'"),
    ("cli-batch-size-zero", with_recipe(extra=("--batch-size", "0")), 2, "Invalid value for '--batch-size'"),
    ("cli-unknown-option", with_recipe(extra=("--fast",)), 2, "No such option"),
    ("cli-repro-no-recipe", args_only("repro", lambda d, b: b / "sd.pt"), 2, "--recipe is required with MODEL"),
    ("cli-repro-seeds-one", args_only("repro", lambda d, b: b / "sd.pt", "--recipe", lambda d, b: b / "recipe.toml",
                                      "--seeds", "1"), 2, "at least 2 seeds"),
    ("cli-repro-model-missing", args_only("repro", lambda d, b: d / "none.pt", "--recipe",
                                          lambda d, b: b / "recipe.toml"), 2, "model file not found"),
]

# ------------------------------------------------------------------------------------------ data

DATA_CASES = [
    ("npz-no-x", with_npz(x=None), 2, "no array 'x'"),
    ("npz-no-sensitive", with_npz(g=None), 2, "no array 'g'"),
    ("npz-object-array", lambda d, b: (np.savez(d / "data.npz", x=np.array([object()] * N), y=np.zeros(N, int),
                                                g=np.array(["a"] * N)), with_recipe(
        {f'path = "{b}/data.npz"': f'path = "{d}/data.npz"'})(d, b))[1], 2, "without pickle"),
    ("npz-not-a-zip", lambda d, b: ((d / "data.npz").write_bytes(b"PK\x03\x04garbage"), with_recipe(
        {f'path = "{b}/data.npz"': f'path = "{d}/data.npz"'})(d, b))[1], 2, "not a readable .npz file"),
    ("npz-fifo", lambda d, b: (os.mkfifo(d / "data.npz"), with_recipe(
        {f'path = "{b}/data.npz"': f'path = "{d}/data.npz"'})(d, b))[1], 2, "is a named pipe"),
    ("npz-nan", with_npz(x=lambda g: np.where(np.arange(N)[:, None] * 4 + np.arange(4) == 9, np.nan, g["x"])), 2,
     "x has NaN or Inf values in feature 1"),
    ("npz-inf", with_npz(x=lambda g: np.where(np.arange(N)[:, None] * 4 + np.arange(4) == 11, np.inf, g["x"])), 2,
     "in feature 3 (0-based) in 1 row (first: 2)"),
    ("npz-nan-image", with_npz(x=lambda g: np.where(np.arange(N * 4).reshape(N, 1, 2, 2) == 6, np.nan,
                                                    g["x"].reshape(N, 1, 2, 2))), 2,
     "at position (0, 1, 0) of each (1, 2, 2) example"),
    ("npz-labels-out-of-range", with_npz(y=lambda g: g["y"] + 1), 2, "labels outside [0, 3)"),
    ("npz-labels-float", with_npz(y=lambda g: g["y"] + 0.5), 2, "labels must be integers"),
    ("npz-labels-strings", with_npz(y=lambda g: np.array(["cat"] * N)), 2, "labels must be integers"),
    ("npz-labels-2d", with_npz(y=lambda g: g["y"].reshape(-1, 1)), 2, "labels must be a 1-D array"),
    ("npz-length-mismatch", with_npz(y=lambda g: g["y"][:-1]), 2, "x has 48 rows but y has 47"),
    ("npz-empty", with_npz(x=np.zeros((0, 4), np.float32), y=np.zeros(0, int), g=np.array([], dtype=str)), 2,
     "the data is empty"),
    ("npz-x-strings", with_npz(x=lambda g: np.array([["a"] * 4] * N)), 2, "x must be numeric"),
    ("npz-x-complex", with_npz(x=lambda g: g["x"].astype(np.complex64)), 2, "x must be numeric"),
    ("npz-out-of-bounds", with_npz(x=lambda g: g["x"] * 3), 2, "outside [model] input_bounds"),
    ("npz-sensitive-length", with_npz(g=lambda g: g["g"][:-2]), 2, "has 46 values but the data has 48 rows"),
    ("npz-sensitive-nan", with_npz(g=lambda g: np.where(np.arange(N) == 5, np.nan, 1.0)), 2,
     "sensitive attribute 'g' is missing in 1 row"),
    ("npz-sensitive-2d", with_npz(g=lambda g: g["g"].reshape(-1, 2)), 2, "must hold one value per example"),
    ("npz-one-row-split-test", lambda d, b: (np.savez(d / "data.npz", x=np.full((1, 4), 0.5, np.float32),
                                                      y=np.zeros(1, int), g=np.array(["a"])),
                                             with_recipe({f'path = "{b}/data.npz"': f'path = "{d}/data.npz"\n'
                                                          'split = "test"'})(d, b))[1], 2,
     "1 row cannot be split into a non-empty train and test part"),
    ("npz-input-shape", with_recipe({"num_classes = 3": "num_classes = 3\ninput_shape = [3, 3]"}), 2,
     "cannot be reshaped to [model] input_shape"),
    ("csv-100000-extra-fields", with_csv(rows=lambda r: r[:7] + [r[7] + ",9" * 100_000] + r[8:]), 2,
     "line 9 has 100006 fields but the header has 6"),
    ("csv-short-line", with_csv(rows=lambda r: r[:3] + ["0.1,0.2"] + r[4:]), 2, "line 5 has 2 fields"),
    ("csv-unclosed-quote", with_csv(rows=lambda r: r[:10] + ['0.1,"0.2,0.3,0.4,1,a'] + r[11:]), 2,
     "line 12 (a record running to line"),
    ("csv-giant-field", with_csv(rows=lambda r: r[:2] + ['0.1,"' + "9" * 1_100_000 + '",0.3,0.4,1,a'] + r[3:]), 2,
     "line 4 is not valid CSV (field larger than field limit"),
    ("csv-empty-file", with_csv(body=""), 2, "the CSV file is empty"),
    ("csv-not-utf8", with_csv(body=CSV_HEAD.encode() + b"0.1,0.2,0.3,0.4,1,\xff\xfe\n"), 2, "not UTF-8 text"),
    ("csv-missing-column", with_csv(body="f0,f1,f2,label,g\n0.1,0.2,0.3,1,a\n"), 2, "no column 'f3'"),
    ("csv-non-numeric", with_csv(rows=lambda r: r[:4] + ["0.1,zero,0.3,0.4,1,a"] + r[5:]), 2,
     "feature column 'f1' is not numeric in 1 row (first: 4)"),
    ("csv-missing-value", with_csv(rows=lambda r: r[:4] + ["0.1,,0.3,0.4,1,a"] + r[5:]), 2,
     "feature column 'f1' has missing values"),
    ("csv-inf", with_csv(rows=lambda r: r[:6] + ["0.1,0.2,inf,0.4,1,a"] + r[7:]), 2,
     "x has NaN or Inf values in column 'f2' in 1 row (first: 6)"),
    ("csv-label-values", with_csv(data='label_values = ["0", "1"]\n'), 2, "has values outside label_values"),
    ("py-raises", with_python_data("def load():\n    raise OSError('bucket unreachable')\n"), 2, "bucket unreachable"),
    ("py-wrong-type", with_python_data("def load():\n    return 42\n"), 2, "returned int"),
    ("py-dict-without-y", with_python_data("def load():\n    return {'x': [[0.1] * 4]}\n"), 2, "without keys 'x' and 'y'"),
    ("py-bad-sensitive", with_python_data("def load():\n    return [[0.1] * 4], [0], 'g'\n"), 2,
     "the third element must be a dict"),
]


# ------------------------------------------------------------------------------------------ output folders


def out_is_a_file(d: Path, b: Path) -> list[Any]:
    (d / "file").write_text("x")
    return run_args(b / "sd.pt", b / "recipe.toml", "--out", d / "file")


def out_under_a_file(d: Path, b: Path) -> list[Any]:
    (d / "file").write_text("x")
    return run_args(b / "sd.pt", b / "recipe.toml", "--out", d / "file" / "sub")


def out_name_taken(d: Path, b: Path) -> list[Any]:
    (d / "o" / "report.html").mkdir(parents=True)
    return run_args(b / "sd.pt", b / "recipe.toml", "--out", d / "o")


OUT_CASES = [  # --out itself is the bad input: nothing can be written there, and nothing is
    ("out-is-a-file", out_is_a_file, 2, "is a file"),
    ("out-under-a-file", out_under_a_file, 2, "cannot write there"),
    ("out-name-taken-by-folder", out_name_taken, 2, "report.html there is not a file"),
]


# ------------------------------------------------------------------------------------------ the tests

ALL_CASES = CHECKPOINT_CASES + RECIPE_CASES + DATA_CASES


def _one_line(res: Any, code: int, fragment: str) -> None:
    assert res.exit_code == code, (res.exit_code, res.stderr)
    err = res.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("audit: error: "), err
    assert "Traceback" not in res.stderr and fragment in err, err


@pytest.mark.parametrize("case_id,build,code,fragment", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_bad_input(case_id, build, code, fragment, base, tmp_path):
    d = tmp_path
    out = d / "out"
    shutil.copytree(base / "pass", out)  # an earlier, passing run of another model sits in --out
    before = json.loads((out / "report.json").read_text())
    assert before["passed"] is True
    args = build(d, base)
    args = [*args, "--out", out, "--quiet"]
    t = time.perf_counter()
    res = run_cli(*args, cwd=d)
    elapsed = time.perf_counter() - t
    _one_line(res, code, fragment)
    assert not (d / "PWNED").exists(), "the payload ran"
    assert elapsed < 20, f"{case_id} took {elapsed:.1f} s"
    # --out: this run's failure, never the earlier pass
    now = json.loads((out / "report.json").read_text())
    assert now["passed"] is False and now["run_status"] == "failed" and now["exit_code"] == code, now
    assert now["error"] == res.stderr.strip()[len("audit: error: "):]
    assert now["run_id"] != before["run_id"] and not (out / "examples.npz").exists()
    assert "RUN FAILED" in (out / "report.html").read_text()
    assert "RUN FAILED" in (out / "summary.md").read_text()
    assert 'errors="1"' in (out / "junit.xml").read_text()
    kept = out / "previous-runs" / before["run_id"]
    assert json.loads((kept / "report.json").read_text()) == before
    assert sorted(p.name for p in kept.iterdir()) == sorted(p.name for p in (base / "pass").iterdir()
                                                             if p.name != ".audit.lock")
    assert not list(out.glob(".*.partial"))
    gated = run_cli("gate", out / "report.json")
    assert gated.exit_code == code and "there is no result to gate" in gated.stderr


@pytest.mark.parametrize("case_id,build,code,fragment", OUT_CASES, ids=[c[0] for c in OUT_CASES])
def test_bad_output_folder(case_id, build, code, fragment, base, tmp_path):
    res = run_cli(*build(tmp_path, base), "--quiet", cwd=tmp_path)
    _one_line(res, code, fragment)
    assert not list(tmp_path.rglob("report.json"))


# ------------------------------------------------------------------------------------------ hostile text


HOSTILE = [  # (class names, group values, checkpoint file name): rendered literally, the run completes
    (["$x$", "$\\frac{1}{0}$", "c$"], ["a$b", "$$"], "model.pt"),
    (["<script>alert(1)</script>", "</td><b>", "&amp;"], ["<img src=x onerror=alert(1)>", "b"], "m<i>.pt"),
    (["a`b", "|pipe|", "*em*"], ["``", "|"], "we`ird``na|me.pt"),
    (["x", "y", "z"], ["$x^$", "$\\mathrm{"], "$HOME.pt"),  # invalid math text: matplotlib would raise
]


@pytest.mark.parametrize("class_names,groups,name", HOSTILE, ids=["mathtext", "html", "markdown", "mathtext-2"])
def test_hostile_text_is_rendered_literally(class_names, groups, name, base, tmp_path):
    from audit.report.markdown import md_code

    shutil.copy(base / "sd.pt", tmp_path / name)
    good = dict(np.load(base / "data.npz"))
    good["g"] = np.array(groups * (N // 2))
    np.savez(tmp_path / "data.npz", **good)
    (tmp_path / "r.toml").write_text(recipe_text(base, {
        f'path = "{base}/data.npz"': f'path = "{tmp_path}/data.npz"',
        "num_classes = 3": f"num_classes = 3\nclass_names = {json.dumps(class_names)}"},
        f"\n[fairness]\nmin_group_size = 1\npositive_class = {json.dumps(class_names[0])}\n"))
    res = run_cli("run", tmp_path / name, "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o", "--quiet",
                  "--suite", "performance", "--suite", "fairness")
    assert res.exit_code in (0, 1), res.stderr
    html = (tmp_path / "o" / "report.html").read_text()
    assert "<script>" not in html and "<img" not in html and "</td><b>" not in html
    from markupsafe import escape

    for text in class_names + groups:  # shown, as text
        assert str(escape(text)) in html, text
    md = (tmp_path / "o" / "summary.md").read_text()
    assert md_code(tmp_path / name) in md  # the file name's code span cannot be closed from inside
    assert "<script>" not in md and "<img" not in md
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    assert r["data"]["sensitive"]["g"] == sorted(set(groups))


# ------------------------------------------------------------------------------------------ audit gate


def _damage(fn: Callable[[dict], Any]) -> Callable[[dict], dict]:
    def apply(r: dict) -> dict:
        r = json.loads(json.dumps(r))
        fn(r)
        return r
    return apply


GATE_CASES = [
    ("gate-metric-value-string", _damage(lambda r: r["metrics"][0].update(value="0.9")), "metrics[0].value"),
    ("gate-metric-value-bool", _damage(lambda r: r["metrics"][0].update(value=True)), "metrics[0].value"),
    ("gate-metric-ci-string", _damage(lambda r: r["metrics"][0].update(ci_low="low")), "metrics[0].ci_low"),
    ("gate-metric-params-null", _damage(lambda r: r["metrics"][0].update(params=None)), "metrics[0].params"),
    ("gate-metric-params-list", _damage(lambda r: r["metrics"][0].update(params=[1])), "metrics[0].params"),
    ("gate-metric-params-nested", _damage(lambda r: r["metrics"][0].update(params={"a": {"b": 1}})),
     "metrics[0].params.a"),
    ("gate-metric-n-string", _damage(lambda r: r["metrics"][0].update(n="48")), "metrics[0].n"),
    ("gate-metric-n-negative", _damage(lambda r: r["metrics"][0].update(n=-1)), "metrics[0].n"),
    ("gate-metric-no-n", _damage(lambda r: r["metrics"][0].pop("n")), "metrics[0] lacks n"),
    ("gate-metric-suite-number", _damage(lambda r: r["metrics"][0].update(suite=3)), "metrics[0].suite"),
    ("gate-metric-not-object", _damage(lambda r: r["metrics"].append("accuracy")), "metrics["),
    ("gate-metrics-not-list", _damage(lambda r: r.update(metrics={"a": 1})), "metrics is missing or not a list"),
    ("gate-check-bad-status", _damage(lambda r: r["checks"][0].update(status="maybe")), "checks[0].status"),
    ("gate-check-no-id", _damage(lambda r: r["checks"][0].pop("id")), "checks[0] lacks id"),
    ("gate-suites-list", _damage(lambda r: r.update(suites=[])), "suites is missing or not an object"),
    ("gate-suite-notes-string", _damage(lambda r: r["suites"]["performance"].update(notes="hi")),
     "suites.performance.notes"),
    ("gate-threshold-string", _damage(lambda r: r["recipe"]["gates"][0].update(threshold="0.5")),
     "recipe.gates[0].threshold"),
    ("gate-threshold-null", _damage(lambda r: r["recipe"]["gates"][0].update(threshold=None)),
     "recipe.gates[0].threshold"),
    ("gate-params-null", _damage(lambda r: r["recipe"]["gates"][0].update(params=None)), "recipe.gates[0].params"),
    ("gate-op-bad", _damage(lambda r: r["recipe"]["gates"][0].update(op="==")), "recipe.gates[0].op"),
    ("gate-use-bad", _damage(lambda r: r["recipe"]["gates"][0].update(use="mean")), "recipe.gates[0].use"),
    ("gate-severity-bad", _damage(lambda r: r["recipe"]["gates"][0].update(severity="fatal")),
     "recipe.gates[0].severity"),
    ("gate-min-n-bool", _damage(lambda r: r["recipe"]["gates"][0].update(min_n=True)), "recipe.gates[0].min_n"),
    ("gate-inconclusive-bad", _damage(lambda r: r["recipe"]["gates"][0].update(inconclusive="maybe")),
     "recipe.gates[0].inconclusive"),
    ("gate-no-severity", _damage(lambda r: r["recipe"]["gates"][0].pop("severity")), "lacks severity"),
    ("gate-gates-not-list", _damage(lambda r: r["recipe"].update(gates={"g": 1})), "holds no recipe with gates"),
    ("gate-no-recipe", _damage(lambda r: r.pop("recipe")), "holds no recipe with gates"),
    ("gate-downgrade-string", _damage(lambda r: r["recipe"]["sections"]["validity"].update(downgrade="all")),
     "recipe.sections.validity.downgrade"),
    ("gate-excused-not-list", _damage(lambda r: r.update(suites_excused="robustness")), "suites_excused"),
    ("gate-run-status-bad", _damage(lambda r: r.update(run_status="maybe")), "run_status is 'maybe'"),
    ("gate-schema-other", _damage(lambda r: r.update(schema="someone.else/3")), "is not supported"),
    ("gate-no-schema", _damage(lambda r: r.pop("schema")), "no 'schema' field"),
]


@pytest.mark.parametrize("case_id,damage,fragment", GATE_CASES, ids=[c[0] for c in GATE_CASES])
def test_gate_validates_report_field_by_field(case_id, damage, fragment, base, tmp_path):
    good = json.loads((base / "pass" / "report.json").read_text())
    (tmp_path / "report.json").write_text(json.dumps(damage(good)))
    res = run_cli("gate", tmp_path / "report.json")
    _one_line(res, 2, fragment)
    assert str(tmp_path / "report.json") in res.stderr


GATE_FILE_CASES = [
    ("gate-missing", lambda d: d / "none.json", "report file not found"),
    ("gate-folder", lambda d: d, "is a directory"),
    ("gate-fifo", lambda d: (os.mkfifo(d / "r.json"), d / "r.json")[1], "is a named pipe"),
    ("gate-not-json", lambda d: ((d / "r.json").write_text("{not json"), d / "r.json")[1], "not a valid JSON report"),
    ("gate-json-array", lambda d: ((d / "r.json").write_text("[1, 2]"), d / "r.json")[1], "not an audit report"),
    ("gate-nan-literal", lambda d: ((d / "r.json").write_text(
        '{"schema": "audit.report/1", "suites": {}, "checks": [], '
        '"metrics": [{"suite": "performance", "name": "accuracy", "params": {}, "value": NaN, "n": 3}]}'),
        d / "r.json")[1], "metrics[0].value"),
    ("gate-not-utf8", lambda d: ((d / "r.json").write_bytes(b'{"schema": "\xff"}'), d / "r.json")[1],
     "not a valid JSON report"),
]


@pytest.mark.parametrize("case_id,make,fragment", GATE_FILE_CASES, ids=[c[0] for c in GATE_FILE_CASES])
def test_gate_refuses_what_is_not_a_report(case_id, make, fragment, tmp_path):
    _one_line(run_cli("gate", make(tmp_path)), 2, fragment)


def test_gate_on_failed_and_unfinished_runs_exits_with_their_code(base, tmp_path):
    """A failure report keeps its run's exit code under `audit gate`; a run that never finished is exit 2."""
    from audit.report.outdir import FAILED, INCOMPLETE, failure_report

    for status, code, expected, fragment in [(FAILED, 4, 4, "failed (exit 4): boom"), (FAILED, 3, 3, "failed (exit 3)"),
                                             (FAILED, 130, 130, "failed (exit 130)"),
                                             (INCOMPLETE, None, 2, "did not finish")]:
        r = failure_report(run_id="20260101T000000Z-00000000", command="run", argv=["audit"], created="now",
                           inputs={}, status=status, error="boom", exit_code=code)
        (tmp_path / "report.json").write_text(json.dumps(r))
        _one_line(run_cli("gate", tmp_path / "report.json"), expected, fragment)
        _one_line(run_cli("gate", tmp_path / "report.json", "--recipe", base / "recipe.toml"), expected, fragment)


def test_gate_detects_a_folder_that_mixes_two_runs(base, tmp_path):
    from audit.engine.table import ExampleTable
    from audit.report.outdir import run_id_of

    out = tmp_path / "o"
    shutil.copytree(base / "pass", out)
    rid = json.loads((out / "report.json").read_text())["run_id"]
    for name in ("examples.npz", "report.html", "junit.xml", "summary.md"):
        assert run_id_of(out / name) == rid, name  # every file of the run carries its id
    assert run_cli("gate", out / "report.json").exit_code == 0
    t = ExampleTable.load(out / "examples.npz")
    t.meta["run_id"] = "20260101T000000Z-deadbeef"
    t.save(out / "examples.npz")
    res = run_cli("gate", out / "report.json")
    _one_line(res, 2, "examples.npz: written by run 20260101T000000Z-deadbeef")
    assert "mixes files of two runs" in res.stderr


# ------------------------------------------------------------------------------------------ real processes

SLOW_DATA = '''
import time
from pathlib import Path

import numpy as np


def load(go):
    """Holds the run (and its lock) until the file `go` exists."""
    t = time.monotonic()
    while not Path(go).exists() and time.monotonic() - t < 120:
        time.sleep(0.02)
    rng = np.random.default_rng(0)
    return rng.random((24, 4)).astype(np.float32), np.arange(24) % 3
'''


def _start_held_run(base: Path, d: Path, out: Path) -> tuple[subprocess.Popen, dict]:
    """A real `audit run` process that holds --out until d/go exists; returns it once it holds the lock."""
    (d / "slow.py").write_text(SLOW_DATA)
    (d / "slow.toml").write_text(recipe_text(base).split("[data]")[0]
                                 + f'[data]\nsource = "python"\ncallable = "slow.py:load"\nkwargs = {{ go = "{d / "go"}" }}\n')
    proc = subprocess.Popen([sys.executable, "-m", "audit", "run", str(base / "sd.pt"), "--recipe", str(d / "slow.toml"),
                             "--out", str(out), "--quiet"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=signals_default)
    t = time.monotonic()
    while time.monotonic() - t < 60:
        try:
            holder = json.loads((out / ".audit.lock").read_text())
            # the lock is taken before the earlier report is moved aside and the placeholder written:
            # wait for the placeholder itself (its run id), not just for a report.json to exist
            if holder["pid"] == proc.pid and json.loads((out / "report.json").read_text())["run_id"] == holder["run_id"]:
                return proc, holder
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the held run never took the lock")


def test_one_run_per_folder_and_a_killed_run_is_no_obstacle(base, tmp_path):
    out = tmp_path / "o"
    shutil.copytree(base / "pass", out)
    before = json.loads((out / "report.json").read_text())
    proc, holder = _start_held_run(base, tmp_path, out)
    try:
        # while it runs, the folder says so: a placeholder that cannot pass, the earlier pass moved aside
        placeholder = json.loads((out / "report.json").read_text())
        assert placeholder["run_status"] == "incomplete" and placeholder["passed"] is False
        assert placeholder["run_id"] == holder["run_id"]
        assert (out / "previous-runs" / before["run_id"] / "report.json").is_file()
        _one_line(run_cli("gate", out / "report.json"), 2, "has not finished")
        # a second run into the same folder: refused, naming the holder, and the folder is left alone
        res = run_cli("run", base / "sd.pt", "--recipe", base / "recipe.toml", "--out", out, "--quiet")
        _one_line(res, 2, f"in use by another audit run (pid {proc.pid}")
        assert json.loads((out / "report.json").read_text()) == placeholder
        res = run_cli("run", base / "sd.pt", "--recipe", base / "recipe.toml", "--out", out, "--seed", "-1")
        _one_line(res, 2, "Invalid value for '--seed'")  # a usage error does not touch a held folder either
        assert json.loads((out / "report.json").read_text()) == placeholder
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    # SIGKILL: no chance to write anything; the placeholder stays, and still cannot pass
    assert json.loads((out / "report.json").read_text()) == placeholder
    _one_line(run_cli("gate", out / "report.json"), 2, "it is still running, or it was killed")
    # the lock file is still there, but its process is gone: the next run proceeds
    assert (out / ".audit.lock").is_file()
    res = run_cli("run", base / "sd.pt", "--recipe", base / "recipe.toml", "--out", out, "--quiet")
    assert res.exit_code == 0, res.stderr
    now = json.loads((out / "report.json").read_text())
    assert now["passed"] is True and now["run_id"] not in (before["run_id"], placeholder["run_id"])
    from audit.report.outdir import run_id_of

    for name in ("examples.npz", "report.html", "junit.xml", "summary.md"):
        assert run_id_of(out / name) == now["run_id"], name
    assert sorted(p.name for p in (out / "previous-runs").iterdir()) == sorted([before["run_id"],
                                                                                placeholder["run_id"]])


@pytest.mark.parametrize("sig,code,line", [(signal.SIGINT, 130, "interrupted"),
                                           (signal.SIGTERM, 143, "terminated (SIGTERM)")], ids=["sigint", "sigterm"])
def test_ctrl_c_and_sigterm_leave_a_failure_report(sig, code, line, base, tmp_path):
    out = tmp_path / "o"
    proc, holder = _start_held_run(base, tmp_path, out)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert stderr.strip() == f"audit: error: {line}"
    r = json.loads((out / "report.json").read_text())
    assert r["run_status"] == "failed" and r["exit_code"] == code and r["error"] == line
    assert r["run_id"] == holder["run_id"] and r["passed"] is False
    _one_line(run_cli("gate", out / "report.json"), code, f"failed (exit {code}): {line}")


def test_the_sigterm_handler_is_restored_after_a_run(base, tmp_path):
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert run_cli("run", base / "sd.pt", "--recipe", base / "recipe.toml", "--out", tmp_path / "o",
                   "--quiet").exit_code == 0
    _one_line(run_cli("run", tmp_path / "none.pt", "--recipe", base / "recipe.toml", "--out", tmp_path / "o"), 2,
              "not found")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# ------------------------------------------------------------------------------------------ folder machinery


def test_everything_of_the_previous_run_is_moved_aside_under_its_run_id(tmp_path):
    """A repro study's runs/ and a killed run's staged leftovers go too; a report of an older version
    (no run id) is kept under a name made from its time."""
    from audit.report.outdir import PREVIOUS_DIR, RunFolder

    out = tmp_path / "o"
    (out / "runs" / "seed-0").mkdir(parents=True)
    (out / "runs" / "seed-0" / "report.json").write_text("{}")
    (out / "report.json").write_text(json.dumps({"schema": "audit.report/1", "run_id": "20260101T000000Z-0000abcd",
                                                 "passed": True}))
    (out / "summary.md").write_text("## audit: PASS")
    (out / ".report.json.20260101T000000Z-0000abcd.partial").write_text("half")
    (out / "notes.txt").write_text("the user's own file")
    with RunFolder.open(out, "repro", ["audit", "repro"]) as folder:
        kept = out / PREVIOUS_DIR / "20260101T000000Z-0000abcd"
        assert folder.moved_to == kept
        assert sorted(p.name for p in kept.iterdir()) == [".report.json.20260101T000000Z-0000abcd.partial",
                                                          "report.json", "runs", "summary.md"]
        assert (out / "notes.txt").read_text() == "the user's own file"  # not ours: left alone
        r = json.loads((out / "report.json").read_text())
        assert r["run_status"] == "incomplete" and r["previous_run"] == str(kept) and r["command"] == "repro"
    # a report written before run ids existed
    (out / "report.json").write_text(json.dumps({"schema": "audit.report/1", "passed": True}))
    os.utime(out / "report.json", (1_700_000_000, 1_700_000_000))
    for p in out.glob("*.*"):
        if p.name not in ("report.json", "notes.txt"):
            p.unlink()
    with RunFolder.open(out, "run") as folder:
        assert folder.moved_to is not None and folder.moved_to.name == "20231114T221320Z-unknown-run"
        folder.fail("boom", 2)
    r = json.loads((out / "report.json").read_text())
    assert r["run_status"] == "failed" and r["error"] == "boom" and r["exit_code"] == 2
    # an edited run id never names a folder outside previous-runs/
    (out / "report.json").write_text(json.dumps({"schema": "audit.report/1", "run_id": "../../evil"}))
    with RunFolder.open(out, "run") as folder:
        assert folder.moved_to is not None and folder.moved_to.parent == out / PREVIOUS_DIR
        assert folder.moved_to.name.endswith("-unknown-run")
    assert not (tmp_path / "evil").exists() and not (out.parent.parent / "evil").exists()


def test_a_failure_inside_the_folder_is_recorded_with_its_exit_code(tmp_path):
    from audit.errors import DataError, InvalidEvaluation
    from audit.report.outdir import RunFolder

    for exc, code, line in [(DataError("d.csv: bad"), 2, "d.csv: bad"), (InvalidEvaluation("NaN logits"), 4, "NaN logits"),
                            (KeyboardInterrupt(), 130, "interrupted"),
                            (ZeroDivisionError("x"), 3, "internal error: ZeroDivisionError: x")]:
        with pytest.raises(type(exc)):
            with RunFolder.open(tmp_path / "o", "run"):
                raise exc
        r = json.loads((tmp_path / "o" / "report.json").read_text())
        assert r["exit_code"] == code and r["error"].startswith(line) and r["passed"] is False


def test_markdown_escaping_closes_nothing_from_inside():
    """CommonMark: a backslash before ASCII punctuation is that literal character; a code span ends only at a
    backtick run as long as its opening one (spec 6.1, 2.4). GitHub tables split cells on any `|`."""
    import re

    from audit.report.markdown import md_code, md_text

    for ch in "\\`*_[]<>|~&":
        assert md_text(f"a{ch}b") == f"a\\{ch}b"
    assert md_text("two\nlines") == "two lines"  # a newline would end a table row or a list item
    for name in ["plain.pt", "a`b.pt", "``x``", "`", "we`ird``na|me.pt", "```"]:
        code = md_code(name)
        fence = re.match(r"`+", code).group(0)
        inner = code[len(fence):-len(fence)]
        assert code.endswith(fence) and code[len(fence)] != "`" and code[-len(fence) - 1] != "`"
        assert all(len(run) != len(fence) for run in re.findall(r"`+", inner))  # nothing inside closes it
        assert inner.strip(" ") == name.replace("|", "\\|") and "|" not in inner.replace("\\|", "")


@pytest.mark.slow
def test_a_repro_study_owns_its_folder_and_every_file_carries_its_run_id(base, tmp_path):
    """`audit repro` through the same machinery: the previous study (with its runs/) is moved aside, the
    study's files carry the study's run id, each child run's files its own."""
    from audit.engine.table import ExampleTable
    from audit.report.outdir import run_id_of

    out = tmp_path / "o"
    shutil.copytree(base / "pass", out)
    (out / "runs" / "seed-0").mkdir(parents=True)
    (out / "runs" / "seed-0" / "stderr.txt").write_text("an older study's child")
    before = json.loads((out / "report.json").read_text())
    (tmp_path / "r.toml").write_text(recipe_text(base, append="\n[repro]\nseeds = 2\nrepeats = 1\ncapture = false\n"))
    res = run_cli("repro", base / "sd.pt", "--recipe", tmp_path / "r.toml", "--out", out, "--quiet")
    assert res.exit_code == 0, res.stderr
    r = json.loads((out / "report.json").read_text())
    assert r["run_status"] == "finished" and r["provenance"]["run_id"] == r["run_id"] != before["run_id"]
    for name in ("examples.npz", "report.html", "junit.xml", "summary.md"):
        assert run_id_of(out / name) == r["run_id"], name
    kept = out / "previous-runs" / before["run_id"]
    assert (kept / "runs" / "seed-0" / "stderr.txt").read_text() == "an older study's child"
    children = [json.loads((p / "report.json").read_text()) for p in sorted((out / "runs").iterdir())]
    assert len(children) == 3 and len({c["run_id"] for c in children} | {r["run_id"]}) == 4
    for c, p in zip(children, sorted((out / "runs").iterdir())):
        assert ExampleTable.load(p / "examples.npz").meta["run_id"] == c["run_id"]
    assert run_cli("gate", out / "report.json").exit_code == 0


def test_an_option_typo_creates_no_folder(base, tmp_path):
    """click's own usage errors touch --out only when it exists (then it gets a failure report, above)."""
    res = run_cli("run", base / "sd.pt", "--recipe", base / "recipe.toml", "--out", tmp_path / "new", "--frob")
    _one_line(res, 2, "No such option '--frob'")
    res = run_cli("run", base / "sd.pt", "--frob", cwd=tmp_path)  # the default --out, ./out
    _one_line(res, 2, "No such option '--frob'")
    assert list(tmp_path.iterdir()) == []
