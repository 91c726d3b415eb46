"""Timed training steps, the peak they are measured against, the memory they take, and the rate of a model's
own matmul shapes timed alone (the MFU ceiling on a CPU)."""

import os
import time

import torch

from core import hardware
from core.hardware import synchronize


def timed_train_steps(model, optimizer, get_batch, n, ctx, device, accum=1, grad_clip=1.0):
    """Take n plain optimizer steps as train.py takes them (micro-steps, backward, clipping, step) and return
    the seconds of each, synchronized. For benchmarks: no DDP, no scaler, no skipping of bad steps."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        for _micro in range(accum):
            x, y = get_batch()
            with ctx:
                loss = model(x, y)[1] / accum  # the logits are not kept alive through the backward
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def matmul_shape_rate(cfg, batch, T, dev, n_reps=20):
    """FLOP/s of this model's own matmuls (forward and both backward products of every Linear, and
    fused attention forward + backward), each timed alone at its shape: what a training step would
    reach if nothing but these kernels ran. Returns (all, the Linear layers', attention's) FLOP/s."""
    N = batch * T
    C, H, V, L = cfg.n_embd, cfg.mlp_hidden, cfg.vocab_size, cfg.n_layer
    fc_out = 2 * H if cfg.mlp == 'swiglu' else H
    linears = [(C, 3 * C, L), (C, C, L), (C, fc_out, L), (H, C, L), (C, V, 1)]
    total_flops, total_time = 0.0, 0.0

    def best_time(fn):
        fn()
        best = float('inf')
        for _ in range(n_reps):
            t0 = time.perf_counter()
            fn()
            synchronize(dev)
            best = min(best, time.perf_counter() - t0)
        return best

    for fan_in, fan_out, count in linears:
        x = torch.randn(N, fan_in, device=dev)
        w = torch.randn(fan_out, fan_in, device=dev)
        g = torch.randn(N, fan_out, device=dev)
        for a, b in ((x, w.t()), (g, w), (g.t(), x)):  # forward, grad of input, grad of weight
            total_time += count * best_time(lambda: torch.mm(a, b))
            total_flops += count * 2 * a.shape[0] * a.shape[1] * b.shape[1]
    hd = C // cfg.n_head
    q, k, v = (torch.randn(batch, cfg.n_head, T, hd, device=dev, requires_grad=True) for _ in range(3))

    def attention():
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        y.sum().backward()
    linear_flops, linear_time = total_flops, total_time
    total_time += L * best_time(attention)
    total_flops += L * 3 * 4 * batch * T * T * C
    return total_flops / total_time, linear_flops / linear_time, (total_flops - linear_flops) / (total_time - linear_time)


def warm_kernels(cfg, dev, ctx, savers, optimizer):
    """One step of a toy model with the same switches, so that loading kernels and their code is not
    counted as the real model's memory."""
    from dataclasses import replace

    from model import GPT
    toy = GPT(replace(cfg, n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=min(cfg.vocab_size, 128)))
    toy.set_memory_savers(*savers).to(dev)
    opt = toy.configure_optimizers(0.1, 1e-3, (0.9, 0.95), dev.split(':')[0], optimizer)
    x = torch.randint(0, toy.config.vocab_size, (2, 16), device=dev)
    timed_train_steps(toy, opt, lambda: (x, x), 1, ctx, dev, 1)


def memory_mark(dev):
    """The memory in use now, the base that memory_growth measures from."""
    if dev.startswith('cuda'):
        torch.cuda.synchronize(dev)
        return torch.cuda.memory_allocated(dev)
    return hardware.rss_bytes() if os.path.exists('/proc/self/statm') else hardware.peak_rss_bytes()


def memory_growth(dev, mark):
    """(bytes, how they were measured) of the peak since mark; (None, why) on a device we cannot measure."""
    if dev.startswith('cuda'):
        return torch.cuda.max_memory_allocated(dev) - mark, 'torch.cuda.max_memory_allocated'
    if dev.startswith('cpu'):
        return (hardware.peak_rss_bytes() - mark,
                'growth of the peak resident memory, allocator slack included; the plan counts live tensors')
    return None, 'not measured on this device'


def timed_against_peak(dev, run_dtype, peak_tflops, time_steps):
    """Run time_steps() and return (its times, peak FLOP/s, the peak's description). On a CPU the peak is
    measured before and after the timing and the faster kept: a burst of other work on a shared machine
    must not lower the peak and so flatter the MFU."""
    gemm_dtype, mode = hardware.cpu_gemm_precision(run_dtype)  # a peak in the GEMMs' own precision
    measure = dev.split(':')[0] == 'cpu' and peak_tflops <= 0
    if measure:
        hardware.measure_cpu_peak_flops(seconds=1.0, dtype=gemm_dtype)  # a longer look than the default, then kept
    peak, peak_desc = hardware.peak_flops(dev, run_dtype, peak_tflops)
    times = time_steps()
    if measure:
        peak = max(peak, hardware.measure_cpu_peak_flops(seconds=1.0, dtype=gemm_dtype, again=True))
        peak_desc = (f"CPU {mode} 1024x1024 matmul measured here before and after the timing, the faster "
                     f"kept ({peak / 1e9:.1f} GFLOP/s, {torch.get_num_threads()} threads)")
    return times, peak, peak_desc


def shape_ceiling(cfg, batch, dev, peak, mfu):
    """On a CPU: this model's own matmul shapes timed alone, the MFU a step of nothing but them would reach.
    Returns (figures for the JSON, lines for the report)."""
    rate, linear_rate, attn_rate = matmul_shape_rate(cfg, batch, cfg.block_size, dev)
    ceiling = rate / peak
    sizes = {n: hardware.measure_cpu_peak_flops(n=n) for n in (256, 512, 2048)}
    lines = ["the peak depends on the matrix size: " + ", ".join(f"{n}x{n} {r / 1e9:.0f}" for n, r in sizes.items())
             + f" GFLOP/s (1024x1024: {peak / 1e9:.0f}, the one used)",
             f"this model's own matmul and attention shapes, each timed alone, run at {rate / 1e9:.1f} GFLOP/s = "
             f"{ceiling * 100:.0f}% of that peak (the Linear layers' products {linear_rate / 1e9:.0f}, fused attention "
             f"forward + backward {attn_rate / 1e9:.0f} GFLOP/s): the MFU if the step were nothing but those kernels, "
             f"with no norm, activation, residual, loss or optimizer time at all; the step reaches "
             f"{mfu / ceiling * 100:.0f}% of it. MFU stays quoted against the machine's peak, not against these "
             f"small kernels, which would hide how far below the hardware they run"]
    return dict(shape_matmul_flops=rate, shape_linear_flops=linear_rate, shape_attention_flops=attn_rate,
                mfu_ceiling=ceiling, matmul_flops_by_size={**{str(n): r for n, r in sizes.items()}, '1024': peak}), lines
