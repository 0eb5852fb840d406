"""The Python API: store and study handles, sweeps, one trial trained or predicted (re-exported by `fmlab`)."""
