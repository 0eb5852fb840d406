"""The names of what a trial measures, defined once: every table, store column, TensorBoard tag and
report uses these.

- METRICS: a trial's final metrics (the best epoch's validation metrics, the test set evaluated once).
- EPOCH_COLS: one row per epoch (the store's epochs table, epochs.csv, TensorBoard scalars), after "epoch".
- EPOCH_ROW: "epoch" and EPOCH_COLS, in the order every epoch table shows them (epochs.csv after the trial's
  id, seed and cell; `fmlab show`; the store's epochs table after its trial).
Accuracies are fractions, losses are mean NLL per image, lr is the rate the epoch ended on, epoch_s seconds.
"""

from __future__ import annotations

METRICS = ("val_loss", "val_acc", "test_loss", "test_acc")
EPOCH_COLS = ("lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_s")
EPOCH_ROW = ("epoch", *EPOCH_COLS)
