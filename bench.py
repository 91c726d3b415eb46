"""
Benchmark GPT training steps: ms/iter, tokens/s, MFU against the device's peak, peak memory.

    python bench.py                                 # CPU: the classic 4-layer 128-wide char model; CUDA: GPT-2 124M
    python bench.py --model=gpt2-medium --batch_size=8 --compile=False
    python bench.py --dataset=shakespeare_char      # real batches instead of random tokens
    python bench.py --report=True --model=gpt2-xl   # parameter and FLOP tables and the memory plan, no timing
    python bench.py --sample=True                   # generation: KV cache, uncached, compiled, first token, bandwidth, batched
    python bench.py --profile=True                  # a torch.profiler trace and the top ops
    python bench.py --json=True                     # one JSON object with the figures, printed last

Each timed iteration is a full optimizer step as train.py runs it (micro-steps, backward, clipping,
AdamW), after a warm-up that also absorbs torch.compile. MFU counts model FLOPs (core/training/accounting.py,
as train.py does: matmuls, attention as a full square, no recompute) against the data-sheet peak of a
known GPU or, on CPU, against a 1024x1024 fp32 matmul measured in this process.
"""

import json as jsonlib
import os
import statistics

# set before CUDA starts: expandable segments avoid the fragmentation that fails large allocations
if 'PYTORCH_CUDA_ALLOC_CONF' not in os.environ and 'PYTORCH_ALLOC_CONF' not in os.environ:
    os.environ['PYTORCH_CUDA_ALLOC_CONF'] = 'expandable_segments:True'

import torch

from configurator import config_keys, configure
from core import fileio, hardware
from core.bench import timing
from core.bench.report import (SHAPE_KEYS, attention_desc, describe, figure_lines, memory_plan, planned_device,
                               print_report)
from core.errors import UserError, install_excepthook
from core.training.accounting import flops_per_token_breakdown, param_counts
from core.training.planner import check_build, device_batch_size
from core.training.settings import check_lora_rank
from core.units import format_bytes, format_flops
from model import CONFIG_DEFAULTS, GPT, GPTConfig

PRESETS = {
    # nanoGPT's CPU example, the model CPU MFU is quoted for
    'classic': dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, bias=False, batch_size=12),
    # nanoGPT's Shakespeare character model (--sample=True times its shape with block 1024)
    'baby': dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65, bias=False, batch_size=64),
    # GPT-2's shapes with its vocab padded to 50304 (a multiple of 64, faster)
    'gpt2': dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, bias=True, batch_size=16),
    'gpt2-medium': dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024, vocab_size=50304, bias=True, batch_size=8),
    'gpt2-large': dict(n_layer=36, n_head=20, n_embd=1280, block_size=1024, vocab_size=50304, bias=True, batch_size=4),
    'gpt2-xl': dict(n_layer=48, n_head=25, n_embd=1600, block_size=1024, vocab_size=50304, bias=True, batch_size=2),
}

