"""Loading at the boundary: checkpoints (safely) and data (validated), so the core can trust its inputs."""
