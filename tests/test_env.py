"""The machine as fmlab records and reports it: CPU model, native bf16, and the note a bf16 sweep gets on a
CPU that emulates bf16 (BENCHMARKS.md: 2.9x slower than fp32 per step on such a box)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmlab import api, env

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


def test_a_bf16_sweep_plan_carries_the_note_and_provenance_the_cpu(cpu, tmp_path):
    cpu("avx2")
    seed = ROOT / "studies" / "seed.toml"
    store = tmp_path / "none" / "fm.db"
    bf16 = api.plan_sweep(seed, "cpu", store=store, device="cpu")  # the cpu budget trains in bf16
    assert len(bf16.notes) == 1 and "emulated" in bf16.notes[0]
    assert api.plan_sweep(seed, "quick", store=store, device="cpu").notes == []  # fp32
    assert not store.parent.exists()  # planning read-only created nothing
    prov = env.provenance(torch.device("cpu"))
    assert prov["cpu_bf16"] is False and prov["device_name"] == "Test CPU @ 1.00GHz"


def test_the_estimate_calibrates_on_trials_from_a_machine_like_this_one(tmp_path):
    """A store imported from a faster box: its trials set the speed only when none ran on this machine."""
    from conftest import write_study

    from fmlab import study as fstudy
    from fmlab import sweep
    from fmlab.store import Store

    st = fstudy.load(write_study(tmp_path, "cal", {"train.lr": [0.01, 0.02, 0.03]}))
    s = Store(tmp_path / "s.db")
    s.plan(st, st.trials())
    fast, slow, other = st.trials()
    for t, ips, machine in ((fast, 4000.0, "EPYC"), (other, 4000.0, "EPYC"), (slow, 1000.0, "Xeon")):
        s.import_complete(t.id, metrics={"val_loss": 0.3, "val_acc": 0.9}, timings={"train_images_per_s": ips},
                          env={"device_name": machine}, best_epoch=1, stop_reason="max_epochs", n_params=1,
                          epochs=[])  # fmt: skip
    every, epyc, xeon = (sweep.calibration(s, 1, m) for m in (None, "EPYC", "Xeon"))
    assert epyc == pytest.approx(every) and xeon == pytest.approx(every / 4)  # the median of all is EPYC's
    assert sweep.calibration(s, 1, "never seen") == pytest.approx(every)  # no like machine: all of them
    s.close()
