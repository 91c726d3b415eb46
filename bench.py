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
AdamW), after a warm-up that also absorbs torch.compile. MFU counts model FLOPs (model.py's
accounting: matmuls, attention as a full square, no recompute) against the data-sheet peak of a
known GPU or, on CPU, against a 1024x1024 fp32 matmul measured in this process.
"""

import json as jsonlib
import os
import statistics
import time
from contextlib import nullcontext

# set before CUDA starts: expandable segments avoid the fragmentation that fails large allocations
if 'PYTORCH_CUDA_ALLOC_CONF' not in os.environ and 'PYTORCH_ALLOC_CONF' not in os.environ:
    os.environ['PYTORCH_CUDA_ALLOC_CONF'] = 'expandable_segments:True'

import torch

from core import fileio, hardware
from configurator import config_keys, configure
from core.errors import UserError, install_excepthook
from model import CONFIG_DEFAULTS, GPT, GPTConfig, flops_per_token_breakdown, param_counts
from core.training.planner import check_build, estimate_training_memory, fit_batch_size, format_bytes, format_flops, format_plan

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

SHAPE_KEYS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'vocab_size', 'bias')  # a preset's; None keeps it

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
configure(globals(), config_keys(globals()),
          extra={k: (None,) for k in SHAPE_KEYS} |
          {'compile': (True, False), 'batch_size': ('auto',), 'reference': (True, False)}, explicit=_explicit)


def say(*args):
    if not json:
        print(*args, flush=True)


def model_config(preset_name):
    if preset_name not in PRESETS:
        raise UserError(f"unknown model '{preset_name}'; use one of {', '.join(PRESETS)} or auto")
    preset = dict(PRESETS[preset_name])
    preset.pop('batch_size')
    for k in SHAPE_KEYS:
        v = globals()[k]
        if v is None:
            continue
        want = bool if k == 'bias' else int
        if type(v) is not want:
            raise UserError(f"config key '{k}' expects {'a boolean' if want is bool else 'an integer'}, got {v!r}")
        preset[k] = v
    switches = {k: globals()[k] for k in CONFIG_DEFAULTS if k not in preset and k not in SHAPE_KEYS}
    try:
        return GPTConfig(**preset, **switches)
    except ValueError as e:
        raise UserError(str(e))


def describe(cfg):
    switches = [f"{k}={getattr(cfg, k)}" for k, d in CONFIG_DEFAULTS.items()
                if k not in SHAPE_KEYS and getattr(cfg, k) != d]
    return (f"{cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, block {cfg.block_size}, vocab "
            f"{cfg.vocab_size}, bias {cfg.bias}" + (f", {', '.join(switches)}" if switches else ""))


# ----- report: tables from the config alone --------------------------------------------------------

def print_report(cfg, batch, device_type, run_dtype, compiled, fused=None):
    from core.training import lora
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
    plan = plan_for(cfg, batch, device_type, run_dtype, compiled, fused)
    print(f"\nmemory plan, batch {batch} x {T}, {run_dtype} on {device_type}"
          f"{', compiled' if compiled else ''}, {optimizer}"
          f"{', chunked_ce' if chunked_ce else ''}{', activation_checkpointing' if activation_checkpointing else ''}"
          f"{f', LoRA rank {lora_rank} on {lora_targets}' if lora_rank else ''}:")
    print(format_plan(plan))
    if lora_rank:
        full = estimate_training_memory(cfg, batch, cfg.block_size, run_dtype, optimizer, device_type, compiled)
        share = (plan['optimizer'] + 4 * lora.count(cfg, lora_rank, lora_targets)) / (full['optimizer'] + 4 * counts['total'])
        print(f"LoRA: optimizer state and gradients are {share * 100:.2f}% of full fine-tuning's "
              f"({format_bytes(plan['optimizer'] + 4 * lora.count(cfg, lora_rank, lora_targets))} vs "
              f"{format_bytes(full['optimizer'] + 4 * counts['total'])})")
    fits = []
    for gib in (16, 24, 40, 80, 141):
        b = fit_batch_size(lambda bs: plan_for(cfg, bs, device_type, run_dtype, compiled, fused)['total'], gib * 2 ** 30 * 0.9)
        fits.append(f"{gib} GiB: {b}" if b else f"{gib} GiB: none")
    print("largest micro-batch within 90% of " + ", ".join(fits))
    return plan


def plan_for(cfg, batch, device_type, run_dtype, compiled, fused=None):
    return estimate_training_memory(cfg, batch, cfg.block_size, run_dtype, optimizer, device_type, compiled, chunked_ce,
                                    activation_checkpointing, gradient_accumulation_steps, fused_attention=fused,
                                    lora=(lora_rank, lora_targets) if lora_rank else None)


def attention_desc(plan, device_type):
    if plan['attention'] == 'math':
        return 'materialized (math SDPA)'
    if device_type == 'cuda':
        return 'SDPA with flash ' + ('enabled' if torch.backends.cuda.flash_sdp_enabled() else 'disabled')
    return 'fused SDPA (flash kernel)'


def warm_kernels(cfg, dev, device_type, ctx):
    """One step of a toy model with the same switches, so that loading kernels and their code is not
    counted as the real model's memory."""
    from dataclasses import replace
    toy = GPT(replace(cfg, n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=min(cfg.vocab_size, 128)))
    toy.save_memory(chunked_ce, activation_checkpointing)
    toy.to(dev)
    opt = toy.configure_optimizers(0.1, 1e-3, (0.9, 0.95), device_type, optimizer)
    x = torch.randint(0, toy.config.vocab_size, (2, 16), device=dev)
    hardware.train_steps(toy, opt, lambda: (x, x), 1, ctx, dev, 1)


