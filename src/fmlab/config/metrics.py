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

ALL_TRAIN = "all 60,000 training images (or data.train_subset of them)"  # what trains with data.val_size = 0


def val_text(row: dict, pct: bool = False) -> str:
    """'val loss 0.3012 acc 0.8975' of an epoch row or a trial's metrics (acc in % with pct); 'no validation'
    when nothing validated (data.val_size = 0: the values are None), never a number made up."""
    loss, acc = row.get("val_loss"), row.get("val_acc")
    if loss is None or acc is None:
        return "no validation"
    return f"val loss {loss:.4f} acc " + (f"{100 * acc:.2f}%" if pct else f"{acc:.4f}")
