"""Watching a run, at its edges: a self-hosted wandb login, the order layers are listed in past ten blocks, the update
ratio of the one step before an evaluation only, and MFU logged to wandb in percent at evals as at
steps."""

import pytest
import torch

from core.training import tracking
from core.training.metrics import Wandb
from model import GPT, GPTConfig


def test_a_login_to_the_server_of_wandb_base_url_counts(tmp_path, monkeypatch):
    # `wandb login --host https://wandb.example.org` writes a netrc entry for that host, not for api.wandb.ai
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    monkeypatch.setenv('NETRC', str(tmp_path / 'netrc'))
    (tmp_path / 'netrc').write_text('machine wandb.example.org\n  login user\n  password 0123456789abcdef\n')
    monkeypatch.delenv('WANDB_BASE_URL', raising=False)
    assert not tracking.logged_in()
    monkeypatch.setenv('WANDB_BASE_URL', 'https://wandb.example.org:8443')
    assert tracking.logged_in()


def test_layers_sort_by_depth_past_ten_blocks():
    # embeddings first, then blocks by their number (h.2 before h.10, which a string sort reverses), then the rest
    names = ['ln_f', 'h.10', 'h.2', 'wpe', 'h.0', 'wte', 'h.11', 'h.1']
    assert sorted(names, key=tracking.layer_rank) == ['wte', 'wpe', 'h.0', 'h.1', 'h.2', 'h.10', 'h.11', 'ln_f']


def test_an_evaluation_records_the_update_ratio_of_the_step_before_it_only():
    # train.py calls before_clip(due) and after_step() each step and record() at each evaluation; an evaluation with
    # no due step before it (a resumed run's first, one the time budget ends on) has no update ratios to report
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=8))
    health = tracking.Health(model, on=True)
    idx = torch.zeros(1, 8, dtype=torch.long)

    def grow(factor):
        with torch.no_grad():
            for p in model.transformer.h[0].parameters():
                p.mul_(factor)
    health.before_clip(due=True)
    grow(1.1)  # the step before the eval: every weight of block 0 grows by 10%
    health.after_step()
    first = health.record(idx, torch.no_grad())
    assert first['update_ratio/h.0'] == pytest.approx(0.1, rel=1e-5)
    for _ in range(3):  # steps with no evaluation after them
        health.before_clip(due=False)
        grow(1.5)
        health.after_step()
    second = health.record(idx, torch.no_grad())
    assert not [k for k in second if k.startswith(('update_ratio/', 'grad_norm/'))], second
    assert 'act_rms/h.0' in second


class Run:
    """Stands in for a wandb run: what log() was given."""

    def __init__(self):
        self.logged = []

    def log(self, data, step):
        self.logged.append((step, data))


def test_mfu_goes_to_wandb_in_percent_at_evaluations_as_at_steps():
    w = Wandb(on=False)
    w.run = Run()
    w.log_step(10, loss=2.0, lr=1e-3, tok_s=1000.0, grad_norm=0.5, mfu=0.25)
    w.log_eval({'iter': 10, 'tokens': 640, 'train_loss': 2.0, 'val_loss': 2.1, 'lr': 1e-3}, mfu=0.25)
    assert [(step, data['mfu']) for step, data in w.run.logged] == [(10, 25.0), (10, 25.0)]
    w.log_eval({'iter': 20, 'tokens': 1280, 'train_loss': 2.0, 'val_loss': 2.1, 'lr': 1e-3}, mfu=-1.0)
    assert 'mfu' not in w.run.logged[-1][1]  # not known yet: left out, not logged as a negative percentage
