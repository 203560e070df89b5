"""Load a checkpoint into a torch.nn.Module, safely.

Safe by default: state_dicts and training checkpoints are read with ``torch.load(weights_only=True)``,
safetensors with safetensors. Anything that can run code when loaded (a pickle that needs
``weights_only=False``, TorchScript, torch.export ``.pt2`` archives) is loaded only with
``trust=True`` (``--trust-checkpoint``), and the report marks it. There is no silent fallback.
"""

from __future__ import annotations

import pickle
import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import CheckpointError, RecipeError
from audit.loading.hashing import sha256_file
from audit.loading.imports import import_callable

# Keys under which training checkpoints commonly keep the weights, in order of preference.
STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model", "net", "weights")
# Prefixes added by DataParallel/DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

UNSAFE_FORMATS = {"pickle", "torchscript", "torch_export"}


@dataclass
class LoadedModel:
    module: Any  # torch.nn.Module
    format: str  # state_dict | training_checkpoint | safetensors | pickle | torchscript | torch_export
    sha256: str
    path: str
    trusted: bool = False  # loaded with --trust-checkpoint (code could have run)
    notes: list[str] = field(default_factory=list)
    checkpoint_extras: dict[str, Any] = field(default_factory=dict)
    module_class: str | None = None  # an in-memory module (audit.run): its class, as provenance

    def to_json(self) -> dict[str, Any]:
        extra = {"source": "memory", "class": self.module_class} if self.module_class else {}
        return {**extra,
            "path": self.path,
            "format": self.format,
            "sha256": self.sha256,
            "trusted_load": self.trusted,
            "unsafe_format": self.format in UNSAFE_FORMATS,
            "notes": self.notes,
            "checkpoint_extras": self.checkpoint_extras,
            "num_parameters": int(sum(p.numel() for p in self.module.parameters())),
        }


