"""The memory checks around training, each against a figure worked out here: the build check's fp32 weights, the
2x margin before a run is refused, and the DDP buckets of a LoRA run."""

import pytest

from core.errors import UserError
from core.training import memory, planner
from model import GPT, GPTConfig


def small_config():
    return GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32, bias=False)


def test_check_build_needs_four_bytes_a_parameter(monkeypatch):
    cfg = small_config()
    n = sum(p.numel() for p in GPT(cfg).parameters())  # counted on a built model, tied head once
    monkeypatch.setattr(planner, 'device_budget', lambda device: 3 * n)  # room for fp16, not for fp32 weights
    with pytest.raises(UserError, match='its weights alone need'):
        planner.check_build(cfg)
    monkeypatch.setattr(planner, 'device_budget', lambda device: 4 * n)
    assert planner.check_build(cfg) == 4 * n


def test_check_fits_refuses_only_past_twice_the_budget():
    plan_of = lambda total: (lambda b, a: {'total': total})  # noqa: E731
    memory.check_fits(plan_of(150), 4, 16, 1, 100, 'cpu', 1)  # over the budget but within 2x: the run tries
    memory.check_fits(plan_of(200), 4, 16, 1, 100, 'cpu', 1)
    with pytest.raises(UserError, match='this run would run out of memory'):
        memory.check_fits(plan_of(201), 4, 16, 1, 100, 'cpu', 1)
    memory.check_fits(plan_of(10 ** 9), 4, 16, 1, 0, 'cpu', 1)  # no budget known: nothing to check


def test_ddp_buckets_of_a_lora_run_hold_the_adapters_gradients_only():
    from core.training import lora
    cfg = small_config()
    model = GPT(cfg)
    lora.add(model, rank=4, alpha=8, targets='attn')
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    plan = planner.estimate_training_memory(cfg, 2, 16, ddp=True, lora=(4, 'attn'))
    assert plan['moments']['optimizer step']['ddp_buckets'] == 4 * trainable
    full = planner.estimate_training_memory(cfg, 2, 16, ddp=True)
    assert full['moments']['optimizer step']['ddp_buckets'] == 4 * sum(p.numel() for p in GPT(cfg).parameters())
