"""A study's rows as typed DataFrames: stable columns and dtypes whatever the trials' states.

StudyHandle (fmlab.api.handles) builds its trials and epochs tables here from fmlab.report.export's rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fmlab.config.metrics import EPOCH_COLS as EPOCH_METRICS
from fmlab.config.states import State

if TYPE_CHECKING:
    import pandas as pd

STATES = tuple(s.value for s in State)  # a trial's states, in order (the trials table's categories)
METRIC_COLS = ("val_loss", "val_acc", "test_loss", "test_acc", "train_s", "total_s", "train_images_per_s")
TRIAL_TAIL = (
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "epochs",
    "best_epoch",
    "stop_reason",
    "n_params",
    "train_s",
    "total_s",
    "train_images_per_s",
    "precision",
    "error",
    "config",
)  # the trials table's columns after id, study, budget, label, state, seed and the factors


def typed_trials(rows: list[dict[str, Any]], factors: Mapping[str, list[Any]]) -> pd.DataFrame:
    """Stable columns and dtypes whatever the states: metrics float64, seed int64, state categorical,
    each factor column typed by the study's levels (bool, int64, float64, or str)."""
    import pandas as pd

    head = ["id", "study", "budget", "label", "state", "seed", *factors]
    df = pd.DataFrame(rows, columns=head + list(TRIAL_TAIL))
    types: dict[str, Any] = {c: "float64" for c in METRIC_COLS}
    types.update(
        seed="int64", epochs="int64", best_epoch="Int64", n_params="Int64", state=pd.CategoricalDtype(list(STATES))
    )
    for f, levels in factors.items():
        types[f] = level_dtype(levels)
    return df.astype(types)


def typed_epochs(rows: list[dict[str, Any]], meta: Mapping[str, Any]) -> pd.DataFrame:
    """One row per trial and epoch: trial_id, seed, the factors, epoch and the epoch metrics, typed (an arms
    study's factor columns stay text: its rows name the sharing arms, comma-joined)."""
    import pandas as pd

    ecols = ["trial_id", "seed", *meta["factors"], "epoch", *EPOCH_METRICS]
    types = {"seed": "int64", "epoch": "int64", **{c: "float64" for c in EPOCH_METRICS}}
    if meta["design"] != "arms":
        types.update({f: level_dtype(v) for f, v in meta["factors"].items()})
    return pd.DataFrame(rows, columns=ecols).astype(types)


def level_dtype(levels: list[Any]) -> str:
    """A factor column's dtype from the study's levels: bool, int64, float64, else object."""
    if levels and all(isinstance(v, bool) for v in levels):
        return "bool"
    if levels and all(isinstance(v, int) and not isinstance(v, bool) for v in levels):
        return "int64"
    if levels and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels):
        return "float64"
    return "object"
