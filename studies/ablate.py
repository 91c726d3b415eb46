"""
Each architecture switch, and Muon, alone against the GPT-2 baseline at equal wall time on
shakespeare_char, scored on the whole val split, over 3 seeds. Prints a markdown table.

    python data/shakespeare_char/prepare.py && python studies/ablate.py               # 13 rows x 3 seeds x 40 s: the results log's table
    python studies/ablate.py --seconds=10 --seeds=2
    python studies/ablate.py --quick=True                                            # a smoke test, seconds
    python studies/ablate.py --table=speedrun                                        # round two's ideas on the speedrun recipe

table=speedrun puts the ideas tried for the speedrun's second round (value embeddings, U-net skips, zero-initialized
projections, Polar Express, a soft cap, fp32, other batch shapes) one at a time on top of the first round's speedrun
recipe (config/speedrun_round1_shakespeare_char_cpu.py) instead of on GPT-2, scored the same way.

The base recipe is nanoGPT's CPU recipe (config/train_shakespeare_char_cpu.py: 4 layers of 128,
batch 12 x 64) with its cosine learning rate stretched over the time budget (lr_schedule='time'),
so every run gets the same seconds and ends its schedule at the end of them. train.py's own evaluations
are cheap and off the clock; the score is computed here, from the final checkpoint, exactly as
eval_full does it (every val token once, windows of the model's block size). Runs go seed by seed,
every switch once per seed, so a change in the machine's load falls on all rows alike rather than on one.
Each run uses one thread (threads=1): two threads on two cores that someone else also uses stall
each other and run several times slower, while one thread only loses its share of a core.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root, for the core package

from configurator import config_keys, configure
from core import fileio
from core.errors import UserError, install_excepthook

# -----------------------------------------------------------------------------
seconds = 40.0  # training seconds per run (the results log's table: 40 s, about 30 minutes for 36 runs; 39 with the tanh gelu row)
seeds = 3
out_dir = 'out-ablate'
dataset = 'shakespeare_char'
table = 'switches'  # 'switches': each switch on the GPT-2 baseline; 'speedrun': round two's ideas on the speedrun recipe
base_config = ''  # default: config/train_shakespeare_char_cpu.py, or config/speedrun_round1_shakespeare_char_cpu.py for table=speedrun
only = ''  # comma-separated row names to run (the baseline always runs), e.g. 'rope,muon'
threads = 1  # torch threads per run; 0 leaves torch's default
quick = False  # a smoke test: 2 rows, 1 seed, 1 second
row = ''  # one more row of train.py overrides, e.g. '--embed_scale=2.0': a new GPTConfig switch needs no edit here
# -----------------------------------------------------------------------------
install_excepthook()
configure(globals(), config_keys(globals()))
fileio.check_folder('out_dir', out_dir)  # a file (or under one): one line now, not a traceback later

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo root
TRAIN = os.path.join(REPO, 'train.py')

# (row name, train.py overrides); each row changes one thing from the GPT-2 baseline
ROWS = [
    ('gpt2', []),
    ('rmsnorm', ['--norm=rmsnorm']),
    ('no norm', ['--norm=none']),
    ('post-norm', ['--prenorm=False']),
    ('rope', ['--pos_encoding=rope']),
    ('nope', ['--pos_encoding=none']),
    ('swiglu', ['--mlp=swiglu']),
    ('relu2', ['--mlp=relu2']),
    ('tanh gelu', ['--gelu=tanh']),  # GPT-2's approximation, the baseline before the exact erf GELU
    ('qk_norm', ['--qk_norm=True']),
    ('untied', ['--tie_embeddings=False']),
    ('softcap 15', ['--logit_softcap=15.0']),
    ('muon', ['--optimizer=muon']),
]

# round two of the speedrun: each idea alone on top of the first round's recipe, the recipe itself the baseline
# (round one's config trains in fp32 as published; the rows run it at dtype=auto, bf16 where the CPU has it)
SPEEDRUN_ROWS = [
    ('speedrun', ['--dtype=auto']),
    ('value embeddings', ['--dtype=auto', '--value_embed=True']),
    ('U-net skips', ['--dtype=auto', '--unet=True']),
    ('zero-init projections', ['--dtype=auto', '--zero_init_proj=True']),
    ('polar express', ['--dtype=auto', '--muon_ns=polar_express']),
    ('softcap 15', ['--dtype=auto', '--logit_softcap=15.0']),
    ('3 layers', ['--dtype=auto', '--n_layer=3']),
    ('muon momentum 0.9', ['--dtype=auto', '--muon_momentum=0.9']),
    ('weight decay 0.03', ['--dtype=auto', '--weight_decay=0.03']),
    ('attention scale 0.35', ['--dtype=auto', '--attn_scale=0.35']),
    ('batch 8', ['--dtype=auto', '--batch_size=8']),
    ('block 256', ['--dtype=auto', '--block_size=256', '--batch_size=8']),
    ('fp32', ['--dtype=float32']),
]
if table not in ('switches', 'speedrun'):
    raise UserError(f"table must be 'switches' or 'speedrun', got {table!r}")
if table == 'speedrun':
    ROWS = SPEEDRUN_ROWS
base_config = base_config or ('config/speedrun_round1_shakespeare_char_cpu.py' if table == 'speedrun'
                              else 'config/train_shakespeare_char_cpu.py')
BASE = ROWS[0][0]  # the row the others are compared with

if row.strip():
    ROWS.append((row.strip(), row.split()))


def check():
    if seconds <= 0 or seeds <= 0:
        raise UserError(f"seconds and seeds must be positive, got {seconds}, {seeds}")
    from core.hardware import check_threads
    check_threads(threads)
    names = [n for n, _ in ROWS]
    for name in filter(None, (s.strip() for s in only.split(','))):
        if name not in names:
            raise UserError(f"unknown row '{name}' in --only; rows are: {', '.join(names)}")
    path = base_config if os.path.isabs(base_config) else os.path.join(REPO, base_config)
    if not os.path.isfile(path):
        raise UserError(f"config file '{base_config}' not found")
    return path


def run(name, overrides, seed, budget, base_path):
    """One train.py run; its final exact val loss and iteration count."""
    slug = name.replace(' ', '_')
    run_dir = os.path.join(out_dir, f'{slug}-seed{seed}')
    shutil.rmtree(run_dir, ignore_errors=True)  # metrics.jsonl appends
    os.makedirs(run_dir)
    cmd = [sys.executable, TRAIN, base_path, f'--dataset={dataset}', f'--out_dir={run_dir}', f'--seed={seed}',
           f'--max_seconds={budget}', '--lr_schedule=time', '--max_iters=1000000000', '--eval_interval=1000000000',
           '--log_interval=1000000000', '--eval_full=False', '--eval_iters=1', '--timed_eval=False',
           '--always_save_checkpoint=True', *overrides]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    with open(os.path.join(run_dir, 'train.log'), 'w') as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env).returncode
    if code != 0:
        with open(os.path.join(run_dir, 'train.log')) as f:
            tail = f.read().strip().splitlines()[-1:] or ['']
        raise UserError(f"run '{name}' seed {seed} failed (exit {code}): {tail[0]}")
    with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
        last = [r for r in map(json.loads, filter(str.strip, f)) if 'val_loss' in r][-1]  # the last eval
    return score(os.path.join(run_dir, 'ckpt.pt')), last['iter']


def score(path):
    """Mean loss over every token of the val split, as train.py's eval_full computes it."""
    import torch
    from core.training import checkpoint
    from core.data.loader import Dataset
    from core.evaluation.exact import exact_loss
    if threads:
        torch.set_num_threads(threads)
    return exact_loss(checkpoint.load_model(path)[0], Dataset(dataset))


