"""The search behind plan.py: measure this machine, size the model for the budget, and find the learning rate and
batch by successive halving over short train.py runs on the time schedule, at a small width that muP transfers.

The method, in the order plan.py runs it:
1. throughput: a few training steps of each candidate shape, in this process, give tokens per second here;
2. size: the shape whose tokens per parameter over the final run's time is closest to tokens_per_param(its tokens),
   a ratio calibrated by short runs against the recipes on a 2-core CPU;
3. search: learning rate and batch, each candidate a `python train.py` run with lr_schedule='time' (a short
   run is a whole run, warmup to warmdown, so its ranking predicts a long one's) at SEARCH_WIDTH; the better
   half goes on with twice the time, until one is left or the search's share of the budget is spent;
4. transfer: every model, the trials' and the final one, is muP with the recipe's width as its base width
   (BASE_WIDTH), so the recipe's rates, and the multiples of them the search finds at the small width, hold at
   the chosen width; at the recipe's own width the model is the recipe's, weight for weight.
"""

import json
import math
import os
import re
import subprocess
import sys
import time

import torch

from core import fileio, hardware
from core.bench.timing import timed_train_steps
from core.paths import REPO
from core.training.accounting import param_counts
from core.training import planner
from core.training.optim import BareMuonAdamW
from model import GPT, GPTConfig

# The speedrun recipe (config/speedrun_shakespeare_char_cpu.py): the switches and Muon that won at equal time there,
# the starting point of every candidate
RECIPE = dict(bias=False, norm='layernorm', prenorm=True, pos_encoding='rope', mlp='relu2', qk_norm=True,
              tie_embeddings=False, logit_softcap=15.0, attn_scale=0.35, dropout=0.0, optimizer='muon', muon_lr=0.04,
              muon_momentum=0.9, muon_ns='polar_express', learning_rate=3e-3, weight_decay=0.03, beta1=0.9,
              beta2=0.99, grad_clip=1.0, warmup_iters=20, warmdown_frac=0.5, min_lr=0.0, batch_size=16,
              block_size=128, gradient_accumulation_steps=1)
# the recipe's architecture switches, what every candidate (and the config plan.py writes) starts from
SWITCHES = ('bias', 'norm', 'prenorm', 'pos_encoding', 'mlp', 'qk_norm', 'tie_embeddings', 'logit_softcap',
            'attn_scale', 'dropout')
N_HEAD = 4  # fixed, so a wider model has wider heads: muP's attention scale (1/head size) then carries over
# the recipe's shape (n_layer, n_embd): the measuring starts there and walks towards the size rule's target; its
# rates (and attn_scale) were tuned at its width, so that is muP's base width for every candidate
RECIPE_SHAPE = (3, 128)
BASE_WIDTH = RECIPE_SHAPE[1]
# (n_layer, n_embd), smallest first: depth grows with width, as in the speedrun's and nanochat's families
SHAPES = ((2, 64), (3, 64), (3, 96), (3, 128), (4, 128), (4, 160), (4, 192), (6, 192), (6, 256), (8, 256), (8, 384),
          (10, 512), (12, 768))
