"""The engine: the wrapped model, the batched inference pass and the per-example table."""
