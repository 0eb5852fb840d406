"""The README's "What the study found" section is what results/ says (scripts/readme_answer.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_answer_section_matches_results():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_answer.py"), "--check"], capture_output=True,
                       text=True)  # fmt: skip
    assert p.returncode == 0, p.stderr


def test_readme_answer_names_every_published_folder_and_its_claims():
    import json

    text = (ROOT / "README.md").read_text()
    for run in sorted((ROOT / "results").glob("*/run.json")):
        r = json.loads(run.read_text())
        assert f"**{r['study']} study, budget `{r['budget']}`**" in text
        assert f"`fmlab import results/{run.parent.name}`" in text
        c = r["counts"]
        if c["complete"] < c["planned"]:  # a study in progress names what it lacks
            assert f"- Still to run ({c['planned'] - c['complete'] - c['failed']}, in the order a resumed sweep" in text
        for c in json.loads((run.parent / "summary.json").read_text()).get("claims", []):
            assert f"Claim \"{c['text']}\": **{c['verdict']}**" in text
