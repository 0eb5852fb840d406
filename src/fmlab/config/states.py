"""A trial's states, defined once: the store writes them (fmlab.store.states holds the allowed changes),
the analysis counts and filters by them, every listing and results file shows their text.

State is a str-valued enum, so a member is its own text: it compares equal to the string the store's
rows, trials.csv and JSON output hold ("COMPLETE"), and str(), json and csv write that text. Everywhere
else in the package a trial state is named by its member, never by a string literal (tests/test_store_states.py
checks this). It lives on the definitions floor because the statistics (fmlab.analysis), below the store,
read it too.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    WAITING = "WAITING"  # planned, not yet taken (or given back: interrupted, stale, retried)
    RUNNING = "RUNNING"  # claimed by a sweep, which owns it and beats its heartbeat
    COMPLETE = "COMPLETE"  # finished with metrics, epochs and a checkpoint
    FAILED = "FAILED"  # finished with an error
