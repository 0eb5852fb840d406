"""The plain answer of a study, from its fitted model: what to use, what each choice costs, the claims.

One generator for every place that states it: the report (index.html, summary.md, summary.json's `answer`),
the terminal summary of `fmlab report`, and the README's generated section (scripts/readme_answer.py). It
reads the report's summary dict, the keys summary.json carries (select, effects with their metric, best_set,
claims, min_effect, diagnostics, seeds_planned, label, counts), so the README can rebuild it from a
committed results folder without a store.

The words follow the verdicts exactly: an effect that matters, or is real but smaller than the smallest
effect that matters, "lowers" or "raises" the selection metric; "no difference larger than X" only for that
verdict; an undecided effect is called undecided, with the seeds the seed plan says would resolve it. Each
effect's test-accuracy counterpart (same fit, its own Holm family) is given beside it with its own verdict,
and the seed-paired check's caveat beside the effect it qualifies.
"""

from __future__ import annotations

from typing import Any

from fmlab.analysis.formatting import fmt_effect, fmt_p, unit
from fmlab.config.metrics import ALL_TRAIN

WORDS = {
    "val_loss": "validation loss",
    "val_acc": "validation accuracy",
    "test_acc": "test accuracy",
    "test_loss": "test loss",
}
LEVEL_WORDS = {("pool", "avg"): "average pooling", ("pool", "max"): "max pooling"}
REAL = ("matters", "real but smaller than X")
LIST_UNDECIDED = 6  # the undecided effects named one by one; the rest are counted


def compose(summ: dict[str, Any]) -> dict[str, Any]:
    """The answer as plain sentences: {"use": str, "effects": [str], "undecided": str | None, "claims": [str]}.

    summ: build_report's dict or a results folder's summary.json."""
    sel = summ["select"]
    eff = [e for e in summ.get("effects", []) if e.get("metric", sel) == sel]
    test = {e["term"]: e for e in summ.get("effects", []) if e.get("metric") == "test_acc"}
    ans: dict[str, Any] = {"use": _use(summ, eff), "effects": [], "undecided": None, "claims": []}
    caveats = _caveats(summ)
    for e in sorted((e for e in eff if e["verdict"] in REAL), key=lambda e: -abs(e["estimate"])):
        t = test.get(e["term"]) if sel != "test_acc" else None
        ans["effects"].append(_effect_sentence(e, sel, t, summ) + caveats.get(e["term"], ""))
    ans["undecided"] = _undecided(summ, eff)
    ans["claims"] = [f'Claim "{c["text"]}": {c["verdict"]} ({c["why"]}).' for c in summ.get("claims", [])]
    return ans


def lines(ans: dict[str, Any]) -> list[str]:
    """The answer's sentences in reading order: what to use, the effects largest first, undecided, claims."""
    return [ans["use"], *ans["effects"], *([ans["undecided"]] if ans["undecided"] else []), *ans["claims"]]


def caveated_terms(summ: dict[str, Any]) -> list[str]:
    """The effects whose caveat (the seed-paired check disagrees) the answer carries beside them."""
    return list(_caveats(summ))


def markdown(ans: dict[str, Any]) -> list[str]:
    """The answer as markdown lines: the first sentence as a paragraph, the rest as a list."""
    rest = lines(ans)[1:]
    return [ans["use"], "", *[f"- {s}" for s in rest], *([""] if rest else [])]


# ---------------------------------------------------------------- the sentences


def _x(summ: dict[str, Any], metric: str) -> str:
    x = (summ.get("min_effect") or {}).get(metric)
    return "X" if x is None else fmt_effect(x, metric, False) + unit(metric)[1]


def verdict_words(verdict: str, summ: dict[str, Any], metric: str) -> str:
    """'matters', 'real but smaller than 0.0100', 'no difference larger than 0.50 pts', 'undecided'."""
    x = _x(summ, metric)
    if verdict == "no effect larger than X":
        return f"no difference larger than {x}"
    return verdict.replace("X", x)


