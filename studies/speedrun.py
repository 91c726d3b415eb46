"""
The CPU speedrun: nanoGPT's published CPU recipe against config/speedrun_shakespeare_char_cpu.py,
run one after the other on this machine and scored the same way.

    python data/shakespeare_char/prepare.py && python studies/speedrun.py

Runs of train.py:
  1. classic   config/train_shakespeare_char_cpu.py as published, in fp32 as nanoGPT's train.py runs
               it on a CPU (it autocasts on GPUs only); its training time is T
  2. classic   the same recipe at our precision (dtype=auto: bf16 autocast where the CPU has it in
               hardware), to show how much of the gain is the implementation's (classic_ours=False skips it)
  3. speedrun  the speedrun config with max_seconds = T / 3
  4. speedrun  the same with max_seconds = T
Every run is scored on the whole val split (eval_full), and in every run the clock stops while it
evaluates or saves (timed_eval=False), so the times are training time alone, the classic's included.
The speedrun's learning rate follows its clock (lr_schedule='time') and ends at its budget.
The two targets:
  - time to reach: the training time of the first exact evaluation of run 3 at or below the classic's
    final val loss, over T (target <= 1/3). Evaluations come every eval_interval iterations and at
    the budget, so this is an upper bound at that resolution; a miss is reported as a miss.
  - val loss in the classic's time: run 4's final val loss (target <= 1.55).
Each model is scored with windows of its own block size; run 4's final model is also scored with the
classic's 64-token windows, so the gain from the longer context shows. --dataset runs all of it on
another character corpus (data/<name>, prepared with --tokenizer=char); the targets are Shakespeare's.
speedrun_config=config/speedrun_round1_shakespeare_char_cpu.py runs the first round's recipe the same way.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root, for the core package

from configurator import config_keys, configure
from core import fileio
from core.errors import UserError, install_excepthook

# -----------------------------------------------------------------------------
out_dir = 'out-speedrun'  # one folder per run below it, and their logs
dataset = 'shakespeare_char'
classic_config = 'config/train_shakespeare_char_cpu.py'
speedrun_config = 'config/speedrun_shakespeare_char_cpu.py'
classic_dtype = 'float32'  # the classic at nanoGPT's own precision on a CPU, which sets T
classic_ours = True  # also time the classic at dtype=auto, our train.py's own speed on the same recipe
target_loss = 1.55  # val loss the speedrun must reach in T
target_ratio = 1 / 3  # share of T the speedrun may take to reach the classic's final val loss
seed = 1337
quick = False  # a smoke test: the classic cut to 20 iterations, the speedrun uncompiled (seconds, not a result)
# -----------------------------------------------------------------------------
install_excepthook()
configure(globals(), config_keys(globals()))
fileio.check_folder('out_dir', out_dir)  # a file (or under one): one line now, not a traceback later

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo root
TRAIN = os.path.join(REPO, 'train.py')
# the scoring every run shares: the whole val split, evaluations off the clock
SCORING = ['--eval_full=True', '--timed_eval=False', f'--dataset={dataset}', f'--seed={seed}']


def config_path(path):
    full = path if os.path.isabs(path) else os.path.join(REPO, path)
    if not os.path.isfile(full):
        raise UserError(f"config file '{path}' not found")
    return full


def train(name, config_file, overrides):
    """Run train.py in a fresh folder; return its metrics records and the process wall time."""
    run_dir = os.path.join(out_dir, name)
    shutil.rmtree(run_dir, ignore_errors=True)  # metrics.jsonl appends, so each run starts clean
    os.makedirs(run_dir)
    cmd = [sys.executable, TRAIN, config_path(config_file), *SCORING, f'--out_dir={run_dir}', *overrides]
    print(f"[{name}] python train.py {' '.join(cmd[2:])}", flush=True)
    t0 = time.time()
    with open(os.path.join(run_dir, 'train.log'), 'w') as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO).returncode
    wall = time.time() - t0
    if code != 0:
        with open(os.path.join(run_dir, 'train.log')) as f:
            tail = f.read().strip().splitlines()[-1:] or ['']
        raise UserError(f"the {name} run failed (exit {code}): {tail[0]} (log: {os.path.join(run_dir, 'train.log')})")
    with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
        records = [r for r in map(json.loads, filter(str.strip, f)) if 'val_loss' in r]  # the evaluations
    last = records[-1]
    print(f"[{name}] val loss {last['val_loss']:.4f} after {last['iter']} iterations, {last['train_seconds']:.1f} s "
          f"of training ({wall:.1f} s with startup and evaluations)", flush=True)
    return records, wall


def read_block_size(path):
    from core.training import checkpoint
    return checkpoint.load(path, map_location='cpu')['model_args']['block_size']


def exact_val_loss(path, block_size):
    """A checkpoint's mean loss over every val token, in windows of block_size, as eval_full computes it."""
    from core.training import checkpoint
    from core.data.loader import Dataset
    from core.evaluation.exact import exact_loss
    return exact_loss(checkpoint.load_model(path)[0], Dataset(dataset), block_size=block_size)


