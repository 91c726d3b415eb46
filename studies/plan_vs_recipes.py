"""
plan.py against the hand-tuned recipes at equal wall time: for each budget, plan.py plans (its search counted in
the budget) and its config trains; the CPU speedrun recipe and nanoGPT's CPU recipe train for the whole budget.
Every run is scored on the whole val split, with the clock stopped while it evaluates (timed_eval=False).

    python data/shakespeare_char/prepare.py && OMP_NUM_THREADS=1 python studies/plan_vs_recipes.py --budgets=1,3,10

The targets (issue 29): plan.py's val loss at or below the speedrun recipe's, and at least 0.3 below nanoGPT's CPU
recipe's, at every budget. --busy=2 runs two busy processes beside everything (the plan, its run and the
recipes), as on a shared machine: the plan is made there and trained there, and so are the recipes.
The classic recipe runs as published (its learning rate decays over 2000 iterations),
stopped by the clock at the budget if it has not finished by then. The load average is printed around every run.
"""

import json
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
out_dir = 'out-plan-vs-recipes'  # one folder per run below it, with its log
dataset = 'shakespeare_char'
budgets = '1,3,10'  # minutes, comma-separated
speedrun_config = 'config/speedrun_shakespeare_char_cpu.py'
classic_config = 'config/train_shakespeare_char_cpu.py'
recipes = 'speedrun,classic'  # which recipes to run beside the plan
busy = 0  # processes spinning beside every run, from the first plan to the last recipe
plan_args = ''  # more arguments for plan.py, space-separated (e.g. --search_share=0.25)
seed = 1337
# -----------------------------------------------------------------------------
install_excepthook()
configure(globals(), config_keys(globals()))
fileio.check_folder('out_dir', out_dir)  # a file (or under one): one line now, not a traceback later

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCORING = ['--eval_full=True', '--timed_eval=False', f'--dataset={dataset}', f'--seed={seed}']
try:
    minutes_list = [float(b) for b in budgets.split(',')]  # '1,,2' too is a slip, not two budgets
except ValueError:
    minutes_list = []
if not minutes_list or not all(0 < m < float('inf') for m in minutes_list):  # none, or -1: a table of nan runs
    raise UserError(f"budgets must be minutes separated by commas, e.g. 1,3,10; got {budgets!r}")


def load():
    return f"load {os.getloadavg()[0]:.2f}"


def run(name, cmd):
    """Run a command with its output in out_dir/name.log; returns (exit code, wall seconds)."""
    os.makedirs(out_dir, exist_ok=True)
    print(f"[{name}] {load()}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    with open(os.path.join(out_dir, f'{name}.log'), 'w') as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO).returncode
    wall = time.time() - t0
    print(f"[{name}] exit {code}, {wall:.0f} s wall, {load()}", flush=True)
    return code, wall


def train(name, config_file, overrides):
    """A train.py run in a fresh folder; returns its last metrics record (None if it failed)."""
    run_dir = os.path.join(out_dir, name)
    shutil.rmtree(run_dir, ignore_errors=True)
    code, _ = run(name, [sys.executable, os.path.join(REPO, 'train.py'), config_file, *SCORING,
                         f'--out_dir={run_dir}', *overrides])
    path = os.path.join(run_dir, 'metrics.jsonl')
    if code != 0 or not os.path.exists(path):
        return None
    with open(path) as f:
        return [r for r in map(json.loads, filter(str.strip, f)) if 'val_loss' in r][-1]  # the last evaluation


spinners = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(busy)]
rows = []
try:
    for minutes in minutes_list:
        seconds = minutes * 60
        tag = f'{minutes:g}m'
        plan_file = os.path.join(os.path.abspath(out_dir), f'plan_{tag}.py')
        code, plan_wall = run(f'plan-{tag}', [sys.executable, os.path.join(REPO, 'plan.py'), f'--minutes={minutes:g}',
                                              f'--dataset={dataset}', f'--out={plan_file}', '--overwrite=True',
                                              f'--seed={seed}', '--progress=False', *plan_args.split()])
        result = {'minutes': minutes, 'plan_wall': plan_wall}
        if code == 0:
            result['plan'] = train(f'plan-train-{tag}', plan_file, [])
        if 'speedrun' in recipes:
            result['speedrun'] = train(f'speedrun-{tag}', os.path.join(REPO, speedrun_config),
                                       [f'--max_seconds={seconds}'])
        if 'classic' in recipes:
            result['classic'] = train(f'classic-{tag}', os.path.join(REPO, classic_config),
                                      [f'--max_seconds={seconds}'])
        rows.append(result)
        with open(os.path.join(out_dir, 'results.json'), 'w') as f:
            json.dump(rows, f, indent=1)
finally:
    for p in spinners:
        p.kill()


def val(record):
    return record['val_loss'] if record else float('nan')


print(f"\n{dataset}, whole-val-split loss at equal wall time ({load()} at the end"
      f"{f', {busy} busy processes beside every run' if busy else ''})")
print("budget  plan (search + train s)      speedrun   classic   plan-speedrun  classic-plan  targets")
for r in rows:
    p, s, c = val(r.get('plan')), val(r.get('speedrun')), val(r.get('classic'))
    train_s = r['plan']['train_seconds'] if r.get('plan') else float('nan')
    ok = [f"<= speedrun: {'yes' if p <= s else 'no'}" if 'speedrun' in r else '',
          f"classic - 0.3: {'yes' if c - p >= 0.3 else 'no'}" if 'classic' in r else '']
    print(f"{r['minutes']:5g}m  {p:.4f} ({r['plan_wall']:.0f} + {train_s:.0f})    {s:9.4f}  {c:8.4f}  {p - s:+13.4f}  "
          f"{c - p:+12.4f}  {', '.join(o for o in ok if o)}")
