"""The packed loop (fmlab.training.packed): K trials trained as one model agree with their single runs, keep their
own early stopping and failures, write what single runs write, and survive SIGKILL."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest
import torch
from conftest import OPTS, TINY, run_cli, tiny_study_file
from safetensors.torch import load_file, save_file

from fmlab.api import handles as api
from fmlab.config.schema import Config, with_overrides
from fmlab.config.states import State
from fmlab.data import idx as data
from fmlab.deploy import infer
from fmlab.errors import FmlabError
from fmlab.model import packed as packnet
from fmlab.model.nets import build
from fmlab.training import checkpoint, packed, packs
from fmlab.training.env import seed_everything
from fmlab.training.loop import Diverged, prepare, smoothed_nll, train

SMALL = {"model.widths": "8,16,32", "data.train_subset": 4000, "data.val_size": 1000, "train.max_epochs": 2}


def cfgs(base: dict, seeds=(0, 1), dropouts=(0.0, 0.2), **extra) -> list[Config]:
    return [with_overrides(Config(), {**base, **extra, "seed": s, "model.dropout": d}) for s in seeds for d in dropouts]


@pytest.fixture(scope="module")
def small_ds():
    return data.load(with_overrides(Config(), SMALL).resolved().data)


# ---------------------------------------------------------------- numerics


@pytest.mark.parametrize(
    "extra",
    [{}, {"model.batch_norm": True, "model.pool": "max"}, {"model.activation": "prelu", "train.label_smoothing": 0.1}],
)
def test_first_step_loss_equals_each_single_run_within_1e5(small_ds, extra):
    """Dropout 0: each network's first-batch loss in the pack is its single run's (same init, same batch)."""
    cs = [c.resolved() for c in cfgs({**SMALL, **extra}, seeds=(0, 1, 2, 3), dropouts=(0.0,))]
    x, y = prepare(small_ds.train, small_ds, torch.device("cpu"), torch.channels_last)
    bs, eps = cs[0].train.batch_size, cs[0].train.label_smoothing
    singles, idx = [], []
    for c in cs:
        seed_everything(c.seed)
        net = build(c.model).to(memory_format=torch.channels_last)
        i = torch.randperm(len(y), generator=torch.Generator().manual_seed(c.seed))[:bs]
        idx.append(i)
        singles.append((net, smoothed_nll(net(x[i]), y[i], eps).item()))
    pk = packnet.PackedNet(build(cs[0].model), len(cs), [0.0] * len(cs), [torch.Generator()] * len(cs))
    pk.load_state_dict(packnet.stack([n.state_dict() for n, _ in singles], pk.state_dict()))
    xb = torch.cat([x[i] for i in idx], 1).contiguous(memory_format=torch.channels_last)
    losses = packnet.member_losses(pk(xb), torch.stack([y[i] for i in idx], 1), eps)
    for (_, single), got in zip(singles, losses.tolist(), strict=True):
        assert got == pytest.approx(single, abs=1e-5)


def test_two_epochs_on_4000_images_agree_with_single_runs(small_ds):
    """8 trials (4 seeds x dropout 0 / 0.2): each packed val accuracy within 1.5 points of its single
    run and the mean within 0.5 (the issue's bound); on the CPU in fact far closer, dropout included,
    as the masks come from the single run's stream."""
    cs = cfgs(SMALL, seeds=(0, 1, 2, 3))
    got = packed.train_pack(cs, small_ds, OPTS, pack_id="p8")
    singles = {c.resolved().trial_id(): train(c, small_ds, OPTS) for c in cs}
    diffs = []
    for tid, s in singles.items():
        r = got[tid]
        assert not isinstance(r, BaseException), r
        assert [e["epoch"] for e in r.epochs] == [1, 2]
        diffs.append(100 * (r.metrics["val_acc"] - s.metrics["val_acc"]))
        assert abs(diffs[-1]) <= 1.5
        assert r.epochs[0]["train_loss"] == pytest.approx(s.epochs[0]["train_loss"], abs=1e-3)
        assert r.n_params == s.n_params and r.weights.keys() == s.weights.keys()
        assert all(r.weights[k].shape == s.weights[k].shape for k in s.weights)
        assert r.env["pack"] == {"id": "p8", "k": 8, "trials": list(got), "k_trained": 8}
    assert abs(sum(diffs) / len(diffs)) <= 0.5, diffs


def test_packed_linear_is_k_linears():
    lins = [torch.nn.Linear(6, 3) for _ in range(4)]
    pl = packnet.PackedLinear(4, 6, 3)
    pl.load_state_dict(packnet.stack([m.state_dict() for m in lins], pl.state_dict()))
    x = torch.randn(5, 4, 6)
    want = torch.cat([m(x[:, k]) for k, m in enumerate(lins)], 1)
    assert torch.allclose(pl(x.reshape(5, 24)), want, atol=1e-6)


def test_unstack_is_the_inverse_of_stack():
    nets = [build(with_overrides(Config(), {**TINY, "seed": s, "model.batch_norm": True}).model) for s in range(3)]
    like = packnet.PackedNet(nets[0], 3, [0.0] * 3, [torch.Generator()] * 3).state_dict()
    st = packnet.stack([n.state_dict() for n in nets], like)
    shapes = {k: v.shape for k, v in nets[0].state_dict().items()}
    for i, n in enumerate(nets):
        back = packnet.unstack(st, 3, i, shapes)
        assert all(torch.equal(back[k], v) for k, v in n.state_dict().items())


def test_configs_of_two_packs_are_refused(small_ds):
    a, b = with_overrides(Config(), TINY), with_overrides(Config(), {**TINY, "train.lr": 3e-3})
    with pytest.raises(ValueError, match="not one pack"):
        packed.train_pack([a, b], small_ds, OPTS)


# ---------------------------------------------------------------- each network its own trial


class Stop(Exception):
    pass


def _states_after_one_epoch(cs: list[Config], ds, root: Path) -> list[Path]:
    """Every trial of the pack cut off after its first epoch (its resume state saved, as a kill leaves it)."""
    dirs = [root / c.resolved().trial_id() for c in cs]

    def stop(tid, row):
        raise Stop(tid)

    out = packed.train_pack(cs, ds, OPTS, state_dirs=dirs, on_epoch=stop)
    assert all(isinstance(v, Stop) for v in out.values()) and all((d / "state.json").is_file() for d in dirs)
    return dirs


def test_one_network_stops_early_the_others_go_on_and_a_pack_state_resumes_alone(tiny_ds, tmp_path):
    cs = cfgs({**TINY, "train.max_epochs": 4, "train.patience": 10}, seeds=(0, 1))
    dirs = _states_after_one_epoch(cs, tiny_ds, tmp_path)
    # Trial 0 has not improved for patience - 1 epochs on a best no epoch can beat: it stops after epoch 2.
    meta = json.loads((dirs[0] / "state.json").read_text())
    meta["train"].update(best=-1.0, bad_epochs=9)
    (dirs[0] / "state.json").write_text(json.dumps(meta))
    ended = []
    out = packed.train_pack(cs, tiny_ds, OPTS, state_dirs=dirs, on_end=lambda tid, r: ended.append(tid))
    ids = [c.resolved().trial_id() for c in cs]
    first = out[ids[0]]
    assert first.stop_reason == "early_stopping" and [e["epoch"] for e in first.epochs] == [1, 2]
    assert ended[0] == ids[0]  # reported when it stopped, not when the pack ended
    for tid in ids[1:]:
        assert out[tid].stop_reason == "max_epochs" and [e["epoch"] for e in out[tid].epochs] == [1, 2, 3, 4]
        assert out[tid].env["pack"]["k_trained"] == 3  # re-stacked without the one that left
    # A trial's state saved in a pack resumes alone (train(), the single loop) to what the pack got.
    last = tmp_path / "alone"
    dirs2 = _states_after_one_epoch(cs, tiny_ds, last)
    alone = train(cs[3], tiny_ds, OPTS, state_dir=dirs2[3])
    assert [e["epoch"] for e in alone.epochs] == [1, 2, 3, 4]
    assert alone.metrics["val_loss"] == pytest.approx(out[ids[3]].metrics["val_loss"], abs=1e-3)


def test_a_nan_in_one_network_fails_it_alone(tiny_ds, tmp_path):
    cs = cfgs({**TINY, "train.max_epochs": 3}, seeds=(0, 1))
    dirs = _states_after_one_epoch(cs, tiny_ds, tmp_path)
    f = dirs[1] / "state.safetensors"
    t = load_file(str(f))
    t = {
        k: (torch.full_like(v, math.nan) if k.startswith("net.") and v.is_floating_point() else v) for k, v in t.items()
    }
    save_file(t, str(f))
    out = packed.train_pack(cs, tiny_ds, OPTS, state_dirs=dirs)
    ids = [c.resolved().trial_id() for c in cs]
    assert isinstance(out[ids[1]], Diverged) and "epoch 2" in str(out[ids[1]])
    for tid in ids[:1] + ids[2:]:
        r = out[tid]
        assert [e["epoch"] for e in r.epochs] == [1, 2, 3]
        assert all(math.isfinite(e["train_loss"]) and math.isfinite(e["val_loss"]) for e in r.epochs)
        assert r.metrics["val_acc"] > 0.2


def test_a_packed_checkpoint_exports_and_predicts_like_a_single_one(tiny_ds, tmp_path):
    cs = cfgs(TINY, seeds=(0,))
    tid = cs[1].resolved().trial_id()  # the one with dropout
    r = packed.train_pack(cs, tiny_ds, OPTS)[tid]
    ckpt = checkpoint.save_trial(r, tmp_path / "packed")
    ref = checkpoint.save_trial(train(cs[1], tiny_ds, OPTS), tmp_path / "single")
    p = run_cli("export", str(ckpt), "--onnx", str(tmp_path / "m.onnx"), check=True)
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    assert rep["fp32"]["argmax_agreement"] >= 0.999 and rep["fp32"]["max_abs_diff"] < 1e-4
    assert rep["torch_test_acc"] == pytest.approx(r.metrics["test_acc"], abs=1e-9)
    pixels = tiny_ds.test.x[:200].reshape(200, 28, 28).numpy()
    got, want = (infer.predict_pixels(infer.load(c), pixels, [str(i) for i in range(200)]) for c in (ckpt, ref))
    same = sum(a["top"][0]["class"] == b["top"][0]["class"] for a, b in zip(got, want, strict=True))
    assert same >= 198, same
    assert max(abs(a["top"][0]["prob"] - b["top"][0]["prob"]) for a, b in zip(got, want, strict=True)) < 0.02


# ---------------------------------------------------------------- through the sweep


def pack_study(root: Path, epochs: int) -> Path:
    """2 learning rates x dropout 0 / 0.2 x 2 seeds on the TINY config: 2 packs of 4 trials."""
    base = "\n".join(f'"{k}" = {json.dumps(v)}' for k, v in TINY.items() if k != "train.max_epochs")
    p = root / "studies" / "packs.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(
        f'name = "packs"\nseeds = [0, 1]\n[base]\n{base}\n"train.max_epochs" = {epochs}\n'
        '[factors]\n"train.lr" = [0.01, 0.02]\n"model.dropout" = [0.0, 0.2]\n'
    )
    return p


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(sql).fetchall()


