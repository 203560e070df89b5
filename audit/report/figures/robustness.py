"""Figures of the robustness section: accuracy vs epsilon (one plot per norm: each attack and the worst
case, with bootstrap bands) and accuracy vs noise level (one plot per noise kind). Report data only."""

from __future__ import annotations

from typing import Any

from audit.report.plots import line_svg

_NOISE_X = {"gaussian": "noise std", "uniform": "noise half-width", "salt_pepper": "fraction of values replaced"}


def figures(report: dict[str, Any]) -> dict[str, str]:
    s = report["suites"]["robustness"]
    out: dict[str, str] = {}
    for cur in s["curves"].get("accuracy_vs_eps", []):
        xs = [0.0] + list(cur["eps"])
        ys = {k: [cur["clean"]] + list(v) for k, v in cur["series"].items()}
        bands = {k: ([cur["clean"]] + list(cur["ci_low"][k]), [cur["clean"]] + list(cur["ci_high"][k]))
                 for k in cur["series"] if k == "worst case"}
        out[f"eps_{cur['norm']}"] = line_svg(
            xs, ys, f"eps ({cur['norm']})", "accuracy",
            f"Robust accuracy vs eps ({cur['norm']}); eps 0 = clean; band: 95% interval", f"rob-eps-{cur['norm']}",
            bands=bands, styles=_eps_styles(list(cur["series"])))
    for cur in s["curves"].get("accuracy_vs_noise", []):
        xs = [0.0] + list(cur["levels"])
        ys = {cur["noise"]: [cur["clean"]] + list(cur["accuracy"])}
        bands = {cur["noise"]: ([cur["clean"]] + list(cur["ci_low"]), [cur["clean"]] + list(cur["ci_high"]))}
        out[f"noise_{cur['noise']}"] = line_svg(
            xs, ys, _NOISE_X.get(cur["noise"], "level"), "accuracy",
            f"Accuracy vs {cur['noise'].replace('_', '-')} noise; band: 95% interval", f"rob-noise-{cur['noise']}",
            bands=bands)
    return out


def _eps_styles(series: list[str]) -> dict[str, dict[str, object]]:
    """The worst case is the per-example minimum over the attacks, so it often equals one of them (PGD): it
    is drawn first as a wide pale line, the attacks over it, every attack after the first dashed with
    smaller markers, so that no line hides another."""
    out: dict[str, dict[str, object]] = {"worst case": {"under": True, "width": 4.5, "opacity": 0.35, "marker": False}}
    attacks = [s for s in series if s != "worst case"]
    for j, name in enumerate(attacks[1:], 1):
        out[name] = {"dash": ("5 3", "2 2", "8 3 2 3")[(j - 1) % 3], "r": 2.2}
    return out