def _ci(e: dict[str, Any], metric: str) -> str:
    return (
        f"{fmt_effect(e['estimate'], metric)} [{fmt_effect(e['lo'], metric, False)}, "
        f"{fmt_effect(e['hi'], metric, False)}]{unit(metric)[1]}"
    )


def _effect_sentence(e: dict[str, Any], sel: str, t: dict[str, Any] | None, summ: dict[str, Any]) -> str:
    """One effect that matters or is real: its verb on the selection metric, then test accuracy."""
    v = verdict_words(e["verdict"], summ, sel)
    if e.get("kind") == "interaction":
        head = f"Interaction {e['term']}: {_ci(e, sel)} in the {WORDS.get(sel, sel)} ({v})"
    else:
        verb = "lowers" if e["estimate"] < 0 else "raises"
        head = f"{e['term']} {verb} the {WORDS.get(sel, sel)}: {_ci(e, sel)} ({v})"
    if t is not None:
        head += f"; test accuracy {_ci(t, 'test_acc')} ({verdict_words(t['verdict'], summ, 'test_acc')})"
    return head + "."


def _caveats(summ: dict[str, Any]) -> dict[str, str]:
    """Per effect, the seed-paired check's disagreement with the fitted model, as a sentence to append."""
    rows = ((summ.get("diagnostics") or {}).get("seed_check") or {}).get("rows", [])
    out = {}
    for r in rows:
        if not r.get("agree", True) and r.get("model_differs"):
            k = r["n_seeds"]
            out[r["term"]] = (
                f" Caveat: a seed-paired check over the {k} seeds does not confirm it (Holm p "
                f"{fmt_p(r['p_holm']).lstrip('= ')}, df {k - 1}); the verdict rests on the fitted "
                f"model's pooled residual (df {r['model_df']:.0f})."
            )
    return out


def _prefix(summ: dict[str, Any]) -> str:
    c, label = summ.get("counts") or {}, summ.get("label", "")
    head = "Indicative only (a budget that is not a finding). " if "indicative only" in label else ""
    if c and c.get("complete", 0) < c.get("planned", 0):
        head += f"In progress ({c['complete']} of {c['planned']} trials): "
    return head


def _parse_cell(cell: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in cell.split(", ") if "=" in p)


