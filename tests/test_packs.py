"""Packs: which trials of a study may train as one model (grouping only; ids never change)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmlab.study import spec as fstudy
from fmlab.training import packs

SEED_TOML = Path(__file__).resolve().parents[1] / "studies" / "seed.toml"


def test_seed_grid_quick_gives_12_packs_of_dropout_by_seed():
    st = fstudy.load(SEED_TOML, "quick")
    trials = st.trials()
    groups = packs.group(trials)
    assert len(groups) == 12 and all(len(g) == 4 for g in groups)
    assert sorted(t.id for g in groups for t in g) == sorted(t.id for t in trials)  # nothing lost or renamed
    for g in groups:
        flats = [t.config.flat() for t in g]
        assert {(f["seed"], f["model.dropout"]) for f in flats} == {(0, 0.0), (0, 0.2), (1, 0.0), (1, 0.2)}
        for key in ("model.batch_norm", "model.pool", "train.batch_size"):
            assert len({f[key] for f in flats}) == 1


def test_cap_splits_packs_and_one_means_alone():
    trials = fstudy.load(SEED_TOML, "quick").trials()
    by3 = packs.group(trials, cap=3)
    assert [len(g) for g in by3] == [2, 2] * 12  # the fewest chunks under the cap, sizes even
    assert [t.id for g in by3 for t in g] == [t.id for g in packs.group(trials) for t in g]  # order kept
    alike = packs.group(trials)[0]
    assert [len(g) for g in packs.group(alike * 2 + alike[:2], cap=4)] == [4, 3, 3]  # 10 alike at cap 4
    assert all(len(g) == 1 for g in packs.group(trials, cap=1))
    with pytest.raises(ValueError, match="pack size"):
        packs.group(trials, cap=-1)


def test_other_differences_keep_trials_apart():
    from fmlab.config.schema import Config, with_overrides

    class T:
        def __init__(self, **over):
            self.config = with_overrides(Config(), over)

    a, b, c = T(seed=0), T(seed=3, **{"model.dropout": 0.0}), T(seed=0, **{"train.lr": 3e-3})
    assert packs.group([a, b, c]) == [[a, b], [c]]
