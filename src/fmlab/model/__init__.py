"""The networks: the architectures (nets) and K networks stacked into one packed model (packed)."""
