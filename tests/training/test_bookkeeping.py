"""train.py's bookkeeping against a hand-built sequence of evaluations: the val losses are scripted (the
model's eval-mode loss is replaced, call by call), so which evaluation improves, when early stopping
fires, what best.pt holds and what a resumed run remembers are all known in advance. Also: the run
lock is held until the last file of a run is written."""

import fcntl
import json
import os

import pytest
import torch

from conftest import run_inprocess
from core import fileio
from core.training import checkpoint
import model as model_lib

BASE = ['--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16', '--batch_size=2',
        '--gradient_accumulation_steps=1', '--eval_iters=1', '--eval_interval=2', '--log_interval=1',
        '--warmup_iters=0', '--learning_rate=1e-3', '--device=cpu', '--compile=False', '--seed=3', '--dropout=0']


def scripted(monkeypatch, val_losses):
    """Each evaluation (eval_iters=1: one train batch, then one val batch) reports the next scripted val loss."""
    real = getattr(model_lib.GPT.forward, 'unscripted', model_lib.GPT.forward)  # a second run in one test
    calls = []

    def forward(self, idx, targets=None, **kw):
        logits, loss = real(self, idx, targets, **kw)
        if not self.training and targets is not None:
            calls.append(1)
            if len(calls) % 2 == 0:
                loss = torch.tensor(val_losses.pop(0))
        return logits, loss
    forward.unscripted = real
    monkeypatch.setattr(model_lib.GPT, 'forward', forward)


def train(monkeypatch, val_losses, *args):
    scripted(monkeypatch, list(val_losses))
    code, out, err = run_inprocess('train.py', *BASE, *args)
    assert code == 0, err + out
    return out


def evals(out_dir):
    with open(os.path.join(out_dir, 'metrics.jsonl')) as f:
        return [(r['iter'], r['val_loss']) for r in map(json.loads, f) if 'val_loss' in r]  # evaluation records


def test_best_checkpoint_and_early_stopping_follow_the_evaluations(char_data, tmp_path, monkeypatch):
    out = str(tmp_path / 'run')
    # evals at 0 2 4 6 8 10 12: improve, improve, worse (1 without), improve (back to 0), then worse three times
    vals = [5.0, 4.0, 4.5, 3.0, 3.5, 3.25, 3.125]  # exact in float32
    stdout = train(monkeypatch, vals, f'--dataset={char_data}', f'--out_dir={out}', '--max_iters=40',
                   '--early_stop_patience=3')
    assert evals(out) == list(zip(range(0, 13, 2), vals))
    assert 'early stop: val loss has not improved for 3 evaluations' in stdout
    best, latest = (checkpoint.load(os.path.join(out, n)) for n in ('best.pt', 'ckpt.pt'))
    assert (best['iter_num'], best['best_val_loss']) == (6, 3.0)  # written at 6, and never after
    assert (latest['iter_num'], latest['best_val_loss'], latest['evals_without_improvement']) == (12, 3.0, 3)


def test_a_resumed_run_remembers_its_best_and_its_count(char_data, tmp_path, monkeypatch):
    out = str(tmp_path / 'run')
    common = [f'--dataset={char_data}', f'--out_dir={out}', '--early_stop_patience=3']
    train(monkeypatch, [5.0, 4.0, 4.5, 3.0, 3.5], *common, '--max_iters=8')
    first = checkpoint.load(os.path.join(out, 'ckpt.pt'))
    assert (first['iter_num'], first['best_val_loss'], first['evals_without_improvement']) == (8, 3.0, 1)
    # resumed: iteration 8 is evaluated again (3.5, not counted), then 10 and 12 do not beat 3.0 either;
    # with the count of 1 carried over the third evaluation without improvement is at 12
    stdout = train(monkeypatch, [3.5, 3.25, 3.375, 3.625, 3.75], *common, '--init_from=resume', '--max_iters=40')
    assert evals(out) == [(0, 5.0), (2, 4.0), (4, 4.5), (6, 3.0), (8, 3.5), (10, 3.25), (12, 3.375)]
    assert 'early stop: val loss has not improved for 3 evaluations' in stdout
    best, latest = (checkpoint.load(os.path.join(out, n)) for n in ('best.pt', 'ckpt.pt'))
    assert (best['iter_num'], best['best_val_loss']) == (6, 3.0)
    assert (latest['iter_num'], latest['best_val_loss']) == (12, 3.0)


def lock_is_held(out_dir):
    """What the kernel says: another open file description cannot take the run lock's flock."""
    path = os.path.join(out_dir, 'run.lock')
    if not os.path.exists(path):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # which also drops the flock this test may just have taken
    return False


@pytest.mark.skipif(not hasattr(fcntl, 'flock'), reason='needs flock')
def test_the_run_lock_is_held_until_the_last_file_is_written(char_data, tmp_path, monkeypatch):
    base, out = str(tmp_path / 'base'), str(tmp_path / 'lora')
    train(monkeypatch, [5.0, 4.0], f'--dataset={char_data}', f'--out_dir={base}', '--max_iters=2')
    written = []
    real = fileio.commit

    def commit(tmp, path):
        real(tmp, path)
        if os.path.dirname(os.path.abspath(path)) == os.path.abspath(out):
            written.append((os.path.basename(path), lock_is_held(out)))
    monkeypatch.setattr(fileio, 'commit', commit)
    # a LoRA run that merges its adapters: merged.pt is the last file it writes
    train(monkeypatch, [5.0, 4.0], f'--dataset={char_data}', f'--out_dir={out}', f'--init_from={base}',
          '--lora_rank=2', '--merge_lora=True', '--max_iters=2')
    names = [n for n, _ in written]
    assert names[-1] == 'merged.pt' and 'ckpt.pt' in names and 'best.pt' in names
    assert all(held for _, held in written), written
    assert not lock_is_held(out)  # and released at the end
