"""Checkpoint formats, the trust boundary, and one clear line + exit 2 for every bad checkpoint."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from conftest import DIGITS_DATA, DIGITS_MODEL, assert_failed_run, run_cli

RECIPE = DIGITS_MODEL + DIGITS_DATA + "\n[performance]\nbootstrap = 50\nbootstrap_ranking = 0\n"


@pytest.fixture()
def recipe(write_recipe):
    return write_recipe(RECIPE)


@pytest.fixture(scope="module")
def digits_net(digits_checkpoint):
    from safetensors.torch import load_file

    from examples.digits.model import DigitsCNN

    net = DigitsCNN()
    net.load_state_dict(load_file(str(digits_checkpoint)))
    return net.eval()


def _assert_user_error(res, *fragments: str) -> None:
    assert res.exit_code == 2, (res.exit_code, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr  # one line, never a traceback
    assert lines[0].startswith("audit: error: ")
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert "Traceback" not in res.stderr


def _accuracy(out: Path) -> float:
    r = json.loads((out / "report.json").read_text())
    return next(m["value"] for m in r["metrics"] if m["name"] == "accuracy" and not m["params"])


def test_state_dict_training_checkpoint_and_safetensors_agree(tmp_path, recipe, digits_net, digits_checkpoint):
    sd_path = tmp_path / "sd.pt"
    torch.save(digits_net.state_dict(), sd_path)
    ckpt_path = tmp_path / "ckpt.pt"
    opt = torch.optim.Adam(digits_net.parameters())
    torch.save({"model_state_dict": digits_net.state_dict(), "optimizer_state_dict": opt.state_dict(),
                "epoch": 12, "rng_state": torch.get_rng_state()}, ckpt_path)
    ddp_path = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in digits_net.state_dict().items()}, ddp_path)
    nested_path = tmp_path / "compiled_ddp.pt"  # torch.compile(DataParallel(net)).state_dict()
    torch.save({f"_orig_mod.module.{k}": v for k, v in digits_net.state_dict().items()}, nested_path)
    accs = {}
    for name, path in (("sd", sd_path), ("ckpt", ckpt_path), ("st", digits_checkpoint), ("ddp", ddp_path),
                       ("nested", nested_path)):
        res = run_cli("run", path, "--recipe", recipe, "--out", tmp_path / name, "--quiet")
        assert res.exit_code == 0, res.stderr
        accs[name] = _accuracy(tmp_path / name)
        report = json.loads((tmp_path / name / "report.json").read_text())
        assert report["model"]["sha256"] and len(report["model"]["sha256"]) == 64
        assert report["model"]["trusted_load"] is False
    assert len(set(accs.values())) == 1, accs
    r = json.loads((tmp_path / "ckpt" / "report.json").read_text())
    assert r["model"]["format"] == "training_checkpoint"
    assert r["model"]["checkpoint_extras"]["epoch"] == 12
    assert json.loads((tmp_path / "st" / "report.json").read_text())["model"]["format"] == "safetensors"
    assert any("module." in n for n in json.loads((tmp_path / "ddp" / "report.json").read_text())["model"]["notes"])
    notes = json.loads((tmp_path / "nested" / "report.json").read_text())["model"]["notes"]
    assert [n for n in notes if n.startswith("Stripped")] == [
        "Stripped the '_orig_mod.' prefix from every key (saved from a wrapped model).",
        "Stripped the 'module.' prefix from every key (saved from a wrapped model)."]


def test_torchscript_needs_trust(tmp_path, recipe, digits_net):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(digits_net), str(path))
    res = run_cli("run", path, "--recipe", recipe, "--out", tmp_path / "o1", "--quiet")
    _assert_user_error(res, str(path), "TorchScript", "--trust-checkpoint")
    assert_failed_run(tmp_path / "o1", 2)  # never a result from a refused load
    res = run_cli("run", path, "--recipe", recipe, "--out", tmp_path / "o2", "--quiet", "--trust-checkpoint")
    assert res.exit_code == 0, res.stderr
    report = json.loads((tmp_path / "o2" / "report.json").read_text())
    assert report["model"]["format"] == "torchscript" and report["model"]["trusted_load"] is True
    assert any(c["id"] == "trusted_checkpoint" and c["status"] == "warn" for c in report["checks"])
    html = (tmp_path / "o2" / "report.html").read_text()
    assert "loaded with --trust-checkpoint" in html and 'class="alert"' in html


def test_torch_export_needs_trust(tmp_path, recipe, digits_net):
    path = tmp_path / "exported.pt2"
    ep = torch.export.export(digits_net, (torch.rand(2, 1, 8, 8),),
                             dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    torch.export.save(ep, str(path))
    res = run_cli("run", path, "--recipe", recipe, "--out", tmp_path / "o1", "--quiet")
    _assert_user_error(res, "torch.export", "--trust-checkpoint")
    res = run_cli("run", path, "--recipe", recipe, "--out", tmp_path / "o2", "--quiet", "--trust-checkpoint")
    assert res.exit_code == 0, res.stderr
    assert json.loads((tmp_path / "o2" / "report.json").read_text())["model"]["format"] == "torch_export"


class _Payload:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch_save", "raw_pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, recipe, writer):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    obj = {"model_state_dict": {"w": torch.zeros(1)}, "hook": _Payload(marker)}
    if writer == "torch_save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))
    res = run_cli("run", path, "--recipe", recipe, "--out", tmp_path / "o", "--quiet")
    _assert_user_error(res, "refused", "system", "arbitrary code", "--trust-checkpoint")
    assert not marker.exists(), "the payload ran"
    assert_failed_run(tmp_path / "o", 2)


def test_pickled_module_needs_trust(tmp_path, recipe, digits_net):
    path = tmp_path / "whole.pt"
    torch.save(digits_net, path)
    res = run_cli("run", path, "--recipe", recipe, "--out", tmp_path / "o", "--quiet")
    _assert_user_error(res, "refused", "DigitsCNN", "--trust-checkpoint")
    res = run_cli("run", path, "--recipe", recipe, "--out", tmp_path / "o2", "--quiet", "--trust-checkpoint")
    assert res.exit_code == 0, res.stderr
    report = json.loads((tmp_path / "o2" / "report.json").read_text())
    assert report["model"]["format"] == "pickle" and report["model"]["trusted_load"]


def test_corrupt_truncated_and_empty_files(tmp_path, recipe, digits_net, digits_checkpoint):
    good = tmp_path / "good.pt"
    torch.save(digits_net.state_dict(), good)
    data = good.read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "garbage.pt": b"this is not a checkpoint at all" * 10,
        "empty.pt": b"",
        "truncated.safetensors": digits_checkpoint.read_bytes()[:300],
    }
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        res = run_cli("run", p, "--recipe", recipe, "--out", tmp_path / "o", "--quiet")
        _assert_user_error(res, str(p))
    res = run_cli("run", tmp_path / "missing.pt", "--recipe", recipe, "--out", tmp_path / "o", "--quiet")
    _assert_user_error(res, "missing.pt", "not found")


def test_missing_unexpected_keys_and_shape_mismatch(tmp_path, recipe, digits_net, write_recipe):
    sd = digits_net.state_dict()
    missing = {k: v for k, v in sd.items() if not k.startswith("head.3")}
    torch.save(missing, tmp_path / "missing.pt")
    res = run_cli("run", tmp_path / "missing.pt", "--recipe", recipe, "--out", tmp_path / "o", "--quiet")
    _assert_user_error(res, "missing keys", "head.3.weight")
    extra = dict(sd, **{"extra.bias": torch.zeros(3)})
    torch.save(extra, tmp_path / "extra.pt")
    res = run_cli("run", tmp_path / "extra.pt", "--recipe", recipe, "--out", tmp_path / "o", "--quiet")
    _assert_user_error(res, "unexpected keys", "extra.bias")
    wide = write_recipe(RECIPE.replace('num_classes = 10', 'num_classes = 10\nkwargs = { width = 8 }'), "wide.toml")
    torch.save(sd, tmp_path / "sd.pt")
    res = run_cli("run", tmp_path / "sd.pt", "--recipe", wide, "--out", tmp_path / "o", "--quiet")
    _assert_user_error(res, "shape mismatch", "features.0.weight")


def test_factory_errors(tmp_path, write_recipe, digits_checkpoint):
    for factory, fragment in (('"nosuchmodule_xyz:Net"', "cannot import module"),
                              (f'"{Path(__file__).parent.parent}/examples/digits/model.py:Nope"', "has no attribute"),
                              ('"missing_file.py:Net"', "not found")):
        r = write_recipe(RECIPE.replace(
            f'factory = "{Path(__file__).parent.parent / "examples" / "digits" / "model.py"}:DigitsCNN"',
            f"factory = {factory}"))
        res = run_cli("run", digits_checkpoint, "--recipe", r, "--out", tmp_path / "o", "--quiet")
        _assert_user_error(res, "[model] factory", fragment)
    r = write_recipe(RECIPE.replace("num_classes = 10", "num_classes = 10\nkwargs = { nonsense = 1 }"))
    res = run_cli("run", digits_checkpoint, "--recipe", r, "--out", tmp_path / "o", "--quiet")
    _assert_user_error(res, "raised TypeError", "nonsense")
