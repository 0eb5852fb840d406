import json

from conftest import TINY, run_cli


def sets(d):
    return [a for k, v in d.items() for a in ("--set", f"{k}={v}")]


def test_train_end_to_end(tmp_path):
    out = tmp_path / "ck"
    p = run_cli("train", *sets(TINY), "--out", str(out), "--threads", "1", check=True)
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert {"trial_id", "val_acc", "test_acc", "epochs"} <= set(last)
    assert "epoch   1" in p.stderr and "ETA" in p.stderr
    meta = json.loads((out / "trial.json").read_text())
    assert meta["schema"] == "fmlab.trial/1" and meta["trial_id"] == last["trial_id"]
    assert meta["classes"][0] == "T-shirt/top" and meta["input"]["mean"] == 0.286
    assert (out / "best.safetensors").stat().st_size > 0


def test_bad_set_fails_before_training_with_one_line(tmp_path):
    p = run_cli("train", "--set", "model.pool=median", "--out", str(tmp_path / "x"))
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "model.pool" in p.stderr and "'avg', 'max'" in p.stderr
    assert not (tmp_path / "x").exists()


def test_data_check_json_and_missing_dir(tmp_path):
    p = run_cli("data", "check", "--format", "json", check=True)
    assert json.loads(p.stdout)["ok"] is True
    p = run_cli("data", "check", "--data-dir", str(tmp_path))
    assert p.returncode == 2 and "Traceback" not in p.stderr and str(tmp_path) in p.stderr
