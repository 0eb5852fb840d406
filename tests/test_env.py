"""The machine as fmlab records and reports it: CPU model, native bf16, and the note a bf16 sweep gets on a
CPU that emulates bf16 (BENCHMARKS.md: 2.9x slower than fp32 per step on such a box)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from fmlab.api import handles as api
from fmlab.training import env

ROOT = Path(__file__).resolve().parents[1]
CPUINFO = "processor\t: 0\nmodel name\t: Test CPU @ 1.00GHz\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n\n"


@pytest.fixture
def cpu(monkeypatch):
    """Make /proc/cpuinfo say what the test wants: cpu("avx512_bf16"), cpu("") or cpu(None) (no file)."""

    def set_flags(extra: str | None) -> None:
        text = "" if extra is None else CPUINFO.format(extra=extra)
        monkeypatch.setattr(env, "_cpuinfo", lambda: text)

    return set_flags


def test_native_bf16_is_read_from_the_cpu_flags(cpu):
    cpu("avx512_vnni avx512_bf16")
    assert env.cpu_bf16() is True and env.cpu_model() == "Test CPU @ 1.00GHz"
    cpu("amx_tile amx_bf16")
    assert env.cpu_bf16() is True
    cpu("avx512_vnni avx512_bf16x")  # a flag that merely starts alike is not the flag
    assert env.cpu_bf16() is False
    cpu(None)  # not Linux: unknown, and unknown says nothing
    assert env.cpu_bf16() is None and env.precision_note("cpu", {"bf16"}) is None


def probed(monkeypatch, ips: float) -> list[tuple[str, int]]:
    """The sweep's speed probe (fmlab.training.probe.train_ips, as the estimate calls it) replaced by a fixed
    speed; the list records each call's (precision, threads)."""
    from fmlab.sweep import estimate as probe

    asked: list[tuple[str, int]] = []

    def fake(m, threads, precision, batch=64):
        asked.append((precision, threads))
        return ips

    monkeypatch.setattr(probe, "train_ips", fake)
    return asked


def bf16_ratio(monkeypatch, r: float) -> list[int]:
    """The bf16-over-fp32 step probe (fmlab.training.probe.bf16_step_ratio) replaced by a fixed ratio; the list
    records the threads of each call."""
    from fmlab.training import probe

    threads: list[int] = []
    monkeypatch.setattr(probe, "bf16_step_ratio", lambda t: threads.append(t) or r)
    return threads


def test_the_note_only_for_bf16_on_a_cpu_that_emulates_it(cpu):
    cpu("avx512_vnni")
    note = env.precision_note("cpu", {"fp32", "bf16"})
    assert note and "Test CPU" in note and "emulated" in note and "bench_train_levers.py" in note
    assert env.precision_note("cpu", {"fp32"}) is None and env.precision_note("cuda", {"bf16"}) is None
    cpu("avx512_bf16")
    assert env.precision_note("cpu", {"bf16"}) is None


def test_a_bf16_sweep_plan_carries_the_note_and_provenance_the_cpu(cpu, tmp_path, monkeypatch):
    from conftest import tiny_study_file

    from fmlab.sweep import estimate as sweep

    cpu("avx2")
    tiny = tiny_study_file(tmp_path, extra='\n"train.precision" = "bf16"')  # bf16 asked for by name
    store = tmp_path / "none" / "fm.db"
    monkeypatch.setattr(sweep, "bf16_step_ratio", lambda threads: 12.5)  # what this probe measures is tested below
    asked = probed(monkeypatch, 50.0)
    bf16 = api.plan_sweep(tiny, "t", store=store, device="cpu")
    assert len(bf16.notes) == 1 and "emulated" in bf16.notes[0] and "12.5x the fp32 step" in bf16.notes[0]
    lo = bf16.layout  # no store: the speed is probed here, in the (emulated) bf16 the trials train in
    assert asked == [("bf16", lo.threads)] and bf16.speed_from == "probed here" and bf16.calibrated
    calib = 50.0 / sweep._reference_ips(bf16.todo[0].config.model, lo.threads)
    assert bf16.estimate_s == pytest.approx(sweep.estimate_s(bf16.todo, lo.workers, lo.threads, calib))  # no 12.5x
    quick = api.plan_sweep(ROOT / "studies" / "seed.toml", "quick", store=store, device="cpu")  # auto: fp32 here
    assert [n for n in quick.notes if n.startswith("note:")] == [] and asked[-1] == ("fp32", lo.threads)
    assert not store.parent.exists()  # planning read-only created nothing
    prov = env.provenance(torch.device("cpu"))
    assert prov["cpu_bf16"] is False and prov["device_name"] == "Test CPU @ 1.00GHz"


