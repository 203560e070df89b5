"""Per-suite figure builders: ``audit.report.figures.<suite>.figures(report) -> {name: inline SVG}``.

They read report.json data only; nothing is computed here that is not already in the report.
"""
