"""
How close planner.py's estimate is to the measured peak of real training steps.

    python studies/bench_memory.py                      # the table on this machine's CPU (or CUDA if present)
    python studies/bench_memory.py --configs=tiny,lm50k --steps=3
    python studies/bench_memory.py --json=True
    python studies/bench_memory.py --compile=True       # torch.compile'd models against the planner's compiled estimate

Every config runs in a fresh Python process: it first trains a toy model with the same switches for
one step (so kernels and their code are loaded), records its memory, then builds the real model and
optimizer and trains `steps` steps the way train.py does (the loss of `model(x, y)` without keeping
the logits, backward, clip, step, zero_grad). What is measured:
- CUDA: torch.cuda.max_memory_allocated() minus what was allocated before the model was built.
- CPU: the growth of the process's peak resident memory (getrusage ru_maxrss) over its memory
  before the model was built. glibc keeps freed blocks below a size it adapts at run time, which
  inflates a peak by up to a fifth over the bytes actually alive; the child runs with
  MALLOC_MMAP_THRESHOLD_=65536 so every tensor above 64 KiB is mapped and unmapped exactly and the
  peak counts live tensors, as max_memory_allocated does on CUDA. The 'rss default' column is the
  same run under the default allocator settings, and 'alloc' the peak of live bytes counted from
  the torch profiler's allocation events: two independent checks of the same figure.
"""

import json
import os
import subprocess
import sys

CONFIGS = {
    # name: (model config, batch_size, extra training options)
    'tiny': (dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, bias=False), 12, {}),
    'char-baby': (dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65, dropout=0.2, bias=False),
                  12, {}),
    'lm50k': (dict(n_layer=4, n_head=4, n_embd=256, block_size=256, vocab_size=50304, bias=True), 4, {}),
    'lm50k-chunked': (dict(n_layer=4, n_head=4, n_embd=256, block_size=256, vocab_size=50304, bias=True), 4,
                      dict(chunked_ce=True)),
    'modern-ckpt': (dict(n_layer=6, n_head=6, n_embd=384, block_size=512, vocab_size=8192, norm='rmsnorm',
                         pos_encoding='rope', mlp='swiglu', qk_norm=True, tie_embeddings=False, logit_softcap=15.0,
                         bias=False), 8, dict(activation_checkpointing=True)),
    'modern': (dict(n_layer=6, n_head=6, n_embd=384, block_size=512, vocab_size=8192, norm='rmsnorm',
                    pos_encoding='rope', mlp='swiglu', qk_norm=True, tie_embeddings=False, logit_softcap=15.0,
                    bias=False), 8, {}),
    'accum-muon': (dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=50304, mlp='relu2', bias=False),
                   4, dict(optimizer='muon', gradient_accumulation_steps=2)),
    'lora': (dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=50304, bias=True), 4,
             dict(lora=(8, 'attn,mlp'))),
}

# -----------------------------------------------------------------------------
configs = 'all'  # comma-separated names from CONFIGS, or 'all'
device = 'auto'
dtype = 'auto'  # autocast dtype for the runs: float32 on CPU, bfloat16 on CUDA
steps = 2
compile = False  # torch.compile the model (on CPU measured from the profiler's allocations only)
alloc = True  # also count live bytes from the profiler's allocation events (CPU)
rss_default = True  # also measure under glibc's default settings (CPU)
json_out = False
child = ''  # internal: the JSON job of a measuring child process
# -----------------------------------------------------------------------------


def measure(job):
    """Run in the child: train job's model for job['steps'] steps and return the measured peak bytes."""
    from dataclasses import replace

    import torch

    from core import hardware
    from core.bench.timing import timed_train_steps
    from model import GPT, GPTConfig

    device_name, mode = job['device'], job['mode']
    device_type = device_name.split(':')[0]
    ctx = hardware.autocast_context(device_name, job['dtype'])
    cfg = GPTConfig(**job['model'])
    opts = job['options']
    accum = opts.get('gradient_accumulation_steps', 1)

    def build(c):
        m = GPT(c)
        if opts.get('lora'):
            from core.training import lora
            lora.add(m, opts['lora'][0], 16, opts['lora'][1])
        m.set_memory_savers(opts.get('chunked_ce', False), opts.get('activation_checkpointing', False))
        m.to(device_name)
        opt = m.configure_optimizers(0.1, 1e-3, (0.9, 0.95), device_type, opts.get('optimizer', 'adamw'))
        return (torch.compile(m) if opts.get('compile') else m), opt

    def train(m, opt, batch, n_steps, gen):
        def get_batch():
            shape = (batch, m.config.block_size)
            x = torch.randint(0, m.config.vocab_size, shape, generator=gen).to(device_name)
            return x, torch.randint(0, m.config.vocab_size, shape, generator=gen).to(device_name)
        m.train()
        timed_train_steps(m, opt, get_batch, n_steps, ctx, device_name, accum)

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if opts.get('compile'):
        return measure_compiled(job, cfg, build, train, gen)
    toy = replace(cfg, n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=min(cfg.vocab_size, 128))
    m, opt = build(toy)
    train(m, opt, 2, 2, gen)
    del m, opt

    if device_type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        m, opt = build(cfg)
        train(m, opt, job['batch_size'], job['steps'], gen)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    if mode == 'alloc':
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            m, opt = build(cfg)
            train(m, opt, job['batch_size'], job['steps'], gen)
        return peak_of(prof)
    # a transient peak from start-up (imports, caches) would otherwise hide under ru_maxrss: on Linux,
    # writing 5 to clear_refs resets the high-water mark to the current resident size
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        reset = True
    except OSError:
        reset = False
    before = hardware.rss_bytes()
    m, opt = build(cfg)
    train(m, opt, job['batch_size'], job['steps'], gen)
    if reset:
        with open('/proc/self/status') as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))
        return hwm * 1024 - before
    return hardware.peak_rss_bytes() - before


