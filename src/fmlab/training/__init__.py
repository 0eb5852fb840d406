"""Training one trial: the loop and the packed loop, checkpoints and resume state, packs, the runtime environment."""