def test_resolve_pack_choices():
    assert packs.resolve("auto", "cuda") == 0 and packs.resolve("auto", "cpu") is None
    assert packs.resolve("off", "cuda") is None and packs.resolve("on", "cpu") == 0
    assert packs.resolve("3", "cpu") == 3 and packs.resolve(1, "cuda") is None
    for bad in ("0", "-2", "many"):
        with pytest.raises(FmlabError, match="bad --pack"):
            packs.resolve(bad, "cpu")


def test_a_pack_of_4_writes_what_4_single_runs_write(tmp_path):
    f = pack_study(tmp_path, epochs=2)
    dbp, dbs = tmp_path / "p" / "fm.db", tmp_path / "s" / "fm.db"
    common = ["--workers", "1", "--threads", "1"]
    dry = run_cli("sweep", str(f), "--store", str(dbp), "--pack", "on", "--dry-run", check=True).stdout
    assert "packs: 2 (of 4 trial(s))" in dry
    run_cli("sweep", str(f), "--store", str(dbp), "--pack", "on", *common, check=True)
    run_cli("sweep", str(f), "--store", str(dbs), "--pack", "off", "--workers", "0", "--threads", "1", check=True)
    sp, ss = (json.loads(run_cli("ls", "--store", str(d), "--format", "json", check=True).stdout) for d in (dbp, dbs))
    assert sorted(r["id"] for r in sp) == sorted(r["id"] for r in ss) and len(sp) == 8
    assert {r["state"] for r in sp} == {"COMPLETE"}
    single = {r["id"]: r for r in ss}
    for r in sp:
        s = single[r["id"]]
        assert r.keys() == s.keys() and r["metrics"].keys() == s["metrics"].keys()
        assert r["metrics"]["val_acc"] == pytest.approx(s["metrics"]["val_acc"], abs=0.05)
        a, b = (api.open_store(d).trial(r["id"]) for d in (dbp, dbs))  # what `fmlab show` prints
        assert [e.keys() for e in a["epochs"]] == [e.keys() for e in b["epochs"]]
        ca, cb = Path(a["checkpoint"]), Path(b["checkpoint"])
        assert sorted(p.name for p in ca.iterdir()) == sorted(p.name for p in cb.iterdir())
        wa, wb = load_file(str(ca / "best.safetensors")), load_file(str(cb / "best.safetensors"))
        assert {k: v.shape for k, v in wa.items()} == {k: v.shape for k, v in wb.items()}
        ta, tb = (json.loads((c / "trial.json").read_text()) for c in (ca, cb))
        assert ta.keys() == tb.keys() and ta["env"]["pack"]["k"] == 4 and "pack" not in tb["env"]
    assert len({json.loads(e)["pack"]["id"] for (e,) in _rows(dbp, "SELECT env FROM trials")}) == 2