# The size rule: the tokens per parameter that learn the most, calibrated on this 2-core machine (one thread, load
# about 2, Tiny Shakespeare's 1M training characters, 2026-12-06). It rises with the tokens a run reads: a long run
# re-reads a small corpus, and re-read tokens teach less than new ones, so the best model grows more slowly than its
# data. Evidence (val loss, the recipe under muP from width 128):
# - about 1.5M tokens (1 minute, means of two seeds, which differ by up to 0.02): 3 x 128 at 2.7 per parameter
#   1.596, against 3 x 96 at 6.0 1.603, 4 x 128 at 1.5 1.611 and 3 x 160 at 1.3 1.614;
# - about 1M tokens (3 minutes, three processes to a core): 3 x 128 at 1.8 per parameter 1.640, 3 x 96 at 3.4 1.677;
# - about 5M tokens (3 minutes): 3 x 128 at 9.4 1.499, 4 x 160 at 2.5 1.501, 4 x 192 at 1.3 1.528 (flat between);
# - 10 minutes: 4 x 192 (about 8M tokens, 4.6 per parameter) 1.477, 3 x 128 (about 18M, 31) 1.481.
# TOKENS_PER_PARAM at TOKENS_AT tokens, growing as their square root, fits all four.
TOKENS_PER_PARAM = 2.5
TOKENS_AT = 1.5e6
# A model larger than the rule's (fit below 0) costs more than one smaller by the same ratio: it takes fewer steps
# and is further from converged when the time ends. Its distance counts OVERSIZE_COST times. Evidence (val loss):
# - about 1.5M tokens (above): 4 x 128 at 1.67x under the target lost 0.015, 3 x 96 at 2.4x over 0.007, per log
#   of the ratio 0.029 against 0.008, so about 3.5 times;
# - about 4M tokens (3 minutes, AMD EPYC, 2026-12-07): 4 x 128 at 1.2x over the target beat 3 x 128 at 1.8x over
#   by 0.008-0.011 in three paired seeds;
# - 2-3M tokens (1 minute, on an Intel Xeon with AMX, 2026-12-06): 4 x 128 at 1.16x under (2.5 per parameter
#   against 2.9) ended 0.02 above 3 x 128 at about 1.5x over, in two seeds;
# - about 1M tokens (3 minutes, busy): 3 x 128 at 1.13x under beat 3 x 96 at 1.67x over by 0.037.
# A symmetric distance gets the third wrong. The rule once had a bonus for the recipe's shape instead (1.5x either
# side counted as on the rule), which got the second wrong
OVERSIZE_COST = 3.0
# The most times the final run reads the train split: a run that would read more ends after the steps that read
# it this often (warmup to warmdown over those steps), and the size rule counts the tokens it reads. Past
# some number of readings a model learns the train text by heart and its val loss rises, sooner the more of the
# corpus is new to it. Evidence (val loss on the whole split, one thread a run, 2026-12-07, AMD EPYC):
# - 360k characters of WikiText-2's test text (323k train), the 3-minute plan's 3 x 128 at 24 rows: reading it
#   4.5 times (60 s) 1.803, 7.2 times (90 s) 1.826, 9.3 times (120 s) 1.869, 17 times (178 s, the plan without
#   this cap) 1.953, and the speedrun recipe for 180 s 1.950; with dropout 0.1 for 178 s (2.6x fewer steps on a
#   CPU) 1.826, no better than stopping at 90 s;
# - Tiny Shakespeare (1M train characters): the speedrun recipe's 3 x 128 for 10 minutes (14.5 readings) and
#   the 10-minute plan's 4 x 160 (7.2) were still improving at their ends; the 30-minute plan's 4 x 192 was best
#   at 11 readings (1.490) and ended at 1.527 after 14.
# - 5 rather than 8 (eleventh session): 0.005-0.045 lower on three small corpora at 3 minutes (the one above,
#   377k characters of WikiText-2's valid text, 419k of Python's pydoc topics), but 0.017 higher on Tiny Shakespeare
#   at 10 minutes (the plan's 4 x 160: 1.4903 at 5 readings, 1.4733 at 7). A larger model that fills the time at
#   7-8 readings did no better than stopping (pydoc's 4 x 128: 1.192 against 3 x 128's 1.174).
# 8 stops the runs that re-read most, and leaves the 10-minute Tiny Shakespeare plan (its win over the recipe) be.
# plan.py counts it in steps where they fit in the time left at the eager speed (no gain from compile), else by the
# clock at the compile gain, so that the clock never ends a run before its warmdown
MAX_EPOCHS = 8


def tokens_per_param(tokens):
    """The size rule's target: the tokens per non-embedding parameter that learn the most from `tokens` tokens."""
    return TOKENS_PER_PARAM * math.sqrt(tokens / TOKENS_AT)


# torch.compile's speed-up over the eager throughput measured here, for a CPU training step, as (where the blocks
# are the work, where the vocabulary's head and its loss are). With 65 characters train.py compiled ran 3 x 128,
# 4 x 160 and 4 x 192 at 30.7k, 16.9k and 13.7k tok/s (medians of 3-minute runs) where measure_throughput gave
# 17.2-17.9k, 10.8-11.4k and 9.2k eager: 1.7-1.8x, 1.5-1.6x and 1.5x. At GPT-2's 50k vocabulary, where the head
# holds 94-96% of the weights a token passes through, 3 x 64 and 3 x 96 ran 3.2x and 3.0x (compile fuses the loss
# over 50k logits); between, by the head's share. Compiling each shape would cost more than small budgets have, so
# throughput is measured without it
COMPILE_GAIN = {'cpu': (1.6, 3.1)}  # other devices: not measured, so no gain is assumed


