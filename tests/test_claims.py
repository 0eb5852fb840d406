"""A study file's [[claims]]: parsed and checked at load (one-line errors), verdicts from the fitted model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import synth_grid as synth

from fmlab import analysis, report
from fmlab import study as fstudy

ROOT = Path(__file__).resolve().parents[1]


def claims_meta(*claims):
    trials, epochs, meta = synth()
    return trials, epochs, {**meta, "claims": list(claims)}


def verdicts(a):
    return {c["text"]: c["verdict"] for c in a.claims}


def test_claims_get_the_verdicts_of_the_effects_and_the_best_set(tmp_path):
    a = analysis.analyse(*claims_meta(
        {"text": "bn helps", "kind": "effect", "term": "model.batch_norm: true vs false", "direction": "better"},
        {"text": "bn hurts", "kind": "effect", "term": "model.batch_norm: true vs false", "direction": "worse"},
        {"text": "128 is better", "kind": "effect", "term": "train.batch_size: 128 vs 64", "direction": "better"},
        {"text": "pool is negligible", "kind": "negligible", "term": "model.pool: max vs avg"},
        {"text": "bn is negligible", "kind": "negligible", "term": "model.batch_norm: true vs false"},
        {"text": "pool x bs negligible", "kind": "negligible",
         "term": "model.pool x train.batch_size: (max vs avg) at 128 minus at 64"},
        {"text": "bn cells best", "kind": "best", "cell": {"model.batch_norm": "true"}},
        {"text": "no-bn 128 best", "kind": "best", "cell": {"model.batch_norm": "false", "train.batch_size": "128"}},
        {"text": "avg pool best", "kind": "best", "cell": {"model.pool": "avg"}},
    ))  # fmt: skip
    v = verdicts(a)
    assert v["bn helps"] == "supported" and v["bn hurts"] == "contradicted"  # planted +1 pt, "matters"
    assert v["128 is better"] == "contradicted"  # planted -0.6 pts: matters the other way
    assert v["pool is negligible"] == "supported" and v["bn is negligible"] == "contradicted"
    inter = analysis.pd.concat([a.effects, a.interactions]).set_index("term")
    want = {"no effect larger than X": "supported", "real but smaller than X": "supported", "matters": "contradicted"}
    row = inter.loc["model.pool x train.batch_size: (max vs avg) at 128 minus at 64"]
    assert v["pool x bs negligible"] == want.get(row["verdict"], "undecided")  # the same verdict as the table's
    assert v["bn cells best"] == "supported" and v["no-bn 128 best"] == "contradicted"
    assert all(c.startswith("batch_norm=true") for c in a.best["set"])  # supported: only BN cells are in the best set
    # pooling has no planted effect: avg and max cells share the best set, so "avg was best" is not decided
    avg = next(c for c in a.claims if c["text"] == "avg pool best")
    assert avg["verdict"] == "undecided" and "share the best set" in avg["why"], avg
    bn = next(c for c in a.claims if c["text"] == "bn helps")
    assert bn["estimate"] == pytest.approx(inter.loc["model.batch_norm: true vs false", "estimate"])
    rep = report.build_report(*claims_meta(*a.claims[:1]), tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "## The original's claims" in md and "| bn helps |" in md and "![" in md and "forest.png" in md
    assert json.loads((tmp_path / "summary.json").read_text())["claims"][0]["verdict"] == "supported"
    assert rep["claims"][0]["text"] == "bn helps" and (tmp_path / "forest.png").exists()


def test_seed_study_carries_the_original_five_claims():
    st = fstudy.load(ROOT / "studies" / "seed.toml", "quick")
    assert len(st.claims) == 5 and {c["kind"] for c in st.claims} == {"effect", "negligible", "best"}
    assert st.spec()["claims"] == list(st.claims)
    terms = {c.get("term") for c in st.claims} - {None}
    assert "model.dropout x model.pool: (0 vs 0.2) at max minus at avg" in terms


CLAIM = '''
[[claims]]
text = "a claim"
{body}
'''
BAD = [
    ('kind = "huge"', "key 'kind': bad value 'huge'"),
    ('kind = "effect"\nterm = "model.pool: avg vs max"\ndirection = "worse"', "key 'term': 'model.pool: avg vs max'"),
    ('kind = "effect"\nterm = "model.pool: max vs avg"', "key 'direction': bad value None"),
    ('kind = "best"\ncell = { "model.pool" = "min" }', "model.pool = 'min' is not a level"),
    ('kind = "best"\ncell = { "model.width" = 3 }', "unknown factor 'model.width'"),
    ('kind = "negligible"\nterm = "model.pool: max vs avg"\ncolour = "red"', "unknown key 'colour'"),
]


@pytest.mark.parametrize("body,msg", BAD)
def test_bad_claims_name_the_file_and_the_key(tmp_path, body, msg):
    p = tmp_path / "s.toml"
    p.write_text('name = "s"\n[factors]\n"model.pool" = ["avg", "max"]\n' + CLAIM.format(body=body))
    with pytest.raises(fstudy.StudyError) as e:
        fstudy.load(p)
    text = str(e.value)
    assert str(p) in text and "[[claims]] #1" in text and msg in text and "\n" not in text
