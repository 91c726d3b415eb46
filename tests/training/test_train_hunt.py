"""train.py on tiny runs in this process: the warmup under lr_schedule='time', eval_only leaving the run's
records alone, and a resumed run not counting its first evaluation (the one its checkpoint already counted)
toward early stopping."""

import json
import os

import pytest
import torch

from conftest import FUZZ_TINY, run_inprocess


def train(char_data, out, *args):
    code, stdout, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={out}', *FUZZ_TINY,
                                      '--threads=1', *args)
    assert code == 0, err
    return stdout


def test_a_time_schedule_warms_up_as_the_iteration_schedule_does(char_data, tmp_path):
    out = tmp_path / 'run'
    train(char_data, out, '--lr_schedule=time', '--max_seconds=600', '--max_iters=3', '--warmup_iters=10',
          '--learning_rate=1e-3', '--min_lr=0', '--warmdown_frac=0', '--log_interval=1', '--eval_interval=1000')
    with open(out / 'metrics.jsonl') as f:
        lrs = {r['iter'] - 1: r['lr'] for r in map(json.loads, f) if r.get('kind') == 'train'}
    # step n trains at (n + 1) / (warmup_iters + 1) of the rate, times the cosine of the share of 600 s spent
    # (a few seconds: within 0.1% of 1): 1e-3 / 11, 2e-3 / 11, 3e-3 / 11
    assert sorted(lrs) == [0, 1, 2]
    for n in range(3):
        assert lrs[n] == pytest.approx(1e-3 * (n + 1) / 11, rel=1e-3), lrs


def test_eval_only_writes_no_metrics_into_a_run(char_data, tmp_path):
    out = tmp_path / 'run'
    train(char_data, out, '--max_iters=2', '--eval_interval=2')
    before = (out / 'metrics.jsonl').read_bytes()
    stdout = train(char_data, out, '--init_from=resume', '--eval_only=True')
    assert 'val loss' in stdout
    assert (out / 'metrics.jsonl').read_bytes() == before
    # and a model that is not resumed (from scratch here, gpt2 say), evaluated into a folder that exists: the
    # folder is left empty
    fresh = tmp_path / 'fresh'
    fresh.mkdir()
    train(char_data, fresh, '--eval_only=True')
    assert os.listdir(fresh) == []


def test_a_resumed_run_does_not_count_its_first_evaluation_again(char_data, tmp_path):
    # a learning rate of 0 leaves the weights, and so the (seeded) val loss, exactly as they were: every eval after
    # the first is one without improvement. Evals at 0 (improves on infinity), 2 (1 without) and, resumed, 2
    # again (already counted) and 4 (2 without)
    out = tmp_path / 'run'
    fixed = ['--learning_rate=0', '--decay_lr=False', '--eval_interval=2', '--dropout=0']
    train(char_data, out, *fixed, '--max_iters=2')
    ckpt = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
    assert ckpt['iter_num'] == 2 and ckpt['evals_without_improvement'] == 1
    train(char_data, out, *fixed, '--max_iters=4', '--init_from=resume')
    ckpt = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
    assert ckpt['iter_num'] == 4 and ckpt['evals_without_improvement'] == 2