# ----- timing ----------------------------------------------------------------------------------------

def categorize(event):
    """A profiled CPU op's share of the step: the optimizer (anything under its step), attention kernels,
    matmuls, norms, or the elementwise rest."""
    parent = event
    while parent is not None:
        if parent.name.startswith('Optimizer.') or parent.name.startswith('aten::_foreach'):  # step, clipping
            return 'optimizer and clipping'
        parent = parent.cpu_parent
    n = event.name.lower()
    if 'attention' in n or 'flash' in n or 'sdpa' in n:
        return 'attention kernels'
    if n in ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::baddbmm') or 'gemm' in n:
        return 'matmuls'
    if 'norm' in n:
        return 'norms'
    if n.startswith('aten::'):
        return 'elementwise, reductions, copies'
    return 'other (autograd engine, python)'


def profile_steps(m, opt, get_batch, ctx, dev, accum, n=3, trace_path=None):
    """Profile n steps; return [(op, seconds, calls)] by self time, {category: seconds}. On a GPU the time is
    the GPU kernels' own (each kernel counted once, not again under the CPU op that launched it)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile as torch_profile
    on_gpu = dev.startswith('cuda')
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with torch_profile(activities=activities) as prof:
        hardware.train_steps(m, opt, get_batch, n, ctx, dev, accum)
    if trace_path:
        try:
            fileio.write_with(trace_path, prof.export_chrome_trace)
        except OSError as e:
            raise UserError(f"cannot write the profiler trace {trace_path} ({e.strerror or e}); set --out_dir "
                            f"to a writable folder with free space")
    ops, cats = {}, {}
    for e in prof.events():
        if on_gpu:
            if e.device_type != DeviceType.CUDA:
                continue  # a CPU op's device time is its kernels' time, counted with the kernels themselves
            t, cat = e.device_time_total / 1e6, hardware.kernel_category(e.name)
        else:
            t, cat = e.self_cpu_time_total / 1e6, None
        if t <= 0:
            continue
        s, c = ops.get(e.name, (0.0, 0))
        ops[e.name] = (s + t, c + 1)
        cat = cat or categorize(e)
        cats[cat] = cats.get(cat, 0.0) + t
    rows = sorted(((k, s, c) for k, (s, c) in ops.items()), key=lambda r: -r[1])
    return rows, cats


def matmul_shape_rate(cfg, batch, T, dev, n_reps=20):
    """FLOP/s of this model's own matmuls (forward and both backward products of every Linear, and
    fused attention forward + backward), each timed alone at its shape: what a training step would
    reach if nothing but these kernels ran."""
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
            hardware.synchronize(dev)
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


def compare_with_reference(cfg, ours, ours_opt, get_batch, ctx, dev, compiled, n_warm, n_iters, tokens_per_iter):
    """Our step against core/bench/reference.py's plain GPT of the same shape, written the straightforward way:
    one step of each in turn (which goes first alternates), so both see the same machine; medians."""
    from core.bench import reference as plain
    why = plain.unsupported(cfg) + [f"{k}={globals()[k]!r}" for k in ('lora_rank', 'chunked_ce',
                                    'activation_checkpointing') if globals()[k]]
    if optimizer != 'adamw':
        why.append(f"optimizer={optimizer!r}")
    if why:
        say(f"plain reference: not timed, it is GPT-2 with AdamW only ({', '.join(why)})")
        return {}
    torch.manual_seed(seed)
    times = {'ours': [], 'reference': []}
    try:
        ref = plain.PlainGPT(cfg).to(dev)
        ref_opt = ref.configure_optimizers(0.1, 6e-4, (0.9, 0.95), dev.split(':')[0])
        ref_m = torch.compile(ref, mode=compile_mode) if compiled else ref
        # nanoGPT's train.py autocasts on GPUs only: on a CPU it trains in fp32 whatever its dtype says
        ref_ctx = nullcontext() if dev.split(':')[0] == 'cpu' else ctx
        hardware.train_steps(ref_m, ref_opt, get_batch, n_warm, ref_ctx, dev, gradient_accumulation_steps)
        runs = {'ours': (ours, ours_opt, ctx), 'reference': (ref_m, ref_opt, ref_ctx)}
        for i in range(n_iters):
            for name in (('ours', 'reference') if i % 2 == 0 else ('reference', 'ours')):
                m, o, c = runs[name]
                times[name] += hardware.train_steps(m, o, get_batch, 1, c, dev, gradient_accumulation_steps)
    except torch.OutOfMemoryError:  # two models and their optimizer states may not fit where one does
        say("plain reference: not timed, it does not fit in memory beside ours (--reference=False to skip it)")
        return {}
    ours_s, ref_s = statistics.median(times['ours']), statistics.median(times['reference'])
    say(f"against the plain PyTorch reference (core/bench/reference.py: the same GPT written nanoGPT's way, torch's default "
        f"AdamW for the device{'; fp32, as nanoGPT runs on a CPU' if dev.startswith('cpu') else ''}), {n_iters} steps each, "
        f"alternating: reference {ref_s * 1000:.2f} ms/iter "
        f"({tokens_per_iter / ref_s:,.0f} tokens/s), ours {ours_s * 1000:.2f} ms/iter "
        f"({tokens_per_iter / ours_s:,.0f} tokens/s): {ref_s / ours_s:.3f}x its tokens/s")
    return dict(reference_ms_per_iter=ref_s * 1000, reference_tokens_per_sec=tokens_per_iter / ref_s,
                paired_ms_per_iter=ours_s * 1000, speedup_vs_reference=ref_s / ours_s)


def run_sample():
    """Generation instead of training: core/bench/generate.py."""
    from core.bench.generate import run_sample as bench_generation
    dev = hardware.pick_device(device)
    cfg = dict(n_layer=6, n_head=6, n_embd=384, block_size=1024, vocab_size=65, bias=False)
    cfg.update({k: globals()[k] for k in cfg if globals()[k] is not None})
    cfg.update({k: globals()[k] for k in CONFIG_DEFAULTS if k not in SHAPE_KEYS})
    try:
        cfg = GPTConfig(**cfg)
    except ValueError as e:
        raise UserError(str(e))
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


def check_compile_mode():
    if compile_mode == 'default':
        return
    from torch._inductor import list_mode_options
    try:
        list_mode_options(compile_mode)
    except RuntimeError:
        modes = ', '.join(sorted(list_mode_options()))
        raise UserError(f"unknown compile_mode '{compile_mode}'; use one of {modes}")


def main():
    if reference not in ('auto', True, False):
        raise UserError(f"reference must be True, False or 'auto', got {reference!r}")
    if optimizer not in ('adamw', 'muon'):
        raise UserError(f"optimizer must be 'adamw' or 'muon', got '{optimizer}'")
    if batch_size != 'auto' and batch_size < 0:  # --report=True would otherwise fall back to the preset's
        raise UserError(f"batch_size must be positive, 0 (the preset's) or 'auto', got {batch_size}")
    if compile not in ('auto', True, False):
        raise UserError(f"compile must be True, False or 'auto', got {compile!r}")
    if sample and sample_tokens < 1:
        raise UserError(f"sample_tokens must be at least 1, got {sample_tokens}")
    if threads < 0:
        raise UserError(f"threads must be positive or 0 (torch's default), got {threads}")
    if threads:
        torch.set_num_threads(threads)
    check_compile_mode()
    if sample:
        return run_sample()
    preset_name = model
    if report:
        dev = device if device != 'auto' else hardware.pick_device('auto')
        device_type = dev.split(':')[0]
        if preset_name == 'auto':
            preset_name = 'gpt2' if device_type == 'cuda' else 'classic'
        cfg = model_config(preset_name)
        # without a GPU here, 'auto' plans CUDA in bf16; pick_dtype checks the name and decides for a CPU
        run_dtype = ('bfloat16' if dtype == 'auto' and device_type == 'cuda'
                     else hardware.pick_dtype(dtype, device_type, training=True))
        compiled = compile if compile != 'auto' else device_type == 'cuda'
        fused = None
        if device_type == 'cuda' and torch.cuda.is_available():  # planning for the GPU in this machine
            dev = hardware.pick_device(dev)
            run_dtype, compiled = hardware.pick_dtype(dtype, dev, training=True), hardware.pick_compile(compile, dev)
            fused = hardware.fused_attention(dev, run_dtype)
        batch = batch_size if isinstance(batch_size, int) and batch_size > 0 else PRESETS[preset_name]['batch_size']
        plan = print_report(cfg, batch, device_type, run_dtype, compiled, fused)
        if json:
            print(jsonlib.dumps(dict(mode='report', params=param_counts(cfg),
                                     flops_per_token=flops_per_token_breakdown(cfg, cfg.block_size), memory_plan=plan)))
        return

    dev = hardware.pick_device(device)
    device_type = dev.split(':')[0]
    if preset_name == 'auto':
        preset_name = 'gpt2' if device_type == 'cuda' else 'classic'
    cfg = model_config(preset_name)
    run_dtype = hardware.pick_dtype(dtype, dev, training=True)
    compiled = hardware.pick_compile(compile, dev)
    fused = hardware.fused_attention(dev, run_dtype)
    check_build(cfg, dev)
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ctx = hardware.autocast_context(dev, run_dtype)
    T = cfg.block_size
    plan_fn = lambda bs: plan_for(cfg, bs, device_type, run_dtype, compiled, fused)
    if batch_size == 'auto':
        from core.training.planner import SAFETY, device_budget
        budget = device_budget(dev) or 0
        batch = fit_batch_size(lambda bs: plan_fn(bs)['total'], budget * SAFETY.get(device_type, 0.75))
        if batch == 0:
            raise UserError(f"not even batch_size=1 fits in {format_bytes(budget)} on {dev}")
    elif batch_size > 0:
        batch = batch_size
    elif batch_size == 0:
        batch = PRESETS[preset_name]['batch_size']
    else:
        raise UserError(f"batch_size must be positive, 0 (the preset's) or 'auto', got {batch_size}")
    if gradient_accumulation_steps <= 0 or iters < 0 or warmup_iters < 0:
        raise UserError("gradient_accumulation_steps must be positive, iters and warmup_iters not negative")
    n_warm = warmup_iters or (3 if device_type == 'cpu' else 10)
    n_iters = iters or (10 if device_type == 'cpu' else 30)
    torch.manual_seed(seed)

    # data: one fixed random batch, or real batches from a prepared dataset
    if dataset:
        from core.data.loader import Dataset
        data = Dataset(dataset)
        data.check_fits(cfg.vocab_size, T)
        gen = torch.Generator().manual_seed(seed)
        get_batch = lambda: data.get_batch('train', batch, T, gen, dev)
        source = f"dataset {data.data_dir}"
    else:
        x = torch.randint(0, cfg.vocab_size, (batch, T), device=dev)
        y = torch.randint(0, cfg.vocab_size, (batch, T), device=dev)
        get_batch = lambda: (x, y)
        source = "random tokens"

    plan = plan_fn(batch)
    if device_type == 'cuda':
        torch.cuda.synchronize(dev)
        mem_before = torch.cuda.memory_allocated(dev)
    elif device_type == 'cpu':
        warm_kernels(cfg, dev, device_type, ctx)
        mem_before = hardware.rss_bytes() if os.path.exists('/proc/self/statm') else hardware.peak_rss_bytes()
    raw = GPT(cfg)
    if lora_rank:
        from core.training import lora
        lora.add(raw, lora_rank, lora_alpha, lora_targets)
    raw.save_memory(chunked_ce, activation_checkpointing)
    raw.to(dev)
    opt = raw.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type, optimizer)
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
    hardware.train_steps(m, opt, get_batch, n_warm, ctx, dev, gradient_accumulation_steps)
    cpu_peak_dtype, cpu_peak_mode = hardware.cpu_gemm_precision(run_dtype)  # a peak in the GEMMs' own precision
    if device_type == 'cpu' and peak_tflops <= 0:
        hardware.measure_cpu_peak_flops(seconds=1.0, dtype=cpu_peak_dtype)  # a longer look than the default, then cached
    peak, peak_desc = hardware.peak_flops(dev, run_dtype, peak_tflops)
    times = hardware.train_steps(m, opt, get_batch, n_iters, ctx, dev, gradient_accumulation_steps)
    if device_type == 'cpu' and peak_tflops <= 0:
        # measured again after the timing and the faster kept: a burst of other work on a shared
        # machine must not lower the peak and so flatter the MFU
        hardware._cpu_peak_cache.clear()
        peak = max(peak, hardware.measure_cpu_peak_flops(seconds=1.0, dtype=cpu_peak_dtype))
        peak_desc = (f"CPU {cpu_peak_mode} 1024x1024 matmul measured here before and after the timing, the faster "
                     f"kept ({peak / 1e9:.1f} GFLOP/s, {torch.get_num_threads()} threads)")
    median, best = statistics.median(times), min(times)
    tok_s = tokens_per_iter / median
    # a GPU the peak table lacks reports no MFU (None) rather than one against a guessed peak
    mfu = raw.estimate_mfu(tok_s, peak, T) if peak else None
    mfu_best = raw.estimate_mfu(tokens_per_iter / best, peak, T) if peak else None
    if device_type == 'cuda':
        peak_mem = torch.cuda.max_memory_allocated(dev) - mem_before
        mem_desc = 'torch.cuda.max_memory_allocated'
    elif device_type == 'cpu':
        peak_mem = hardware.peak_rss_bytes() - mem_before
        mem_desc = 'growth of the peak resident memory, allocator slack included; the plan counts live tensors'
    else:
        peak_mem, mem_desc = None, 'not measured on this device'

    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else 0.0
    if device_type == 'cpu' and load > (os.cpu_count() or 1) + 0.5:
        say(f"warning: the machine is busy (load average {load:.1f} on {os.cpu_count()} cores): other processes "
            f"slow these timings down and make them noisy")
    say(f"\n{median * 1000:.2f} ms/iter (median of {n_iters}; fastest {best * 1000:.2f}), {tok_s:,.0f} tokens/s")
    if mfu is None:
        say(f"MFU n/a: {peak_desc}")
    else:
        say(f"MFU {mfu * 100:.1f}% (fastest iteration {mfu_best * 100:.1f}%) against {peak_desc}")
    if peak_mem is not None:
        say(f"peak memory {format_bytes(peak_mem)} ({mem_desc}); planned {format_bytes(plan['total'])}")

    result = dict(mode='train', model=preset_name, config=cfg.to_dict(), device=dev, dtype=run_dtype,
                  compile=compiled, batch_size=batch, block_size=T,
                  gradient_accumulation_steps=gradient_accumulation_steps,
                  tokens_per_iter=tokens_per_iter, ms_per_iter=median * 1000, ms_per_iter_fastest=best * 1000,
                  tokens_per_sec=tok_s, mfu=mfu, mfu_fastest=mfu_best, flops_per_token=flops_tok,
                  peak_flops=peak, peak_flops_desc=peak_desc, peak_memory_bytes=peak_mem, peak_memory_desc=mem_desc,
                  planned_memory_bytes=plan['total'], threads=torch.get_num_threads(), load_average=load)

    if reference is True or (reference == 'auto' and device_type == 'cpu'):
        result.update(compare_with_reference(cfg, m, opt, get_batch, ctx, dev, compiled, n_warm, n_iters,
                                             tokens_per_iter))
    if device_type == 'cpu' and shape_peak:
        rate, linear_rate, attn_rate = matmul_shape_rate(cfg, batch, T, dev)
        ceiling = rate / peak
        result['shape_matmul_flops'] = rate
        result['shape_linear_flops'], result['shape_attention_flops'] = linear_rate, attn_rate
        result['mfu_ceiling'] = ceiling
        sizes = {n: hardware.measure_cpu_peak_flops(n=n) for n in (256, 512, 2048)}
        result['matmul_flops_by_size'] = {**{str(n): r for n, r in sizes.items()}, '1024': peak}
        say("the peak depends on the matrix size: " + ", ".join(f"{n}x{n} {r / 1e9:.0f}" for n, r in sizes.items())
            + f" GFLOP/s (1024x1024: {peak / 1e9:.0f}, the one used)")
        say(f"this model's own matmul and attention shapes, each timed alone, run at {rate / 1e9:.1f} GFLOP/s = "
            f"{ceiling * 100:.0f}% of that peak (the Linear layers' products {linear_rate / 1e9:.0f}, fused attention "
            f"forward + backward {attn_rate / 1e9:.0f} GFLOP/s): the MFU if the step were nothing but those kernels, "
            f"with no norm, activation, residual, loss or optimizer time at all; the step reaches "
            f"{mfu / ceiling * 100:.0f}% of it. MFU stays quoted against the machine's peak, not against these "
            f"small kernels, which would hide how far below the hardware they run")
    if breakdown or profile:
        trace = os.path.join(out_dir, 'bench_trace.json') if profile else None
        rows, cats = profile_steps(m, opt, get_batch, ctx, dev, gradient_accumulation_steps, trace_path=trace)
        total = sum(cats.values())
        result['time_breakdown'] = {k: v / total for k, v in cats.items()}
        result['profiled_seconds'] = total  # of 3 steps: GPU kernel time on CUDA, CPU self time elsewhere
        result['top_ops'] = [dict(op=n, seconds=t, calls=c) for n, t, c in rows[:10]]
        where = 'GPU kernel' if device_type == 'cuda' else 'CPU self'
        say(f"\nwhere the time goes ({where} time of 3 profiled iterations):")
        for k, v in sorted(cats.items(), key=lambda kv: -kv[1]):
            say(f"  {k:<38}{v / total * 100:6.1f}%")
        say("top 10 ops:")
        for name, t, calls in rows[:10]:
            say(f"  {name[:58]:<60}{t / total * 100:6.1f}%  {calls:>6} calls")
        if trace:
            say(f"profiler trace written to {trace} (open in chrome://tracing or ui.perfetto.dev)")
            result['trace'] = trace
    if json:
        print(jsonlib.dumps(result))


if __name__ == '__main__':
    main()