def _levels(eff: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each factor's levels as its main contrasts name them ('model.pool: max vs avg'), in order."""
    out: dict[str, list[str]] = {}
    for e in eff:
        if e.get("kind") == "main" and ": " in e["term"] and " vs " in e["term"]:
            f, pair = e["term"].split(": ", 1)
            for lv in pair.split(" vs "):
                if lv not in out.setdefault(f, []):
                    out[f].append(lv)

    def key(v: str) -> tuple[int, float | str]:
        try:
            return 0, float(v)
        except ValueError:
            return 1, v

    return {f: (sorted(v, key=key) if all(key(x)[0] == 0 for x in v) else v) for f, v in out.items()}


def _say(short: str, level: str) -> str:
    name = short.replace("_", " ")
    if (short, level) in LEVEL_WORDS:
        return LEVEL_WORDS[(short, level)]
    if level in ("true", "false"):
        return name if level == "true" else f"no {name}"
    return f"{name} {level}"


def _or(items: list[str], word: str = "or") -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {word} {items[-1]}"


def _use(summ: dict[str, Any], eff: list[dict[str, Any]]) -> str:
    """The first sentence: what to use, what makes no difference, what is undecided, the ties."""
    sel, b = summ["select"], summ.get("best_set")
    if b is None:
        c = summ.get("counts") or {}
        if c.get("no_validation"):  # data.val_size = 0: nothing validated, so nothing is chosen
            whose = "its" if c.get("cells_complete") == 1 else "each cell's"
            return (
                f"{_prefix(summ)}Trained on {ALL_TRAIN} with no validation split (data.val_size = 0), "
                "each trial tested at its last epoch: nothing is chosen, so no effects and no best trial; "
                f"{whose} mean test accuracy [95% CI] is in the cells table, a figure beside the validation-selected "
                "one that never counts toward the goal."
            )
        if c.get("cells_complete", 0) == 1 and c.get("complete", 0):
            return (
                f"{_prefix(summ)}One cell over {c.get('seeds', 0)} seed(s): no factor to compare, so no effects; "
                "its mean test accuracy [95% CI] is in the cells table."
            )
        return f"{_prefix(summ)}No fitted model yet: too few replicated trials to answer anything."
    tie = f"{len(b['set'])} cells tie for best" if len(b["set"]) > 1 else "no other cell ties with it"
    if any(e.get("kind") == "arm" for e in eff):
        return _prefix(summ) + _use_arms(summ, eff, b, tie.replace("cells", "arms"))
    best = _parse_cell(b["best"])
    use, none, undecided = [], [], []
    for f, levels in _levels(eff).items():
        short = f if f in best else f.rsplit(".", 1)[-1]
        verdicts = [e["verdict"] for e in eff if e.get("kind") == "main" and e["term"].startswith(f + ": ")]
        if any(v in REAL for v in verdicts) and short in best:
            use.append(_say(short, best[short]))
        elif verdicts and all(v == "no effect larger than X" for v in verdicts):
            none.append(f"{short.replace('_', ' ')} {_or(levels)}")
        else:
            undecided.append(short.replace("_", " "))
    parts = [f"Use {_or(use, 'and')}"] if use else [f"No factor is shown to change the {WORDS.get(sel, sel)}"]
    if none:
        verb = "makes" if len(none) == 1 else "make"
        parts.append(
            f"{_or(none, 'and')} {verb} no difference larger than {_x(summ, sel)} in the {WORDS.get(sel, sel)}"
        )
    if undecided:
        parts.append(f"{_or(undecided, 'and')}: undecided")
    return "; ".join(parts) + f" (best cell: {b['best']}; {tie})."


def _use_arms(summ: dict[str, Any], eff: list[dict[str, Any]], b: dict[str, Any], tie: str) -> str:
    sel = summ["select"]
    up = not sel.endswith("loss")
    better = [e["term"].split(" vs ")[0] for e in eff if e["verdict"] in REAL and (e["estimate"] > 0) == up]
    worse = [e["term"].split(" vs ")[0] for e in eff if e["verdict"] in REAL and (e["estimate"] > 0) != up]
    none = [e["term"].split(" vs ")[0] for e in eff if e["verdict"] == "no effect larger than X"]
    parts = [
        f"Better than the baseline: {_or(better, 'and')}"
        if better
        else f"No arm is shown better than the baseline in the {WORDS.get(sel, sel)}"
    ]
    if worse:
        parts.append(f"avoid {_or(worse, 'and')}")
    if none:
        parts.append(
            f"{_or(none, 'and')} make{'s' if len(none) == 1 else ''} no difference larger than {_x(summ, sel)}"
        )
    return "; ".join(parts) + f" (best arm: {b['best']}; {tie})."


def _undecided(summ: dict[str, Any], eff: list[dict[str, Any]]) -> str | None:
    """The undecided effects, each with the seeds of every cell the seed plan says would resolve it."""
    und = [e["term"] for e in eff if e["verdict"] == "undecided"]
    if not und:
        return None
    plan = summ.get("seeds_planned") or {}
    need = {p["term"]: p.get("seeds_needed") for p in plan.get("effects", [])}

    def seeds(t: str) -> str:
        if t not in need:
            return "no seed plan"
        return f"~{need[t]} seeds" if need[t] else f"more than {plan.get('cap', '?')} seeds"

    order = sorted(und, key=lambda t: (need.get(t) is None, need.get(t) or 0))
    named = "; ".join(f"{t} ({seeds(t)})" for t in order[:LIST_UNDECIDED])
    more = f"; and {len(order) - LIST_UNDECIDED} more" if len(order) > LIST_UNDECIDED else ""
    return (
        f"Undecided ({len(und)}), the data cannot tell yet; the seeds of every cell the seed plan says "
        f"would resolve each: {named}{more} (the report's Seeds planned)."
    )
