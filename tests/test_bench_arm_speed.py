"""scripts/bench_arm_speed.py: each arm's network timed once per round (arms that train one network share its
figure), the baseline at extra widths, ratios to the baseline; a tiny arms study, real training steps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_arm_speed", ROOT / "scripts" / "bench_arm_speed.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

STUDY = """name = "speed"
[base]
"model.widths" = [8, 16]
"train.batch_size" = 16
[arms.ema]
"train.ema" = 0.999
[arms.wider]
"model.widths" = [16, 16]
"""


def test_every_arm_gets_its_networks_figure_and_the_baseline_is_one(tmp_path, capsys):
    f = tmp_path / "speed.toml"
    f.write_text(STUDY)
    assert bench.main([str(f), "--threads", "1", "--rounds", "1", "--widths", "4,16"]) == 0
    rows = [r.split("|")[1:-1] for r in capsys.readouterr().out.splitlines()[2:]]
    by = {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}
    assert list(by) == ["baseline", "ema", "wider", "widths=4,16"]
    assert by["baseline"][2] == "fp32" and by["baseline"][4] == "1.00x"
    assert by["ema"][2:] == by["baseline"][2:]  # one network, one figure
    assert int(by["wider"][0].replace(",", "")) > int(by["baseline"][0].replace(",", ""))  # its own net
    assert float(by["widths=4,16"][1]) < float(by["baseline"][1])  # MFLOP of the narrower stem


def test_precisions_give_each_network_a_row_in_each_against_the_baseline_in_the_first(tmp_path, capsys):
    f = tmp_path / "speed.toml"
    f.write_text(STUDY)
    assert bench.main([str(f), "--threads", "1", "--rounds", "1", "--precisions", "bf16", "fp32"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("| vs baseline in bf16 |")
    rows = [[c.strip() for c in r.split("|")[1:-1]] for r in out[2:]]
    assert [(r[0], r[3]) for r in rows] == [(a, p) for a in ("baseline", "ema", "wider") for p in ("bf16", "fp32")]
    ips = [float(r[4].replace(",", "")) for r in rows]
    assert rows[0][5] == "1.00x" and abs(float(rows[1][5][:-1]) - ips[1] / ips[0]) < 0.01  # fp32 against bf16's


def test_auto_precision_is_timed_in_what_auto_trains_in_here_never_as_fp32_by_default(tmp_path, capsys):
    import pytest
    import torch

    from fmlab.config.schema import ModelConfig
    from fmlab.training.env import pick_precision
    from fmlab.training.probe import training_step

    f = tmp_path / "speed.toml"
    f.write_text(STUDY.replace("[base]\n", '[base]\n"train.precision" = "auto"\n'))
    assert bench.main([str(f), "--threads", "1", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    want, _ = pick_precision("auto", torch.device("cpu"), threads=1)
    assert out[0].startswith(f"precision: auto -> {want} here (")
    rows = [[c.strip() for c in r.split("|")[1:-1]] for r in out if r.startswith("| ") and "---" not in r]
    assert {r[3] for r in rows[1:]} == {want}
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        training_step(ModelConfig(), "auto")
