"""
Plan a training run for a time budget on this machine: measure it, size the model, search the learning rate
and batch, and write a config file that train.py runs.

    python plan.py --minutes=10 --dataset=shakespeare_char
    python train.py config/plan_shakespeare_char_10m.py

The search is counted inside the budget: the config's max_seconds is what is left of --minutes when plan.py
ends. How each choice is made is in core/training/search.py; the config says why, choice by choice.
"""

import time

_t_start = time.time()  # the budget's clock: everything from here on counts, imports included (not a config key)

import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from configurator import config_keys, configure  # noqa: E402
from core.errors import UserError, install_excepthook  # noqa: E402
from core.fileio import owned, starts_with, unwritable  # noqa: E402

# -----------------------------------------------------------------------------
minutes = 10.0  # the whole budget: the search here plus the training the config asks for
dataset = 'shakespeare_char'  # a folder under data/ or a path to a prepared folder
device = 'auto'
dtype = 'auto'  # what the trials and the final run train in (train.py's meaning)
threads = 0  # CPU threads, train.py's key: 0 = OMP_NUM_THREADS if set, else 1 or all cores, whichever steps faster
out = ''  # the config file to write; '' = config/plan_<dataset>_<minutes>m.py
overwrite = False  # replace an existing plan file
plot = False  # also draw the trials' loss against time, beside the config (.png)
progress = True  # a progress bar per trial of the search, with its train loss
search_share = 0.1  # at most this share of the budget goes to the search (0 to 0.25; 0 = no search)
work_dir = ''  # where the trials' run folders go; '' = a temporary folder, removed at the end
trial_overhead = 0.0  # seconds a trial costs besides its training (start-up, two evaluations); 0: 3x this script's start-up
seed = 1337
# -----------------------------------------------------------------------------
install_excepthook()
configure(globals(), config_keys(globals()))

import shutil  # noqa: E402  (after the config, so --help and bad keys answer before torch loads)
import signal  # noqa: E402
import tempfile  # noqa: E402

import torch  # noqa: E402

from core import hardware  # noqa: E402
from core.data.loader import Dataset  # noqa: E402
from core.fileio import write_text  # noqa: E402
from core.paths import REPO  # noqa: E402
from core.training import planner, search  # noqa: E402

# a trial is a fresh `python train.py`: its start-up (this interpreter's imports, about) is part of its cost
startup = time.time() - _t_start

MIN_BUDGET = 20.0  # seconds: a quarter to start and measure one shape, the rest to train
MAX_BUDGET = 30 * 86400.0  # 30 days: far past what the size rule was calibrated on; a longer number is a slip
HEADER = '# Written by plan.py'  # the first line of every plan: a file starting so is one plan.py may replace
budget = minutes * 60
if not math.isfinite(budget) or budget > MAX_BUDGET:
    raise UserError(f"--minutes={minutes:g} is more than plan.py plans for ({MAX_BUDGET / 60:,.0f} minutes, 30 days); "
                    f"give the minutes the run may take, e.g. --minutes=60")
if budget < MIN_BUDGET:
    raise UserError(f"--minutes={minutes:g} is {budget:.0f} s, too little to measure and train anything; the smallest "
                    f"workable budget is {MIN_BUDGET:.0f} s (--minutes={math.ceil(MIN_BUDGET / 60 * 100) / 100:g})")
if not 0 <= search_share <= 0.25:
    raise UserError(f"search_share must be between 0 and 0.25 (at most a quarter of the budget), got {search_share}")
name = os.path.basename(os.path.normpath(dataset))
dest = out or os.path.join(REPO, 'config', f"plan_{name}_{minutes:g}m.py")
plot_path = os.path.splitext(dest)[0] + '.png' if plot else ''  # the trials' plot, beside the config
# paths that cannot be written are found now, not after the search has spent the budget
for key, path, folder in (('out', dest, False), ('work_dir', work_dir, True), ('plot', plot_path, False)):
    problem = path and unwritable(path, folder)
    if problem and key == 'plot':
        raise UserError(f"--plot=True draws the trials beside the config: {problem}; choose another --out")
    if problem:
        raise UserError(f"--{key}={path}: {problem}; choose another {'folder' if folder else 'file'}")
if not dest.endswith('.py'):  # x.pt would hold Python, and --overwrite=True would replace a run's checkpoint with it
    raise UserError(f"--out={dest}: the plan is a config file, Python that train.py runs; give it a .py name")
