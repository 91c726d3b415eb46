"""Every GPU measurement of issue 28 in one run, written to one JSON file and one markdown table.

    python studies/gpu_round.py --out_dir=out-gpu-round            # on a CUDA GPU; no step starts after --budget_s
    python studies/gpu_round.py --only=bench,fp8_speed             # some steps only
    python studies/gpu_round.py --dry_run --out_dir=/tmp/r         # every step on the CPU with tiny shapes (its test)

The steps, in order (each in its own process, so one that fails or runs out of memory leaves the rest):
  cuda_tests   pytest tests/system/test_cuda.py
  flops        the model's FLOP formula against torch.utils.flop_counter on one GPT-2 124M step
  bench        bench.py on GPT-2 124M, bf16, compile, 16 x 1024: ms/iter, tokens/s, MFU, the time breakdown, and the
               planner's compiled estimate against torch.cuda.max_memory_allocated
  bench_chunked  the same with chunked_ce=True (model.ChunkedHeadLoss: no (B, T, vocab) logits), to keep it or not
  fp8_speed    the same model and batch trained by one loop here with fp8=True (core/training/fp8.py) and without
  planner      studies/bench_memory.py's configs, eager and compiled, planned against max_memory_allocated
  fp8_loss     500 steps of GPT-2 124M's shape on Tiny Shakespeare's characters, bf16 against fp8, same seed and
               batches: the validation loss at the end and the training loss on the way
After every step the two files are rewritten, so a run cut short keeps what it measured. fp8 needs torchao
(a machine without internet can install its wheel with pip install --no-deps <wheel>); without it the fp8
steps record why they were skipped.
"""

import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from core.errors import ArgumentParser, UserError, install_excepthook  # noqa: E402
from core import fileio  # noqa: E402

STEPS = ('cuda_tests', 'flops', 'bench', 'bench_chunked', 'fp8_speed', 'planner', 'fp8_loss')
GPT2 = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, bias=True)
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=128, bias=True)
# the configs of bench_memory.py compiled too (each compiles in a fresh process: a few seconds to a minute)
COMPILED_CONFIGS = 'lm50k,lm50k-chunked,modern'


def run(cmd, timeout, env=None):
    """A subprocess from the repo root; (return code, stdout, stderr, seconds); 124 when it timed out."""
    t0 = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout,
                           env=dict(os.environ, PYTHONUNBUFFERED='1', **(env or {})))
        return r.returncode, r.stdout, r.stderr, time.time() - t0
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or '')
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or '')
        return 124, out, err, time.time() - t0


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


# ----- steps: each returns a dict of figures -----

def step_cuda_tests(args):
    # bench.py on GPT-2 and the compiled planner are measured by the steps below, once
    code, out, err, secs = run([sys.executable, '-m', 'pytest', '-q', '-rfEs', 'tests/system/test_cuda.py', '-k',
                                'not bench_gpt2 and not compiled_planner'], args.step_timeout)
    summary = next((line for line in reversed(out.splitlines()) if ' in ' in line and ('passed' in line or
                    'skipped' in line or 'failed' in line)), '')
    return dict(ok=code == 0, summary=summary.strip('= '), seconds=secs, tail=None if code == 0 else out[-3000:])


def step_flops(args):
    code, out, err, secs = run([sys.executable, __file__, f'--child=flops', *dry(args)], args.step_timeout)
    return child_result(code, out, err, secs)


def step_bench_chunked(args):
    return step_bench(args, '--chunked_ce=True')


