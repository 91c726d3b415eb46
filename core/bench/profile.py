"""Where a training step's time goes: torch.profiler over a few steps, each op or GPU kernel put in a category."""

from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from core import fileio
from core.bench.timing import timed_train_steps
from core.errors import UserError

KERNEL_CATEGORIES = [
    # (category, words in a GPU kernel's name): the first match wins. Optimizer kernels come first since
    # torch's fused and foreach AdamW and the clipping norm all run through multi_tensor_apply
    ('optimizer and clipping', ('adam', 'multi_tensor_apply', 'foreach', 'lpnorm')),
    ('attention kernels', ('flash', 'fmha', 'attention', 'attn', 'sdpa', 'efficient_')),
    ('matmuls', ('gemm', 'nvjet', 'cutlass', 'xmma', 'triton_tem_', 'matmul', 's16816', 's1688', 'cublas')),
    ('norms', ('layer_norm', 'layernorm', 'rms_norm', 'rmsnorm', 'gammabeta', 'norm_')),
    ('loss (softmax, cross-entropy)', ('softmax', 'nll_loss', 'cross_entropy', 'logsumexp')),
    ('copies and memsets', ('memcpy', 'memset', 'copy_kernel', 'cat_array')),
]


def kernel_category(name):
    """A GPU kernel's category from its name: cuBLAS/CUTLASS/Hopper (sm90 xmma, nvjet) and inductor template
    GEMMs, flash and memory-efficient attention, fused AdamW and clipping, norms, the loss; triton's fused
    pointwise and reduction kernels (and everything else) are elementwise work."""
    n = name.lower()
    for category, words in KERNEL_CATEGORIES:
        if any(w in n for w in words):
            return category
    return 'elementwise, reductions, copies'


def cpu_op_category(event):
    """A profiled CPU op's category: the optimizer (anything under its step), attention kernels,
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


def profile_steps(model, optimizer, get_batch, ctx, device, accum, n=3, trace_path=None):
    """Profile n steps; return [(op, seconds, calls)] by self time, {category: seconds}. On a GPU the time is
    the GPU kernels' own (each kernel counted once, not again under the CPU op that launched it)."""
    on_gpu = device.startswith('cuda')
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        timed_train_steps(model, optimizer, get_batch, n, ctx, device, accum)
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
            t, cat = e.device_time_total / 1e6, kernel_category(e.name)
        else:
            t, cat = e.self_cpu_time_total / 1e6, None
        if t <= 0:
            continue
        s, c = ops.get(e.name, (0.0, 0))
        ops[e.name] = (s + t, c + 1)
        cat = cat or cpu_op_category(e)
        cats[cat] = cats.get(cat, 0.0) + t
    rows = sorted(((k, s, c) for k, (s, c) in ops.items()), key=lambda r: -r[1])
    return rows, cats


def breakdown(model, optimizer, get_batch, ctx, device, accum, trace_path=None):
    """Profile 3 steps; return (figures for the JSON, lines for the report)."""
    rows, cats = profile_steps(model, optimizer, get_batch, ctx, device, accum, trace_path=trace_path)
    total = sum(cats.values())
    where = 'GPU kernel' if device.startswith('cuda') else 'CPU self'
    lines = [f"\nwhere the time goes ({where} time of 3 profiled iterations):"]
    lines += [f"  {k:<38}{v / total * 100:6.1f}%" for k, v in sorted(cats.items(), key=lambda kv: -kv[1])]
    lines.append("top 10 ops:")
    lines += [f"  {name[:58]:<60}{t / total * 100:6.1f}%  {calls:>6} calls" for name, t, calls in rows[:10]]
    figures = dict(time_breakdown={k: v / total for k, v in cats.items()},
                   profiled_seconds=total,  # GPU kernel time on CUDA, CPU self time elsewhere
                   top_ops=[dict(op=n, seconds=t, calls=c) for n, t, c in rows[:10]])
    if trace_path:
        lines.append(f"profiler trace written to {trace_path} (open in chrome://tracing or ui.perfetto.dev)")
        figures['trace'] = trace_path
    return figures, lines