# -----------------------------------------------------------------------------
model = 'auto'  # a preset: classic, baby, gpt2, gpt2-medium, gpt2-large, gpt2-xl; 'auto': gpt2 on CUDA, else classic
# model shape and switches; None keeps the preset's value
n_layer = None
n_head = None
n_embd = None
block_size = None
vocab_size = None
bias = None
dropout = 0.0
# every switch of GPTConfig (norm, pos_encoding, mlp, ...) is a key too, at the model's default (set below)
# training step
batch_size = 0  # 0: the preset's; 'auto': the largest that fits this device (planner.py)
gradient_accumulation_steps = 1
dataset = ''  # empty: random tokens; else a prepared dataset (a name under data/ or a folder)
optimizer = 'adamw'
chunked_ce = False
activation_checkpointing = False
lora_rank = 0  # > 0: LoRA fine-tuning (core/training/lora.py): the planner and the measured steps train adapters only
lora_alpha = 16.0
lora_targets = 'attn'  # 'attn', 'mlp' or 'attn,mlp'
# system
device = 'auto'
dtype = 'auto'  # bfloat16 on CUDA and on CPUs with it in hardware (training), else float32
compile = 'auto'  # on for CUDA
compile_mode = 'default'  # torch.compile's mode: 'default', 'max-autotune', 'max-autotune-no-cudagraphs', ...
warmup_iters = 0  # 0: 3 on CPU, 10 on a GPU (compiling happens here)
iters = 0  # timed iterations; 0: 10 on CPU, 30 on a GPU
seed = 1337
threads = 0  # CPU threads for torch; 0 keeps torch's default (one per core)
peak_tflops = 0.0  # override the peak MFU is measured against; 0 = the data sheet or a CPU matmul
# what to do
report = False  # print the parameter and FLOP tables and the memory plan, and stop
breakdown = True  # profile a few steps and show where the time goes
reference = 'auto'  # also time core/bench/reference.py's plain nanoGPT-style GPT, alternating steps with ours; auto: on CPU
shape_peak = True  # on CPU, also time this model's own matmul shapes: the MFU a perfect loop would reach
profile = False  # write a torch.profiler trace (out_dir/bench_trace.json) and print the top 10 ops
out_dir = 'out-bench'
sample = False  # time generation with and without the KV cache instead of training
sample_tokens = 500
sample_batch = 8  # --sample=True also times this many samples in one batch against one after another (1: skip)
json = False  # print one JSON object with the figures last
# -----------------------------------------------------------------------------
for _k, _v in CONFIG_DEFAULTS.items():
    globals().setdefault(_k, _v)
install_excepthook()
_explicit = set()
configure(globals(), config_keys(globals()), extra={k: (None,) for k in SHAPE_KEYS} | {'batch_size': ('auto',)},
          choices={'compile': (True, False, 'auto'), 'reference': (True, False, 'auto'),
                   'optimizer': ('adamw', 'muon')}, explicit=_explicit)


def say(*args):
    if not json:
        print(*args, flush=True)


def check_config():
    if batch_size != 'auto' and batch_size < 0:  # --report=True would otherwise fall back to the preset's
        raise UserError(f"batch_size must be positive, 0 (the preset's) or 'auto', got {batch_size}")
    if sample and sample_tokens < 1:
        raise UserError(f"sample_tokens must be at least 1, got {sample_tokens}")
    hardware.check_threads(threads)  # 0: torch's default
    if peak_tflops < 0:
        raise UserError(f"peak_tflops must be positive (the device's dense TFLOP/s) or 0 (the data sheet or a CPU "
                        f"matmul), got {peak_tflops:g}")
    if gradient_accumulation_steps <= 0 or iters < 0 or warmup_iters < 0:
        raise UserError("gradient_accumulation_steps must be positive, iters and warmup_iters not negative")
    hardware.check_compile_mode(compile_mode)
    check_lora_rank(lora_rank)  # the report's plan would count negative adapters
    if profile:  # the trace's folder, before the benchmark it ends
        fileio.check_folder('out_dir', out_dir)


def model_config(preset):
    """The GPTConfig of a preset's shape (a PRESETS entry), with the shape keys given here and every switch."""
    shape = {k: v for k, v in preset.items() if k != 'batch_size'}
    shape.update({k: globals()[k] for k in SHAPE_KEYS if globals()[k] is not None})  # GPTConfig checks types
    try:
        return GPTConfig(**shape, **{k: globals()[k] for k in CONFIG_DEFAULTS if k not in SHAPE_KEYS})
    except ValueError as e:
        raise UserError(str(e))


def settings():
    """The training settings the memory plan and the reference comparison depend on."""
    keys = ('optimizer', 'chunked_ce', 'activation_checkpointing', 'gradient_accumulation_steps', 'lora_rank',
            'lora_targets')
    return {k: globals()[k] for k in keys}


def preset_for(device_type):
    name = model if model != 'auto' else 'gpt2' if device_type == 'cuda' else 'classic'
    if name not in PRESETS:
        raise UserError(f"unknown model '{name}'; use one of {', '.join(PRESETS)} or auto")
    return name


