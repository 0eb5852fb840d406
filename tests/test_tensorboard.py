"""--tensorboard: a tiny real-data sweep's event files, read back with TensorBoard's own reader, equal the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from fmlab.api import handles as api

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import api_pb2, metadata  # noqa: E402

STUDY = """name = "tb"
seeds = [0]
[base]
{base}
"train.max_epochs" = 2
[factors]
"model.pool" = ["avg", "max"]
"train.lr" = [0.01, 0.02]
"""
EPOCH_TAGS = ["train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_s"]
FINAL = ["val_loss", "val_acc", "test_loss", "test_acc"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    base = "\n".join(f'"{k}" = {json.dumps(v)}' for k, v in TINY.items() if k != "train.max_epochs")
    (root / "tb.toml").write_text(STUDY.format(base=base))
    p = run_cli(
        "sweep",
        "tb.toml",
        "--workers",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--store",
        "s/fmlab.db",
        "--tensorboard",
        "tb",
        check=True,
        cwd=root,
    )
    assert "4/4 COMPLETE" in p.stderr and "tensorboard --logdir tb" in p.stderr
    return root


def read_run(d: Path) -> dict:
    """A run as plain data: scalars per tag {step: (value, wall_time)}, the hparams plugin's three records."""
    acc = EventAccumulator(str(d), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = {t: {e.step: (e.value, e.wall_time) for e in acc.Scalars(t)} for t in acc.Tags()["scalars"]}
    counts = {t: len(acc.Scalars(t)) for t in acc.Tags()["scalars"]}
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    exp = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    hp = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    domains = {h.name: [getattr(v, v.WhichOneof("kind")) for v in h.domain_discrete.values] for h in exp.hparam_infos}
    return {
        "scalars": scalars,
        "counts": counts,
        "hparams": hp,
        "domains": domains,
        "status": end.status,
        "metrics": sorted(m.name.tag for m in exp.metric_infos),
    }


def check_against_store(root: Path, logdir: Path, live: bool, store: str = "s/fmlab.db") -> dict:
    h = api.open_store(root / store).study("tb")
    trials, epochs = h.trials(), h.epochs()
    finished = {r["id"]: r["finished"] for r in h.store.records("tb")}
    assert sorted(p.name for p in logdir.iterdir()) == sorted(trials["id"])  # one run per trial, named by its id
    runs = {}
    for t in trials.to_dict("records"):
        tid, best = t["id"], t["best_epoch"]
        run = runs[tid] = read_run(logdir / tid)
        assert run["hparams"] == {"model.pool": t["model.pool"], "train.lr": t["train.lr"], "seed": float(t["seed"])}
        assert run["domains"] == {"model.pool": ["avg", "max"], "train.lr": [0.01, 0.02], "seed": [0.0]}
        assert run["status"] == api_pb2.STATUS_SUCCESS
        assert run["metrics"] == sorted([*(f"final/{m}" for m in FINAL), "val_acc", "val_loss"])
        assert sorted(run["scalars"]) == sorted([*EPOCH_TAGS, *(f"final/{m}" for m in FINAL)])
        mine = epochs[epochs["trial_id"] == tid].set_index("epoch")
        assert len(mine) == 2
        for tag in EPOCH_TAGS:
            got = run["scalars"][tag]
            assert len(got) == run["counts"][tag]  # each epoch once
            assert sorted(got) == sorted(mine.index)
            for e, (v, wall) in got.items():
                assert v == pytest.approx(mine.loc[e, tag], rel=1e-6, abs=1e-7), (tid, tag, e)
                if live:  # written as the epoch came in, before the trial was recorded COMPLETE
                    assert wall < finished[tid]
        for m in FINAL:  # at the best epoch's step; final/val_* is that epoch's, not the last one's
            got = run["scalars"][f"final/{m}"]
            assert list(got) == [best] and got[best][0] == pytest.approx(t[m], rel=1e-6), (tid, m)
        assert run["scalars"]["final/val_acc"][best][0] == pytest.approx(mine.loc[best, "val_acc"], rel=1e-6)
    return runs


def test_sweep_writes_one_run_per_trial_equal_to_the_store(swept):
    check_against_store(swept, swept / "tb", live=True)


def test_results_writes_the_same_from_the_store_and_rewrites_in_place(swept):
    for _ in range(2):  # a second write replaces the runs' event files, it does not add to them
        p = run_cli("results", "tb", "--store", "s/fmlab.db", "--tensorboard", "again", check=True, cwd=swept)
        assert "wrote 4 TensorBoard run(s)" in p.stderr
    runs = check_against_store(swept, swept / "again", live=False)
    live = {d.name: read_run(d) for d in (swept / "tb").iterdir()}

    def values(r):  # wall times differ: live ones are when epochs arrived, rebuilt ones come from epoch_s
        return {**r, "scalars": {t: {s: v for s, (v, _) in x.items()} for t, x in r["scalars"].items()}}

    assert {k: values(v) for k, v in runs.items()} == {k: values(v) for k, v in live.items()}
    assert all(len(list(d.glob("events.out.tfevents.*"))) == 1 for d in (swept / "again").iterdir())


def test_missing_tensorboard_is_one_line(swept, tmp_path):
    shim = tmp_path / "shim" / "tensorboard"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('no tensorboard here')\n")
    env = {"PYTHONPATH": str(shim.parent)}
    for args in (
        ["results", "tb", "--store", "s/fmlab.db", "--tensorboard", "x"],
        ["sweep", "tb.toml", "--store", "s/fmlab.db", "--workers", "0", "--tensorboard", "x"],
    ):
        p = run_cli(*args, env=env, cwd=swept)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.strip().endswith("pip install 'fmlab[tensorboard]'")
        assert not (swept / "x").exists()


def test_a_killed_sweep_resumed_writes_each_epoch_once(swept):
    from fmlab.api import handles as api

    first = api.plan_sweep(swept / "tb.toml", store=swept / "k" / "fmlab.db").todo[0].id  # killed after its epoch 1
    args = [
        "sweep",
        "tb.toml",
        "--workers",
        "0",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--store",
        "k/fmlab.db",
        "--tensorboard",
        "tbk",
    ]
    p = run_cli(*args, env={"FMLAB_FAULT": f"kill:{first}:1"}, cwd=swept)
    assert p.returncode == -9 and (swept / "tbk" / first).is_dir()
    run_cli(*args, check=True, cwd=swept)
    check_against_store(swept, swept / "tbk", live=True, store="k/fmlab.db")
    assert len(list((swept / "tbk" / first).glob("events.out.tfevents.*"))) == 2  # epoch 1 before the kill, 2 after
