"""Peak FLOP/s of the device a worker trains on, for MFU.

GPUs: dense bf16/fp16 tensor-core peaks from the vendors' datasheets (fp32 runs are measured
against TF32 peaks, as PyTorch uses TF32 matmuls when allowed). CPUs have no useful
datasheet figure per process, so we measure: the best of a few large matmuls in the training
dtype on this process's threads. MFU against that is "fraction of what this CPU process can
do on fp32 matmuls", which is what the tokens/s comparison with plain PyTorch needs.
"""
from __future__ import annotations

import time

import torch

# Dense (no sparsity) peak FLOP/s per GPU, by a substring of torch.cuda.get_device_name().
GPU_PEAK_FLOPS = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 494.5e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 494.5e12},  # SXM; PCIe is ~756e12 bf16
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "fp32": 60e12},
    "A10": {"bf16": 125e12, "fp16": 125e12, "fp32": 62.5e12},
}

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def measured_matmul_flops(precision: str, device: str = "cpu", size: int = 1024, seconds: float = 0.5) -> float:
    """Best FLOP/s of `size`^3 matmuls over about `seconds`."""
    dtype = _DTYPES[precision]
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)  # warm-up (first call allocates / picks kernels)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        best = max(best, 2.0 * size**3 / (time.perf_counter() - t0))
    return best


def peak_flops(device: torch.device, precision: str) -> tuple[float, str]:
    """(peak FLOP/s, where the figure comes from)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in GPU_PEAK_FLOPS.items():
            if key in name:
                return peaks[precision], f"datasheet {key}"
        return measured_matmul_flops(precision, "cuda", size=8192), f"measured ({name} not in table)"
    # fp32 whatever the training dtype: it is the fastest a CPU multiplies (bf16 is emulated on
    # most), so MFU stays a fraction of the machine, never of a slow path.
    return measured_matmul_flops("fp32", size=512, seconds=0.3), "measured CPU fp32 matmul"