def step_bench(args, *extra):
    if args.dry_run:
        cmd = ['--model=classic', '--device=cpu', '--compile=False', '--iters=2', '--warmup_iters=1',
               '--reference=False', '--shape_peak=False', '--breakdown=True']
    else:
        cmd = ['--model=gpt2', '--batch_size=16', '--dtype=bfloat16', '--compile=True']
    code, out, err, secs = run([sys.executable, 'bench.py', *cmd, *extra, '--json=True'], args.step_timeout)
    if code != 0:
        return dict(ok=False, seconds=secs, tail=(out + err)[-3000:])
    b = last_json(out)
    keep = ('device', 'dtype', 'compile', 'batch_size', 'block_size', 'ms_per_iter', 'ms_per_iter_fastest',
            'tokens_per_sec', 'mfu', 'mfu_fastest', 'peak_flops_desc', 'peak_memory_bytes', 'planned_memory_bytes',
            'time_breakdown')
    res = dict(ok=True, seconds=secs, **{k: b.get(k) for k in keep})
    if b.get('peak_memory_bytes') and b.get('planned_memory_bytes'):
        res['planner_error'] = b['planned_memory_bytes'] / b['peak_memory_bytes'] - 1
    return res


def step_fp8_speed(args):
    res = dict(ok=True)
    for mode in ('bf16', 'fp8'):
        if mode == 'fp8' and not have_torchao():
            res[mode] = dict(ok=False, skipped='torchao is not installed')
            continue
        code, out, err, secs = run([sys.executable, __file__, f'--child=speed_{mode}', *dry(args)], args.step_timeout)
        res[mode] = child_result(code, out, err, secs)
        res['ok'] &= res[mode].get('ok', False) or bool(res[mode].get('skipped'))
    if res['bf16'].get('tokens_per_sec') and res['fp8'].get('tokens_per_sec'):
        res['speedup'] = res['fp8']['tokens_per_sec'] / res['bf16']['tokens_per_sec']
    return res


def step_planner(args):
    res = dict(ok=True)
    base = ['studies/bench_memory.py', '--json_out=True', '--steps=2']
    runs = {'eager': [f'--configs={args.planner_configs}'], 'compiled': [f'--configs={args.compiled_configs}',
                                                                        '--compile=True']}
    if args.dry_run:
        runs = {'eager': ['--configs=tiny', '--device=cpu', '--dtype=float32', '--alloc=False', '--rss_default=False'],
                'compiled': ['--configs=tiny', '--device=cpu', '--dtype=float32', '--compile=True']}
    for label, extra in runs.items():
        code, out, err, secs = run([sys.executable, *base, *extra], args.step_timeout)
        if code != 0:
            res[label] = dict(ok=False, seconds=secs, tail=(out + err)[-3000:])
            res['ok'] = False
            continue
        rows = last_json(out)['rows']
        res[label] = dict(ok=True, seconds=secs, rows=rows, worst=max(abs(r['error']) for r in rows))
    return res


def step_fp8_loss(args):
    res = dict(ok=True)
    for mode in ('bf16', 'fp8'):
        if mode == 'fp8' and not have_torchao():
            res[mode] = dict(ok=False, skipped='torchao is not installed')
            continue
        code, out, err, secs = run([sys.executable, __file__, f'--child=loss_{mode}', *dry(args)], args.step_timeout)
        res[mode] = child_result(code, out, err, secs)
        res['ok'] &= res[mode].get('ok', False) or bool(res[mode].get('skipped'))
    if res['bf16'].get('val_loss') is not None and res['fp8'].get('val_loss') is not None:
        res['val_loss_difference'] = res['fp8']['val_loss'] - res['bf16']['val_loss']
        res['speedup'] = res['fp8']['tokens_per_sec'] / res['bf16']['tokens_per_sec']
    return res


def have_torchao():
    import importlib.util
    return importlib.util.find_spec('torchao') is not None


def dry(args):
    return ['--dry_run'] if args.dry_run else []


def child_result(code, out, err, secs):
    if code == 0:
        return dict(last_json(out), seconds=secs)
    return dict(ok=False, seconds=secs, tail=(out + err)[-3000:])


# ----- what the children run -----

def child(name, dry_run):
    import torch
    if name == 'flops':
        return flops_check(dry_run)
    kind, mode = name.split('_')
    device = 'cpu' if dry_run else 'cuda'
    if mode == 'fp8':
        from core.training import fp8
        if dry_run and fp8.torchao_float8() is None:
            return dict(ok=False, skipped='torchao is not installed')
        if not dry_run:
            try:
                fp8.check(True, device, 'bfloat16')
            except UserError as e:
                return dict(ok=False, skipped=str(e))
    torch.manual_seed(1337)
    if kind == 'speed':
        return speed(mode, device, dry_run)
    return loss_curve(mode, device, dry_run)


