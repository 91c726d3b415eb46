"""bench.py's report: parameter and FLOP tables and the memory plan, from the config alone (no timing)."""

import os

import torch

from core import hardware
from core.training import lora
from core.training.accounting import flops_per_token_breakdown, param_counts
from core.training.planner import estimate_training_memory, fit_batch_size, format_plan
from core.units import format_bytes
from model import CONFIG_DEFAULTS

SHAPE_KEYS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'vocab_size', 'bias')  # a preset's


def describe(cfg):
    """The model's shape in one line, and every switch that is not at its default."""
    switches = [f"{k}={getattr(cfg, k)}" for k, d in CONFIG_DEFAULTS.items()
                if k not in SHAPE_KEYS and getattr(cfg, k) != d]
    return (f"{cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, block {cfg.block_size}, vocab "
            f"{cfg.vocab_size}, bias {cfg.bias}" + (f", {', '.join(switches)}" if switches else ""))


def planned_device(device, dtype, compile):
    """(device type, dtype, compiled, fused attention) to plan for on the device named, which need not be here:
    the GPU in this machine when it is one, else the usual choices for that kind of device."""
    dev = device if device != 'auto' else hardware.pick_device('auto')
    device_type = dev.split(':')[0]
    if device_type == 'cuda' and torch.cuda.is_available():
        dev = hardware.pick_device(dev)
        run_dtype = hardware.pick_dtype(dtype, dev, training=True)
        return device_type, run_dtype, hardware.pick_compile(compile, dev), hardware.fused_attention(dev, run_dtype)
    # without a GPU here, 'auto' plans CUDA in bf16; pick_dtype checks the name and decides for a CPU
    run_dtype = ('bfloat16' if dtype == 'auto' and device_type == 'cuda'
                 else hardware.pick_dtype(dtype, device_type, training=True))
    return device_type, run_dtype, compile if compile != 'auto' else device_type == 'cuda', None


def memory_plan(cfg, batch, device_type, dtype, compiled, fused, settings, with_lora=True):
    """The planner's peak for a bench step; settings holds bench's optimizer, chunked_ce,
    activation_checkpointing, gradient_accumulation_steps, lora_rank and lora_targets."""
    s = settings
    return estimate_training_memory(cfg, batch, cfg.block_size, dtype, s['optimizer'], device_type, compiled,
                                    s['chunked_ce'], s['activation_checkpointing'], s['gradient_accumulation_steps'],
                                    fused_attention=fused,
                                    lora=(s['lora_rank'], s['lora_targets']) if s['lora_rank'] and with_lora else None)


def print_report(cfg, batch, device_type, dtype, compiled, fused, settings):
    """Print the tables and the plan; return the plan."""
    counts = param_counts(cfg)
    T = cfg.block_size
    fwd = flops_per_token_breakdown(cfg, T, training=False)
    step = flops_per_token_breakdown(cfg, T, training=True)
    print(f"model: {describe(cfg)}")
    print(f"\n{'parameters':<24}{'count':>16}{'share':>8}")
    names = {'wte': 'wte' + (' (= lm_head)' if cfg.tie_embeddings else ''), 'wpe': 'wpe', 'qkv': 'attn.c_attn (qkv)',
             'attn_proj': 'attn.c_proj', 'mlp': f'mlp ({cfg.mlp})', 'norm': f'norms ({cfg.norm})', 'lm_head': 'lm_head'}
    for k, label in names.items():
        if counts[k]:
            print(f"  {label:<22}{counts[k]:>16,}{counts[k] / counts['total'] * 100:>7.1f}%")
    print(f"  {'total':<22}{counts['total']:>16,}")
    print(f"\n{'FLOPs per token':<24}{'forward':>16}{'training step':>16}{'share':>8}   (block {T})")
    labels = {'qkv': 'qkv projection', 'attn_scores': 'attention q.k', 'attn_values': 'attention x values',
              'attn_proj': 'output projection', 'mlp': 'mlp', 'lm_head': 'lm_head'}
    for k, label in labels.items():
        print(f"  {label:<22}{fwd[k]:>16,}{step[k]:>16,}{step[k] / step['total'] * 100:>7.1f}%")
    print(f"  {'total':<22}{fwd['total']:>16,}{step['total']:>16,}")
    print(f"  per step of {batch} x {T} tokens: {step['total'] * batch * T / 1e12:.3f} TFLOP "
          f"(matmuls only; attention counted as the full T x T square)")
    s = settings
    plan_of = lambda bs: memory_plan(cfg, bs, device_type, dtype, compiled, fused, s)
    plan = plan_of(batch)
    savers = [k for k in ('chunked_ce', 'activation_checkpointing') if s[k]]
    adapted = f"LoRA rank {s['lora_rank']} on {s['lora_targets']}" if s['lora_rank'] else None
    print(f"\nmemory plan, batch {batch} x {T}, {dtype} on {device_type}{', compiled' if compiled else ''}, "
          + ', '.join([s['optimizer'], *savers] + ([adapted] if adapted else [])) + ":")
    print(format_plan(plan))
    if s['lora_rank']:
        full = memory_plan(cfg, batch, device_type, dtype, compiled, None, s, with_lora=False)
        adapters = plan['optimizer'] + 4 * lora.count(cfg, s['lora_rank'], s['lora_targets'])
        share = adapters / (full['optimizer'] + 4 * counts['total'])
        print(f"LoRA: optimizer state and gradients are {share * 100:.2f}% of full fine-tuning's "
              f"({format_bytes(adapters)} vs {format_bytes(full['optimizer'] + 4 * counts['total'])})")
    fits = []
    for gib in (16, 24, 40, 80, 141):
        b = fit_batch_size(lambda bs: plan_of(bs)['total'], gib * 2 ** 30 * 0.9)
        fits.append(f"{gib} GiB: {b}" if b else f"{gib} GiB: none")
    print("largest micro-batch within 90% of " + ", ".join(fits))
    return plan


def attention_desc(plan, device_type):
    """How the planned step runs attention, in words."""
    if plan['attention'] == 'math':
        return 'materialized (math SDPA)'
    if device_type == 'cuda':
        return 'SDPA with flash ' + ('enabled' if torch.backends.cuda.flash_sdp_enabled() else 'disabled')
    return 'fused SDPA (flash kernel)'


def figure_lines(r, n_iters):
    """bench.py's timing figures (its result dict r) as lines: speed, MFU and memory, with a warning on a busy CPU."""
    lines = []
    if r['device'].startswith('cpu') and r['load_average'] > (os.cpu_count() or 1) + 0.5:
        lines.append(f"warning: the machine is busy (load average {r['load_average']:.1f} on {os.cpu_count()} "
                     f"cores): other processes slow these timings down and make them noisy")
    lines.append(f"\n{r['ms_per_iter']:.2f} ms/iter (median of {n_iters}; fastest {r['ms_per_iter_fastest']:.2f}), "
                 f"{r['tokens_per_sec']:,.0f} tokens/s")
    if r['mfu'] is None:
        lines.append(f"MFU n/a: {r['peak_flops_desc']}")
    else:
        lines.append(f"MFU {r['mfu'] * 100:.1f}% (fastest iteration {r['mfu_fastest'] * 100:.1f}%) against "
                     f"{r['peak_flops_desc']}")
    if r['peak_memory_bytes'] is not None:
        lines.append(f"peak memory {format_bytes(r['peak_memory_bytes'])} ({r['peak_memory_desc']}); planned "
                     f"{format_bytes(r['planned_memory_bytes'])}")
    return lines
