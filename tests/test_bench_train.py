"""fmlab bench-train: the conventional loop vs fmlab's trainer, end to end on a tiny budget."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch
from conftest import run_cli

from fmlab.config.schema import Config, with_overrides
from fmlab.data import idx as data
from fmlab.model.nets import build, forward_flops
from fmlab.timing import benchtrain, peak

TINY_ARGS = (
    "--train-subset",
    "300",
    "--epochs",
    "1",
    "--set",
    "model.widths=8,16,16",
    "--set",
    "data.val_size=300",
    "--seeds",
    "2",
    "--threads",
    "1",
    "--peak-sizes",
    "128,256",
    "--peak-repeats",
    "3",
)


def hand_flops(widths: tuple[int, ...], fc_out: int = 10) -> int:
    """Conv3x3 'same' + 2x2 pool blocks on 28x28, then FC: multiply-add = 2 FLOPs, bias not counted."""
    total, c_in, side = 0, 1, 28
    for c in widths:
        total += side * side * c * c_in * 9 * 2
        c_in, side = c, side // 2
    return total + c_in * side * side * fc_out * 2


def test_seed_net_forward_flops_match_the_hand_count():
    fl = forward_flops(build(Config().model))
    # conv1 28*28*64*9*2 + conv2 14*14*128*64*9*2 + conv3 7*7*256*128*9*2 + fc 2304*10*2
    assert fl["total"] == 28 * 28 * 64 * 9 * 2 + 14 * 14 * 128 * 64 * 9 * 2 + 7 * 7 * 256 * 128 * 9 * 2 + 2304 * 10 * 2
    assert fl["total"] == 58_752_000 == hand_flops((64, 128, 256))  # "58.75 MFLOP"
    assert fl["fc"] == 46_080
    assert benchtrain.model_flops(("model.widths=8,16,16",))["total"] == hand_flops((8, 16, 16))


def test_gemm_probe_returns_both_dtypes_peaks_over_the_packed_linear():
    peaks = peak.gemm_peaks(1, sizes=(128, 256), repeats=2)
    assert list(peaks) == ["fp32", "bf16"]
    for dtype, p in peaks.items():
        assert p["dtype"] == dtype and p["gflops"] > 0 and p["size"] in (128, 256) and p["threads"] == 1
        assert p["repeats"] == 2 and p["warmup"] >= 1 and p["sizes"] == [128, 256]
        assert p["gflops"] == max(p["by_kernel"].values()) == p["by_kernel"][p["kernel"]]
        assert "torch.mm" in p["by_kernel"]
        if torch.backends.mkldnn.is_available() and dtype == "fp32":
            assert "packed_linear" in p["by_kernel"]  # bf16 may be refused by a CPU without the ISA
    assert torch.get_num_threads() > 0  # the probe gives the thread count back


def test_a_slow_kernel_stops_at_the_probes_time_budget():
    """Issue 34: emulated bf16 at n = 2048 took minutes a call; the probe now starts no call past its budget
    (warm-up included), and times at least one."""
    import time

    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.05)

    got = peak._timed(slow, 64, warmup=3, repeats=40, budget_s=0.12)
    assert 1 <= len(got) and len(calls) <= 5  # 0.12 s of 0.05 s calls: 3 started at most, plus the one timed
    assert len(peak._timed(lambda: None, 64, warmup=0, repeats=7, budget_s=10)) == 7  # fast: all the repeats


def test_bench_train_probes_only_the_precisions_it_compares(monkeypatch):
    from fmlab.config.schema import with_overrides
    from fmlab.training import env

    assert benchtrain.compared(Config()) == ("fp32",)
    assert benchtrain.compared(with_overrides(Config(), {"train.precision": "bf16"})) == ("fp32", "bf16")
    monkeypatch.setattr(env, "pick_precision", lambda asked, dev: ("fp32", "no native bf16"))
    assert benchtrain.compared(with_overrides(Config(), {"train.precision": "auto"})) == ("fp32",)
    assert list(peak.gemm_peaks(1, sizes=(64,), repeats=1, dtypes=("fp32",))) == ["fp32"]


def test_two_probes_keep_the_higher_peak_per_dtype_and_each_kernels_best():
    def probe(dtype: str, n: int, mm: float, packed: float) -> dict:
        kernels = {"torch.mm": mm, "packed_linear": packed}
        return {"dtype": dtype, "gflops": max(mm, packed), "size": n, "by_kernel": kernels}

    before = {"fp32": probe("fp32", 1024, 30.0, 50.0), "bf16": probe("bf16", 1024, 20.0, 10.0)}
    after = {"fp32": probe("fp32", 2048, 40.0, 45.0), "bf16": probe("bf16", 2048, 60.0, 5.0)}
    peaks = peak.better_of(before, after)
    assert list(peaks) == ["fp32", "bf16"]
    assert peaks["fp32"]["gflops"] == 50.0 and peaks["fp32"]["size"] == 1024  # the first probe was better
    assert peaks["fp32"]["by_kernel"] == {"torch.mm": 40.0, "packed_linear": 50.0}  # each kernel's best of the two
    assert peaks["bf16"]["gflops"] == 60.0 and peaks["bf16"]["size"] == 2048  # the second one was
    assert peaks["bf16"]["by_kernel"] == {"torch.mm": 60.0, "packed_linear": 10.0}
    assert before["fp32"]["by_kernel"]["torch.mm"] == 30.0  # the inputs are left as they were


def test_packed_linear_computes_the_product_it_times():
    """What the probe times is the n x n product (and its FLOP count is 2 n^3): same result as torch.mm."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN in this torch build")
    lin = torch.nn.Linear(64, 64)
    from torch.utils import mkldnn

    packed = mkldnn.to_mkldnn(lin, torch.float32)
    x = torch.randn(64, 64)
    with torch.no_grad():
        torch.testing.assert_close(packed(x.to_mkldnn()).to_dense(), x @ lin.weight.T + lin.bias)


