r"""audit: audit a trained PyTorch classifier before it ships.

Data flow (mirrored by the sub-packages):

    recipe (TOML) -> loading.model -> engine.wrapper (eval, normalisation inside, bounds, device)
                 \-> loading.data  -> engine.data (x, y, sensitive attributes, global index)
    suites -> engine.table.ExampleTable -> metrics (pure) -> report (report.json)
    report.json -> gates (pass/fail/inconclusive) -> exit code
    report.json -> report.html / report.junit / report.markdown

The Python API (``audit.api``): ``audit.run(model, x, y, recipe=...) -> audit.Report``.
"""

__version__ = "0.1.0"

__all__ = ["Report", "run", "__version__"]


def __getattr__(name: str):
    """``audit.run`` and ``audit.Report`` (the Python API, ``audit.api``), imported on first use so that
    ``import audit`` (and ``audit --help``) stays free of torch, numpy and pandas."""
    if name in ("run", "Report"):
        from audit import api

        return getattr(api, name)
    raise AttributeError(f"module 'audit' has no attribute {name!r}")
