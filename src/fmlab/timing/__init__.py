"""Training speed: bench-train against a conventional PyTorch loop (baseline_loop), and the speedrun."""
