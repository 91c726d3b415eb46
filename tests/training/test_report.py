"""core/training/report.py: the start-up summary and the speed of each window."""

import time

import pytest

from core.training import planner, report
from model import GPT, GPTConfig


def test_plan_lines_count_tokens_and_flops():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=64))
    lines = report.plan_lines(model, tokens_per_iter=256, max_iters=10, world_size=2, accumulation=4, batch_size=2,
                              block_size=16, peak_desc='a test peak',
                              memory_plan=lambda b, a: planner.estimate_training_memory(model.config, b, 16))
    text = '\n'.join(lines)
    assert 'tokens per iteration: 256 (2 processes x 4 micro-steps x 2 x 16)' in text
    assert 'tokens planned: 2,560 over 10 iterations' in text
    assert 'MFU measured against a test peak' in text and 'memory estimate per process:' in text


def test_speedometer_measures_each_window(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, 'time', lambda: now[0])
    speed = report.Speedometer(tokens_per_iter=1000, mfu_of=lambda tok_s: tok_s / 1e5)
    speed.add(1000)
    speed.add(1000)
    now[0] += 0.5
    dt, tok_s, mfu = speed.read()
    assert (dt, tok_s, mfu) == (0.25, 4000, 0.04) and speed.mfu_text() == 'mfu n/a'  # the first window: warm-up
    speed.add(1000)
    now[0] += 0.1
    assert speed.read()[1] == pytest.approx(10000) and speed.mfu_text() == 'mfu 10.0%'
    speed.restart()
    speed.add(1000)
    now[0] += 1.0
    speed.read()
    assert speed.running_mfu == pytest.approx(0.9 * 0.1 + 0.1 * 0.01)


def test_a_timed_run_is_planned_in_its_budget():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=64))
    plan = lambda b, a: planner.estimate_training_memory(model.config, b, 16)
    text = '\n'.join(report.plan_lines(model, 2048, 1_000_000, 1, 1, 8, 16, 'p', plan, max_seconds=120))
    assert 'time budget: 2 min of training (max_seconds); as many iterations as fit' in text
    assert '1,000,000' not in text and 'in all' not in text and 'tokens planned' not in text
    text = '\n'.join(report.plan_lines(model, 2048, 500, 1, 1, 8, 16, 'p', plan, max_seconds=90))
    assert 'time budget: 1 min 30 s of training (max_seconds); as many iterations as fit, at most 500' in text
    assert [report.format_duration(s) for s in (45.5, 60, 3600, 3725)] == ['45.5 s', '1 min', '1 h', '1 h 2 min 5 s']
