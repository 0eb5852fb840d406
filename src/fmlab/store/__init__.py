"""The store: one SQLite file of studies, trials and epochs; the trial states and every write that changes one."""
