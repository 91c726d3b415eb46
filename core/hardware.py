"""Device, dtype and autocast choices, and the peak FLOP/s that MFU is measured against."""

import os
import resource
import sys
import time
from contextlib import nullcontext

import torch

from core.errors import UserError

# dense bf16/fp16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, without sparsity
GPU_PEAK_TFLOPS = [
    ('H200', 989.0), ('H100 SXM', 989.0), ('H100 NVL', 835.0), ('H100 PCIe', 756.0), ('H100', 989.0),
    ('GH200', 989.0), ('B200', 2250.0), ('B100', 1750.0), ('A100', 312.0), ('A800', 312.0), ('A10G', 70.0),
    ('A10', 125.0), ('A6000', 155.0), ('L40S', 362.0), ('L40', 181.0), ('L4', 121.0), ('V100', 125.0),
    ('T4', 65.0), ('RTX 4090', 165.0), ('RTX 3090', 71.0),
]

_cpu_peak_cache = {}


def pick_device(device='auto'):
    if device == 'auto':
        if torch.cuda.is_available():
            return 'cuda'
        if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available():
            return 'mps'
        return 'cpu'
    kind = device.split(':')[0]
    if kind == 'cuda' and not torch.cuda.is_available():
        raise UserError(f"device='{device}' but CUDA is not available here; use --device=cpu or --device=auto")
    if kind == 'mps' and not (getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available()):
        raise UserError(f"device='{device}' but MPS is not available here; use --device=cpu or --device=auto")
    if kind not in ('cpu', 'cuda', 'mps'):
        raise UserError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")
    return device


def pick_dtype(dtype, device):
    """bf16 where the device has it, fp16 on older CUDA (with a grad scaler), fp32 on CPU."""
    kind = device.split(':')[0]
    if dtype == 'auto':
        if kind == 'cuda':
            return 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
        return 'float32'
    if dtype not in ('float32', 'bfloat16', 'float16'):
        raise UserError(f"unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16")
    if kind == 'cpu' and dtype == 'float16':
        raise UserError("float16 autocast is not supported for training on CPU; use --dtype=bfloat16 or float32")
    return dtype


def autocast_context(device, dtype):
    kind = device.split(':')[0]
    if dtype == 'float32':
        return nullcontext()
    return torch.autocast(device_type=kind, dtype=getattr(torch, dtype))


def measure_cpu_peak_flops(n=1024, seconds=0.3, dtype=torch.float32):
    """Achievable matmul FLOP/s on this CPU, measured once per process with torch's own GEMM."""
    key = (n, dtype, torch.get_num_threads())
    if key not in _cpu_peak_cache:
        a = torch.randn(n, n, dtype=dtype)
        b = torch.randn(n, n, dtype=dtype)
        for _ in range(2):
            a @ b
        best, t_end = float('inf'), time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        _cpu_peak_cache[key] = 2 * n ** 3 / best
    return _cpu_peak_cache[key]


def peak_flops(device, dtype='float32'):
    """(FLOP/s, description) of the device's peak: the data-sheet figure for a known GPU,
    a matmul measured here on CPU. fp32 on a GPU uses the TF32 peak, half of bf16."""
    kind = device.split(':')[0]
    if kind == 'cuda':
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_PEAK_TFLOPS:
            if key in name:
                if dtype == 'float32':
                    return tflops * 0.5e12, f"{name} TF32 data sheet ({tflops / 2:g} TFLOP/s)"
                return tflops * 1e12, f"{name} bf16 data sheet ({tflops:g} TFLOP/s)"
        return 312e12, f"{name} unknown, assuming A100 bf16 (312 TFLOP/s)"
    if kind == 'mps':
        return 10e12, "Apple GPU, assumed 10 TFLOP/s"
    flops = measure_cpu_peak_flops()
    return flops, f"CPU fp32 matmul measured here ({flops / 1e9:.1f} GFLOP/s, {torch.get_num_threads()} threads)"


def synchronize(device):
    kind = device.split(':')[0]
    if kind == 'cuda':
        torch.cuda.synchronize()
    elif kind == 'mps':
        torch.mps.synchronize()


def train_steps(model, optimizer, get_batch, n, ctx, device, accum=1, grad_clip=1.0):
    """n plain optimizer steps as train.py takes them (micro-steps, backward, clipping, step); the
    seconds of each, synchronized. For benchmarks: no DDP, no scaler, no skipping of bad steps."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        for _micro in range(accum):
            x, y = get_batch()
            with ctx:
                _, loss = model(x, y)
                loss = loss / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def rss_bytes():
    """This process's resident memory now (Linux /proc)."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def peak_rss_bytes():
    """This process's peak resident memory so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)