def test_sigkill_inside_a_pack_then_rerun_completes_each_trial_once_from_its_last_epoch(tmp_path):
    """The kill fault SIGKILLs the sweep itself (inline: the pack trains in the sweep's process) after a
    trial's epoch 1 is saved; the rerun resumes all four from epoch 1 and runs nothing twice."""
    f = pack_study(tmp_path, epochs=3)
    db = tmp_path / "fm.db"
    first = _first_id(f)
    args = ["sweep", str(f), "--store", str(db), "--pack", "on", "--workers", "0", "--threads", "1"]
    p = run_cli(*args, env={"FMLAB_FAULT": f"kill:{first}:1"})
    assert p.returncode == -9, p.stderr
    assert {s for (s,) in _rows(db, "SELECT state FROM trials")} == {"RUNNING", "WAITING"}
    r = run_cli(*args, check=True)
    assert "recovered from a dead sweep" in r.stderr
    rows = _rows(db, "SELECT id, state, attempts FROM trials")
    assert len(rows) == 8 and {s for _, s, _ in rows} == {"COMPLETE"}
    assert {n for (n,) in _rows(db, "SELECT COUNT(*) FROM epochs GROUP BY trial")} == {3}
    for tid, _, attempts in rows:
        show = api.open_store(db).trial(tid)
        if attempts == 2:  # the killed pack's trials: resumed after the epoch they had finished
            assert "resuming after epoch 1" in show["log"], show["log"]
    assert sum(a == 2 for _, _, a in rows) == 4  # one pack was cut off, the other never started


def _first_id(f: Path) -> str:
    """The first trial the sweep runs (fmlab.sweep.order: not necessarily the file's first)."""
    return api.plan_sweep(f, "full", store=f.parent / "nowhere" / "fm.db", pack="on").todo[0].id


def test_api_run_study_packs_on_request_and_auto_leaves_the_cpu_alone(tmp_path):
    f = tiny_study_file(tmp_path, epochs=1)
    auto = api.plan_sweep(f, "t", store=tmp_path / "a.db", device="cpu")
    assert auto.layout.pack is None and auto.packs == []
    on = api.plan_sweep(f, "t", store=tmp_path / "a.db", pack=2, device="cpu")
    assert on.layout.pack == 2 and sorted(len(g) for g in on.packs) == [2, 2]
    h = api.run_study(f, "t", store=tmp_path / "a.db", workers=0, threads=1, pack="on", device="cpu")
    t = h.trials()
    assert set(t["state"]) == {State.COMPLETE} and len(t) == 4
    packs_seen = {json.loads(e)["pack"]["id"] for (e,) in _rows(tmp_path / "a.db", "SELECT env FROM trials")}
    assert len(packs_seen) == 2  # one pack per learning rate, each of its 2 seeds
