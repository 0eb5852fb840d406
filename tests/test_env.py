"""The machine as fmlab records and reports it: CPU model, native bf16, and the note a bf16 sweep gets on a
CPU that emulates bf16 (BENCHMARKS.md: 2.9x slower than fp32 per step on such a box)."""

from __future__ import annotations

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


def test_the_note_only_for_bf16_on_a_cpu_that_emulates_it(cpu):
    cpu("avx512_vnni")
    note = env.precision_note("cpu", {"fp32", "bf16"})
    assert note and "Test CPU" in note and "emulated" in note and "bench_train_levers.py" in note
    assert env.precision_note("cpu", {"fp32"}) is None and env.precision_note("cuda", {"bf16"}) is None
    cpu("avx512_bf16")
    assert env.precision_note("cpu", {"bf16"}) is None


def test_a_bf16_sweep_plan_carries_the_note_and_provenance_the_cpu(cpu, tmp_path, monkeypatch):
    from fmlab.sweep import estimate as sweep

    cpu("avx2")
    seed = ROOT / "studies" / "seed.toml"
    store = tmp_path / "none" / "fm.db"
    monkeypatch.setattr(sweep, "bf16_step_ratio", lambda threads: 12.5)  # what this probe measures is tested below
    bf16 = api.plan_sweep(seed, "cpu", store=store, device="cpu")  # the cpu budget trains in bf16
    assert len(bf16.notes) == 1 and "emulated" in bf16.notes[0] and "12.5x the fp32 step" in bf16.notes[0]
    lo = bf16.layout  # no store, so the speed is assumed (1.0) and only the probe scales the estimate
    assert bf16.estimate_s == pytest.approx(12.5 * sweep.estimate_s(bf16.todo, lo.workers, lo.threads))
    assert bf16.speed_from == "assumed" and not bf16.calibrated
    assert api.plan_sweep(seed, "quick", store=store, device="cpu").notes == []  # fp32
    assert not store.parent.exists()  # planning read-only created nothing
    prov = env.provenance(torch.device("cpu"))
    assert prov["cpu_bf16"] is False and prov["device_name"] == "Test CPU @ 1.00GHz"


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
