"""fmlab: run and understand training experiments on Fashion-MNIST.

The public Python API (``fmlab.open_store``, ``fmlab.run_study``, ``fmlab.train_trial``, ``fmlab.predict``, ...)
lives in :mod:`fmlab.api` (results folders: ``publish_results`` in :mod:`fmlab.publish`, ``import_results``
in :mod:`fmlab.restore`); its names are re-exported here on first use, so ``import fmlab`` stays fast (no
torch or pandas until a function needs them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__ as __version__

__all__ = ["open_store", "plan_sweep", "open_sweep", "run_study", "train_trial", "predict", "make_config",
           "publish_results", "import_results", "StoreHandle", "StudyHandle", "SweepPlan", "Trained"]

if TYPE_CHECKING:
    from .api import (
        StoreHandle,
        StudyHandle,
        SweepPlan,
        Trained,
        make_config,
        open_store,
        open_sweep,
        plan_sweep,
        predict,
        run_study,
        train_trial,
    )
    from .publish import publish_results
    from .restore import import_results


def __getattr__(name: str) -> Any:
    if name == "publish_results":  # results folders: fmlab.publish and fmlab.restore, on top of the api
        from .publish import publish_results

        return publish_results
    if name == "import_results":
        from .restore import import_results

        return import_results
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'fmlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
