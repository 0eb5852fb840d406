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
