"""core/bench/timing.py's matmul_shape_rate counts the FLOPs of this model's own matmuls: each Linear's forward and
its two backward products (2 * N * fan_in * fan_out each), per layer, the head once, and fused attention forward
and backward (3 x 4 * B * T^2 * C per layer). A clock that advances one second per reading makes every timed
kernel take one second, so the rates it returns are FLOPs over kernel counts, written out here."""

import itertools

import pytest

from core.bench import timing
from model import GPTConfig


@pytest.mark.parametrize('mlp', ['gelu', 'swiglu'])
def test_shape_rate_counts_each_linear_three_times_the_head_once_and_attention(monkeypatch, mlp):
    clock = itertools.count()
    monkeypatch.setattr(timing.time, 'perf_counter', lambda: float(next(clock)))
    L, C, V, B, T = 2, 16, 40, 2, 8
    cfg = GPTConfig(n_layer=L, n_head=2, n_embd=C, block_size=T, vocab_size=V, mlp=mlp)
    H = cfg.mlp_hidden
    fc_out = 2 * H if mlp == 'swiglu' else H  # swiglu's c_fc makes the gate and the value in one matrix
    N = B * T
    shapes = [(C, 3 * C, L), (C, C, L), (C, fc_out, L), (H, C, L), (C, V, 1)]  # (fan_in, fan_out, how many)
    linear_flops = sum(3 * 2 * N * i * o * n for i, o, n in shapes)
    linear_kernels = sum(3 * n for _, _, n in shapes)
    attention_flops, attention_kernels = L * 3 * 4 * B * T * T * C, L
    every, linear, attention = timing.matmul_shape_rate(cfg, B, T, 'cpu', n_reps=1)
    assert linear == pytest.approx(linear_flops / linear_kernels)
    assert attention == pytest.approx(attention_flops / attention_kernels)
    assert every == pytest.approx((linear_flops + attention_flops) / (linear_kernels + attention_kernels))