def detect_format(path: Path) -> str:
    """safetensors | torch_zip | torchscript | torch_export | legacy_pickle | unknown (by content, not name)."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if len(head) == 0:
        return "empty"
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return "corrupt_zip"
        tails = {n.split("/", 1)[1] if "/" in n else n for n in names}
        if "archive_format" in tails or any(t.startswith("models/") for t in tails):
            return "torch_export"
        if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
            return "torchscript"
        if "data.pkl" in tails:
            return "torch_zip"
        return "unknown_zip"
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header length, then the JSON header
        return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol opcode: torch's legacy format or a raw pickle
        return "legacy_pickle"
    if path.suffix == ".safetensors":
        return "safetensors"
    return "unknown"


def verify_zip(path: Path) -> None:
    """Check the CRC-32 of every entry of a zip checkpoint before anything is loaded from it.

    torch.save writes a zip whose entries carry CRC-32 checksums, but torch.load never checks them: a file
    damaged in transfer or storage loads, with garbage weights, and audits "fine". Reading every entry once
    (the SHA-256 pass reads the file anyway) catches that, and names the damaged entry (data/3 is the fourth
    tensor's storage)."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                try:
                    with zf.open(info) as fh:
                        while fh.read(1 << 20):
                            pass
                except zipfile.BadZipFile as e:
                    if "CRC" in str(e):
                        raise CheckpointError(
                            f"{path}: corrupt checkpoint: entry {info.filename!r} fails its CRC-32 check (the file "
                            "was damaged after it was saved); copy it again or re-save it") from None
                    raise CheckpointError(f"{path}: corrupt checkpoint: entry {info.filename!r} cannot be read "
                                          f"({_first_line(e)}); copy it again or re-save it") from None
                except (OSError, EOFError, NotImplementedError, RuntimeError, ValueError) as e:
                    raise CheckpointError(f"{path}: corrupt checkpoint: entry {info.filename!r} cannot be read "
                                          f"({type(e).__name__}: {_first_line(e)}); copy it again or re-save it") from None
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (a damaged or truncated zip archive: "
                              f"{_first_line(e)}); save it again with torch.save or safetensors") from None


def _pickle_globals(path: Path, limit: int = 1 << 26) -> list[str]:
    """The globals a raw pickle would import, found by reading opcodes only (nothing is executed)."""
    data = path.read_bytes()[:limit]
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINSTRING", "SHORT_BINSTRING"):
                strings.append(str(arg))
            elif op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:
        pass  # a truncated pickle: report what was seen
    return sorted(set(found))


def _refuse(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: refused: {what}. Loading it could run arbitrary code. If you trust where it came from, "
        "pass --trust-checkpoint (the report will flag it); better, re-save it as a state_dict "
        "(torch.save(model.state_dict(), ...)) or as safetensors and name its architecture in [model] factory."
    )


def load_checkpoint(path: str | Path, model_cfg: dict[str, Any], recipe_dir: Path, recipe_path: Path,
                    trust: bool = False) -> LoadedModel:
    """Load ``path`` as the recipe's model section describes. Raises CheckpointError (exit 2) on anything
    unsafe, unreadable or mismatched, with one line that says what to do."""
    import torch

    path = Path(path)
    from audit.loading.files import require_file

    require_file(path, "checkpoint file", CheckpointError)
    digest = sha256_file(path)
    fmt = detect_format(path)

    if fmt == "empty":
        raise CheckpointError(f"{path}: the file is empty")
    if fmt == "corrupt_zip":
        raise CheckpointError(f"{path}: not a readable checkpoint (a damaged or truncated zip archive); "
                              "save it again with torch.save or safetensors")
    if fmt == "unknown_zip":
        raise CheckpointError(f"{path}: a zip archive but not a torch.save checkpoint (no data.pkl entry); "
                              "save the weights with torch.save(model.state_dict(), ...) or safetensors")
    if fmt == "unknown":
        raise CheckpointError(f"{path}: unrecognised checkpoint format: expected a torch.save file, "
                              "safetensors, TorchScript or a torch.export .pt2 archive")
    if path.suffix.lower() == ".safetensors" and fmt != "safetensors":
        # torch.load itself dispatches on this suffix; and a pickle dressed as safetensors is how a payload
        # would hide: never guess, say what the file is
        what = {"torch_zip": "a torch.save zip archive", "legacy_pickle": "a pickle (torch's legacy format or a raw "
                "pickle)", "torchscript": "a TorchScript archive", "torch_export": "a torch.export archive"}[fmt]
        raise CheckpointError(f"{path}: named .safetensors but holds {what}, not safetensors; rename it to what it "
                              "is (.pt) or save the weights with safetensors.torch.save_file")
    if fmt in ("torch_zip", "torchscript", "torch_export"):
        verify_zip(path)

    if fmt in ("torchscript", "torch_export"):
        kind = "a TorchScript archive" if fmt == "torchscript" else "a torch.export (.pt2) archive"
        if not trust:
            raise _refuse(path, f"{kind} carries code that runs when loaded")
        try:
            if fmt == "torchscript":
                module = torch.jit.load(str(path), map_location="cpu")
            else:
                module = torch.export.load(str(path)).module()
        except Exception as e:
            raise CheckpointError(f"{path}: cannot load {kind}: {type(e).__name__}: {_first_line(e)}") from e
        return LoadedModel(module, fmt, digest, str(path), trusted=True,
                           notes=[f"Loaded {kind} with --trust-checkpoint: its code ran on this machine."])

    factory_where = f"{recipe_path}: [model] factory"

    if fmt == "safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: an unreadable file
            raise CheckpointError(f"{path}: not a readable safetensors file: {_first_line(e)}") from e
        module = _build(model_cfg, recipe_dir, factory_where, path)
        notes = _load_state_dict(module, sd, path)
        return LoadedModel(module, "safetensors", digest, str(path), notes=notes)

    # torch.save output (zip or legacy): weights_only first, always.
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
        trusted = False
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CheckpointError(f"{path}: not a readable checkpoint: {_first_line(e)}") from e
        if fmt == "torch_zip":
            try:
                unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            except Exception:
                unsafe = []
        else:
            unsafe = _pickle_globals(path)
        what = "it is a pickle that needs globals outside torch's weights-only allow-list"
        # Name the most telling globals first: user code and os/subprocess rather than torch internals.
        unsafe = sorted(unsafe, key=lambda g: (g.startswith(("torch.", "collections.", "builtins.")), g))
        if unsafe:
            shown = ", ".join(unsafe[:4]) + (f" (+{len(unsafe) - 4} more)" if len(unsafe) > 4 else "")
            what = f"unpickling it would import {shown}, outside torch's weights-only allow-list"
        if not trust:
            raise _refuse(path, what) from None
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as e2:
            raise CheckpointError(f"{path}: cannot load even with --trust-checkpoint: "
                                  f"{type(e2).__name__}: {_first_line(e2)}") from e2
        trusted = True
    except Exception as e:  # noqa: BLE001 - whatever a weights-only load of a damaged file raises: unreadable
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated?): "
                              f"{type(e).__name__}: {_first_line(e)}") from e

    notes: list[str] = []
    if trusted:
        notes.append("Loaded with weights_only=False under --trust-checkpoint: unpickling could run code.")
    if isinstance(obj, torch.nn.Module):
        if not trusted:  # cannot happen (a Module needs weights_only=False), kept for clarity
            raise _refuse(path, "it is a pickled nn.Module")
        obj.to("cpu")
        return LoadedModel(obj, "pickle", digest, str(path), trusted=True, notes=notes)
    sd, fmt_name, extras = _extract_state_dict(obj, path)
    module = _build(model_cfg, recipe_dir, factory_where, path)
    notes += _load_state_dict(module, sd, path)
    return LoadedModel(module, "pickle" if trusted else fmt_name, digest, str(path), trusted=trusted, notes=notes,
                       checkpoint_extras=extras)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _is_tensor_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _extract_state_dict(obj: Any, path: Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """A plain state_dict, or the weights inside a training checkpoint (with a summary of the rest)."""
    if _is_tensor_dict(obj):
        return obj, "state_dict", {}
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if key in obj and _is_tensor_dict(obj[key]):
                extras = {k: _summarise(v) for k, v in obj.items() if k != key}
                return obj[key], "training_checkpoint", extras
        keys = ", ".join(map(str, list(obj)[:8]))
        raise CheckpointError(f"{path}: a dict without weights: expected a state_dict or a training checkpoint "
                              f"with one of the keys {', '.join(STATE_DICT_KEYS)}; found keys: {keys}")
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict or training checkpoint")


def _summarise(v: Any) -> Any:
    """What a training checkpoint holds beside the weights, for the report (never the values of tensors)."""
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return f"dict with {len(v)} keys"
    return type(v).__name__


def _build(model_cfg: dict[str, Any], recipe_dir: Path, where: str, path: Path) -> Any:
    import torch

    if model_cfg.get("factory") is None:
        raise RecipeError(f"{where}: missing: {path} holds weights only, so the recipe must name the "
                          "architecture as factory = \"module:callable\"")
    factory = import_callable(model_cfg["factory"], recipe_dir, where)
    try:
        module = factory(**model_cfg.get("kwargs", {}))
    except Exception as e:
        raise RecipeError(f"{where} = {model_cfg['factory']!r} raised {type(e).__name__}: {_first_line(e)} "
                          f"(kwargs: {model_cfg.get('kwargs', {})})") from e
    if not isinstance(module, torch.nn.Module):
        raise RecipeError(f"{where} = {model_cfg['factory']!r} returned {type(module).__name__}, "
                          "expected a torch.nn.Module")
    return module


def _listing(items: list[str], k: int = 3) -> str:
    return ", ".join(items[:k]) + (f" (+{len(items) - k} more)" if len(items) > k else "")


def _load_state_dict(module: Any, sd: dict[str, Any], path: Path) -> list[str]:
    notes = []
    # Wrappers nest (torch.compile of DataParallel saves "_orig_mod.module."): strip until none is left,
    # but never from keys the architecture itself has (a model with a `module` attribute).
    expected = module.state_dict()
    expected_keys = set(expected)
    stripped = True
    while stripped and set(sd) != expected_keys:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                notes.append(f"Stripped the {prefix!r} prefix from every key (saved from a wrapped model).")
                stripped = True
                break  # re-check against the architecture before stripping more
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_listing(unexpected)}")
        raise CheckpointError(f"{path}: does not fit the factory's architecture: {'; '.join(parts)}. "
                              "Check [model] factory and kwargs")
    mismatched = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if tuple(sd[k].shape) != tuple(v.shape)]
    if mismatched:
        raise CheckpointError(f"{path}: shape mismatch (checkpoint vs architecture): {_listing(mismatched, 2)}. "
                              "Check [model] kwargs")
    module.load_state_dict(sd, strict=True)
    return notes
