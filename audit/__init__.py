r"""audit: audit a trained PyTorch classifier before it ships.

Data flow (mirrored by the sub-packages):

    recipe (TOML) -> loading.model -> engine.wrapper (eval, normalisation inside, bounds, device)
                 \-> loading.data  -> engine.data (x, y, sensitive attributes, global index)
    suites -> engine.table.ExampleTable -> metrics (pure) -> report (report.json)
    report.json -> gates (pass/fail/inconclusive) -> exit code
    report.json -> report.html / report.junit / report.markdown
"""

__version__ = "0.1.0"