def preset_batch(preset_name):
    return batch_size if isinstance(batch_size, int) and batch_size > 0 else PRESETS[preset_name]['batch_size']


def run_report():
    """The tables and the memory plan of the model on the device named, which need not be here."""
    device_type, run_dtype, compiled, fused = planned_device(device, dtype, compile)
    preset_name = preset_for(device_type)
    cfg = model_config(PRESETS[preset_name])
    plan = print_report(cfg, preset_batch(preset_name), device_type, run_dtype, compiled, fused, settings())
    if json:
        print(jsonlib.dumps(dict(mode='report', params=param_counts(cfg),
                                 flops_per_token=flops_per_token_breakdown(cfg, cfg.block_size), memory_plan=plan)))


def build(cfg, dev, device_type):
    """Our model with the run's settings (LoRA, memory savers) on dev, and its optimizer."""
    m = GPT(cfg)
    if lora_rank:
        from core.training import lora
        lora.add(m, lora_rank, lora_alpha, lora_targets)
    m.set_memory_savers(chunked_ce, activation_checkpointing)
    m.to(dev)
    return m, m.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type, optimizer)


def batches(cfg, batch, dev):
    """(get_batch, where the tokens come from): one fixed random batch, or real batches from a dataset."""
    T = cfg.block_size
    if dataset:
        from core.data.loader import Dataset
        data = Dataset(dataset)
        data.check_fits(cfg.vocab_size, T)
        gen = torch.Generator().manual_seed(seed)
        return lambda: data.get_batch('train', batch, T, gen, dev), f"dataset {data.data_dir}"
    x = torch.randint(0, cfg.vocab_size, (batch, T), device=dev)
    y = torch.randint(0, cfg.vocab_size, (batch, T), device=dev)
    return lambda: (x, y), "random tokens"


def run_sample():
    """Generation instead of training: core/bench/generate.py."""
    from core.bench.generate import run_sample as bench_generation
    dev = hardware.pick_device(device)
    cfg = model_config(dict(PRESETS['baby'], block_size=1024))
    if sample_batch < 1:
        raise UserError(f"sample_batch must be at least 1, got {sample_batch}")
    check_build(cfg, dev)
    say(f"model: {describe(cfg)}")
    figures, same = bench_generation(cfg, dev, sample_tokens, sample_batch, seed, dtype, compile, say)
    if json:
        print(jsonlib.dumps(dict(mode='sample', device=dev, new_tokens=sample_tokens, block_size=cfg.block_size,
                                 threads=torch.get_num_threads(), **figures)))
    if not same:
        raise SystemExit(1)