def size_fit(tokens, n_params):
    """How far a model of n_params reading `tokens` is from the size rule, as the log of its tokens per parameter
    over tokens_per_param: 0 on the rule, above 0 for a model smaller than the rule's, below 0 for a larger one."""
    return math.log(tokens / n_params / tokens_per_param(tokens))


def compile_gain(device_type, n_embd, vocab_size, n_params):
    """COMPILE_GAIN for a model of width n_embd and n_params non-embedding parameters: its blocks' gain and its
    head's, weighted by the head's share of the matrix weights a token passes through."""
    if device_type not in COMPILE_GAIN:
        return 1.0
    blocks, head = COMPILE_GAIN[device_type]
    head_weights = vocab_size * n_embd
    return blocks + (head - blocks) * head_weights / (head_weights + n_params)


SEARCH_WIDTH = 64
# candidates of the search as (learning-rate multiple of the recipe's, batch size), the recipe's first; rates
# move Muon's and AdamW's together
ARMS = ((1.0, 16), (2.0, 16), (0.5, 16), (1.0, 32), (1.0, 8), (2.0, 32), (0.5, 8), (2.0, 8), (0.5, 32))
# Where the budget holds no search (under about 12 minutes), the recipe's rates with a batch of 24 rather than its 16:
# a step's fixed costs (the optimizers' steps, the Python around the kernels) spread over half as many rows again,
# 7% more tokens a second for 3 x 128 and 4 x 128 here (compiled, one thread), and the runs ended lower. Paired
# seeds, 2026-12-06, both cores training: 3 x 128 for 57 s (the 1-minute plan) 0.0067 lower over 11 seeds (standard
# error 0.0033), 0.0040 over the 8 of them run in rotated order (two earlier sittings' six seeds: 0.004); 4 x 128 for
# 175 s (the 3-minute plan) 0.0035 lower over 6 seeds (standard error 0.0033). Those were on an Intel Xeon with AMX;
# on the AMD EPYC (1.5M tokens a minute, not 2.5M) 12 paired seeds at 57 s gave 0.0022 higher (standard error 0.0043)
# with 8% more tokens a second: no difference either way there. plan.py measures at 16, where the size rule and
# COMPILE_GAIN were calibrated
PRIOR_ARM = (1.0, 24)
# Where the run will take few optimizer steps, a step's progress counts for more than the tokens in it: early in
# training the gradient of a few rows already points the right way, so more, smaller steps learn more from the same
# time. That is the regime of a large vocabulary on a CPU (GPT-2's 50k: the head is 90% of a step, 1 minute is
# 40-60 steps of 16 rows) and of a slow or busy machine. Below the search, the batch is the largest of
# PRIOR_BATCHES whose run still takes FEW_STEPS steps. Evidence (2026-12-06, AMD EPYC, the speedrun recipe at
# 3 x 128 with other batches, one run a core, both cores training; val loss on the whole split):
# - GPT-2 BPE Tiny Shakespeare for 55 s: 16 rows 6.093 (42 steps), 8 rows 5.664 (93), 4 rows 5.542 (175), 2 rows
#   5.562 (302); with 3 warmup steps instead of 20, 8 rows 5.651: the steps, not the warmup;
# - the same for 170 s: 16 rows 5.007 (140 steps), 8 rows 4.940 (287), 4 rows 4.879 (562) (4 and 2 rows, and 8 at
#   170 s, warmed up over 3-5 steps);
# - Tiny Shakespeare characters for 28 s, two seeds: 16 rows 1.778 and 1.778 (about 275 steps), 8 rows 1.765 and
#   1.763 (about 515);
# - Tiny Shakespeare characters for 55 s beside two busy processes (3 to a core pair, one thread), the 1-minute
#   plan's 3 x 128, 7 paired seeds: 16 rows (320-431 steps) ended 0.014 lower than 8 (561-685 steps) on average
#   (standard error 0.008): 0.019 lower over the five pairs of 378-431 steps (0.011 higher to 0.042 lower), the
#   same (+-0.002) in the two of 320. There 8 rows read 12-22% fewer tokens a second than 16, on an idle core 6%;
# - where 16 rows make about 650 steps (the recipe's own 80 s) 8 rows were no better, and 24 (450) no different
#   from 16 (680) at 1 minute. So 300 steps: 24 rows there, 16 on the busy machine, 8 at 28 s, 4 for the 50k
#   vocabulary's minutes. (400 put the busy plan at 8 rows, which ended 0.045 above the recipe's 16)
FEW_STEPS = 300
PRIOR_BATCHES = (PRIOR_ARM[1], 16, 8, 4)
MIN_TRIAL_SECONDS = 10.0  # shorter trials rank the rates by their warm-up, not by what they learn
MIN_TRIAL_STEPS = 2 * RECIPE['warmup_iters']  # and so do trials of fewer steps than this (a slow step: no search)
ITER_LINE = re.compile(r'^iter (\d+): loss (\S+),')