def measure_compiled(job, cfg, build, train, gen):
    """measure() for options compile=True: the real model is compiled by a first step (the compiler's own
    memory is not the training step's), then the steps are measured. On CPU ('alloc' mode only: the
    compiler's memory stays in the resident size) the peak is the live parameters and optimizer state plus
    the profiler's largest sum of allocations over the steps; on CUDA, max_memory_allocated over the steps
    less what was allocated before the model was built."""
    import torch
    device_type = job['device'].split(':')[0]
    if device_type == 'cuda':
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
    m, opt = build(cfg)
    train(m, opt, job['batch_size'], 1, gen)
    if device_type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        train(m, opt, job['batch_size'], job['steps'], gen)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    if job['mode'] != 'alloc':
        from core.errors import UserError
        raise UserError("compile=True is measured on a CPU in 'alloc' mode only (the compiler's own memory "
                        "stays in the resident size)")
    from torch.profiler import ProfilerActivity, profile
    tensors = list(m.parameters()) + [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    live = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        train(m, opt, job['batch_size'], job['steps'], gen)
    return live + peak_of(prof)


def peak_of(prof):
    """The largest sum of the allocations (and frees) a profile recorded, in time order."""
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == '[memory]')
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def run_child(job, env_extra):
    env = dict(os.environ, **env_extra)
    r = subprocess.run([sys.executable, os.path.abspath(__file__), f"--child={json.dumps(job)}"],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"measuring {job['name']} failed:\n{r.stderr[-2000:]}")
    return int(r.stdout.strip().splitlines()[-1])


def main():
    from core import hardware
    from model import GPTConfig
    from core.training.planner import estimate_training_memory

    device_name = hardware.pick_device(device)
    device_type = device_name.split(':')[0]
    run_dtype = hardware.pick_dtype(dtype, device_name, training=True)
    names = list(CONFIGS) if configs == 'all' else [n.strip() for n in configs.split(',')]
    for n in names:
        if n not in CONFIGS:
            raise UserError(f"unknown config '{n}'; known: {', '.join(CONFIGS)}")
    if steps < 1:
        raise UserError(f"steps must be at least 1, got {steps}")
    rows = []
    for name in names:
        model_args, batch, opts = CONFIGS[name]
        opts = dict(opts, compile=True) if compile else opts
        job = dict(name=name, model=model_args, batch_size=batch, options=opts, steps=steps, device=device_name,
                   dtype=run_dtype, mode='alloc' if compile and device_type != 'cuda' else 'rss')
        plan = estimate_training_memory(GPTConfig(**model_args), batch, dtype=run_dtype, device_type=device_type,
                                        optimizer=opts.get('optimizer', 'adamw'),
                                        chunked_ce=opts.get('chunked_ce', False),
                                        activation_checkpointing=opts.get('activation_checkpointing', False),
                                        gradient_accumulation_steps=opts.get('gradient_accumulation_steps', 1),
                                        fused_attention=hardware.fused_attention(device_name, run_dtype),
                                        lora=opts.get('lora'), compiled=bool(compile))
        row = dict(config=name, predicted=plan['total'], phase=plan['phase'])
        if device_type == 'cuda' or compile:
            row['measured'] = run_child(job, {'MALLOC_MMAP_THRESHOLD_': '65536'} if device_type != 'cuda' else {})
        else:
            row['measured'] = run_child(job, {'MALLOC_MMAP_THRESHOLD_': '65536'})
            if rss_default:
                row['rss_default'] = run_child(job, {})
            if alloc:
                row['alloc'] = run_child(dict(job, mode='alloc'), {'MALLOC_MMAP_THRESHOLD_': '65536'})
        row['error'] = row['predicted'] / row['measured'] - 1
        rows.append(row)
        if not json_out:
            print_row(row, first=len(rows) == 1, device_type=device_type)
    if json_out:
        print(json.dumps(dict(device=device_name, dtype=run_dtype, steps=steps, compile=bool(compile), rows=rows)))
    else:
        worst = max(abs(r['error']) for r in rows)
        what = 'torch.cuda.max_memory_allocated' if device_type == 'cuda' else \
            'live bytes from the profiler' if compile else 'peak RSS growth, MALLOC_MMAP_THRESHOLD_=65536'
        what += ', compiled' if compile else ''
        print(f"measured: {what}; worst error {worst * 100:.1f}% over {len(rows)} configs "
              f"({device_name}, {run_dtype}, {steps} steps each, a fresh process per config)")


def print_row(row, first, device_type):
    mb = lambda b: f"{b / 2 ** 20:9.1f}"
    if first:
        head = f"{'config':<15}{'predicted':>10}{'measured':>10}{'error':>8}"
        if device_type != 'cuda':
            head += f"{'alloc':>10}{'rss default':>12}"
        print(head + "  peak at   (MiB)")
    line = f"{row['config']:<15}{mb(row['predicted']):>10}{mb(row['measured']):>10}{row['error'] * 100:>7.1f}%"
    if device_type != 'cuda':
        line += f"{mb(row['alloc']) if 'alloc' in row else '-':>10}"
        line += f"{mb(row['rss_default']) if 'rss_default' in row else '-':>12}"
    print(line + f"  {row['phase']}", flush=True)


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from configurator import config_keys, configure
    from core.errors import UserError, install_excepthook
    install_excepthook()
    configure(globals(), [k for k in config_keys(globals()) if k != 'CONFIGS'])
    if child:
        print(measure(json.loads(child)))
    else:
        main()
