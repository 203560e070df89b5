"""`audit harden`: adversarial and noise fine-tuning with exact resume, audited before and after.

- ``methods``: the training objectives (pgd, trades, fast, noise), pure functions of a batch;
- ``loop``: epochs, validation, best epoch, early stopping, collapse and divergence guards, checkpoints;
- ``checkpoint``: the resumable, ``weights_only``-loadable checkpoint and every RNG state;
- ``command``: the command: data and overlap checks, training, the before/after audits and their diff.
"""