def run_training_benchmark():
    dev = hardware.pick_device(device)
    device_type = dev.split(':')[0]
    preset_name = preset_for(device_type)
    cfg = model_config(PRESETS[preset_name])
    run_dtype = hardware.pick_dtype(dtype, dev, training=True)
    compiled = hardware.pick_compile(compile, dev)
    fused = hardware.fused_attention(dev, run_dtype)
    check_build(cfg, dev)
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ctx = hardware.autocast_context(dev, run_dtype)
    T = cfg.block_size
    plan_of = lambda bs: memory_plan(cfg, bs, device_type, run_dtype, compiled, fused, settings())
    batch = preset_batch(preset_name) if batch_size != 'auto' else device_batch_size(lambda b: plan_of(b)['total'], dev)
    n_warm = warmup_iters or (3 if device_type == 'cpu' else 10)
    n_iters = iters or (10 if device_type == 'cpu' else 30)
    torch.manual_seed(seed)
    get_batch, source = batches(cfg, batch, dev)

    plan = plan_of(batch)
    if device_type == 'cpu':
        timing.warm_kernels(cfg, dev, ctx, (chunked_ce, activation_checkpointing), optimizer)
    mem_before = timing.memory_mark(dev)
    raw, opt = build(cfg, dev, device_type)
    m = torch.compile(raw, mode=compile_mode) if compiled else raw
    tokens_per_iter = batch * T * gradient_accumulation_steps
    flops_tok = raw.flops_per_token(T)
    say(f"model: {preset_name}: {describe(cfg)}; {raw.get_num_params(False) / 1e6:.2f}M parameters")
    thread_note = f" ({torch.get_num_threads()} threads)" if device_type == "cpu" else ""
    say(f"device {dev}{thread_note}, dtype {run_dtype}, compile {compiled}, optimizer {optimizer}"
        f"{' (fused)' if device_type in ('cuda', 'cpu') and optimizer == 'adamw' else ''}, attention "
        f"{attention_desc(plan, device_type)}, {source}")
    say(f"batch {batch} x {T} x {gradient_accumulation_steps} micro-steps = {tokens_per_iter:,} tokens/iter; "
        f"{format_flops(flops_tok)}/token, {format_flops(flops_tok * tokens_per_iter)}/iter (model FLOPs)")
    say(f"memory plan: {format_bytes(plan['total'])} at the peak ({plan['phase']})")

    if device_type == 'cuda':
        torch.cuda.reset_peak_memory_stats(dev)
    say(f"warm-up: {n_warm} iterations" + (" (includes compiling)" if compiled else ""))
    steps = lambda n: timing.timed_train_steps(m, opt, get_batch, n, ctx, dev, gradient_accumulation_steps)
    steps(n_warm)
    times, peak, peak_desc = timing.timed_against_peak(dev, run_dtype, peak_tflops, lambda: steps(n_iters))
    median, best = statistics.median(times), min(times)
    tok_s = tokens_per_iter / median
    # a GPU the peak table lacks reports no MFU (None) rather than one against a guessed peak
    mfu = raw.estimate_mfu(tok_s, peak, T) if peak else None
    mfu_best = raw.estimate_mfu(tokens_per_iter / best, peak, T) if peak else None
    peak_mem, mem_desc = timing.memory_growth(dev, mem_before)

    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else 0.0
    result = dict(mode='train', model=preset_name, config=cfg.to_dict(), device=dev, dtype=run_dtype,
                  compile=compiled, batch_size=batch, block_size=T,
                  gradient_accumulation_steps=gradient_accumulation_steps,
                  tokens_per_iter=tokens_per_iter, ms_per_iter=median * 1000, ms_per_iter_fastest=best * 1000,
                  tokens_per_sec=tok_s, mfu=mfu, mfu_fastest=mfu_best, flops_per_token=flops_tok,
                  peak_flops=peak, peak_flops_desc=peak_desc, peak_memory_bytes=peak_mem, peak_memory_desc=mem_desc,
                  planned_memory_bytes=plan['total'], threads=torch.get_num_threads(), load_average=load)
    say('\n'.join(figure_lines(result, n_iters)))

    def add(figures, lines):
        result.update(figures)
        say('\n'.join(lines))
    if reference is True or (reference == 'auto' and device_type == 'cpu'):
        from core.bench import reference as plain
        why = plain.unsupported(cfg, optimizer, lora_rank=lora_rank, chunked_ce=chunked_ce,
                                activation_checkpointing=activation_checkpointing)
        if why:
            say(f"plain reference: not timed, it is GPT-2 with AdamW only ({', '.join(why)})")
        else:
            torch.manual_seed(seed)
            figures, line = plain.compare(cfg, m, opt, get_batch, ctx, dev, compile_mode if compiled else None,
                                          n_warm, n_iters, gradient_accumulation_steps, tokens_per_iter)
            add(figures, [line])
    if device_type == 'cpu' and shape_peak:
        add(*timing.shape_ceiling(cfg, batch, dev, peak, mfu))
    if breakdown or profile:
        from core.bench.profile import breakdown as profiled
        trace = os.path.join(out_dir, 'bench_trace.json') if profile else None
        add(*profiled(m, opt, get_batch, ctx, dev, gradient_accumulation_steps, trace))
    if json:
        print(jsonlib.dumps(result))


def main():
    check_config()
    if threads:
        torch.set_num_threads(threads)
    if sample:
        return run_sample()
    if report:
        return run_report()
    run_training_benchmark()


if __name__ == '__main__':
    main()