def non_embedding_params(config):
    counts = param_counts(config)
    return counts['total'] - counts['wte'] - counts['wpe'] - counts['lm_head'] - counts['value_embed']


def model_config(n_layer, n_embd, vocab_size, block_size):
    """The recipe's architecture at this shape, under muP from the recipe's width."""
    keys = {k: RECIPE[k] for k in SWITCHES}
    return GPTConfig(n_layer=n_layer, n_head=N_HEAD, n_embd=n_embd, vocab_size=vocab_size, block_size=block_size,
                     mup=n_embd != BASE_WIDTH, mup_base_width=BASE_WIDTH, **keys)


PROBE_ROWS = 2  # the rows of the untimed steps that set a shape up and tell what a row costs


def measure_throughput(shape, vocab_size, device, dtype, batch_size, block_size, steps=5, seconds=1.5, threads=None,
                       log=print, deadline=math.inf):
    """Training tokens per second of the recipe at shape (n_layer, n_embd) here: the median of up to `steps` timed
    optimizer steps, at least two, fewer once they took `seconds`; on random tokens, without compile. Two untimed
    steps of PROBE_ROWS rows come first: they allocate and set up the optimizer's state, and the second tells what
    a row costs. Where a step of batch_size rows would take more than `seconds` (a large vocabulary's head, a slow
    or busy machine), the timed steps take as many rows as fit in half of it. There the rows are the work (with
    GPT-2's 50k vocabulary the head and its loss are 90% of a step), so the tokens a second are a full batch's,
    and a shape's measuring stays within a few seconds however slow its steps. (At 16 rows such a step took 4 s
    eager on a 2-core CPU, and measuring two shapes took 24 s of a 1-minute budget.) On a CPU or a CUDA GPU the
    step is optim.BareMuonAdamW, the recipe's update without torch.optim, so plan.py never loads torch's compiler
    (about 1 s of a 1-minute budget; the trials are train.py processes of their own). With threads (not None: a
    count, or 0 to choose), the threads are set before the timed steps, on this shape's step, as train.py sets
    them for its run (hardware.pick_threads), and the rows are worked out again at them: on a busy machine two
    threads can step several times slower than one. Where the probe steps end past `deadline` (time.time()), or the
    timed steps would (a vocabulary of a million ids: 10 s a probe step), the second probe step's speed is the
    answer."""
    torch.manual_seed(0)
    config = model_config(*shape, vocab_size, block_size)
    planner.check_build(config, device)  # a vocabulary of 2**32 ids: one line, not the allocator's traceback
    model = GPT(config).to(device)
    args = (RECIPE['weight_decay'], RECIPE['learning_rate'], (RECIPE['beta1'], RECIPE['beta2']))
    muon = (RECIPE['muon_lr'], RECIPE['muon_momentum'], RECIPE['muon_ns'])
    if device.split(':')[0] in ('cpu', 'cuda'):
        opt = BareMuonAdamW(model, *args, *muon)
    else:
        opt = model.configure_optimizers(*args, device.split(':')[0], 'muon', muon[0], muon[1], None, muon[2])
    ctx = hardware.autocast_context(device, dtype)

    def step(rows):  # the seconds of one optimizer step on `rows` random sequences
        def get():
            x = torch.randint(0, vocab_size, (rows, block_size + 1), device=device)
            return x[:, :-1], x[:, 1:]
        return timed_train_steps(model, opt, get, 1, ctx, device)[0]
    probe = min(PROBE_ROWS, batch_size)
    step(probe)

    def rows_that_fit():
        per_row = step(probe) / probe  # an upper bound: fixed costs too
        rows = batch_size if per_row * batch_size <= seconds else max(1, int(seconds / 2 / per_row))  # < half the batch
        return rows, per_row
    rows, per_row = rows_that_fit()
    if time.time() + 4 * rows * per_row > deadline:  # the threads' steps and the timed ones
        return block_size / per_row
    if threads is not None:
        before = torch.get_num_threads()
        if hardware.pick_threads(lambda: step(rows), threads, device, lambda line: log('  ' + line)) != before:
            rows = rows_that_fit()[0]  # at the threads picked
    times = []
    while len(times) < steps and (len(times) < 2 or sum(times) < seconds):
        times.append(step(rows))
    return rows * block_size / sorted(times)[len(times) // 2]


def compiled_tokens(shape, rate, seconds, device_type, vocab_size, block_size, max_tokens=math.inf):
    """(tokens, non-embedding parameters): what a shape measured at `rate` tokens/s eager reads in `seconds`
    compiled, at most max_tokens (a run that would read more stops there: MAX_EPOCHS), and its size, for size_fit."""
    n = non_embedding_params(model_config(*shape, vocab_size, block_size))
    return min(rate * compile_gain(device_type, shape[1], vocab_size, n) * seconds, max_tokens), n


def distance(fit):
    """How far a shape is from the size rule, for choosing: its fit, or OVERSIZE_COST times -fit for a larger one."""
    return fit if fit >= 0 else -OVERSIZE_COST * fit


def pick_shape(rates, seconds, device_type, shapes=SHAPES, vocab_size=65, block_size=128, max_tokens=math.inf):
    """The shape whose tokens per non-embedding parameter over `seconds` (at most max_tokens) is nearest
    tokens_per_param (in ratio, by distance: a larger model's counts OVERSIZE_COST times), from rates
    {shape: measured tokens/s}. Returns (shape, tokens it will see, parameters)."""
    best = None
    for shape in shapes:
        if shape not in rates:
            continue
        tokens, n = compiled_tokens(shape, rates[shape], seconds, device_type, vocab_size, block_size, max_tokens)
        d = distance(size_fit(tokens, n))
        if best is None or d < best[0]:
            best = (d, shape, tokens, n)
    return best[1:]


def measure_shapes(vocab_size, device, dtype, block_size, batch_size, seconds, deadline, shapes=SHAPES, log=print,
                   threads=0, max_tokens=math.inf):
    """Tokens/s of shapes, from the recipe's (or the largest of `shapes` below it) towards tokens_per_param over
    `seconds` (at most max_tokens): larger shapes while a shape would see more tokens per parameter than that,
    smaller ones while it would see fewer, until the ratio crosses it (the target then lies between the last two;
    shapes further on are further off), until the next shape could not fit the rule better even at its best speed,
    or past the deadline (time.time()) once one is measured. The first shape's step sets the threads for all
    (`threads`, as measure_throughput takes it). Returns {shape: tokens/s}."""
    rates, device_type, best = {}, device.split(':')[0], math.inf
    i = max((k for k, s in enumerate(shapes) if s <= RECIPE_SHAPE), default=0)
    direction = 0
    while 0 <= i < len(shapes):
        if rates and time.time() > deadline:
            log("  the measuring's share of the budget is spent; no more shapes are measured")
            break
        shape = shapes[i]
        rate = measure_throughput(shape, vocab_size, device, dtype, batch_size, block_size,
                                  threads=None if rates else threads, log=log, deadline=deadline)
        rates[shape] = rate
        tokens, n = compiled_tokens(shape, rate, seconds, device_type, vocab_size, block_size, max_tokens)
        log(f"  {shape[0]} layers x {shape[1]}: {rate:,.0f} tok/s, {n / 1e6:.2f}M parameters")
        fit = size_fit(tokens, n)
        best = min(best, distance(fit))
        step = 1 if fit > 0 else -1
        if best <= 0 or (direction and step != direction):  # nothing can beat it, or the target lies behind
            break
        direction = step
        i += step
        # the next shape is larger (smaller) in every dimension, so it reads at most (at least) this one's tokens a
        # second: where even that bound puts it further from the rule than the best so far, it cannot win, and
        # measuring it would only spend the budget
        if 0 <= i < len(shapes):
            bound = size_fit(*compiled_tokens(shapes[i], rate, seconds, device_type, vocab_size, block_size,
                                              max_tokens))
            if step * bound < 0 and distance(bound) > best:
                break
    return rates


def schedule(n_arms, share_seconds, overhead):
    """(arms, first rung's seconds) for successive halving within share_seconds: each rung halves the arms and
    doubles their time; every trial also costs `overhead` seconds of start-up. The most arms that fit at
    MIN_TRIAL_SECONDS, then the longest first rung; (0, 0) when not even two arms fit."""
    def cost(n, t):
        total, k = 0.0, 0
        while n >= 1:
            total += n * (t * 2 ** k + overhead)
            if n == 1:
                break
            n, k = math.ceil(n / 2), k + 1
        return total
    for n in range(n_arms, 1, -1):
        if cost(n, MIN_TRIAL_SECONDS) <= share_seconds:
            # the cost grows linearly with t: the longest whole second that fits, solved (a loop adding a second at
            # a time took minutes for a budget of years, and never ended for 1e300 minutes)
            fixed, per_second = cost(n, 0), cost(n, 1) - cost(n, 0)
            return n, float(max(MIN_TRIAL_SECONDS, math.floor((share_seconds - fixed) / per_second + 1e-9)))
    return 0, 0.0


def prior_batch(tokens, block_size):
    """The batch of a run without a search that will read about `tokens`: the largest of PRIOR_BATCHES that still
    gives FEW_STEPS optimizer steps, else the smallest."""
    return next((b for b in PRIOR_BATCHES if tokens / (b * block_size) >= FEW_STEPS), PRIOR_BATCHES[-1])


def arm_keys(arm, n_layer, block_size, width):
    """train.py's keys for an arm at this width: the recipe's, its rates times the arm's multiple, under muP."""
    lr_mult, batch = arm
    return dict(RECIPE, muon_lr=RECIPE['muon_lr'] * lr_mult, learning_rate=RECIPE['learning_rate'] * lr_mult,
                batch_size=batch, block_size=block_size, n_layer=n_layer, n_head=N_HEAD, n_embd=width,
                mup=width != BASE_WIDTH, mup_base_width=BASE_WIDTH)


class Trial:
    """One `python train.py` run of an arm for a number of seconds: its val loss and its (seconds, train loss)."""

    def __init__(self, number, arm, seconds):
        self.number, self.arm, self.seconds = number, arm, seconds
        self.val_loss, self.curve, self.wall, self.iters, self.error = None, [], 0.0, 0, None

    def describe(self):
        return f"lr x{self.arm[0]:g}, batch {self.arm[1]}"


class TrialBar:
    """The progress bar of a running trial, on stdout: its seconds of training so far (from its first logged step)
    out of trial.seconds, and its latest train loss. run_trial's on_progress calls it; close() clears the line."""

    def __init__(self, trial, enabled=True, file=None):
        from tqdm import tqdm
        self.bar = tqdm(total=trial.seconds, desc=f'    trial {trial.number}', leave=False, disable=not enabled,
                        file=file or sys.stdout, bar_format='{desc} |{bar:30}| {n:.0f}/{total:.0f} s{postfix}')

    def __call__(self, trial):
        start, (now, loss) = trial.curve[0][0], trial.curve[-1]
        self.bar.n = min(now - start, trial.seconds)
        self.bar.set_postfix_str(f'train loss {loss:.3f}', refresh=False)
        self.bar.refresh()

    def close(self):
        self.bar.close()


def run_trial(trial, keys, dataset, device, dtype, work_dir, on_progress=None):
    """Run train.py for the trial (no compile, the time schedule over trial.seconds, scored at the end); fills
    in the trial. A trial that fails keeps its last lines in trial.error instead of stopping the search."""
    out_dir = os.path.join(work_dir, f'trial{trial.number:02d}')
    args = {**keys, 'dataset': dataset, 'device': device, 'dtype': dtype, 'compile': False, 'out_dir': out_dir,
            'max_seconds': trial.seconds, 'lr_schedule': 'time', 'max_iters': 10 ** 9, 'eval_interval': 10 ** 9,
            'eval_iters': 8, 'eval_full': False, 'timed_eval': False, 'always_save_checkpoint': False,
            'log_interval': 5, 'overwrite': True}
    cmd = [sys.executable, os.path.join(REPO, 'train.py'), *[f'--{k}={v}' for k, v in args.items()]]
    t0 = time.time()
    lines = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'))
    try:
        for line in proc.stdout:
            lines.append(line.rstrip())
            m = ITER_LINE.match(line)
            if m:
                trial.iters = int(m.group(1))
                trial.curve.append((time.time() - t0, float(m.group(2))))
                if on_progress:
                    on_progress(trial)
        code = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: the run is ours and its folder a scratch one
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    trial.wall = time.time() - t0
    metrics = os.path.join(out_dir, 'metrics.jsonl')
    records = []
    if code == 0 and os.path.exists(metrics):
        with open(metrics) as f:  # the evaluations, not the start record
            records = [r for r in map(json.loads, filter(str.strip, f)) if 'val_loss' in r]
    if records and math.isfinite(records[-1]['val_loss']):
        trial.val_loss = records[-1]['val_loss']
    else:
        trial.error = ' | '.join(lines[-3:]) or f'exit code {code}'
    return trial


def successive_halving(arms, first_seconds, share_seconds, started, run, overhead, trials=None, log=print):
    """Halve the arms by val loss, doubling their time, until one is left; a trial that would end past
    `started + share_seconds` (by its seconds and the start-up the last trial took, `overhead` before the
    first) is not started. Each trial is appended to `trials` as it ends, so an interrupted search keeps
    them. Returns (all trials, best arm)."""
    trials = [] if trials is None else trials
    alive, seconds = list(arms), first_seconds
    while alive:
        rung = []
        for arm in alive:
            expected = seconds + overhead
            if time.time() + expected > started + share_seconds:
                log(f"  the search's share of the budget is spent; stopping before {len(alive) - len(rung)} trial(s)")
                alive = []
                break
            trial = run(Trial(len(trials) + 1, arm, seconds))
            trials.append(trial)
            rung.append(trial)
            overhead = max(0.0, trial.wall - seconds)
        scored = sorted((t for t in rung if t.val_loss is not None), key=lambda t: t.val_loss)
        if not alive or len(scored) <= 1:
            break
        alive = [t.arm for t in scored[:math.ceil(len(scored) / 2)]]
        if len(alive) == 1:
            break
        seconds *= 2
    scored = [t for t in trials if t.val_loss is not None]
    if not scored:
        return trials, None
    # the winner: the best of the longest rung anyone finished
    longest = max(t.seconds for t in scored)
    return trials, min((t for t in scored if t.seconds == longest), key=lambda t: t.val_loss).arm


def trials_table(trials):
    rows = ["trial  seconds  candidate               iters  val loss   wall s"]
    for t in trials:
        loss = f"{t.val_loss:.4f}" if t.val_loss is not None else f"failed: {(t.error or '')[:60]}"
        rows.append(f"{t.number:5d}  {t.seconds:7.0f}  {t.describe():22s}  {t.iters:5d}  {loss:8s}  {t.wall:6.1f}")
    return '\n'.join(rows)


def plot_trials(trials, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for t in trials:
        if t.curve:
            xs, ys = zip(*t.curve)
            ax.plot(xs, ys, label=f"{t.number}: {t.describe()}, {t.seconds:g} s")
    ax.set_xlabel('seconds since the trial started')
    ax.set_ylabel('train loss')
    ax.set_title('plan.py: the search, loss against time per trial')
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        fileio.write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format='png'))
    finally:
        plt.close(fig)
