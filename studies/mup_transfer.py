"""
Does the best learning rate carry over as the model widens? For each width and each learning rate of a grid, a
train.py run of the same number of steps, once under muP (mup=True, mup_base_width = the first width) and once in
the standard parametrisation; the final val loss (eval_iters batches, the same for every run) of each.

    python data/shakespeare_char/prepare.py && OMP_NUM_THREADS=1 python studies/mup_transfer.py

The target (issue 29): under muP the learning rate best at the first width is still best, within one grid step,
at every other width, where the standard parametrisation's best moves. AdamW on every matrix: Muon's update is
sized by shape already (model.py), so the learning-rate rule is AdamW's to show. The load average is printed
around every run; results go to out_dir/results.json as they come, and a run found there is not repeated.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root, for the core package

from configurator import config_keys, configure
from core import fileio
from core.errors import UserError, install_excepthook

# -----------------------------------------------------------------------------
out_dir = 'out-mup-transfer'
dataset = 'shakespeare_char'
widths = '64,256,512'
learning_rates = '0.000625,0.00125,0.0025,0.005,0.01,0.02'  # doubling: one grid step is 2x
n_layer = 2
n_head = 4  # fixed, so wider models have wider heads (muP's 1/head-size attention applies)
batch_size = 16
block_size = 128
max_iters = 300
eval_iters = 20
parametrisations = 'mup,sp'
seed = 1337
# -----------------------------------------------------------------------------
install_excepthook()
configure(globals(), config_keys(globals()))
fileio.check_folder('out_dir', out_dir)  # a file (or under one): one line now, not a traceback later

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def numbers(key, text, kind):
    """A comma-separated list of positive numbers, or one error line naming the flag."""
    try:
        values = [kind(x) for x in text.split(',')]
    except ValueError:
        values = []
    if not values or not all(0 < v < float('inf') for v in values):
        raise UserError(f"--{key} must be positive numbers separated by commas, e.g. "
                        f"{'64,256' if kind is int else '0.0025,0.005'}; got {text!r}")
    return values


W = numbers('widths', widths, int)
LRS = numbers('learning_rates', learning_rates, float)
PARAMS = parametrisations.split(',')
if not set(PARAMS) <= {'mup', 'sp'}:
    raise UserError(f"--parametrisations must be mup and/or sp, comma separated; got {parametrisations!r}")
os.makedirs(out_dir, exist_ok=True)
results_path = os.path.join(out_dir, 'results.json')
try:
    with open(results_path) as f:
        results = fileio.read_json(f)
except FileNotFoundError:
    results = {}
except (OSError, ValueError) as e:  # a damaged file, by hand or by a disk that filled: its runs are not trusted
    raise UserError(f"cannot read {results_path} ({getattr(e, 'strerror', None) or e}); move it away to rerun "
                    f"every run, or give another --out_dir") from None
if not isinstance(results, dict) or not all(isinstance(v, (int, float)) for v in results.values()):
    raise UserError(f"{results_path} is not this study's results ({{'mup 64 0.01': loss, ...}}); move it away to "
                    f"rerun every run, or give another --out_dir")


def load():
    return f"load {os.getloadavg()[0]:.2f}"


def run(param, width, lr):
    key = f'{param} {width} {lr:g}'
    if key in results:
        return results[key]
    run_dir = os.path.join(out_dir, key.replace(' ', '_'))
    cmd = [sys.executable, os.path.join(REPO, 'train.py'), f'--dataset={dataset}', f'--out_dir={run_dir}',
           '--overwrite=True', f'--n_layer={n_layer}', f'--n_head={n_head}', f'--n_embd={width}', '--bias=False',
           f'--mup={param == "mup"}', f'--mup_base_width={W[0]}', '--optimizer=adamw', f'--learning_rate={lr}',
           '--weight_decay=0.0', '--beta2=0.99', f'--batch_size={batch_size}', f'--block_size={block_size}',
           '--gradient_accumulation_steps=1', f'--max_iters={max_iters}', f'--lr_decay_iters={max_iters}',
           '--warmup_iters=20', f'--min_lr={lr / 10}', f'--eval_interval={max_iters}', f'--eval_iters={eval_iters}',
           '--log_interval=50', '--always_save_checkpoint=False', '--compile=False', '--device=cpu', f'--seed={seed}']
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    loss = float('nan')
    metrics = os.path.join(run_dir, 'metrics.jsonl')
    if out.returncode == 0 and os.path.exists(metrics):
        with open(metrics) as f:  # the last evaluation's
            loss = [r for r in map(json.loads, filter(str.strip, f)) if 'val_loss' in r][-1]['val_loss']
    print(f"  {key}: val {loss:.4f} ({time.time() - t0:.0f} s, {load()})", flush=True)
    results[key] = loss
    fileio.write_json(results_path, results)  # whole or not at all: a Ctrl-C here leaves the last complete file
    return loss


print(f"muP transfer on {dataset}: widths {W}, {n_layer} layers, {max_iters} steps of {batch_size}x{block_size}, "
      f"AdamW, {load()}", flush=True)
best = {}
for param in PARAMS:
    for width in W:
        losses = [run(param, width, lr) for lr in LRS]
        finite = [(l, i) for i, l in enumerate(losses) if l == l]
        best[param, width] = min(finite)[1] if finite else None
print(f"\nval loss by learning rate ({load()})")
print("param  width  " + "  ".join(f"{lr:>8g}" for lr in LRS) + "   best")
for param in PARAMS:
    for width in W:
        losses = [results[f'{param} {width} {lr:g}'] for lr in LRS]
        print(f"{param:5s}  {width:5d}  " + "  ".join(f"{l:8.4f}" for l in losses) +
              f"   {LRS[best[param, width]]:g}" if best[param, width] is not None else "   -")
    moves = [abs(best[param, w] - best[param, W[0]]) for w in W[1:] if best[param, w] is not None]
    print(f"{param}: the best learning rate moves by at most {max(moves, default=0)} grid step(s) from width {W[0]}")
