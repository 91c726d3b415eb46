"""What train.py tells the user about a run: the plan at start (size, tokens, FLOPs, memory), and the speed and
MFU of each window between log lines."""

import math
import time

import torch

from core import hardware
from core.training import distributed, planner
from core.units import format_flops


def peak_flops(device, dtype, peak_tflops, ddp):
    """(peak FLOP/s the MFU is quoted against or None, its description). Under DDP on CPUs every rank timed its own
    matmul; one slowed by a neighbour still starting up would read low and inflate the MFU, so all ranks use the
    fastest reading (the cores are alike)."""
    peak, desc = hardware.peak_flops(device, dtype, peak_tflops)
    if ddp and device.split(':')[0] == 'cpu' and not peak_tflops:
        peak = distributed.all_reduce([peak], device, 'max')[0]
        desc = (f"the fastest rank's CPU {hardware.cpu_gemm_precision(dtype)[1]} matmul ({peak / 1e9:.1f} GFLOP/s, "
                f"{torch.get_num_threads()} threads each)")
    return peak, desc


def plan_lines(model, tokens_per_iter, max_iters, world_size, accumulation, batch_size, block_size, peak_desc,
               memory_plan, lora_config=None, max_seconds=0.0):
    """The start-up summary of a run, a line each: parameters, LoRA, tokens, FLOPs, memory. A run with a time budget
    is planned in seconds: how many iterations fit is what it will measure."""
    n_params, n_all = model.get_num_params(), model.get_num_params(False)
    flops_per_token = model.flops_per_token(block_size)
    lines = [f"parameters: {n_params / 1e6:.2f}M (non-embedding), {n_all / 1e6:.2f}M total"]
    if lora_config:
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        lines.append(f"LoRA rank {lora_config['rank']} on {lora_config['targets']}: {n_train:,} trainable adapter "
                     f"parameters ({n_train / n_all * 100:.2f}% of the model), base {lora_config['base']} frozen")
    lines.append(f"tokens per iteration: {tokens_per_iter:,} ({world_size} process{'es' if world_size > 1 else ''} x "
                 f"{accumulation} micro-steps x {batch_size} x {block_size})")
    flops = f"training FLOPs: {format_flops(flops_per_token)} per token, " \
            f"{format_flops(flops_per_token * tokens_per_iter)} per iteration"
    if max_seconds > 0:
        lines.append(f"time budget: {format_duration(max_seconds)} of training (max_seconds); as many iterations as "
                     f"fit{f', at most {max_iters:,}' if max_iters < 10 ** 6 else ''}")
        lines.append(f"{flops}; MFU measured against {peak_desc}")
    else:
        lines.append(f"tokens planned: {tokens_per_iter * max_iters:,} over {max_iters:,} iterations, "
                     f"{tokens_per_iter * max_iters / n_params:.1f} tokens per parameter")
        lines.append(f"{flops}, {format_flops(flops_per_token * tokens_per_iter * max_iters)} in all; "
                     f"MFU measured against {peak_desc}")
    lines.append(f"memory estimate per process: {planner.summary(memory_plan(batch_size, accumulation))}")
    return lines


def eval_lines(iter_num, losses):
    """What an evaluation says: the losses (bits per byte where known), and the perplexity of an exact one."""
    bpb = f", val bpb {losses['val_bpb']:.4f}" if math.isfinite(losses['val_bpb']) else ''
    lines = [f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}{bpb}"]
    if 'val_tokens' in losses:
        lines.append(f"step {iter_num}: val perplexity {math.exp(min(losses['val'], 50)):.4f} "
                     f"(exact over {losses['val_tokens']:,} tokens)")
    return lines


def format_duration(seconds):
    """120 -> '2 min', 90 -> '1 min 30 s', 45.5 -> '45.5 s', 7200 -> '2 h'."""
    if seconds < 60:
        return f"{seconds:g} s"
    h, rest = divmod(round(seconds), 3600)
    m, s = divmod(rest, 60)
    return ' '.join(f"{v} {unit}" for v, unit in ((h, 'h'), (m, 'min'), (s, 's')) if v)


class Speedometer:
    """Tokens per second and MFU over the window since the last read (an evaluation restarts the window). The
    first window holds compilation and warm-up, so the running MFU starts from the second; mfu_of(tok_s) is None
    where the peak is unknown."""

    def __init__(self, tokens_per_iter, mfu_of):
        self.tokens_per_iter, self.mfu_of = tokens_per_iter, mfu_of
        self.windows, self.running_mfu = 0, -1.0
        self.restart()

    def restart(self):
        self.t_last, self.tokens = time.time(), 0

    def add(self, tokens):
        self.tokens += tokens

    def read(self):
        """(seconds per iteration, tokens per second, this window's MFU or None) and a new window."""
        now = time.time()
        dt = (now - self.t_last) / (self.tokens / self.tokens_per_iter)  # a window an eval restarted has fewer steps
        tok_s = self.tokens / (now - self.t_last)
        self.t_last, self.tokens, self.windows = now, 0, self.windows + 1
        mfu = self.mfu_of(tok_s)
        if mfu is not None and self.windows > 1:
            self.running_mfu = mfu if self.running_mfu < 0 else 0.9 * self.running_mfu + 0.1 * mfu
        return dt, tok_s, mfu

    def mfu_text(self):
        return f"mfu {self.running_mfu * 100:.1f}%" if self.running_mfu >= 0 else "mfu n/a"
