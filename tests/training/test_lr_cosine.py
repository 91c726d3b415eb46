"""train.py's default schedule (warmdown_frac=0): linear warmup, then a cosine from learning_rate down to min_lr
at lr_decay_iters, held there after. Checked step by step against nanoGPT's get_lr, written out here."""

import json
import math
import os

import pytest

from conftest import TINY, run_script

LR, MIN_LR, WARMUP, DECAY, ITERS = 1e-3, 1e-4, 3, 13, 16


def nanogpt_get_lr(it):
    # karpathy/nanoGPT train.py get_lr
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    if it > DECAY:
        return MIN_LR
    decay_ratio = (it - WARMUP) / (DECAY - WARMUP)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return MIN_LR + coeff * (LR - MIN_LR)


def test_default_cosine_schedule_is_nanogpts(char_data, tmp_path):
    out = str(tmp_path / 'run')
    args = [a for a in TINY if not a.startswith(('--warmup_iters', '--learning_rate'))]
    r = run_script('train.py', f'--dataset={char_data}', f'--out_dir={out}', *args, f'--max_iters={ITERS}',
                   f'--warmup_iters={WARMUP}', f'--lr_decay_iters={DECAY}', f'--learning_rate={LR}',
                   f'--min_lr={MIN_LR}', '--eval_interval=1000', '--log_interval=1')
    assert r.returncode == 0, r.stderr
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        steps = [rec for rec in map(json.loads, f) if rec.get('kind') == 'train']
    # the record of 'iter n' carries the learning rate step n-1 was taken with
    got = {rec['iter'] - 1: rec['lr'] for rec in steps}
    assert sorted(got) == list(range(ITERS))
    for it in range(ITERS):
        assert got[it] == pytest.approx(nanogpt_get_lr(it), rel=1e-9, abs=1e-15), it
    # the shape itself: rising through the warmup, falling after it, min_lr from lr_decay_iters on
    assert got[WARMUP] == pytest.approx(LR) and got[DECAY] == pytest.approx(MIN_LR)
    assert all(got[i + 1] < got[i] for i in range(WARMUP, DECAY))