def spread(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main():
    base_path = check()
    rows, n_seeds, budget = ROWS, seeds, seconds
    wanted = {s.strip() for s in only.split(',') if s.strip()}
    if wanted:
        rows = [r for r in ROWS if r[0] == BASE or r[0] in wanted]
    if quick:
        rows, n_seeds, budget = ROWS[:2] if table == 'speedrun' else ROWS[:1] + [r for r in ROWS if r[0] == 'rope'], 1, 1.0
    load_before = os.getloadavg()
    started = time.strftime('%Y-%m-%d %H:%M')
    results = {name: [] for name, _ in rows}
    peak_load = load_before[0]
    for s in range(n_seeds):
        for name, overrides in rows:
            loss, iters = run(name, overrides, 1337 + s, budget, base_path)
            results[name].append((loss, iters))
            # a run counts its own threads; more than that means others shared the cores and slowed it
            peak_load = max(peak_load, os.getloadavg()[0])
            print(f"seed {1337 + s} {name}: val {loss:.4f} after {iters} iterations "
                  f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    load_after = os.getloadavg()

    base = statistics.mean(l for l, _ in results[BASE])
    base_sd = spread([l for l, _ in results[BASE]])
    print()
    print(f"{started}, {os.cpu_count()} cores, load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, "
          f"{peak_load:.1f} at most; "
          f"{budget:g} s of training per run on {threads or 'the default number of'} thread{'s' if threads != 1 else ''}, "
          f"{n_seeds} seed{'s' if n_seeds > 1 else ''}, "
          f"whole-split val loss (mean ± sample std)")
    print()
    print(f"| {'switch' if table == 'switches' else 'idea'} | val loss | vs {BASE} | iterations | verdict |")
    print("|---|---|---|---|---|")
    for name, overrides in rows:
        losses = [l for l, _ in results[name]]
        mean, sd = statistics.mean(losses), spread(losses)
        iters = statistics.mean(i for _, i in results[name])
        delta = mean - base
        if name == BASE:
            verdict = 'baseline'
        elif n_seeds < 2:
            verdict = 'one seed: no verdict'
        elif abs(delta) <= max(sd, base_sd):
            verdict = 'no clear difference'
        else:
            verdict = 'helps' if delta < 0 else 'hurts'
        label = f"{name} (`{' '.join(o.lstrip('-') for o in overrides)}`)" if overrides else name
        print(f"| {label} | {mean:.4f} ± {sd:.4f} | {delta:+.4f} | {iters:,.0f} | {verdict} |")
    print()
    print("verdict: 'helps' or 'hurts' when the difference of the means is larger than the larger of the two spreads")


if __name__ == '__main__':
    main()
