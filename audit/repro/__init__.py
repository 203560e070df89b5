"""`audit repro`: bitwise repeatability, nondeterministic ops, seed variance, environment fingerprint.

Modules (small, each testable alone):
  fingerprint  the environment fingerprint recorded in every report, and a ranked comparison of two
  hazards      the op recorder (TorchDispatchMode), PyTorch's documented nondeterministic ops, alert parsing
  capture      the AUDIT_DETERMINISM_CAPTURE=1 hook of `audit run` (deterministic warn-only mode)
  runs         child runs: `python -m audit run ... --quiet` in fresh interpreters
  compare      same-seed comparison of two runs (SHA-256 of every column and metric, |delta|, flips)
  stats        seed statistics (mean, std, t-interval, worst seed, churn, seeds needed)
  study        the command: runs -> analysis -> report
"""