def test_auto_picks_bf16_only_where_it_is_native_and_onednn_may_use_it(cpu, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    dev = torch.device("cpu")
    cpu("avx512_bf16 amx_bf16")
    ratios = bf16_ratio(monkeypatch, 0.6)  # the probe of a bf16 step against fp32's, tested below
    has = "this CPU has avx512_bf16 and amx_bf16"
    assert env.pick_precision("auto", dev) == ("bf16", f"{has}; a bf16 training step measured 0.60x fp32's")
    assert env.pick_precision("auto", dev, threads=3) and ratios[-1] == 3  # measured at the trials' threads
    ratios = bf16_ratio(monkeypatch, 1.35)  # native, but slower here (avx512_bf16 without AMX: BENCHMARKS.md)
    assert env.pick_precision("auto", dev) == ("fp32", f"{has}, but a bf16 training step measured 1.35x fp32's here")
    assert env.pick_precision("auto", dev, decided="bf16") == ("bf16", "as the sweep decided for every trial")
    bf16_ratio(monkeypatch, 0.6)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core")  # oneDNN held below its bf16 ISAs
    prec, why = env.pick_precision("auto", dev)
    assert prec == "fp32" and "ONEDNN_MAX_CPU_ISA=AVX512_CORE" in why
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")  # a cap above bf16 takes nothing away
    assert env.pick_precision("auto", dev)[0] == "bf16"
    cpu("avx2")
    prec, why = env.pick_precision("auto", dev)
    assert prec == "fp32" and "emulated" in why
    assert env.pick_precision("bf16", dev) == ("bf16", "as the config asks")  # asked by name: as asked
    cpu(None)
    assert env.pick_precision("auto", dev)[0] == "fp32"


def test_the_cpu_budget_without_native_bf16_plans_fp32_and_the_published_trials_count(cpu, tmp_path, monkeypatch):
    """Issue 34's acceptance: on an AVX2 CPU the cpu budget (train.precision auto) is an fp32 plan with a
    readable estimate at fp32's speed (no bf16 probe), and once results/seed-cpu is imported it plans none of
    the 72 published trials: auto shares bf16's trial ids."""
    from fmlab.archive.load import import_results
    from fmlab.sweep import estimate as sweep

    cpu("avx2 fma")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(sweep, "bf16_step_ratio", lambda threads: pytest.fail("no bf16 trial: nothing to probe"))
    asked = probed(monkeypatch, 300.0)
    seed, store = ROOT / "studies" / "seed.toml", tmp_path / "fm.db"
    p = api.plan_sweep(seed, "cpu", store=store, device="cpu")
    assert len(p.todo) == 72 and p.notes == [
        f"precision: auto -> fp32 here ({env.pick_precision('auto', torch.device('cpu'))[1]})"
    ]
    lo = p.layout
    assert asked == [("fp32", lo.threads)]  # fp32's speed, probed
    calib = 300.0 / sweep._reference_ips(p.todo[0].config.model, lo.threads)
    assert p.estimate_s == pytest.approx(sweep.estimate_s(p.todo, lo.workers, lo.threads, calib))
    import_results(ROOT / "results" / "seed-cpu", store=store)
    again = api.plan_sweep(seed, "cpu", store=store, device="cpu")
    assert again.todo == [] and len(again.plan.done) == 72
    recs = {r["precision"] for r in api.open_store(store).study("seed", "cpu").trials().to_dict("records")}
    assert recs == {"bf16"}  # what the published trials trained in


def test_the_dry_run_says_what_auto_picks_and_why(tmp_path):
    """On this machine, held to AVX2 by ONEDNN_MAX_CPU_ISA as the issue's acceptance stands in for an AVX2 CPU:
    the cpu budget's dry-run says fp32 and why, with its estimate in days and hours."""
    from conftest import run_cli

    env_ = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    args = ("sweep", "studies/seed.toml", "--budget", "cpu", "--dry-run", "--store", str(tmp_path / "none.db"))
    out = run_cli(*args, cwd=ROOT, env=env_, check=True).stdout
    assert "to run: 72" in out
    assert "precision: auto -> fp32 here (ONEDNN_MAX_CPU_ISA=AVX2 caps oneDNN below native bf16)" in out or (
        "precision: auto -> fp32 here (this CPU has no" in out
    )
    est = next(line for line in out.splitlines() if line.startswith("estimated time: <= "))
    assert re.match(r"estimated time: <= \d+ (d|h)( \d+ (h|min))? on ", est), est


def test_the_bf16_probe_times_real_steps():
    """The probe trains the seed net for a few steps in each precision on this CPU: a finite positive ratio
    (above 1 where bf16 is emulated, BENCHMARKS.md), and it leaves the thread count as it found it."""
    from fmlab.sweep import estimate as sweep

    before = torch.get_num_threads()
    r = sweep.bf16_step_ratio.__wrapped__(1, batch=8, rounds=1)
    assert 0.05 < r < 100 and torch.get_num_threads() == before
    if env.cpu_bf16() is False:
        assert r > 1


def test_the_estimate_calibrates_on_trials_from_a_machine_like_this_one(tmp_path):
    """A store imported from a faster box: its trials set the speed only when none ran on this machine, and a
    like machine is the same CPU model with the same native bf16 (two AMD EPYC boxes differ there)."""
    from conftest import write_study

    from fmlab.store.db import Store
    from fmlab.study import spec as fstudy
    from fmlab.sweep import estimate as sweep

    st = fstudy.load(write_study(tmp_path, "cal", {"train.lr": [0.01, 0.02, 0.03, 0.04]}))
    s = Store(tmp_path / "s.db")
    s.plan(st, st.trials())
    fast, other, slow, old = st.trials()
    for t, ips, prov in (
        (fast, 4000.0, {"device_name": "EPYC", "cpu_bf16": True}),
        (other, 4000.0, {"device_name": "EPYC", "cpu_bf16": True}),
        (slow, 1000.0, {"device_name": "Xeon", "cpu_bf16": False}),
        (old, 4000.0, {"device_name": "EPYC"}),
    ):
        s.import_complete(
            t.id,
            metrics={"val_loss": 0.3, "val_acc": 0.9},
            timings={"train_images_per_s": ips},
            env=prov,
            best_epoch=1,
            stop_reason="max_epochs",
            n_params=1,
            epochs=[],
        )
    every, src = sweep.calibration(s, 1, None)
    assert src == "other machines"
    assert sweep.calibration(s, 1, ("EPYC", True)) == (pytest.approx(every), "this machine")  # the median: EPYC's
    assert sweep.calibration(s, 1, ("Xeon", False)) == (pytest.approx(every / 4), "this machine")
    # an EPYC without native bf16 is not like the EPYCs with it, and the trial that did not record it says nothing
    assert sweep.calibration(s, 1, ("EPYC", False)) == (pytest.approx(every), "other machines")
    assert sweep.calibration(s, 1, ("never seen", None)) == (pytest.approx(every), "other machines")
    assert sweep.like_machine({"device_name": "H200", "device": "cuda:0", "cpu_bf16": False}, ("H200", True))
    s.close()
    assert sweep.calibration(Store(tmp_path / "empty.db"), 1, ("EPYC", True)) == (1.0, "assumed")


def test_each_trial_calibrates_at_the_threads_it_ran_on(tmp_path):
    """Round 1 of the search resumed with 2 one-thread workers after trials of one 2-thread worker, and the
    estimate said 2 h 10 min for ~3 h: each 2-thread trial's speed was set against the 1-thread reference.
    Now a trial is set against the reference at its own threads, so the 1-thread estimate is the longer."""
    from conftest import write_study

    from fmlab.store.db import Store
    from fmlab.study import spec as fstudy
    from fmlab.sweep import estimate as sweep

    st = fstudy.load(write_study(tmp_path, "thr", {"train.lr": [0.01, 0.02]}))
    s = Store(tmp_path / "s.db")
    s.plan(st, st.trials())
    done, todo = st.trials()
    s.import_complete(
        done.id,
        metrics={"val_loss": 0.3, "val_acc": 0.9},
        timings={"train_images_per_s": 1000.0},
        env={"device_name": "Xeon", "cpu_bf16": True, "threads": 2},
        best_epoch=1,
        stop_reason="max_epochs",
        n_params=1,
        epochs=[],
    )
    machine = ("Xeon", True)
    at1, src = sweep.calibration(s, 1, machine)
    assert src == "this machine" and at1 == pytest.approx(sweep.calibration(s, 2, machine)[0])
    assert at1 == pytest.approx(1000.0 / sweep._reference_ips(done.config.model, 2))
    # so a 1-thread worker is estimated at 2^-0.75 of the 2-thread trial's speed, not at all of it
    one, two = (sweep.estimate_s([todo], 1, threads, at1) - 3.0 for threads in (1, 2))
    assert one == pytest.approx(two * 2**0.75)
    s.close()


def test_a_resumed_trial_keeps_the_precision_it_started_in(cpu):
    from types import SimpleNamespace

    from conftest import tiny_config

    from fmlab.training.progress import LoopState
    from fmlab.training.step import pin_precision

    cpu("avx2")  # auto picks fp32 here now
    auto = tiny_config(**{"train.precision": "auto"})
    fresh = SimpleNamespace(cfg=auto, st=LoopState())
    assert pin_precision(fresh, torch.device("cpu")) == "fp32" and fresh.st.to_dict()["precision"] == "fp32"
    started = SimpleNamespace(cfg=auto, st=LoopState.from_dict({"epoch": 2, "precision": "bf16"}))  # as saved
    assert pin_precision(started, torch.device("cpu")) == "bf16"


def test_a_study_in_auto_records_each_trials_precision_and_the_report_says_when_they_mix(cpu, tmp_path, monkeypatch):
    """Seed 0 on a CPU without native bf16, seed 1 on one with it: each trial records what it trained in
    (fmlab ls shows it, trials.csv holds it), and the report's limits say the precisions mix and how the fit
    takes them (each seed in one precision: its seed block)."""
    from conftest import run_cli, tiny_study_file

    study = tiny_study_file(tmp_path, extra='\n"train.precision" = "auto"')
    store = tmp_path / "fm.db"
    bf16_ratio(monkeypatch, 0.6)  # where bf16 is native, it measures faster
    for seed, flags in ((0, "avx2"), (1, "avx512_bf16")):
        cpu(flags)
        api.run_study(study, "t", seeds=(seed,), workers=0, threads=1, store=store, device="cpu")
    h = api.open_store(store).study("tiny", "t")
    t = h.trials()
    assert dict(zip(t["seed"], t["precision"])) == {0: "fp32", 1: "bf16"} and len(t) == 4
    assert set(t.groupby("seed")["precision"].nunique()) == {1}
    rep = tmp_path / "rep"
    h.report(rep)
    md = (rep / "summary.md").read_text()
    assert "Mixed precision: trials trained in " in md and "the fit's seed block takes precision" in md
    assert "precision trained in (train.precision auto: the machine's pick)" in md
    ls = run_cli("ls", "--store", str(store), check=True).stdout
    assert ls.splitlines()[0].split()[-2:] == ["precision", "time"] and " fp32 " in ls and " bf16 " in ls


def test_a_sweep_decides_auto_once_and_its_trials_train_in_that(cpu, tmp_path, monkeypatch):
    """On a CPU with native bf16 where a bf16 step measures slower, the plan says fp32 and why; a trial handed the
    sweep's decision trains in it without probing again (workers could otherwise disagree on a close call)."""
    from conftest import tiny_config, tiny_study_file

    from fmlab.training.loop import train

    cpu("avx512_bf16")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    asked = bf16_ratio(monkeypatch, 1.4)
    study = tiny_study_file(tmp_path, extra='\n"train.precision" = "auto"')
    p = api.plan_sweep(study, "t", store=tmp_path / "none.db", device="cpu", threads=1)
    assert p.auto_precision == "fp32" and asked == [1]
    why = "this CPU has avx512_bf16, but a bf16 training step measured 1.40x fp32's here"
    assert p.notes[0] == f"precision: auto -> fp32 here ({why})"
    bf16_ratio(monkeypatch, 0.5)  # a worker's own probe would now say bf16; the sweep's decision holds
    res = train(tiny_config(**{"train.precision": "auto"}), opts=env.RunOptions(threads=1, auto_precision="fp32"))
    assert res.timings["precision"] == "fp32"
    assert (
        train(tiny_config(**{"train.precision": "auto"}), opts=env.RunOptions(threads=1)).timings["precision"] == "bf16"
    )
