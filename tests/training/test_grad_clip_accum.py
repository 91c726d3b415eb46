"""train.py's step: with gradient accumulation the loss it logs is the mean over the micro-steps (at init about
ln(vocabulary), whatever the number of micro-steps), and grad_clip bounds the gradient the optimizer sees: clipped
to almost nothing, AdamW's update g / (sqrt(v) + eps) is almost nothing too, so the model does not move."""

import json
import math

from conftest import TINY, run_inprocess


def records(out):
    with open(out / 'metrics.jsonl') as f:
        return [json.loads(line) for line in f]


def vocab_of(data):
    with open(f'{data}/meta.json') as f:
        return json.load(f)['vocab_size']


def test_the_logged_loss_is_the_mean_over_micro_steps(char_data, tmp_path):
    out = tmp_path / 'out'
    code, _, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={out}', *TINY, '--max_iters=1',
                                 '--gradient_accumulation_steps=4', '--eval_interval=100')
    assert code == 0, err[-2000:]
    (first,) = [r for r in records(out) if r.get('kind') == 'train']
    # weights drawn at std 0.02 give nearly uniform predictions: a loss of about ln(vocabulary) per token
    assert abs(first['train_loss'] - math.log(vocab_of(char_data))) < 0.05, first


def test_grad_clip_bounds_the_update(char_data, tmp_path):
    out = tmp_path / 'out'
    code, _, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={out}', *TINY, '--max_iters=3',
                                 '--eval_interval=3', '--grad_clip=1e-12', '--weight_decay=0', '--warmup_iters=0',
                                 '--learning_rate=1e-2')
    assert code == 0, err[-2000:]
    evals = [r for r in records(out) if 'val_loss' in r]
    assert [r['iter'] for r in evals] == [0, 3]
    # the same val batches at both evals (a fixed seed): unclipped, three steps at this rate take about 0.2 off
    assert abs(evals[1]['val_loss'] - evals[0]['val_loss']) < 1e-3, evals
