"""Study-file keys of the engine: [analysis] min_effect and the finding label, without changing trial ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmlab.analysis.prose import study_budget_label
from fmlab.study import spec as study

ROOT = Path(__file__).resolve().parents[1]
# trial ids of studies/seed.toml per budget, recorded on main (076addd) before [analysis] was added; quick's
# re-recorded when its budget itself changed (issue 34: 2,000 / 500 / 1,000 images, train.precision auto)
SEED_IDS = ROOT / "tests" / "data" / "seed_trial_ids.json"


def test_seed_study_trial_ids_unchanged_by_analysis_keys():
    want = json.loads(SEED_IDS.read_text())
    for budget, ids in want.items():  # a budget may since run more seeds: the recorded seeds' ids are the same
        trials = study.load(ROOT / "studies" / "seed.toml", budget=budget).trials()
        seed_of = {t.id: t.seed for t in trials}
        assert set(ids) <= set(seed_of), f"budget {budget}: recorded trial ids changed"
        then = {seed_of[i] for i in ids}
        assert sorted(t.id for t in trials if t.seed in then) == ids, budget


def test_min_effect_parsed_and_bad_key_named(tmp_path):
    s = study.load(ROOT / "studies" / "seed.toml", budget="quick")
    assert s.min_effect == {"val_loss": 0.01, "val_acc": 0.005, "test_acc": 0.005}
    assert s.spec()["min_effect"] == s.min_effect
    text = (ROOT / "studies" / "seed.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("val_acc = 0.005,", "val_accuracy = 0.005,"))
    with pytest.raises(study.StudyError, match=r"bad.toml: \[analysis\] min_effect key 'val_accuracy'"):
        study.load(bad)
    bad.write_text(text.replace("val_loss = 0.01,", "val_loss = -1,"))
    with pytest.raises(study.StudyError, match=r"min_effect key 'val_loss': bad value -1"):
        study.load(bad)


def test_finding_budget_labelled_by_its_label_quick_stays_indicative():
    cpu = study.load(ROOT / "studies" / "seed.toml", budget="cpu")
    quick = study.load(ROOT / "studies" / "seed.toml", budget="quick")
    assert cpu.label == "cpu: full data, bf16 on CPU" and quick.label == "quick: indicative only"
    assert (
        study_budget_label({"budget": "cpu", **{k: cpu.spec()[k] for k in ("finding", "budget_note")}})
        == "cpu: full data, bf16 on CPU"
    )
    assert study_budget_label({"budget": "quick", "finding": False}) == "quick: indicative only"
