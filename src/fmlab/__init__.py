"""fmlab: run and understand training experiments on Fashion-MNIST.

The public Python API (``fmlab.open_store``, ``fmlab.run_study``, ``fmlab.train_trial``, ``fmlab.predict``, ...)
lives in :mod:`fmlab.api.handles` (results folders: ``publish_results`` in :mod:`fmlab.archive.publish`,
``import_results`` in :mod:`fmlab.archive.load`); its names are re-exported here on first use, so ``import fmlab``
stays fast (no torch or pandas until a function needs them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fmlab.version import __version__ as __version__

__all__ = [
    "open_store",
    "plan_sweep",
    "open_sweep",
    "run_study",
    "train_trial",
    "predict",
    "make_config",
    "publish_results",
    "import_results",
    "StoreHandle",
    "StudyHandle",
    "SweepPlan",
    "Trained",
]

if TYPE_CHECKING:
    from fmlab.api.handles import (
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
    from fmlab.archive.load import import_results
    from fmlab.archive.publish import publish_results


def __getattr__(name: str) -> Any:
    if name == "publish_results":  # results folders: fmlab.archive.publish and fmlab.archive.load, on top of the api
        from fmlab.archive.publish import publish_results

        return publish_results
    if name == "import_results":
        from fmlab.archive.load import import_results

        return import_results
    if name in __all__:
        from fmlab.api import handles as api

        return getattr(api, name)
    raise AttributeError(f"module 'fmlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
