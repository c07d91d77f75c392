"""Shared benchmark helpers: machine description, matmul peak, FLOP counting, timing, JSON.

FLOPs are counted one way everywhere: 2 per multiply-add in a forward pass; a backward pass
through a trainable layer costs 2x its forward (input and weight gradients), through a frozen
layer 1x (input gradients only). Elementwise ops, norms and activations are not counted.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        # runnable processes averaged over the last minute: > cores means timings are shared
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def timeit(fn, warmup: int = 3, min_time: float = 1.0, max_iters: int = 1000) -> float:
    """Median seconds per call of ``fn`` over enough calls to fill ``min_time``."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while (time.perf_counter() - start < min_time or len(times) < 5) and len(times) < max_iters:
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def matmul_peak(n: int = 1024, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Measured FLOP/s of an ``n x n`` matmul (2 n^3 FLOPs) in ``dtype``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timeit(lambda: a @ b, min_time=1.0)


def cpu_flags() -> list[str]:
    """The CPU features that decide matmul speed here: AVX-512, its bfloat16 extension, AMX."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    keep = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx2", "fma")
    return [f for f in keep if f in flags]


class GlobalOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: every FLOP counts as "Global"
    (its per-module tracker tests TensorDicts for truth, which they refuse)."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args) -> None:
        return None


def linear_macs(module: nn.Module) -> int:
    """Multiply-adds of one forward pass per sample through every ``nn.Linear`` in ``module``."""
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def flops(module: nn.Module, samples: float, trainable: bool, backward: bool = True) -> float:
    """FLOPs of ``samples`` forward (+ backward) passes under the counting rule above."""
    fwd = 2 * linear_macs(module) * samples
    if not backward:
        return fwd
    return fwd * (3 if trainable else 2)


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path
