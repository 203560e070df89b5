"""The suites, in the order they run. A later suite may read the columns of earlier ones (fairness crosses
with robustness through its columns' metadata), never their results or config.

To add a suite: write ``audit/suites/<name>.py`` that defines ``SUITE = Suite(...)`` and list it here.
"""

from __future__ import annotations

import importlib

from audit.suites.base import Facts, FillContext, MetricSpec, Suite

# name -> module; the order is the run order.
_REGISTRY: dict[str, str] = {
    "performance": "audit.suites.performance",
    "robustness": "audit.suites.robustness",
    "calibration": "audit.suites.calibration",
    "fairness": "audit.suites.fairness",  # after the suites it crosses with (ECE, robust accuracy per group)
    "repro": "audit.suites.repro",  # command-only: `audit repro`
    "harden": "audit.suites.harden",  # command-only: `audit harden`
}


def suite_names() -> list[str]:
    return list(_REGISTRY)


def get_suite(name: str) -> Suite:
    return importlib.import_module(_REGISTRY[name]).SUITE


def all_suites() -> list[Suite]:
    return [get_suite(n) for n in _REGISTRY]


__all__ = ["Facts", "FillContext", "MetricSpec", "Suite", "all_suites", "get_suite", "suite_names"]
