"""`audit diff`: compare two audits, paired on the examples when they can be (McNemar's exact test, the
paired bootstrap, per-example flips), unpaired on the reports' intervals when not.

    from audit.diff import compare_reports, write_diff, diff_exit_code
    diff = compare_reports("out/base", "out/new")
    write_diff(diff, Path("out/diff"))          # diff.json, diff.html, diff.md
    code = diff_exit_code(diff, fail_on_regression=True)
"""

from audit.diff.compare import compare_reports, diff_exit_code
from audit.diff.render import write_diff

__all__ = ["compare_reports", "diff_exit_code", "write_diff"]
