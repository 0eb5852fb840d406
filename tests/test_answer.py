"""The plain answer (summary.md's "## Answer", index.html's first box, fmlab report's first lines) read as a
reader would: every sentence parsed here, without the generator, and checked against the effects tables."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import run_cli
from conftest import synth_grid as synth

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = sorted(p.parent for p in (ROOT / "results").glob("*/summary.md"))
WORDS = {"validation loss": "val_loss", "validation accuracy": "val_acc"}
REAL = ("matters", "real but smaller than X")
EFFECT = re.compile(
    r"^(?P<inter>Interaction )?(?P<term>.+?)(?: (?P<verb>lowers|raises) the (?P<m>[a-z ]+): |: )"
    r"(?P<est>[+-][\d.]+) \[(?P<lo>-?[\d.]+), (?P<hi>-?[\d.]+)\](?: pts)?(?: in the (?P<m2>[a-z ]+))? "
    r"\((?P<v>[^()]*)\)(?:; test accuracy (?P<test>[+-][\d.]+) \[(?P<tlo>-?[\d.]+), "
    r"(?P<thi>-?[\d.]+)\] pts \((?P<tv>[^()]*)\))?\."
)


def answer_of(md: str) -> tuple[str, list[str]]:
    """The answer section of a summary.md: its first paragraph and its list items."""
    sec = md.split("\n## Answer\n", 1)[1].split("\n## ", 1)[0].strip().splitlines()
    return sec[0], [x[2:] for x in sec[1:] if x.startswith("- ")]


def verdict_of(words: str) -> str:
    """The verdict a phrase implies ('real but smaller than 0.0100' -> 'real but smaller than X')."""
    for w, v in (
        ("matters", "matters"),
        ("real but smaller than", "real but smaller than X"),
        ("no difference larger than", "no effect larger than X"),
        ("undecided", "undecided"),
    ):
        if words.startswith(w):
            return v
    raise AssertionError(f"no verdict in {words!r}")


def table(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        return {r["term"]: r for r in csv.DictReader(f)}


def shown(v: str, metric: str) -> str:
    k, d = (100, 2) if metric.endswith("acc") else (1, 4)
    return f"{k * float(v):+.{d}f}"


def check_answer(d: Path) -> list[str]:
    """Every sentence of d's answer against d's tables; returns the sentences checked."""
    use, items = answer_of((d / "summary.md").read_text())
    summ = json.loads((d / "summary.json").read_text())
    sel = summ["select"]
    eff = {
        t: r
        for t, r in [*table(d / "effects.csv").items(), *table(d / "interactions.csv").items()]
        if r["metric"] == sel
    }
    test = table(d / "test_effects.csv")
    said = set()
    for s in items:
        if s.startswith("Claim "):
            c = next(c for c in summ["claims"] if s.startswith(f'Claim "{c["text"]}": '))
            assert s.startswith(f'Claim "{c["text"]}": {c["verdict"]} ('), s
        elif s.startswith("Undecided ("):
            n = int(s.split("(", 1)[1].split(")", 1)[0])
            assert n == sum(r["verdict"] == "undecided" for r in eff.values()), s
            plan = {p["term"]: p["seeds_needed"] for p in (summ.get("seeds_planned") or {}).get("effects", [])}
            for t, r in eff.items():
                m = re.search(re.escape(t) + r" \(~(\d+) seeds\)", s)
                if m:  # each undecided effect named, with the seeds the plan gives it
                    assert r["verdict"] == "undecided" and int(m.group(1)) == plan[t], (t, s)
                    said.add(t)
            assert not re.search(r"\b(lowers|raises)\b", s), s
        else:
            m = EFFECT.match(s)
            assert m, f"{d.name}: cannot read {s!r}"
            r = eff[m["term"]]
            v = verdict_of(m["v"])
            assert v == r["verdict"] in REAL, (s, r["verdict"])
            assert (m["verb"] is None) == bool(m["inter"]), s  # a verb of effect on every main effect or arm
            if m["verb"]:
                assert WORDS[m["m"]] == sel and (m["verb"] == "lowers") == (float(r["estimate"]) < 0), s
            assert (m["est"], m["lo"], m["hi"]) == tuple(
                shown(r[k], sel).lstrip("+" if k != "estimate" else "") for k in ("estimate", "lo", "hi")
            ), s
            t = test[m["term"]]
            assert verdict_of(m["tv"]) == t["verdict"], (s, t["verdict"])
            assert (m["test"], m["tlo"], m["thi"]) == tuple(
                shown(t[k], "test_acc").lstrip("+" if k != "estimate" else "") for k in ("estimate", "lo", "hi")
            ), s
            said.add(m["term"])
    real = {t for t, r in eff.items() if r["verdict"] in REAL}
    assert real <= said, real - said  # every effect that matters or is real has its sentence
    check_use(use, summ, eff)
    return [use, *items]


def check_use(use: str, summ: dict, eff: dict[str, dict[str, str]]) -> None:
    """The first sentence: the best cell as ranked, the factors that make no difference, the undecided ones."""
    if summ.get("best_set") is None:
        assert not re.search(r"\b(lowers|raises|Use)\b", use), use
        return
    assert f"(best cell: {summ['best_set']['best']}; " in use or f"(best arm: {summ['best_set']['best']}; " in use
    n = len(summ["best_set"]["set"])
    assert (f"; {n} cells tie for best)" in use or f"; {n} arms tie for best)" in use) if n > 1 else True, use
    mains: dict[str, list[str]] = {}
    for r in eff.values():
        if r["kind"] == "main":
            mains.setdefault(r["factor"].rsplit(".", 1)[-1].replace("_", " "), []).append(r["verdict"])
    for name, verdicts in mains.items():
        if re.search(rf"\b{name} [^;]*\bmakes? no difference larger than", use):
            assert all(v == "no effect larger than X" for v in verdicts), (name, verdicts)
        elif any(v in REAL for v in verdicts):
            assert use.startswith("Use ") and name.split()[0] in use.split(";")[0], (name, use)
        else:
            assert re.search(rf"\b{name}\b[^;]*: undecided", use) and "undecided" in verdicts, (name, use)
    for arm in re.findall(r"avoid ([\w.-]+)", use):  # arms: one the fit shows worse than the baseline
        assert eff[f"{arm} vs baseline"]["verdict"] in REAL


@pytest.mark.skipif(not FOLDERS, reason="no results/*/summary.md committed")
@pytest.mark.parametrize("d", FOLDERS, ids=[d.name for d in FOLDERS])
def test_committed_answer_says_what_the_effects_tables_say(d):
    sentences = check_answer(d)
    summ = json.loads((d / "summary.json").read_text())
    a = summ["answer"]  # summary.json carries the same sentences
    assert [a["use"], *a["effects"], *([a["undecided"]] if a["undecided"] else []), *a["claims"]] == sentences


def test_seed_answer_reads_as_the_issue_asks():
    d = ROOT / "results" / "seed-cpu"
    if not d.exists():
        pytest.skip("results/seed-cpu not committed")
    use, items = answer_of((d / "summary.md").read_text())
    assert use.startswith(
        "Use batch norm, dropout 0.2 and average pooling; batch size 32, 64 or 128 makes no "
        "difference larger than 0.0100"
    )
    pool = next(s for s in items if s.startswith("model.pool: max vs avg raises the validation loss"))
    assert "test accuracy -0.51 [-0.63, -0.40] pts (matters)" in pool and "seed-paired check" in pool
    bn = next(s for s in items if s.startswith("model.batch_norm: true vs false lowers"))
    assert "test accuracy +0.34 [0.22, 0.46] pts (real but smaller than 0.50 pts)" in bn
    # the caveats moved beside their effects: Limits no longer opens with them
    assert "Verdict depends on the model" not in (d / "summary.md").read_text().split("## Findings")[0]


def test_planted_undecided_effect_is_said_undecided_never_with_a_verb(tmp_path):
    """Pooling truly does nothing, but 2 noisy seeds cannot show it inside +-0.5 pts: undecided."""
    from fmlab.report import build

    trials, epochs, meta = synth(seeds=[0, 1], noise=0.006, rng_seed=4)
    build.build_report(trials, epochs, meta, tmp_path)
    eff = table(tmp_path / "effects.csv")
    assert eff["model.pool: max vs avg"]["verdict"] == "undecided"  # the plant took
    use, items = answer_of((tmp_path / "summary.md").read_text())
    assert re.search(r"\bpool\b[^;]*: undecided", use), use
    for s in [use, *items]:
        if "model.pool: max vs avg" in s:
            assert not re.search(r"\b(lowers|raises)\b", s.split("model.pool: max vs avg", 1)[1][:20]), s
    check_answer(tmp_path)


# ---------------------------------------------------------------- the seed study's report, as a user makes it


@pytest.fixture(scope="module")
def seed_report(tmp_path_factory):
    d = ROOT / "results" / "seed-cpu"
    if not d.exists():
        pytest.skip("results/seed-cpu not committed")
    tmp = tmp_path_factory.mktemp("seed-report")
    store = str(tmp / "fmlab.db")
    run_cli("import", str(d), "--store", store, check=True, cwd=ROOT)
    p = run_cli("report", "seed", "--budget", "cpu", "--store", store, "--out", str(tmp / "rep"), check=True, cwd=ROOT)
    return tmp / "rep", p.stdout  # stdout was a pipe, as in `fmlab report ... | cat`


def test_report_piped_prints_the_answer_first_in_whole_lines(seed_report):
    out, stdout = seed_report
    summ = json.loads((out / "summary.json").read_text())
    a = summ["answer"]
    sentences = [a["use"], *a["effects"], *([a["undecided"]] if a["undecided"] else []), *a["claims"]]
    lines = stdout.splitlines()
    assert lines[1] == "The answer" and lines[2] == f"- {a['use']}", lines[:3]
    for s in sentences:  # each sentence whole on one line, however long
        assert f"- {s}" in lines, s
    assert max(len(x) for x in lines) > 200  # nothing was wrapped at 80 columns
    for f in json.loads(json.dumps(summ["effects"])):  # the statistics too: every effect line is whole
        if f["metric"] == summ["select"]:
            assert any(x.startswith(f"- {f['term']}: ") and x.endswith(f["verdict"]) for x in lines), f["term"]


def test_answer_visible_without_scrolling_at_1280x900(seed_report):
    pytest.importorskip("websocket", reason="pip install websocket-client (the dev extra) for the browser check")
    from browser import CHROMIUM, Browser

    if CHROMIUM is None:
        pytest.skip("chromium not installed: apt-get install -y chromium")
    out, _ = seed_report
    use = json.loads((out / "summary.json").read_text())["answer"]["use"]
    with Browser() as b:
        b.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        b.open(out / "index.html")
        box = b.js(
            "(() => { const r = document.getElementById('answer').getBoundingClientRect();"
            " return [r.top, r.bottom, window.innerHeight, window.scrollY,"
            " document.getElementById('answer').innerText]; })()"
        )
        top, bottom, height, scrolled, text = box
        assert height == 900 and scrolled == 0
        assert 0 <= top and bottom <= 900, box[:4]  # the whole answer, not just its start
        assert use in text and b.problems() == []