def first_at_or_below(records, loss):
    for r in records:
        if r['val_loss'] <= loss:
            return r
    return None


def load_average():
    try:
        return ' '.join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return 'unknown'


def main():
    config_path(classic_config), config_path(speedrun_config)  # a mistake stops before the first training
    if target_loss <= 0:
        raise UserError(f"target_loss must be positive, got {target_loss}")
    if not 0 < target_ratio <= 1:
        raise UserError(f"target_ratio must be in (0, 1], got {target_ratio}")
    if classic_dtype not in ('auto', 'float32', 'bfloat16'):
        raise UserError(f"classic_dtype must be auto, float32 or bfloat16, got {classic_dtype!r}")
    print(f"speedrun on {os.cpu_count()} cores, load average {load_average()}, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    classic_extra = ['--max_iters=20', '--lr_decay_iters=20', '--warmup_iters=5', '--eval_interval=20'] if quick else []
    # always_save_checkpoint (saves are off the clock too): each ckpt.pt is its run's final model
    classic, _ = train('classic', classic_config, classic_extra + ['--always_save_checkpoint=True',
                                                                   f'--dtype={classic_dtype}'])
    T = classic[-1]['train_seconds']
    classic_loss = classic[-1]['val_loss']
    if T <= 0:
        raise UserError("the classic run took no measurable time; is max_iters 0?")
    ours = train('classic_ours', classic_config, classic_extra + ['--dtype=auto'])[0] if classic_ours else None
    quick_extra = ['--compile=False'] if quick else []  # a compile takes longer than the quick runs themselves
    third, _ = train('speedrun_third', speedrun_config, [f'--max_seconds={T * target_ratio:.3f}',
                                                         '--always_save_checkpoint=True', *quick_extra])
    full, _ = train('speedrun_full', speedrun_config, [f'--max_seconds={T:.3f}', '--always_save_checkpoint=True',
                                                       *quick_extra])
    classic_block = read_block_size(os.path.join(out_dir, 'classic', 'ckpt.pt'))
    full_short = exact_val_loss(os.path.join(out_dir, 'speedrun_full', 'ckpt.pt'), classic_block)
    reached = first_at_or_below(third, classic_loss)
    reached_full = first_at_or_below(full, classic_loss)
    full_loss = full[-1]['val_loss']

    print()
    print(f"load average after: {load_average()}")
    print("| run | budget | iterations | tokens | train s | val loss (whole split) |")
    print("|---|---|---|---|---|---|")
    rows = [(f'classic ({classic_dtype})', classic, f"{classic[-1]['iter']} iters")]
    if ours is not None:
        rows.append(('classic (dtype=auto)', ours, f"{ours[-1]['iter']} iters"))
    rows += [('speedrun', third, f"{T * target_ratio:.1f} s"), ('speedrun', full, f"{T:.1f} s")]
    for name, records, budget in rows:
        r = records[-1]
        print(f"| {name} | {budget} | {r['iter']} | {r['tokens']:,} | {r['train_seconds']:.1f} | {r['val_loss']:.4f} |")
    print()
    share = f"{target_ratio:.3f}".rstrip('0')
    if reached is not None:
        ratio = reached['train_seconds'] / T
        verdict = 'met' if ratio <= target_ratio + 1e-9 else 'missed'
        print(f"time to reach the classic's {classic_loss:.4f}: {reached['train_seconds']:.1f} s "
              f"(iteration {reached['iter']} of the T/{1 / target_ratio:g} run) / {T:.1f} s = {ratio:.3f} "
              f"(target <= {share}: {verdict})")
        if ours is not None:
            print(f"  against the classic at dtype=auto ({ours[-1]['train_seconds']:.1f} s, val {ours[-1]['val_loss']:.4f}): "
                  f"{reached['train_seconds'] / ours[-1]['train_seconds']:.3f}")
    else:
        ratio = math.inf
        print(f"time to reach the classic's {classic_loss:.4f}: not reached within T/{1 / target_ratio:g} = "
              f"{T * target_ratio:.1f} s (best {min(r['val_loss'] for r in third):.4f}; target <= {share}: missed)")
    if reached_full is not None:
        print(f"  (the T run, on its slower schedule, first evaluated at or below it at {reached_full['train_seconds']:.1f} s)")
    verdict = 'met' if full_loss <= target_loss else 'missed'
    print(f"val loss in the classic's time ({T:.1f} s): {full_loss:.4f} (target <= {target_loss:.2f}: {verdict})")
    print(f"  (the same model scored with the classic's {classic_block}-token windows: {full_short:.4f})")
    print("times are training seconds with evaluations and saves off the clock, for every run; "
          "val losses are exact over the whole val split")


if __name__ == '__main__':
    main()
