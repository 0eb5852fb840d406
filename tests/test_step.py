"""The training step both loops share (fmlab.training.step): the packed loop with one network is train(),
both loops run the one step function, neither loop trains by itself, and resume states written before
the step was shared (commit 17dd272, tests/data/resume-17dd272) still resume."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import OPTS, TINY

from fmlab.config.schema import Config, with_overrides
from fmlab.data import idx as data
from fmlab.training import packed, step
from fmlab.training.checkpoint import ResumeState
from fmlab.training.loop import train

SRC = Path(__file__).resolve().parents[1] / "src" / "fmlab" / "training"
FIXTURE = Path(__file__).parent / "data" / "resume-17dd272"


def rows(r) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "epoch_s"} for e in r.epochs]


def assert_rows_close(got: list[dict], want: list[dict], tol: float) -> None:
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) <= tol for k in b), (a, b)


@pytest.mark.parametrize(
    "extra", [{}, {"model.dropout": 0.2, "model.batch_norm": True, "data.flip": 0.5, "train.label_smoothing": 0.1}]
)
def test_the_packed_loop_with_one_network_reproduces_train(tiny_ds, extra):
    """K = 1: the same init, data order, augmentation and dropout streams, schedule and bookkeeping as
    train(); only the packed layout's kernels (grouped conv, batched matmul) differ, by float rounding."""
    cfg = with_overrides(Config(), {**TINY, "train.max_epochs": 2, **extra})
    single = train(cfg, tiny_ds, OPTS)
    pack = packed.train_pack([cfg], tiny_ds, OPTS)[cfg.resolved().trial_id()]
    assert not isinstance(pack, BaseException), pack
    assert_rows_close(rows(pack), rows(single), 1e-6)
    assert pack.best_epoch == single.best_epoch and pack.stop_reason == single.stop_reason


def test_both_loops_run_the_one_step_function(tiny_ds, monkeypatch):
    calls: list[tuple[str, int]] = []
    real = step.train_step

    def spy(run, lanes, idx, lr):
        calls.append((type(run.layout).__name__, len(lanes)))
        return real(run, lanes, idx, lr)

    monkeypatch.setattr(step, "train_step", spy)
    cfg = with_overrides(Config(), TINY)
    steps = -(-TINY["data.train_subset"] // TINY["train.batch_size"])
    train(cfg, tiny_ds, OPTS)
    assert calls == [("Single", 1)] * steps
    calls.clear()
    packed.train_pack([cfg, with_overrides(cfg, {"seed": 1})], tiny_ds, OPTS)
    assert calls == [("Packed", 2)] * steps


TRAINING_CALLS = {"backward", "step", "zero_grad", "lr_at"}


def training_calls(path: Path) -> list[str]:
    """What a module does itself that is the step's job: calls of backward, an optimizer's step or
    zero_grad, the schedule, or an assignment to a param group's "lr"."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in TRAINING_CALLS:
                found.append(f"{name}() at line {node.lineno}")
        targets = node.targets if isinstance(node, ast.Assign) else []
        for t in targets:
            if isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Constant) and t.slice.value == "lr":
                found.append(f'["lr"] = at line {node.lineno}')
    return found


def test_neither_loop_trains_by_itself_the_step_module_does():
    assert training_calls(SRC / "loop.py") == []
    assert training_calls(SRC / "packed.py") == []
    found = " ".join(training_calls(SRC / "step.py"))
    for what in ("backward()", "step()", "zero_grad()", "lr_at()", '["lr"] ='):
        assert what in found, (what, found)


def test_the_structure_check_sees_a_loop_that_steps(tmp_path):
    f = tmp_path / "loop.py"
    f.write_text("def f(opt, loss, g):\n    loss.backward()\n    opt.step()\n    g['lr'] = 1\n    step.run_epoch()\n")
    assert sorted(s.split("(")[0].split(" =")[0] for s in training_calls(f)) == sorted(["backward", "step", '["lr"]'])


# ---------------------------------------------------------------- the resume state


def test_a_resume_state_round_trips_and_travels_as_bytes(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    rng = {"torch": torch.get_rng_state(), "gen": torch.Generator().manual_seed(3).get_state()}
    d = tmp_path / "a"
    assert not ResumeState.exists(d) and not ResumeState.exists(None) and ResumeState.files_as_bytes(d) == {}
    ResumeState({"epoch": 4, "best": 0.5}, net.state_dict(), opt.state_dict(), net.state_dict(), rng).write(d)
    assert ResumeState.exists(d) and ResumeState.epoch(d) == 4
    back = ResumeState.read(d)
    assert back.train == {"epoch": 4, "best": 0.5} and back.rng.keys() == rng.keys()
    assert all(torch.equal(back.net[k], v) and torch.equal(back.best[k], v) for k, v in net.state_dict().items())
    assert back.opt["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert torch.equal(back.opt["state"][1]["exp_avg"], opt.state_dict()["state"][1]["exp_avg"])
    files = ResumeState.files_as_bytes(d)
    assert sorted(files) == sorted(ResumeState.FILES)
    ResumeState.replace_files(tmp_path / "b", files)
    assert ResumeState.read(tmp_path / "b").train == back.train
    (d / ResumeState.TENSORS).unlink()
    assert ResumeState.files_as_bytes(d) == {}  # only part of one: nothing to carry


@pytest.fixture(scope="module")
def old():
    exp = json.loads((FIXTURE / "expected.json").read_text())
    cfg = with_overrides(Config(), exp["base"])
    return exp, cfg, data.load(cfg.resolved().data)


def test_a_state_train_wrote_before_the_shared_step_resumes(old, tmp_path):
    """17dd272's train() cut after epoch 1 of 3: resumed now, it ends as that code's uncut run ended
    (exactly on the CPU that wrote the fixture; the tolerance is for other CPUs' kernels) and as an
    uncut run of this code does."""
    exp, cfg, ds = old
    shutil.copytree(FIXTURE / "single", tmp_path / "single")
    assert ResumeState.epoch(tmp_path / "single") == 1
    r = train(cfg, ds, OPTS, state_dir=tmp_path / "single")
    assert rows(r)[0] == exp["single"]["epochs"][0]  # read back from the old file as written
    assert_rows_close(rows(r), exp["single"]["epochs"], 1e-5)
    assert r.metrics == pytest.approx(exp["single"]["metrics"], abs=1e-5)
    assert_rows_close(rows(r), rows(train(cfg, ds, OPTS)), 1e-5)


def test_states_a_pack_wrote_before_the_shared_step_resume_in_a_pack(old, tmp_path):
    exp, cfg, ds = old
    cs = [with_overrides(cfg, o) for o in exp["pack"]]
    ids = [c.resolved().trial_id() for c in cs]
    shutil.copytree(FIXTURE / "pack", tmp_path / "pack")
    out = packed.train_pack(cs, ds, OPTS, state_dirs=[tmp_path / "pack" / i for i in ids])
    for tid in ids:
        r = out[tid]
        assert not isinstance(r, BaseException), r
        assert rows(r)[0] == exp["packed"][tid]["epochs"][0]
        # train_loss is now divided by the image count in float64 (as train() does), not float32: ~1e-7
        assert_rows_close(rows(r), exp["packed"][tid]["epochs"], 1e-5)
        assert r.metrics == pytest.approx(exp["packed"][tid]["metrics"], abs=1e-5)
