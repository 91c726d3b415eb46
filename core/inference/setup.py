"""The set-up sample.py and serve.py share: device, weights' precision, the model and its tokenizer,
and whether decode steps are compiled.

    s = setup(init_from, out_dir, ckpt, dataset, device, dtype, compile, tokens=max_new_tokens, say=...)
    s.model, s.tok, s.name, s.device, s.dtype, s.compiled   # compiled: a CompiledDecode or None
"""

from types import SimpleNamespace

import torch

from core import hardware
from core.errors import UserError
from core.inference import precision
from core.inference.decode import CompiledDecode
from core.inference.engine import load

# On a CPU, compiling the decode step takes seconds to tens of seconds and saves a share of each step's time:
# it pays for generations of about this many steps or more. One row's step is built ahead of time for each new
# set of weights (AOTInductor, tens of seconds; a run of the same checkpoint again loads it), while a graph of
# more rows comes from inductor's cache after its first compile, whatever the weights.
CPU_COMPILE_PAYS_FROM = {'one row': 10000, 'rows': 2000}


def decide_compile(compile, device, tokens, rows=1):
    """(compile the decode step?, why, in words). compile: True, False or 'auto' (on a GPU with
    torch.compile's kernels; on a CPU with a C++ compiler when a generation of `rows` rows runs at least
    CPU_COMPILE_PAYS_FROM's steps)."""
    if compile not in (True, False, 'auto'):
        raise UserError(f"compile must be True, False or 'auto', got {compile!r}")
    if compile is False:
        return False, 'compile=False'
    on = hardware.pick_compile(compile, device)  # one line when compile=True cannot work here
    kind = device.split(':')[0]
    if compile is True:
        return True, 'compile=True'
    if not on and kind == 'cpu' and not hardware.cpp_compiler():
        return False, 'no C++ compiler for torch.compile'
    if kind == 'cpu':
        pays_from = CPU_COMPILE_PAYS_FROM['one row' if rows == 1 else 'rows']
        if tokens < pays_from:
            return False, (f"{tokens} tokens: on a CPU compiling pays from about {pays_from:,} "
                           f"({'one row' if rows == 1 else f'{rows} rows'}); --compile=True compiles anyway")
        return True, f"{tokens} tokens"
    return on, 'a GPU' if on else f'no torch.compile kernels for {device}'


def setup(init_from, out_dir, ckpt, dataset, device, dtype, compile, tokens, say=print, cuda_graphs=False, threads=0,
          rows=1):
    device = hardware.pick_device(device)
    dtype = precision.pick(dtype, device)
    use_compile, why = decide_compile(compile, device, tokens, rows)
    model, tok, name = load(init_from, out_dir, ckpt, dataset, say=say)
    precision.convert(model, dtype).to(device)
    model.eval()

    def one_token():  # a decode step's worth of work that leaves no trace: one token through the model
        with torch.no_grad():
            model(torch.zeros(1, 1, dtype=torch.long, device=device))
    hardware.pick_threads(one_token, requested=threads, device=device, log=say)
    compiled = None
    if use_compile:
        compiled = CompiledDecode(say=say, cuda_graphs=cuda_graphs and device.startswith('cuda'))
        say(f"decode: compiled ({why})")
    else:
        say(f"decode: eager ({why})")
    return SimpleNamespace(model=model, tok=tok, name=name, device=device, dtype=dtype, compiled=compiled,
                           generator=lambda seed: torch.Generator(device=device).manual_seed(seed))
