"""The tabular threat model: perturbations in the units the user declares, with frozen columns.

On images every input value has the same unit (a pixel in [0, 1]), so eps means the same thing everywhere.
On tabular data it does not: eps = 0.05 is nothing on a credit amount of 5,000 and a lot on a one-hot
column, and some columns must not move at all (one-hot indicators, immutable facts such as age, the
sensitive attributes). ``[robustness] feature_scale``, ``immutable`` and ``perturb_sensitive`` declare
that; this module turns them into one vector ``scale`` (one value per input feature) used by every
attack and every noise kind:

- a perturbation of feature j is delta_j = scale_j * u_j, and eps bounds the norm of u (the perturbation
  in declared units): Linf ``max_j |delta_j| / scale_j <= eps``, i.e. each feature moves by at most
  eps * scale_j; L2 ``sqrt(sum_j (delta_j / scale_j)^2) <= eps`` over the perturbed features;
- scale_j = 0 freezes feature j: delta_j = 0 exactly, in the attacks' steps and projections (the Linf box
  of feature j is [x_j, x_j]; L2 steps and projections multiply by the mask), in the random starts, in
  every noise kind (gaussian and uniform add level * scale_j * z_j; salt-and-pepper never hits a frozen
  value) and in the random-perturbation baseline;
- noise levels are in the same units: gaussian noise of level 0.1 with feature_scale = "std" adds 0.1
  standard deviations of each feature.

Frozen by default: the one-hot columns the csv loader made from ``[data] categorical`` (a step of 0.05 on
an indicator is not an input any row could have), and the sensitive attributes that are also features
(an attack that changes a person's age or sex to change the decision is a fairness finding, not a
robustness one; ``perturb_sensitive = true`` lets them move). A scale of 0 from the data (a constant
column with feature_scale = "std" or "range") freezes that column too.

Where this cannot be honoured: torchattacks' APGD/FAB/Square (AutoAttack, and the reference attack of
``reference_attack_agrees``) work in a box with one eps for every value; a per-feature scale or a frozen
column is not a box of that kind. AutoAttack already refuses flat (tabular) inputs; the reference check
is skipped with a warning that says why. ``large_eps_reaches_chance`` is skipped when columns are frozen:
a model can still classify from a column no attack may touch, so chance is not reachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCALE_SOURCES = ("std", "range")
# feature_scale absent: warn that eps is in raw units when the perturbed features' spreads differ by more
# than this factor (max std / min std)
RAW_UNITS_RATIO = 10.0


@dataclass
class FeatureThreat:
    """The resolved threat model of flat (N, F) inputs. ``scale[j] == 0``: feature j is never perturbed."""

    scale: np.ndarray  # (F,) float32
    names: list[str]
    source: str  # "std" | "range" | "given" | "raw" (no feature_scale: every perturbed feature has scale 1)
    frozen: dict[str, list[str]] = field(default_factory=dict)  # why -> feature names

    @property
    def mask(self) -> np.ndarray:
        return self.scale > 0

    def n_frozen(self) -> int:
        return int((~self.mask).sum())

    def units(self) -> str:
        return {"std": "standard deviations of each feature (over the evaluated data)",
                "range": "the range (max - min) of each feature (over the evaluated data)",
                "given": "the per-feature scale given in [robustness] feature_scale",
                "raw": "raw feature units (no [robustness] feature_scale)"}[self.source]

    def summary(self) -> str:
        """One sentence for the report: the units of eps and noise levels, and what was never perturbed."""
        s = f"Tabular threat model: eps and noise levels are in {self.units()}"
        if self.source != "raw":
            s += ": under Linf feature j moves by at most eps x scale_j, under L2 sqrt(sum_j (delta_j / scale_j)^2) <= eps"
        frozen = self.frozen_brief()
        s += f". Never perturbed: {frozen}." if frozen else ". Every feature may be perturbed."
        return s

    def frozen_brief(self) -> str:
        """The frozen features in a few words: one-hot columns by their categorical column ("housing=* (3)"),
        the others by name; the full list is in ``frozen``."""
        parts = []
        for why, names in self.frozen.items():
            shown: dict[str, int] = {}
            for n in names:
                key = f"{n.split('=', 1)[0]}=*" if why == "one-hot" and "=" in n else n
                shown[key] = shown.get(key, 0) + 1
            parts.append(f"{why}: " + ", ".join(k if c == 1 and not k.endswith("=*") else f"{k} ({c})"
                                               for k, c in shown.items()))
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"units": self.source, "units_text": self.units(),
                "scale": {n: float(v) for n, v in zip(self.names, self.scale)},
                "frozen": {k: list(v) for k, v in self.frozen.items()}, "summary": self.summary()}

    def rounding_scale(self, absmax: np.ndarray) -> float:
        """The float32 rounding scale of a measured perturbation in declared units: max_j max(1, |x_j|) /
        scale_j over the perturbed features (x + delta - x rounds at |x_j| * 2^-24, divided by scale_j)."""
        m = self.mask
        return float(np.max(np.maximum(1.0, absmax[m]) / self.scale[m])) if m.any() else 1.0

    def torch_scale(self, device: Any) -> Any:
        import torch

        return torch.from_numpy(self.scale.astype(np.float32)).to(device)


def feature_facts(cfg_data: dict[str, Any], x: np.ndarray, names: list[str] | None, meta: dict[str, Any]
                  ) -> dict[str, Any] | None:
    """What the threat model needs to know about flat data (None for other shapes): feature names, which
    came from a one-hot encoding, which are sensitive attributes, and per-feature std and range."""
    if x.ndim != 2:
        return None
    f = x.shape[1]
    names = list(names) if names is not None and len(names) == f else [str(j) for j in range(f)]
    one_hot = [n for n in meta.get("one_hot_features", [])]
    sens = []
    if cfg_data.get("source") == "csv":
        feats = set(cfg_data.get("features") or [])
        sens = [c for c in (cfg_data.get("sensitive") or []) if c in feats]
    x64 = x.astype(np.float64) if len(x) else np.zeros((1, f))
    return {"names": names, "one_hot": one_hot,
            "one_hot_of": {c: [n for n in names if n.startswith(f"{c}=")] for c in cfg_data.get("categorical") or []},
            "sensitive": sens, "std": x64.std(axis=0), "range": x64.max(axis=0) - x64.min(axis=0),
            "absmax": np.abs(x64).max(axis=0)}


def resolve(cfg: dict[str, Any], ff: dict[str, Any] | None, input_shape: tuple[int, ...]) -> FeatureThreat | None:
    """The threat model of [robustness] ``cfg`` on data with feature facts ``ff`` (None: not flat data).
    Raises ValueError with the recipe problem in words (the suite prefixes the file and section). Returns
    None when nothing is scaled or frozen (images; tabular data without one-hot, immutable or sensitive
    features and without feature_scale): the attacks then run exactly as on images."""
    given_scale, immutable = cfg.get("feature_scale"), list(cfg.get("immutable") or [])
    if ff is None:
        if given_scale is not None or immutable:
            key = "feature_scale" if given_scale is not None else "immutable"
            raise ValueError(f"{key} is for flat (tabular) inputs of shape (N, F); the data has examples of shape "
                             f"{list(input_shape)}")
        return None
    names: list[str] = ff["names"]
    f = len(names)
    frozen: dict[str, list[str]] = {}
    mask = np.ones(f, dtype=bool)

    def freeze(why: str, cols: list[int]) -> None:
        new = [names[j] for j in cols if mask[j]]
        mask[cols] = False
        if new:
            frozen.setdefault(why, []).extend(new)

    pos = {n: j for j, n in enumerate(names)}
    freeze("one-hot", [pos[n] for n in ff["one_hot"] if n in pos])
    for item in immutable:
        freeze("immutable", _columns(item, names, ff["one_hot_of"], "immutable"))
    if not cfg.get("perturb_sensitive", False):
        for c in ff["sensitive"]:
            freeze("sensitive (perturb_sensitive = false)", _columns(c, names, ff["one_hot_of"], "sensitive"))
    if given_scale is None:
        scale = np.ones(f)
        source = "raw"
    elif isinstance(given_scale, str):
        scale = np.asarray(ff[given_scale], dtype=np.float64).copy()
        source = given_scale
    elif isinstance(given_scale, list):
        if len(given_scale) != f:
            raise ValueError(f"feature_scale has {len(given_scale)} values but the data has {f} features "
                             f"({', '.join(names)}); give one per feature (one-hot columns' values are ignored), a "
                             "table by column name, or \"std\"")
        scale = np.asarray(given_scale, dtype=np.float64)
        source = "given"
    else:
        scale = np.full(f, np.nan)
        for key, v in given_scale.items():
            for j in _columns(key, names, ff["one_hot_of"], "feature_scale"):
                scale[j] = v
        missing = [names[j] for j in range(f) if mask[j] and not np.isfinite(scale[j])]
        if missing:
            raise ValueError(f"feature_scale has no value for {', '.join(repr(m) for m in missing)}: give every "
                             "perturbed feature a scale (one-hot, immutable and sensitive columns need none)")
        source = "given"
    if source in SCALE_SOURCES:
        freeze(f"constant in the data (feature_scale = {source!r} is 0)",
               [j for j in range(f) if mask[j] and not scale[j] > 0])
    scale = np.where(mask, np.nan_to_num(scale, nan=0.0), 0.0).astype(np.float32)
    if not mask.any():
        raise ValueError("every feature is frozen (one-hot, immutable or sensitive): nothing is left to perturb; "
                         "remove columns from immutable or set perturb_sensitive = true")
    if source == "raw" and not frozen:
        return None
    return FeatureThreat(scale=scale, names=names, source=source, frozen=frozen)


def _columns(item: Any, names: list[str], one_hot_of: dict[str, list[str]], key: str) -> list[int]:
    """Positions of a column named in the recipe: an input feature's name, a categorical column's name (all
    its one-hot columns), or an integer index."""
    if isinstance(item, int) and not isinstance(item, bool):
        if not 0 <= item < len(names):
            raise ValueError(f"{key}: index {item} is out of range (the data has {len(names)} features, 0..{len(names) - 1})")
        return [item]
    if item in one_hot_of:
        return [names.index(n) for n in one_hot_of[item]]
    if item in names:
        return [names.index(item)]
    from audit.recipe.fields import suggest

    raise ValueError(f"{key}: no feature {item!r} {suggest(str(item), names + list(one_hot_of))}")


def raw_units_ratio(ff: dict[str, Any] | None, threat: FeatureThreat | None) -> tuple[float, str, str] | None:
    """(max std / min std, the widest and the narrowest feature) over the perturbed features of flat data
    audited without feature_scale; None when that does not apply."""
    if ff is None or (threat is not None and threat.source != "raw"):
        return None
    mask = threat.mask if threat is not None else np.ones(len(ff["names"]), dtype=bool)
    std = np.where(mask, ff["std"], np.nan)
    ok = np.isfinite(std) & (std > 0)
    if ok.sum() < 2:
        return None
    hi, lo = int(np.nanargmax(np.where(ok, std, np.nan))), int(np.nanargmin(np.where(ok, std, np.nan)))
    return float(std[hi] / std[lo]), ff["names"][hi], ff["names"][lo]