def build(model_args, mode, device, dry_run, compile):
    import torch
    from core.training import fp8
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(**model_args)).to(device)
    converted = fp8.convert(model, emulate=dry_run) if mode == 'fp8' else []
    opt = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device.split(':')[0])
    return model, (torch.compile(model) if compile else model), opt, converted


def train_step(compiled, opt, x, y, ctx):
    import torch
    with ctx:
        loss = compiled(x, y)[1]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(compiled.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def speed(mode, device, dry_run):
    """tokens/s of GPT-2 124M at 16 x 1024 (bench.py's batch), bf16 autocast, compiled, fused AdamW."""
    import torch
    from core import hardware
    args, batch, warm, iters = (TINY, 4, 1, 3) if dry_run else (GPT2, 16, 8, 30)
    dtype = 'bfloat16'
    ctx = hardware.autocast_context(device, dtype)
    model, compiled, opt, converted = build(args, mode, device, dry_run, compile=not dry_run)
    x = torch.randint(0, args['vocab_size'], (batch, args['block_size']), device=device)
    y = torch.randint(0, args['vocab_size'], (batch, args['block_size']), device=device)
    for _ in range(warm):
        train_step(compiled, opt, x, y, ctx)
    hardware.synchronize(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        train_step(compiled, opt, x, y, ctx)
        hardware.synchronize(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    tokens = batch * args['block_size']
    peak, peak_desc = hardware.peak_flops(device, dtype)
    res = dict(ok=True, mode=mode, converted_layers=len(converted), ms_per_iter=median * 1000,
               tokens_per_sec=tokens / median, peak_flops_desc=peak_desc,
               mfu=model.estimate_mfu(tokens / median, peak, args['block_size']) if peak else None)
    if device.startswith('cuda'):
        res['max_memory_allocated'] = torch.cuda.max_memory_allocated()
    return res


def char_data():
    """Tiny Shakespeare (committed in data/shakespeare_char) as byte ids (it is ASCII): (train, val), 90/10."""
    import torch
    with open(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt'), 'rb') as f:
        ids = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8).long()
    n = int(len(ids) * 0.9)
    return ids[:n], ids[n:]


def loss_curve(mode, device, dry_run):
    """500 steps (5 in a dry run) with a warm-up and cosine schedule; the same batches for both modes."""
    import torch
    from core import hardware
    steps, batch, block = (5, 4, 32) if dry_run else (500, 16, 256)
    args = dict(TINY if dry_run else GPT2, block_size=block, vocab_size=256)
    ctx = hardware.autocast_context(device, 'bfloat16')
    model, compiled, opt, converted = build(args, mode, device, dry_run, compile=not dry_run)
    train, val = char_data()
    gen = torch.Generator().manual_seed(0)

    def batch_of(data, g):
        ix = torch.randint(len(data) - block - 1, (batch,), generator=g)
        x = torch.stack([data[i:i + block] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + block] for i in ix])
        return x.to(device), y.to(device)

    lr, warmup = 6e-4, max(1, steps // 10)
    curve, t_train, tokens = [], 0.0, 0
    for it in range(steps):
        scale = (it + 1) / warmup if it < warmup else 0.1 + 0.45 * (1 + math.cos(math.pi * (it - warmup) / (steps - warmup)))
        for g in opt.param_groups:
            g['lr'] = lr * scale
        x, y = batch_of(train, gen)
        hardware.synchronize(device)
        t0 = time.perf_counter()
        loss = train_step(compiled, opt, x, y, ctx)
        if it % max(1, steps // 10) == 0 or it == steps - 1:
            curve.append((it, loss.item()))
        hardware.synchronize(device)
        if it >= min(10, steps - 1):  # after the compile
            t_train += time.perf_counter() - t0
            tokens += batch * block
    model.eval()
    vgen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        losses = []
        for _ in range(4 if dry_run else 40):
            x, y = batch_of(val, vgen)
            with ctx:  # the plain module: eval mode would make the compiled one compile again
                losses.append(model(x, y)[1].item())
    return dict(ok=True, mode=mode, converted_layers=len(converted), steps=steps, batch=batch, block_size=block,
                train_loss=curve, val_loss=sum(losses) / len(losses), tokens_per_sec=tokens / t_train if t_train else None)


def flops_check(dry_run):
    """model.flops_per_token (what MFU counts) against torch's flop counter over one forward and backward."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from core import hardware
    from model import GPT, GPTConfig
    device = 'cpu' if dry_run else 'cuda'
    args = TINY if dry_run else GPT2
    model = GPT(GPTConfig(**args)).to(device)
    B, T = 1, args['block_size']
    x = torch.randint(0, args['vocab_size'], (B, T), device=device)
    with FlopCounterMode(display=False) as counter:
        with hardware.autocast_context(device, 'bfloat16'):
            loss = model(x, x)[1]
        loss.backward()
    counted = counter.get_total_flops()
    formula = model.flops_per_token(T) * B * T
    name = torch.cuda.get_device_name() if device == 'cuda' else platform.processor() or 'cpu'
    key, figures = hardware.gpu_peak_entry(name) if device == 'cuda' else (None, None)
    return dict(ok=True, counted=counted, formula=formula, ratio=formula / counted, device_name=name,
                peak_table_entry=key, peak_bf16_tflops=figures['bf16'] if figures else None)


# ----- the report -----

def device_info(dry_run):
    import torch
    info = dict(date=datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'), torch=torch.__version__,
                python=platform.python_version(), dry_run=dry_run)
    code, out, _, _ = run(['git', 'rev-parse', '--short', 'HEAD'], 30)
    info['commit'] = out.strip() if code == 0 else None
    if torch.cuda.is_available():
        info['device'] = torch.cuda.get_device_name(0)
        info['capability'] = '.'.join(map(str, torch.cuda.get_device_capability(0)))
        info['gpus'] = torch.cuda.device_count()
    else:
        info['device'] = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    try:
        import torchao
        info['torchao'] = torchao.__version__
    except Exception:
        info['torchao'] = None
    return info


def markdown(report):
    info = report['info']
    lines = [f"# GPU round: {info['device']}", '',
             f"{info['date']}, commit {info['commit']}, torch {info['torch']}, torchao {info['torchao']}"
             + (' (dry run: tiny shapes on the CPU, not figures)' if info['dry_run'] else ''), '']
    pct = lambda v: f"{v * 100:.1f}%" if isinstance(v, (int, float)) else 'n/a'
    gib = lambda v: f"{v / 2 ** 30:.2f} GiB" if v else 'n/a'
    for name, res in report['steps'].items():
        lines.append(f"## {name}: {'ok' if res.get('ok') else 'FAILED'} ({res.get('seconds', 0):.0f} s)")
        if name == 'cuda_tests':
            lines.append(f"- {res.get('summary')}")
        elif name == 'flops' and res.get('counted'):
            lines.append(f"- formula {res['formula']:.4g} FLOPs vs torch's counter {res['counted']:.4g}: ratio "
                         f"{res['ratio']:.4f}; peak table entry for '{res['device_name']}': {res['peak_table_entry']}")
        elif name in ('bench', 'bench_chunked') and res.get('ok'):
            lines.append(f"- {res['ms_per_iter']:.2f} ms/iter, {res['tokens_per_sec']:,.0f} tokens/s, MFU "
                         f"{pct(res['mfu'])} against {res['peak_flops_desc']}")
            lines.append(f"- peak {gib(res['peak_memory_bytes'])}, planned {gib(res['planned_memory_bytes'])} "
                         f"(error {pct(res.get('planner_error'))})")
            if res.get('time_breakdown'):
                lines.append('- time: ' + ', '.join(f"{k} {pct(v)}" for k, v in
                                                    sorted(res['time_breakdown'].items(), key=lambda kv: -kv[1])))
        elif name in ('fp8_speed', 'fp8_loss'):
            for mode in ('bf16', 'fp8'):
                r = res.get(mode, {})
                if r.get('skipped'):
                    lines.append(f"- {mode}: skipped: {r['skipped']}")
                elif r.get('ok'):
                    figs = [f"{r['tokens_per_sec']:,.0f} tokens/s" if r.get('tokens_per_sec') else None,
                            f"MFU {pct(r['mfu'])}" if 'mfu' in r else None,
                            f"val loss {r['val_loss']:.4f}" if 'val_loss' in r else None,
                            f"{r['converted_layers']} layers in fp8" if mode == 'fp8' else None]
                    lines.append(f"- {mode}: " + ', '.join(f for f in figs if f))
                else:
                    lines.append(f"- {mode}: failed")
            if 'speedup' in res:
                lines.append(f"- fp8 / bf16 tokens/s: {res['speedup']:.3f}")
            if 'val_loss_difference' in res:
                lines.append(f"- val loss fp8 - bf16: {res['val_loss_difference']:+.4f}")
        elif name == 'planner':
            for label in ('eager', 'compiled'):
                r = res.get(label, {})
                if r.get('ok'):
                    lines.append(f"- {label}: worst error {pct(r['worst'])}: " + ', '.join(
                        f"{row['config']} {pct(row['error'])}" for row in r['rows']))
                elif r:
                    lines.append(f"- {label}: failed")
        lines.append('')
    return '\n'.join(lines)


def run_step(name, args):
    try:
        return globals()[f'step_{name}'](args)
    except Exception as e:  # a step's own bug must not lose the figures of the others
        return dict(ok=False, error=f"{type(e).__name__}: {e}")


def main():
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out_dir', default='out-gpu-round')
    p.add_argument('--only', default='', help=f"comma-separated steps of {', '.join(STEPS)} (default: all)")
    p.add_argument('--dry_run', action='store_true', help='every step on the CPU with tiny shapes')
    p.add_argument('--step_timeout', type=int, default=300, help='seconds a step may take before it is stopped')
    p.add_argument('--budget_s', type=int, default=480,
                   help='no step starts after this many seconds; those left are recorded as skipped (run them with --only)')
    p.add_argument('--planner_configs', default='all', help="bench_memory.py's configs run eagerly")
    p.add_argument('--compiled_configs', default=COMPILED_CONFIGS, help="bench_memory.py's configs run compiled")
    p.add_argument('--child', default='', help=argparse_hidden())
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dry_run)))
        return
    steps = [s.strip() for s in args.only.split(',') if s.strip()] or list(STEPS)
    fileio.check_folder('out_dir', args.out_dir)  # found now, not by makedirs after the steps began
    bad = [s for s in steps if s not in STEPS]
    if bad:
        raise UserError(f"unknown step {bad[0]!r}; the steps are {', '.join(STEPS)}")
    import torch
    if not args.dry_run and not torch.cuda.is_available():
        raise UserError("gpu_round.py measures a CUDA GPU and this machine has none; --dry_run runs every step "
                        "on the CPU with tiny shapes")
    os.makedirs(args.out_dir, exist_ok=True)
    report = dict(info=device_info(args.dry_run), steps={})
    t_start = time.time()
    for name in steps:
        print(f"{name} ...", flush=True)
        t0 = time.time()
        if t0 - t_start > args.budget_s:
            res = dict(ok=False, skipped=f'not started: {args.budget_s} s budget spent (rerun with --only={name})')
        else:
            res = run_step(name, args)
        res.setdefault('seconds', time.time() - t0)
        report['steps'][name] = res
        report['info']['seconds'] = time.time() - t_start
        fileio.write_json(os.path.join(args.out_dir, 'gpu_round.json'), report)
        fileio.write_text(os.path.join(args.out_dir, 'gpu_round.md'), markdown(report))
        print(f"{name}: {'ok' if res.get('ok') else 'FAILED'} in {res['seconds']:.0f} s", flush=True)
    print(markdown(report))
    print(f"written to {os.path.join(args.out_dir, 'gpu_round.json')} and gpu_round.md")


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


if __name__ == '__main__':
    install_excepthook()
    main()
