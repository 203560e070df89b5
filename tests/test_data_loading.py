"""Data sources (npz, csv, sklearn, python) and one clear line + exit 2 for every kind of bad data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli

NET = '''
import torch
from torch import nn

def make(d=4, k=3):
    return nn.Linear(d, k)

def load_tuple(n=40):
    rng = torch.Generator().manual_seed(0)
    x = torch.rand(n, 4, generator=rng)
    y = (x[:, 0] * 3).long().clamp(max=2)
    return x, y, {"site": ["a" if i % 3 else "b" for i in range(n)]}

def load_dict(n=40):
    x, y, s = load_tuple(n)
    return {"x": x.numpy(), "y": y.numpy(), "sensitive": s}

class DS(torch.utils.data.Dataset):
    def __init__(self):
        self.x, self.y, self.s = load_tuple(40)
    def __len__(self):
        return 40
    def __getitem__(self, i):
        return self.x[i], int(self.y[i]), {"site": self.s["site"][i]}

def load_dataset():
    return DS()

def load_bad():
    return "nope"
'''

MODEL = '''
[model]
factory = "net.py:make"
num_classes = 3
input_bounds = [0.0, 1.0]

[performance]
bootstrap = 20
bootstrap_ranking = 0
'''


@pytest.fixture()
def env(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    torch.manual_seed(0)
    torch.save(torch.nn.Linear(4, 3).state_dict(), tmp_path / "lin.pt")
    rng = np.random.default_rng(0)
    x = rng.random((50, 4)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    sex = np.array(["f", "m"])[rng.integers(0, 2, 50)]
    np.savez(tmp_path / "data.npz", x=x, y=y, sex=sex)
    return tmp_path, x, y, sex


def _run(tmp_path, data_toml: str, extra_model: str = ""):
    (tmp_path / "r.toml").write_text(MODEL.replace("num_classes = 3", "num_classes = 3" + extra_model) + data_toml)
    return run_cli("run", tmp_path / "lin.pt", "--recipe", tmp_path / "r.toml", "--out", tmp_path / "out", "--quiet")


def _report(tmp_path):
    return json.loads((tmp_path / "out" / "report.json").read_text())


def _err(res, *frags):
    assert res.exit_code == 2, (res.exit_code, res.stderr)
    line = res.stderr.strip()
    assert "\n" not in line and line.startswith("audit: error:"), res.stderr
    for f in frags:
        assert f in line, (f, line)


def test_npz_source_with_sensitive_attribute(env):
    tmp_path, x, y, sex = env
    res = _run(tmp_path, '[data]\nsource = "npz"\npath = "data.npz"\nsensitive = { sex = "sex" }\n')
    assert res.exit_code == 0, res.stderr
    r = _report(tmp_path)
    assert r["data"]["n"] == 50 and r["data"]["sensitive"] == {"sex": ["f", "m"]}
    assert len(r["data"]["sha256"]) == 64 and len(r["data"]["file_sha256"]) == 64
    from audit.engine.table import ExampleTable

    t = ExampleTable.load(tmp_path / "out" / "examples.npz")
    np.testing.assert_array_equal(t["index"], np.arange(50))
    np.testing.assert_array_equal(t["group:sex"], (sex == "m").astype(int))
    # the model saw exactly x: logits equal a direct forward pass
    lin = torch.nn.Linear(4, 3)
    lin.load_state_dict(torch.load(tmp_path / "lin.pt"))
    np.testing.assert_allclose(t["logits"], lin(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-6)


def test_csv_source_categorical_sensitive_and_label_values(tmp_path):
    import pandas as pd

    (tmp_path / "net.py").write_text(NET)
    torch.manual_seed(0)
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "lin.pt")
    df = pd.DataFrame({"a": [0.1, 0.5, 0.9, 0.3], "color": ["red", "blue", "red", "green"],
                       "sex": ["f", "m", "m", "f"], "age": [22, 35, 51, 64], "risk": ["bad", "good", "good", "bad"]})
    df.to_csv(tmp_path / "d.csv", index=False)
    data = ('[data]\nsource = "csv"\npath = "d.csv"\nfeatures = ["a", "color"]\ncategorical = ["color"]\n'
            'label = "risk"\nlabel_values = ["bad", "good"]\nsensitive = ["sex", "age"]\nsensitive_bins = { age = [30, 60] }\n')
    (tmp_path / "r.toml").write_text(MODEL.replace("num_classes = 3", "num_classes = 2").replace(
        'factory = "net.py:make"', 'factory = "net.py:make"\nkwargs = { d = 4, k = 2 }') + data)
    res = run_cli("run", tmp_path / "lin.pt", "--recipe", tmp_path / "r.toml", "--out", tmp_path / "out", "--quiet")
    assert res.exit_code == 0, res.stderr
    r = _report(tmp_path)
    assert r["data"]["sensitive"] == {"sex": ["f", "m"], "age": ["<30", "[30, 60)", ">=60"]}
    from audit.engine.table import ExampleTable

    t = ExampleTable.load(tmp_path / "out" / "examples.npz")
    np.testing.assert_array_equal(t["label"], [0, 1, 1, 0])
    np.testing.assert_array_equal(t["group:age"], [0, 1, 1, 2])
    # the list form reads the categories from the file: the report lists the inputs and says so
    assert r["data"]["encoded_features"] == ["a", "color=blue", "color=green", "color=red"]
    assert r["data"]["categories_from_file"] == {"color": ["blue", "green", "red"]}
    assert "One-hot categories were read from this file" in (tmp_path / "out" / "report.html").read_text()
    check = next(c for c in r["checks"] if c["id"] == "one_hot_categories_pinned")
    assert check["status"] == "warn" and "(color: blue, green, red)" in check["message"]
    assert "one_hot_categories_pinned" in (tmp_path / "out" / "summary.md").read_text()
    # a file that lacks "blue": read from the file, the model gets 3 inputs and the error says why
    df[df.color != "blue"].to_csv(tmp_path / "d.csv", index=False)
    res = run_cli("run", tmp_path / "lin.pt", "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o2", "--quiet")
    assert res.exit_code == 2 and "the model rejects inputs of shape (3,)" in res.stderr
    assert "the csv's one-hot columns come from its own categories (color: 2)" in res.stderr
    # pinned (as in training), the same file gives the model's 4 inputs in the trained order
    pinned = (tmp_path / "r.toml").read_text().replace('categorical = ["color"]\n', "") + \
        'categorical = { color = ["blue", "green", "red"] }\n'
    (tmp_path / "p.toml").write_text(pinned)
    res = run_cli("run", tmp_path / "lin.pt", "--recipe", tmp_path / "p.toml", "--out", tmp_path / "o3", "--quiet")
    assert res.exit_code == 0, res.stderr
    r3 = json.loads((tmp_path / "o3" / "report.json").read_text())
    assert r3["data"]["encoded_features"] == ["a", "color=blue", "color=green", "color=red"]
    assert "categories_from_file" not in r3["data"]
    assert not any(c["id"] == "one_hot_categories_pinned" for c in r3["checks"])
    # and a value outside the pinned categories is an error naming the column, the value and the rows
    df.assign(color=["red", "teal", "red", "green"]).to_csv(tmp_path / "d.csv", index=False)
    res = run_cli("run", tmp_path / "lin.pt", "--recipe", tmp_path / "p.toml", "--out", tmp_path / "o4", "--quiet")
    assert res.exit_code == 2 and "categorical column 'color' has 'teal', which is not one of its" in res.stderr
    assert "1 row" in res.stderr or "row 1" in res.stderr, res.stderr


@pytest.mark.parametrize("fn", ["load_tuple", "load_dict", "load_dataset"])
def test_python_source_shapes(env, fn):
    tmp_path, *_ = env
    res = _run(tmp_path, f'[data]\nsource = "python"\ncallable = "net.py:{fn}"\n')
    assert res.exit_code == 0, res.stderr
    r = _report(tmp_path)
    assert r["data"]["n"] == 40 and r["data"]["sensitive"] == {"site": ["a", "b"]}


def test_sklearn_source_keeps_global_index(tmp_path, digits_checkpoint, digits_recipe):
    res = run_cli("run", digits_checkpoint, "--recipe", digits_recipe, "--out", tmp_path / "out", "--quiet")
    assert res.exit_code == 0, res.stderr
    from audit.engine.table import ExampleTable
    from audit.loading.data import sklearn_split

    t = ExampleTable.load(tmp_path / "out" / "examples.npz")
    _, ytest, idx, _ = sklearn_split("digits", "test", 0.25, 0)
    _, _, idx_train, _ = sklearn_split("digits", "train", 0.25, 0)
    np.testing.assert_array_equal(t["index"], idx)
    assert not set(idx) & set(idx_train) and len(idx) + len(idx_train) == 1797
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal(t["label"], load_digits().target[idx])


def test_bad_data_errors(env):
    tmp_path, x, y, sex = env
    npz = '[data]\nsource = "npz"\npath = "bad.npz"\n'

    def save(**arrays):
        np.savez(tmp_path / "bad.npz", **arrays)

    x_nan = x.copy()
    x_nan[[3, 7, 9]] = np.nan
    save(x=x_nan, y=y)
    _err(_run(tmp_path, npz), "bad.npz", "NaN or Inf", "3 rows", "first: 3, 7, 9")
    save(x=x, y=np.where(np.arange(50) < 2, 5, y))
    _err(_run(tmp_path, npz), "labels outside [0, 3)", "2 rows")
    save(x=x[:0], y=y[:0])
    _err(_run(tmp_path, npz), "empty")
    save(x=x * 2, y=y)
    _err(_run(tmp_path, npz), "outside [model] input_bounds")
    save(x=np.random.rand(50, 5).astype(np.float32), y=y)
    _err(_run(tmp_path, npz), "model rejects inputs of shape (5,)")
    save(x=x, y=y, sex=sex[:10])
    _err(_run(tmp_path, npz + 'sensitive = { sex = "sex" }\n'), "sensitive attribute 'sex' has 10 values", "50 rows")
    save(x=x, y=y)
    _err(_run(tmp_path, npz.replace('path = "bad.npz"', 'path = "bad.npz"\nx = "features"')), "no array 'features'",
         "arrays: x, y")
    save(x=x, y=y.astype(float) + 0.5)
    _err(_run(tmp_path, npz), "labels must be integers")
    save(x=x, y=y)
    _err(_run(tmp_path, npz.replace("bad.npz", "nowhere.npz")), "nowhere.npz", "not found")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    _err(_run(tmp_path, npz.replace("bad.npz", "junk.npz")), "not a readable .npz")
    save(x=x, y=y)
    _err(_run(tmp_path, npz, extra_model="\ninput_shape = [2, 3]"), "cannot be reshaped", "input_shape = [2, 3]")


def test_bad_csv_and_python_errors(env):
    tmp_path, *_ = env
    (tmp_path / "d.csv").write_text("a,b,c,d,label\n0.1,0.2,x,0.4,1\n0.1,0.2,0.3,0.4,2\n")
    csv = '[data]\nsource = "csv"\npath = "d.csv"\nfeatures = ["a", "b", "c", "d"]\nlabel = "label"\n'
    _err(_run(tmp_path, csv), "feature column 'c' is not numeric", "1 row", "categorical")
    _err(_run(tmp_path, csv.replace('"d"]', '"dd"]')), "no column 'dd'", "did you mean 'd'")
    _err(_run(tmp_path, '[data]\nsource = "python"\ncallable = "net.py:load_bad"\n'), "returned str")


def test_model_output_shape_mismatch(env):
    tmp_path, *_ = env
    res = _run(tmp_path, '[data]\nsource = "npz"\npath = "data.npz"\n', extra_model="")
    assert res.exit_code == 0
    (tmp_path / "r.toml").write_text(MODEL.replace("num_classes = 3", "num_classes = 4")
                                     + '[data]\nsource = "npz"\npath = "data.npz"\n')
    res = run_cli("run", tmp_path / "lin.pt", "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o", "--quiet")
    _err(res, "outputs of shape (2, 3)", "expected (2, 4)", "num_classes = 4")


def test_sensitive_and_normalisation_shape_errors(env):
    tmp_path, x, y, sex = env
    np.savez(tmp_path / "bad.npz", x=x, y=y, sex=np.stack([sex, sex], axis=1))
    _err(_run(tmp_path, '[data]\nsource = "npz"\npath = "bad.npz"\nsensitive = { sex = "sex" }\n'),
         "sensitive attribute 'sex' must hold one value per example (1-D)", "(50, 2)")
    res = _run(tmp_path, '[data]\nsource = "npz"\npath = "data.npz"\n', extra_model="\nmean = [0.5, 0.5]\nstd = [1.0, 1.0]")
    _err(res, "[model] mean has 2 values but the inputs have 4 along dimension 1")