def test_conventional_dataset_matches_fmlab_normalisation():
    spec = importlib.util.spec_from_file_location("baseline_loop", benchtrain.CONVENTIONAL_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = with_overrides(Config(), {"data.train_subset": 50, "data.val_size": 300})
    ds = data.load(cfg.data)
    items = mod.FashionImages(ds.train.x.numpy(), ds.train.y.numpy(), cfg.data.mean, cfg.data.std)
    ref = data.normalize(ds.train.x, cfg.data.mean, cfg.data.std)
    for i in (0, 7, 49):
        x, y = items[i]
        assert x.shape == (1, 28, 28) and y == int(ds.train.y[i])
        torch.testing.assert_close(x, ref[i], rtol=0, atol=1e-6)


def test_summary_is_the_ratio_of_medians_and_a_paired_gap():
    o = benchtrain.BenchTrainOptions(seeds=(0, 1), epochs=1)
    runs = [
        {"side": s, "seed": seed, "train_images_per_s": ips, "wall_s": 1.0, "test_acc": acc, "train_images": 10}
        for s, seed, ips, acc in [
            ("conventional", 0, 100, 0.80),
            ("fmlab", 0, 300, 0.81),
            ("conventional", 1, 200, 0.82),
            ("fmlab", 1, 500, 0.84),
        ]
    ]
    peaks = {"fp32": {"dtype": "fp32", "gflops": 10.0}, "bf16": {"dtype": "bf16", "gflops": 40.0}}
    rep = benchtrain.summarise(o, Config(), runs, {"total": 1_000_000}, peaks, 2, 1.0)
    assert rep["speedup"] == pytest.approx(400 / 150)
    assert rep["acc_gap"]["mean"] == pytest.approx(0.015) and rep["acc_gap"]["n"] == 2
    assert rep["fmlab_gflops"] == pytest.approx(400 * 3e6 / 1e9)
    assert rep["fmlab_peak_fraction"] == pytest.approx(400 * 3e6 / 1e9 / 10.0)  # fp32 loop, fp32 peak
    assert (rep["peak_gflops_fp32"], rep["peak_gflops_bf16"], rep["peak_dtype"]) == (10.0, 40.0, "fp32")
    assert rep["fmlab_images_per_s_at_peak"] == pytest.approx(10e9 / 3e6)
    assert rep["speedup_bound"] == pytest.approx(10e9 / 3e6 / 150)
    bf = with_overrides(Config(), {"train.precision": "bf16"})
    rep = benchtrain.summarise(o, bf, runs, {"total": 1_000_000}, peaks, 2, 1.0)
    assert rep["peak_gflops"] == 40.0 and rep["fmlab_peak_fraction"] == pytest.approx(1.2 / 40)
    assert rep["peak_dtype"] == "bf16" and rep["speedup_bound"] == pytest.approx(40e9 / 3e6 / 150)
    assert rep["conventional_peak_fraction"] == pytest.approx(150 * 3e6 / 1e9 / 10.0)  # fp32 loop, fp32 peak


def test_bench_train_end_to_end_alternates_separate_processes():
    p = run_cli("bench-train", *TINY_ARGS, check=True)
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    for k in (
        "speedup",
        "conventional_images_per_s",
        "fmlab_images_per_s",
        "conventional_test_acc",
        "fmlab_test_acc",
        "acc_gap",
        "fmlab_gflops",
        "conventional_gflops",
        "peak_gflops",
        "fmlab_peak_fraction",
        "forward_flops_per_image",
        "loadavg_start",
        "loadavg_end",
        "peak_gflops_fp32",
        "peak_dtype",
        "speedup_bound",
    ):
        assert k in rep, k
    assert set(rep["peaks"]) == {"fp32"} and rep["peak_dtype"] == "fp32"  # the default precision: fp32 alone
    assert rep["peaks_skipped"] == ["bf16"] and "not probed: bf16" in p.stdout
    assert rep["peak_gflops"] == rep["peak_gflops_fp32"] == rep["peaks"]["fp32"]["gflops"] > 0
    assert rep["fmlab_peak_fraction"] == pytest.approx(rep["fmlab_gflops"] / rep["peak_gflops_fp32"])
    assert rep["peaks"]["fp32"]["sizes"] == [128, 256]
    assert rep["speedup"] == pytest.approx(rep["fmlab_images_per_s"] / rep["conventional_images_per_s"])
    assert rep["peak_gflops"] > 0 and rep["fmlab_gflops"] > 0
    assert rep["forward_flops_per_image"] == hand_flops((8, 16, 16))
    assert rep["order"] == ["conventional", "fmlab", "conventional", "fmlab"]
    pids = [r["pid"] for r in rep["runs"]]
    assert len(set(pids)) == 4 and os.getpid() not in pids
    for r in rep["runs"]:
        assert r["epochs"] == 1 and 0 <= r["test_acc"] <= 1
        if r["side"] == "conventional":  # the script's own os.getpid(): it ran in the process we started
            assert r["reported_pid"] == r["pid"] and r["train_images"] == 300
    assert [r["seed"] for r in rep["runs"]] == [0, 0, 1, 1]
    assert "speedup" in p.stdout and "img/s" in p.stdout  # the table before the JSON line


def test_bad_set_fails_before_any_run():
    p = run_cli("bench-train", "--set", "model.nope=1", "--epochs", "1")
    assert p.returncode == 2 and "unknown config key" in p.stderr


def test_missing_conventional_script_is_one_clear_error(tmp_path):
    p = run_cli("bench-train", "--epochs", "1", "--script", str(tmp_path / "nope.py"))
    assert p.returncode == 2 and "--script" in p.stderr


def test_conventional_script_refuses_what_it_does_not_follow():
    import subprocess
    import sys

    p = subprocess.run(
        [sys.executable, str(benchtrain.CONVENTIONAL_SCRIPT), "--set", "train.schedule=cosine"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode != 0 and "train.schedule" in p.stderr
