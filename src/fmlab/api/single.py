"""One network, outside any study: a Config from overrides, train_trial (what `fmlab train` runs), predict.

Re-exported by fmlab.api.handles (and the package): `fmlab.train_trial(...)`, `fmlab.predict(...)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlab.store.db import DEFAULT_PATH

if TYPE_CHECKING:  # the heavy imports wait for the call that needs them: `import fmlab` stays fast
    import pandas as pd

    from fmlab.config.schema import Config
    from fmlab.training.loop import TrialResult


def make_config(overrides: Mapping[str, Any] | None = None, base: Config | None = None) -> Config:
    """A Config from the defaults (or base) plus {"train.lr": 1e-3, ...} (values or `--set` strings)."""
    from fmlab.config.schema import Config, with_overrides

    return with_overrides(base or Config(), dict(overrides or {})).resolved()


@dataclass(frozen=True)
class Trained:
    """What train_trial() returns: the plain TrialResult and where its checkpoint went (None: not saved)."""

    result: TrialResult
    checkpoint: Path | None


def default_train_dir(cfg: Config) -> Path:
    return Path("runs/train") / cfg.trial_id()


def train_trial(
    config: Config | Mapping[str, Any] | None = None,
    *,
    out: str | Path | None = None,
    save: bool = True,
    device: str = "auto",
    threads: int = 0,
    data_dir: str | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> Trained:
    """Train one network (a Config, or overrides of the defaults like the CLI's --set); with save, write
    the checkpoint to out (default runs/train/<trial id>), as `fmlab train` does. (Not `fmlab.training.loop`:
    that name is the fmlab.training.loop module, which Python binds on the package once anything imports it.)"""
    from fmlab.training import checkpoint
    from fmlab.training.env import RunOptions
    from fmlab.training.loop import train as train_one

    cfg = config.resolved() if config is not None and not isinstance(config, Mapping) else make_config(config)
    res = train_one(cfg, opts=RunOptions(device=device, threads=threads, data_dir=data_dir), on_epoch=on_epoch)
    ckpt = checkpoint.save_trial(res, Path(out) if out else default_train_dir(cfg)) if save else None
    return Trained(res, ckpt)


# ---------------------------------------------------------------- inference


def predict(
    ckpt: str | Path, images: Any, *, store: str | Path = DEFAULT_PATH, names: list[str] | None = None
) -> pd.DataFrame:
    """Class probabilities for images: a list of files/folders (PNG, JPEG, ...), or uint8 pixels
    [N, 28, 28] in Fashion-MNIST form. ckpt: a trial id, STUDY:best or a checkpoint directory.
    One row per image: image, class, index, prob (the top class), then one column per class."""
    import numpy as np
    import pandas as pd

    from fmlab.deploy import infer

    ld = infer.load(ckpt, store)
    if isinstance(images, np.ndarray):
        preds = infer.predict_pixels(ld, images, names or [str(i) for i in range(len(images))], len(ld.classes))
    else:
        preds = infer.predict(ld, [images] if isinstance(images, (str, Path)) else list(images), len(ld.classes))
    rows = []
    for p in preds:
        probs = {t["class"]: t["prob"] for t in p["top"]}
        rows.append(
            {
                "image": p["file"],
                "class": p["top"][0]["class"],
                "index": p["top"][0]["index"],
                "prob": p["top"][0]["prob"],
                **{c: probs[c] for c in ld.classes},
            }
        )
    cols = ["image", "class", "index", "prob", *ld.classes]
    return pd.DataFrame(rows, columns=cols).astype(
        {"index": "int64", "prob": "float64", **{c: "float64" for c in ld.classes}}
    )