owner = os.path.isfile(dest) and owned(dest)
try:  # a plan it wrote beside the scripts may be written again
    if owner and starts_with(dest, HEADER):
        owner = ''
except OSError:
    pass
if owner:
    # --out=plan.py from the repository's folder names this very script: the line below asks for --overwrite=True,
    # which would then replace it (or train.py, model.py...) with a config at the end of the search
    raise UserError(f"--out={dest} is {owner}, which a plan never replaces; choose another --out, e.g. "
                    f"--out=config/my_plan.py")
for path in (dest, plot_path):
    if path and os.path.exists(path) and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite=True to replace it, or --out=<another file>")
hardware.check_threads(threads)
if trial_overhead < 0:
    raise UserError(f"trial_overhead must be 0 (3x this script's start-up) or the seconds a trial costs besides "
                    f"its training, got {trial_overhead:g}")

data = Dataset(dataset)
n_train, n_val = len(data.split('train')), len(data.split('val'))
device = hardware.pick_device(device)
device_type = device.split(':')[0]
dtype = hardware.pick_dtype(dtype, device, training=True)
vocab_size = data.vocab_size if data.vocab_size <= 256 else -(-data.vocab_size // 64) * 64  # as train.py pads it
block_size, batch_size = search.RECIPE['block_size'], search.RECIPE['batch_size']  # the size rule's calibration
# what train.py refuses at its start is refused before the budget is spent on it
smallest_config = search.model_config(*search.SHAPES[0], vocab_size, block_size)
planner.check_build(smallest_config, device)  # 2**32 ids, say
data.token_bytes()  # a tokenizer it cannot read
data.check_fits(vocab_size, block_size)  # token ids past the vocabulary
# a model with more parameters than twice the tokens it can read learns them by heart: no larger shapes
max_params = 2 * n_train
smallest = search.non_embedding_params(smallest_config)
if n_val <= block_size or n_train <= block_size * batch_size or smallest > max_params:
    raise UserError(f"dataset '{dataset}' is too small for a plan: {n_train:,} train and {n_val:,} val tokens; the "
                    f"smallest shape ({search.SHAPES[0][0]} layers x {search.SHAPES[0][1]}, {smallest:,} parameters, "
                    f"block_size {block_size}) needs more than {max(block_size * batch_size, smallest // 2):,} train "
                    f"and {block_size:,} val tokens")
print(f"plan: {minutes:g} min ({budget:.0f} s) for dataset {data.data_dir} ({n_train:,} train, {n_val:,} val tokens); "
      f"{device}, {dtype}; load average {os.getloadavg()[0]:.2f}", flush=True)

# 1. throughput of the recipe's shapes here
share = budget * search_share
print("measuring training throughput (no compile; the final run compiles):", flush=True)
shapes = [s for s in search.SHAPES
          if search.non_embedding_params(search.model_config(*s, vocab_size, block_size)) <= max_params]
# the measuring comes out of the search's share: half of it once two shapes are measured, or all of it when even
# the whole share could not hold a search
overhead = trial_overhead or 3 * startup + 2  # the start-up, the model, an evaluation at the start and one at the end
searchable = search.schedule(len(search.ARMS), share - startup, overhead)[0] > 0
# what the final run will have: the budget less the search's share, or less the measuring (about the start-up
# again) when there is no search
train_guess = budget - (share if searchable else min(share, 2 * startup))
max_tokens = search.MAX_EPOCHS * n_train  # a run that would read the train split more often stops sooner
rates = search.measure_shapes(vocab_size, device, dtype, block_size, batch_size, train_guess,
                              _t_start + (share / 2 if searchable else share), shapes, threads=threads,
                              max_tokens=max_tokens)

# a machine too slow for even the fastest shape measured (a vocabulary of a million ids, say) trains nothing here
fastest = max(rates, key=rates.get)
rate = search.compiled_tokens(fastest, rates[fastest], 1.0, device_type, vocab_size, block_size)[0]
fewest = search.MIN_TRIAL_STEPS * search.PRIOR_BATCHES[-1] * block_size  # tokens: the warmup twice at 4 rows
if rate * train_guess < fewest:
    at_least = (time.time() - _t_start + fewest / rate) / (1 - search_share) / 60
    raise UserError(f"at {rate:,.0f} tok/s here ({fastest[0]} layers x {fastest[1]}, vocabulary {vocab_size:,}), "
                    f"{train_guess:.0f} s of training is {rate * train_guess / fewest * search.MIN_TRIAL_STEPS:.0f} "
                    f"steps of {search.PRIOR_BATCHES[-1]} x {block_size}, fewer than the {search.MIN_TRIAL_STEPS} a "
                    f"run needs to get past its warmup; give at least --minutes={math.ceil(at_least * 10) / 10:g}, "
                    f"or a dataset with a smaller vocabulary")

# 2. the size for the time the final run will have
shape, tokens, n_params = search.pick_shape(rates, train_guess, device_type, shapes, vocab_size, block_size,
                                            max_tokens)
n_layer, n_embd = shape
trial_width = min(search.SEARCH_WIDTH, n_embd)
print(f"size: {n_layer} layers x {n_embd} ({n_params / 1e6:.2f}M parameters) would see about {tokens / 1e6:.1f}M "
      f"tokens in {train_guess:.0f} s{', the most a plan reads' if tokens >= max_tokens else ''}, "
      f"{tokens / n_params:.1f} per parameter (target {search.tokens_per_param(tokens):.1f})",
      flush=True)

# 3. the learning rate and batch, by successive halving at the base width
share_left = share - (time.time() - _t_start)
n_arms, first_seconds = search.schedule(len(search.ARMS), share_left, overhead)
# the steps of a first-rung trial, from its own shape's speed: too few to get past the warmup and it would rank the
# rates by nothing (a 50k vocabulary on a CPU, where a step of 16 rows takes seconds)
trial_steps = math.inf
if n_arms:
    trial_shape = (n_layer, trial_width)
    trial_rate = rates.get(trial_shape) or search.measure_throughput(trial_shape, vocab_size, device, dtype,
                                                                     batch_size, block_size)
    trial_steps = trial_rate * first_seconds / (batch_size * block_size)
too_few = trial_steps < search.MIN_TRIAL_STEPS
scratch = work_dir or tempfile.mkdtemp(prefix='plan-')
os.makedirs(scratch, exist_ok=True)


def run(trial):
    print(f"  trial {trial.number}: {trial.describe()} for {trial.seconds:g} s at width {trial_width} "
          f"(search {time.time() - _t_start:.0f}/{share:.0f} s)", flush=True)
    keys = dict(search.arm_keys(trial.arm, n_layer, block_size, trial_width), seed=seed, threads=threads)
    bar = search.TrialBar(trial, progress)
    try:
        search.run_trial(trial, keys, dataset, device, dtype, scratch, on_progress=bar)
    finally:
        bar.close()
    result = f"val loss {trial.val_loss:.4f}" if trial.val_loss is not None else f"failed ({trial.error[:200]})"
    print(f"    {result} after {trial.iters} iterations, {trial.wall:.1f} s wall", flush=True)
    return trial


def stop(signum, frame):  # SIGTERM (a scheduler's stop, `kill`) ends the search as Ctrl-C does, its folder removed
    global stopped_by
    stopped_by = signum
    raise KeyboardInterrupt


stopped_by = signal.SIGINT
signal.signal(signal.SIGTERM, stop)
trials, arm, from_search = [], search.PRIOR_ARM, False
try:
    if n_arms and not too_few:
        print(f"search: {n_arms} candidates from {first_seconds:g} s, halved and doubled, within {share:.0f} s "
              f"of the budget", flush=True)
        _, best = search.successive_halving(search.ARMS[:n_arms], first_seconds, share, _t_start, run, overhead,
                                            trials)
        arm, from_search = best or arm, best is not None
    else:
        why = (f"a trial of {first_seconds:g} s would take about {trial_steps:.0f} steps, too few to rank learning "
               f"rates (at least {search.MIN_TRIAL_STEPS})" if too_few else
               f"{share_left:.0f} s is too short for two trials" if share_left > 0 else
               f"the measuring took all of the search's {share:.0f} s")
        print(f"search: skipped, {why}; the recipe's learning rates", flush=True)
except KeyboardInterrupt:
    print("\n" + search.trials_table(trials), flush=True)
    print("interrupted: the search stopped; no config was written", file=sys.stderr, flush=True)
    if not work_dir:
        shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(128 + stopped_by)
if trials:
    print(search.trials_table(trials), flush=True)
if plot and trials:
    try:
        search.plot_trials(trials, plot_path)
        print(f"plotted the trials: {plot_path}", flush=True)
    except OSError as e:  # the config below is what the budget was spent on: it is written all the same
        print(f"could not draw the trials into {plot_path} ({e.strerror or e}); the config follows", flush=True)
if not work_dir:
    shutil.rmtree(scratch, ignore_errors=True)

# 4. the config, with what is left of the budget
spent = time.time() - _t_start
final_seconds = budget - spent
if final_seconds < budget / 2:  # a busy machine can take longer to start than a small budget allows
    raise UserError(f"planning took {spent:.0f} s of the {budget:.0f} s budget here (load average "
                    f"{os.getloadavg()[0]:.1f}), leaving too little to train; give at least "
                    f"--minutes={math.ceil(spent * 4 / 60 * 10) / 10:g}, or plan when the machine is quieter")
gain = search.compile_gain(device_type, n_embd, vocab_size, n_params)
tokens = rates[shape] * gain * final_seconds
# a run that would read the train split more than MAX_EPOCHS times ends when it has (the rest of the budget is not
# spent): past that, a model learns the text by heart and its val loss rises (search.py). Counted in steps where they
# fit in the time left even at the eager speed; else by the clock, at the compile gain (1.0-1.6x seen for 4 x 160
# here), since a clock that ended the run before its steps would cut its schedule short of the warmdown
capped = tokens > max_tokens
by_steps = capped and rates[shape] * final_seconds >= max_tokens
train_seconds = final_seconds * max_tokens / tokens if capped else final_seconds  # about, at the compile gain
tokens = min(tokens, max_tokens)
if not from_search:  # the batch that gives the run enough steps (search.prior_batch)
    arm = (arm[0], search.prior_batch(tokens, block_size))
keys = search.arm_keys(arm, n_layer, block_size, n_embd)
lr_mult, batch = arm
steps = tokens / (batch * block_size)
why_cap = "More would make it worse: a model that re-reads a corpus more often learns it by heart, and its val loss rises"
if by_steps:
    steps = math.ceil(steps)
    schedule = f"""# the run reads the {n_train:,} train tokens {search.MAX_EPOCHS} times, the most a plan reads them (search.MAX_EPOCHS):
# {steps:,} steps of {batch} x {block_size}, about {train_seconds:.0f} of the {final_seconds:.0f} s left.
# {why_cap}
max_iters = {steps}
lr_decay_iters = {steps}  # warmup to warmdown over the steps
lr_schedule = 'iters'
max_seconds = {final_seconds:.1f}  # what plan.py left of the {budget:.0f} s budget: a bound, the steps end the run first"""
elif capped:
    schedule = f"""# the run reads the {n_train:,} train tokens about {search.MAX_EPOCHS} times, the most a plan reads them (search.MAX_EPOCHS):
# it stops after about {train_seconds:.0f} of the {final_seconds:.0f} s left (by the clock: at the eager speed the steps would not fit).
# {why_cap}
max_seconds = {train_seconds:.1f}  # within the {budget:.0f} s budget
max_iters = 1000000000  # the clock ends the run
lr_schedule = 'time'"""
else:
    schedule = f"""# the run reads the {n_train:,} train tokens about {tokens / n_train:.1f} times
max_seconds = {final_seconds:.1f}  # what plan.py left of the {budget:.0f} s budget
max_iters = 1000000000  # the clock ends the run
lr_schedule = 'time'"""
scored = [t for t in trials if t.arm == arm and t.val_loss is not None]
compile_final = hardware.pick_compile('auto', device) if device_type != 'cpu' else bool(hardware.cpp_compiler())
few = ', '.join(map(str, search.PRIOR_BATCHES))
R = search.RECIPE['batch_size']
why_batch = (f"{batch} rows rather than the recipe's {R} spread a step's fixed costs (the optimizer,\n# Python) over "
             f"more tokens, 7-8% more a second on a 2-core CPU" if batch > R else
             "with fewer steps, each step's progress counts for more\n# than the tokens in it")
picked = ("the search's pick" if from_search else
          f"{'every trial failed' if trials else 'no search at this budget'}, so the largest of\n# {few} rows that "
          f"gives the run at least {search.FEW_STEPS} steps, or the fewest (core/training/search.py prior_batch):\n# "
          f"{why_batch}")
picked += f"; about {steps:,.0f} steps"
found = (f"found by successive halving over {len(trials)} trials of train.py at width {trial_width}" if from_search
         else f"every one of the search's {len(trials)} trials failed" if trials else "no search at this budget")
if scored:  # a curve through trials this short says nothing of where a long run levels off (docs/training.md)
    last = max(scored, key=lambda t: t.seconds)
    expectation = (f"below {last.val_loss:.3f}, the chosen candidate's after {last.seconds:g} s at width "
                   f"{trial_width};\n# a run {train_seconds / last.seconds:.0f}x as long at width {n_embd} ends lower, "
                   f"by how much trials this short cannot tell")
else:
    expectation = "no estimate without trials"
base = keys['mup_base_width']
transfer = (f"muP from the recipe's width {base}, where its rates were tuned: they hold at width {n_embd}"
            if keys['mup'] else "the recipe's own width: muP's multipliers are all 1 here")
if from_search:
    transfer += f", as do the multiples of them the search found at width {trial_width}"
threads_why = ('as plan.py was told' if threads else
               'OMP_NUM_THREADS if set, else 1 or all cores, whichever steps faster at the start (train.py)')
measured = ', '.join(f'{l}x{c} {r:,.0f}' for (l, c), r in rates.items())
switches = '\n'.join(f'{k} = {search.RECIPE[k]!r}' for k in search.SWITCHES)
text = f"""{HEADER}: python plan.py --minutes={minutes:g} --dataset={dataset}
# on {device} ({dtype}, {torch.get_num_threads()} thread(s)), load average {os.getloadavg()[0]:.2f} at the end;
# the plan took {spent:.0f} s of the {budget:.0f} s budget, leaving the other {final_seconds:.0f} s to train in.
# python train.py {os.path.relpath(dest, REPO) if dest.startswith(REPO) else dest}

out_dir = 'out-plan-{name}-{minutes:g}m'
dataset = {dataset!r}
eval_interval = 250
eval_iters = 20
log_interval = 10
always_save_checkpoint = False
eval_full = {n_val <= 2_000_000}  # scored on the whole val split (when it has at most 2M tokens)
timed_eval = False  # evaluations do not eat into the training budget

# the speedrun recipe's switches (config/speedrun_shakespeare_char_cpu.py), the candidates' common start
{switches}

# size: {n_layer} layers x {n_embd} measured {rates[shape]:,.0f} tok/s here without compile; with compile (x{gain:.2g})
# for {train_seconds:.0f} s that is about {tokens / 1e6:.1f}M tokens for {n_params / 1e6:.2f}M parameters,
# {tokens / n_params:.1f} per parameter: the measured shape nearest the size rule's target at that many tokens,
# {search.tokens_per_param(tokens):.1f}, a larger model's distance counting {search.OVERSIZE_COST:g} times
# (calibrated against the recipes, core/training/search.py). Measured, tok/s: {measured}
n_layer = {n_layer}
n_head = {search.N_HEAD}  # fixed, so a wider model has wider heads and muP's attention scale carries over
n_embd = {n_embd}
# {transfer}
mup = {keys['mup']}
mup_base_width = {base}  # attn_scale above holds at this width; under muP it shrinks as 1/head size beyond it

# batch and sequence: {batch} x {block_size} tokens per step, {picked}
batch_size = {batch}
block_size = {block_size}
gradient_accumulation_steps = 1

# learning rates: the recipe's x{lr_mult:g}, {found}
optimizer = 'muon'
muon_lr = {keys['muon_lr']:.6g}
muon_momentum = {search.RECIPE['muon_momentum']}
muon_ns = 'polar_express'
learning_rate = {keys['learning_rate']:.6g}  # AdamW: embeddings, head, gains
weight_decay = {search.RECIPE['weight_decay']}
beta1 = {search.RECIPE['beta1']}
beta2 = {search.RECIPE['beta2']}
grad_clip = 1.0
# expected val loss: {expectation}

{schedule}
decay_lr = True
warmup_iters = {search.RECIPE['warmup_iters']}
warmdown_frac = {search.RECIPE['warmdown_frac']}
min_lr = 0.0

device = {device!r}
dtype = {dtype!r}
threads = {threads}  # {threads_why}
compile = {compile_final}  # compiles before the clock starts
seed = {seed}
"""
try:
    write_text(dest, text)
except OSError as e:
    raise UserError(f"cannot write the plan to {dest} ({e.strerror or e}); choose another --out")
print(f"wrote {dest}: {n_layer} layers x {n_embd}, batch {batch} x {block_size}, muon_lr {keys['muon_lr']:.3g}, "
      f"lr {keys['learning_rate']:.3g}, " + (f"max_iters {steps} (about {train_seconds:.0f} s)" if by_steps else
                                               f"max_seconds {train_seconds:.0f}"), flush=True)
print(f"train it: python train.py {dest}", flush=True)
