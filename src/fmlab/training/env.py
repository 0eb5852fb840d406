"""Where and how a trial runs: device choice, threads, allocator, seeding, provenance.

Nothing here changes what an experiment is (the trial id); it changes only how fast it runs.
"""

from __future__ import annotations

import ctypes
import os
import platform
import random
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmlab.errors import FmlabError


@dataclass(frozen=True)
class RunOptions:
    device: str = "auto"  # auto = cuda when present, else cpu; or cpu, cuda, cuda:N, mps
    threads: int = 0  # intra-op threads; 0 = all cores of this process's affinity
    channels_last: bool = True  # NHWC convolutions: faster with oneDNN and cuDNN
    eval_batch_size: int = 1024  # images per evaluation forward pass
    auto_precision: str = ""  # what train.precision = "auto" trains in, decided once by a sweep; "" = here
    data_dir: str | None = None  # where the IDX files are; None = the usual search path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


DEVICES = "auto, cpu, cuda, cuda:N or mps"
_FALLBACK = "use --device cpu (or auto: cuda when present, else cpu)"


def check_device(name: str = "auto") -> torch.device:
    """The torch device for --device NAME, or one FmlabError naming it and the fix when this machine
    or this torch build does not have it (checked once, before anything runs)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise FmlabError(f"bad --device {name!r}; expected {DEVICES}")
    if kind == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            raise FmlabError(
                f"--device {name}: this torch ({torch.__version__}) is built without CUDA; install a "
                f"CUDA build of torch, or {_FALLBACK}"
            )
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise FmlabError(
                f"--device {name}: no CUDA GPU is visible (check the driver with nvidia-smi, and "
                f"CUDA_VISIBLE_DEVICES); {_FALLBACK}"
            )
        if index and int(index) >= n:
            raise FmlabError(
                f"--device {name}: this machine has {n} CUDA GPU(s), cuda:0 to cuda:{n - 1}; "
                f"use one of those, or {_FALLBACK}"
            )
    if kind == "mps" and not torch.backends.mps.is_available():
        why = (
            "is not available here (it needs macOS 12.3+ on Apple silicon)"
            if torch.backends.mps.is_built()
            else f"is not in this torch build ({torch.__version__}; MPS builds are macOS only)"
        )
        raise FmlabError(f"--device {name}: Apple's MPS GPU backend {why}; {_FALLBACK}")
    return torch.device(name)


_tuned = False


def tune_allocator() -> None:
    """Keep freed activation buffers in the heap instead of returning them to the OS each step.

    glibc serves large blocks with mmap and unmaps them on free, so every training step page-faults
    its activations back in. Raising the mmap and trim thresholds (same effect as the
    MALLOC_*_ environment variables, but set from inside the process) removes those faults.
    """
    global _tuned
    if _tuned or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_top_pad, 256 << 20)
    _tuned = True


def setup(opts: RunOptions) -> torch.device:
    """Threads, allocator, device; call once per process before training."""
    torch.set_num_threads(opts.threads or cores())
    tune_allocator()
    return check_device(opts.device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return ""


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # the x86 instructions that compute in bf16 natively


def cpu_bf16() -> bool | None:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX); None where /proc/cpuinfo does not say.
    Without them oneDNN converts every bf16 op through fp32: slower than fp32 itself (BENCHMARKS.md)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return any(f in line.split() for f in BF16_FLAGS)
    return None


# oneDNN ISAs (ONEDNN_MAX_CPU_ISA) below the first one that computes bf16 natively (AVX512_CORE_BF16)
_ISA_NO_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")
PRECISIONS_AUTO = "auto = bf16 where this machine computes it natively and a bf16 step measures faster, else fp32"
BF16_PAYS_BELOW = 0.95  # auto takes bf16 on a CPU only when its step measures under this fraction of fp32's


def isa_cap() -> str | None:
    """ONEDNN_MAX_CPU_ISA when it caps oneDNN below native bf16 (the user asked for less than the CPU has)."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return isa if isa in _ISA_NO_BF16 else None


def pick_precision(requested: str, device: torch.device, decided: str = "", threads: int = 0) -> tuple[str, str]:
    """The precision a trial trains in and why: fp32 and bf16 as asked; auto (train.precision = "auto") as
    `decided` by the sweep for all its trials when given, else bf16 where the device computes it natively (a
    CUDA GPU that supports it; a CPU with avx512_bf16 or AMX, unless ONEDNN_MAX_CPU_ISA caps oneDNN below them)
    and, on a CPU, a training step measures faster in it (fmlab.training.probe.bf16_step_ratio at `threads`, 0 =
    the current count: seconds, once per process), else fp32 (emulated bf16 is slower than fp32: BENCHMARKS.md)."""
    if requested != "auto":
        return requested, "as the config asks"
    if decided:
        return decided, "as the sweep decided for every trial"
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ("bf16", "this GPU computes bf16") if ok else ("fp32", "this GPU has no bf16")
    if device.type != "cpu":
        return "fp32", f"bf16 is not used on {device.type}"
    native, cap = cpu_bf16(), isa_cap()
    if native and cap:
        return "fp32", f"ONEDNN_MAX_CPU_ISA={cap} caps oneDNN below native bf16"
    if native:
        from fmlab.training.probe import bf16_step_ratio

        has = f"this CPU has {' and '.join(f for f in BF16_FLAGS if f in _flags())}"
        r = bf16_step_ratio(threads or torch.get_num_threads())
        if r < BF16_PAYS_BELOW:
            return "bf16", f"{has}; a bf16 training step measured {r:.2f}x fp32's"
        return "fp32", f"{has}, but a bf16 training step measured {r:.2f}x fp32's here"
    if native is None:
        return "fp32", "this CPU does not say whether it has native bf16"
    return "fp32", f"this CPU has no {' or '.join(BF16_FLAGS)}: bf16 would be emulated, slower than fp32"


def _flags() -> list[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return line.split()
    return []


def precision_note(device_type: str, precisions: set[str], ratio: float | None = None) -> str | None:
    """One line when bf16 trials are to run on a CPU that emulates bf16 (none: nothing to say); ratio: the bf16
    over fp32 step time measured here (fmlab.sweep.estimate.bf16_step_ratio), which the sweep's estimate then
    includes."""
    if device_type != "cpu" or "bf16" not in precisions or cpu_bf16() is not False:
        return None
    how = (
        f"a training step measured {ratio:.1f}x the fp32 step here, and the estimate includes it"
        if ratio
        else "so it runs slower than fp32 here"
    )
    return (
        f"note: bf16 on this CPU ({cpu_model()}) is emulated (no {' or '.join(BF16_FLAGS)}): {how}; "
        "`scripts/bench_train_levers.py --only steps` measures it in full"
    )


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def provenance(device: torch.device) -> dict[str, Any]:
    from fmlab.version import __version__

    return {
        "fmlab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "git_commit": git_commit(),
        "host": platform.node(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_bf16": cpu_bf16(),
    }
