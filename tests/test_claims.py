"""A study file's [[claims]]: parsed and checked at load (one-line errors), verdicts from the fitted model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import synth_grid as synth

from fmlab.analysis.driver import analyse
from fmlab.config.states import State
from fmlab.report import build as report
from fmlab.study import spec as fstudy

ROOT = Path(__file__).resolve().parents[1]


def claims_meta(*claims):
    trials, epochs, meta = synth()
    return trials, epochs, {**meta, "claims": list(claims)}


def verdicts(a):
    return {c["text"]: c["verdict"] for c in a.claims}


def test_claims_get_the_verdicts_of_the_effects_and_the_best_set(tmp_path):
    a = analyse(
        *claims_meta(
            {"text": "bn helps", "kind": "effect", "term": "model.batch_norm: true vs false", "direction": "better"},
            {"text": "bn hurts", "kind": "effect", "term": "model.batch_norm: true vs false", "direction": "worse"},
            {"text": "128 is better", "kind": "effect", "term": "train.batch_size: 128 vs 64", "direction": "better"},
            {"text": "pool is negligible", "kind": "negligible", "term": "model.pool: max vs avg"},
            {"text": "bn is negligible", "kind": "negligible", "term": "model.batch_norm: true vs false"},
            {
                "text": "pool x bs negligible",
                "kind": "negligible",
                "term": "model.pool x train.batch_size: (max vs avg) at 128 minus at 64",
            },
            {"text": "bn cells best", "kind": "best", "cell": {"model.batch_norm": "true"}},
            {
                "text": "no-bn 128 best",
                "kind": "best",
                "cell": {"model.batch_norm": "false", "train.batch_size": "128"},
            },
            {"text": "avg pool best", "kind": "best", "cell": {"model.pool": "avg"}},
        )
    )
    v = verdicts(a)
    assert v["bn helps"] == "supported" and v["bn hurts"] == "contradicted"  # planted +1 pt, "matters"
    assert v["128 is better"] == "contradicted"  # planted -0.6 pts: matters the other way
    assert v["pool is negligible"] == "supported" and v["bn is negligible"] == "contradicted"
    inter = pd.concat([a.effects, a.interactions]).set_index("term")
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
    assert "## Claims checked" in md and "| bn helps |" in md and "![" in md and "forest.png" in md
    assert json.loads((tmp_path / "summary.json").read_text())["claims"][0]["verdict"] == "supported"
    assert rep["claims"][0]["text"] == "bn helps" and (tmp_path / "forest.png").exists()


def test_seed_study_carries_the_original_five_claims():
    st = fstudy.load(ROOT / "studies" / "seed.toml", "quick")
    assert len(st.claims) == 5 and {c["kind"] for c in st.claims} == {"effect", "negligible", "best"}
    assert st.spec()["claims"] == list(st.claims)
    terms = {c.get("term") for c in st.claims} - {None}
    pool = next(c for c in st.claims if c.get("at"))  # "with dropout, max pooling was a lot worse": a simple effect
    assert pool["term"] == "model.pool: max vs avg" in terms and pool["at"] == {"model.dropout": "0.2"}


CLAIM = """
[[claims]]
text = "a claim"
{body}
"""
BAD = [
    ('kind = "huge"', "key 'kind': bad value 'huge'"),
    ('kind = "effect"\nterm = "model.pool: avg vs max"\ndirection = "worse"', "key 'term': 'model.pool: avg vs max'"),
    ('kind = "effect"\nterm = "model.pool: max vs avg"', "key 'direction': bad value None"),
    ('kind = "best"\ncell = { "model.pool" = "min" }', "model.pool = 'min' is not a level"),
    ('kind = "best"\ncell = { "model.width" = 3 }', "unknown factor 'model.width'"),
    ('kind = "negligible"\nterm = "model.pool: max vs avg"\ncolour = "red"', "unknown key 'colour'"),
    (
        'kind = "negligible"\nterm = "model.pool: max vs avg"\nat = { "model.width" = 3 }',
        "key 'at': unknown factor 'model.width'",
    ),
    (
        'kind = "negligible"\nterm = "model.pool: max vs avg"\nat = { "model.pool" = "avg" }',
        "key 'at': names model.pool, the factor of 'term' itself",
    ),
    ('kind = "negligible"\nterm = "model.pool: max vs avg"\nat = 3', "key 'at' takes a table of factor = level"),
    ('kind = "best"\ncell = { "model.pool" = "avg" }\nat = { "model.pool" = "avg" }', "no 'term', 'direction' or 'at'"),
]


@pytest.mark.parametrize("body,msg", BAD)
def test_bad_claims_name_the_file_and_the_key(tmp_path, body, msg):
    p = tmp_path / "s.toml"
    p.write_text('name = "s"\n[factors]\n"model.pool" = ["avg", "max"]\n' + CLAIM.format(body=body))
    with pytest.raises(fstudy.StudyError) as e:
        fstudy.load(p)
    text = str(e.value)
    assert str(p) in text and "[[claims]] #1" in text and msg in text and "\n" not in text


def test_a_simple_effect_claim_is_the_fits_contrast_at_those_levels():
    """'With batch 128, max pooling was better': pool's contrast at batch 128, from the same two-way fit, in
    a Holm family of its own. Planted: max pooling +1.2 pts at 128, nothing at 32 or 64 (an interaction), so
    the main effect (the average, +0.4) and the simple effects differ. Checked against the raw means (balanced
    data: the two-way model fits each pool x batch margin exactly) and a statsmodels fit made here."""
    import numpy as np
    import pandas as pd

    trials, epochs, meta = synth()
    bump = (trials["model.pool"] == "max") & (trials["train.batch_size"] == 128)
    trials.loc[bump, "val_acc"] += 0.012
    at128 = {
        "text": "max better at 128",
        "kind": "effect",
        "term": "model.pool: max vs avg",
        "direction": "better",
        "at": {"train.batch_size": "128"},
    }
    at64 = {
        "text": "pool negligible at 64",
        "kind": "negligible",
        "term": "model.pool: max vs avg",
        "at": {"train.batch_size": "64"},
    }
    a = analyse(trials, epochs, {**meta, "claims": [at128, at64]})
    c128, c64 = a.claims
    assert c128["verdict"] == "supported" and c64["verdict"] == "supported", a.claims
    t = trials[trials.state == State.COMPLETE].astype(
        {"model.batch_norm": str, "model.pool": str, "train.batch_size": str}
    )
    for c, bs in ((c128, "128"), (c64, "64")):
        g = t[t["train.batch_size"] == bs].groupby("model.pool")["val_acc"].mean()
        assert c["estimate"] == pytest.approx(g["max"] - g["avg"], abs=1e-9)
    raw = [t[t["train.batch_size"] == bs].groupby("model.pool")["val_acc"].mean() for bs in ("32", "64", "128")]
    main = a.effects.set_index("term").loc["model.pool: max vs avg"]  # the average of the three simple effects
    assert main["estimate"] == pytest.approx(np.mean([g["max"] - g["avg"] for g in raw]))
    # statsmodels on a design built here from dummies: pool's simple effect at 128, averaged over batch norm
    # (and the seeds, whose dummies cancel), is pool + bn:pool / 2 + pool:bs128
    import statsmodels.api as sm

    bn, mx = (t["model.batch_norm"] == "True").astype(float), (t["model.pool"] == "max").astype(float)
    b32, b128 = ((t["train.batch_size"] == v).astype(float) for v in ("32", "128"))
    X = pd.DataFrame(
        {
            "one": 1.0,
            "bn": bn,
            "max": mx,
            "b32": b32,
            "b128": b128,
            "bn:max": bn * mx,
            "bn:b32": bn * b32,
            "bn:b128": bn * b128,
            "max:b32": mx * b32,
            "max:b128": mx * b128,
        }
    )
    X = X.join(pd.get_dummies(t["seed"], prefix="s", drop_first=True, dtype=float))
    fit = sm.OLS(t["val_acc"].to_numpy(float), X).fit()
    L = np.array([[{"max": 1.0, "bn:max": 0.5, "max:b128": 1.0}.get(k, 0.0) for k in X.columns]])
    tt = fit.t_test(L)
    assert c128["estimate"] == pytest.approx(float(np.squeeze(tt.effect)))
    assert [c128["lo"], c128["hi"]] == pytest.approx(list(np.squeeze(tt.conf_int())), abs=1e-9)
    assert c128["df"] == fit.df_resid and "simple effect's verdict" in c128["why"]
    # the claims' own Holm family: the effects table's tests are those of the study without these claims
    assert a.effects["m_tests"].iloc[0] == analyse(trials, epochs, meta).effects["m_tests"].iloc[0]
