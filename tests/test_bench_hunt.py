"""bench.py's figures and refusals, and core/bench/reference.py's plain GPT and its paired timing, with the step
timer faked so the figures are known in advance: tokens per iteration, the median and the fastest iteration, the
MFU of each, which optimizer and compile the timed steps get, and the reference's order, precision and ratio."""

import json
import math
from contextlib import nullcontext

import pytest
import torch

from conftest import assert_one_error_line, run_inprocess
from core.bench import reference, timing
from model import GPTConfig

TINY = ['--device=cpu', '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=16', '--vocab_size=50',
        '--batch_size=2', '--breakdown=False', '--shape_peak=False', '--json=True']


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize('args, words', [
    (['--sample=True', '--sample_tokens=0'], 'sample_tokens must be at least 1'),
    (['--sample=True', '--sample_batch=0'], 'sample_batch must be at least 1'),
    (['--gradient_accumulation_steps=0'], 'gradient_accumulation_steps must be positive'),
])
def test_zero_tokens_rows_or_micro_steps_are_refused_in_one_line(monkeypatch, args, words):
    from core.bench import generate
    fake_steps(monkeypatch, [])  # were they taken, nothing is timed for long
    monkeypatch.setattr(generate, 'run_sample', lambda *a, **k: ({}, True))
    code, out, err = run_inprocess('bench.py', *TINY, '--reference=False', '--peak_tflops=1', '--iters=1',
                                   '--warmup_iters=1', *args)
    assert_one_error_line(code, err, words)


def fake_steps(monkeypatch, seen):
    """Timed steps recording the optimizer: four timed iterations take 10, 30, 20, 40 ms, any other count 20 ms each."""
    def steps(model, opt, get_batch, n, ctx, device, accum=1, grad_clip=1.0):
        seen.append(opt)
        return [0.010, 0.030, 0.020, 0.040] if n == 4 else [0.020] * n
    monkeypatch.setattr(timing, 'timed_train_steps', steps)
    monkeypatch.setattr(timing, 'warm_kernels', lambda *a, **k: None)


def test_the_figures_count_every_micro_step_and_keep_the_fastest_iteration_apart(monkeypatch):
    seen = []
    fake_steps(monkeypatch, seen)
    code, out, err = run_inprocess('bench.py', *TINY, '--gradient_accumulation_steps=3', '--iters=4',
                                   '--warmup_iters=1', '--reference=False', '--peak_tflops=1')
    assert code == 0, err
    r = last_json(out)
    # 2 rows x 16 tokens x 3 micro-steps = 96 tokens an iteration; times 10, 30, 20, 40 ms: median 25, fastest 10
    assert r['tokens_per_iter'] == 96
    assert r['ms_per_iter'] == pytest.approx(25.0) and r['ms_per_iter_fastest'] == pytest.approx(10.0)
    assert r['tokens_per_sec'] == pytest.approx(96 / 0.025)
    # the MFU is proportional to tokens/s: the fastest iteration's is 25 / 10 = 2.5 times the median's
    assert r['mfu_fastest'] / r['mfu'] == pytest.approx(2.5)


def test_optimizer_muon_times_muon(monkeypatch):
    from core.training.optim import Muon
    seen = []
    fake_steps(monkeypatch, seen)
    code, out, err = run_inprocess('bench.py', *TINY, '--optimizer=muon', '--iters=4', '--warmup_iters=1',
                                   '--reference=False', '--peak_tflops=1')
    assert code == 0, err
    assert seen and all(any(isinstance(o, Muon) for o in getattr(opt, 'optimizers', [opt])) for opt in seen)


def test_an_eager_benchmark_times_the_reference_eager_too(monkeypatch):
    given = []

    def compare(cfg, ours, ours_opt, get_batch, ctx, dev, compile_mode, *rest):
        given.append((compile_mode, ours))
        return {}, 'reference faked'
    monkeypatch.setattr(reference, 'compare', compare)
    seen = []
    fake_steps(monkeypatch, seen)
    code, out, err = run_inprocess('bench.py', *TINY, '--compile=False', '--iters=4', '--warmup_iters=1',
                                   '--reference=True', '--peak_tflops=1')
    assert code == 0, err
    assert len(given) == 1 and given[0][0] is None  # no compile_mode: eager
    assert not hasattr(given[0][1], '_orig_mod')  # and ours was not compiled either


def test_sample_exits_1_when_cached_and_uncached_generation_differ(monkeypatch):
    from core.bench import generate
    monkeypatch.setattr(generate, 'run_sample', lambda *a, **k: ({}, False))
    code, out, err = run_inprocess('bench.py', '--device=cpu', '--sample=True', '--sample_tokens=2', '--json=True')
    assert code == 1


def test_the_memory_plan_counts_the_adapters_of_every_lora_target():
    def planned(targets):
        code, out, err = run_inprocess('bench.py', '--device=cpu', '--report=True', '--json=True', '--lora_rank=8',
                                       f'--lora_targets={targets}')
        assert code == 0, err
        return last_json(out)['memory_plan']
    attn, both = planned('attn'), planned('attn,mlp')
    # the mlp's adapters (rank 8 on c_fc 128 -> 512 and c_proj 512 -> 128 in each of 4 layers) add weights,
    # gradients and AdamW moments the attention-only plan does not have
    assert both['total'] > attn['total']


# --- core/bench/reference.py


def test_the_residual_projections_start_at_gpt2s_depth_scaled_std():
    # GPT-2's init: 0.02 / sqrt(2 x n_layer) for c_proj, 0.02 / sqrt(16) = 0.005 at 8 layers; 0.02 elsewhere
    torch.manual_seed(0)
    m = reference.PlainGPT(GPTConfig(n_layer=8, n_head=2, n_embd=64, block_size=8, vocab_size=50, bias=False))
    proj = torch.cat([p.flatten() for n, p in m.named_parameters() if n.endswith('c_proj.weight')])
    fc = torch.cat([p.flatten() for n, p in m.named_parameters() if n.endswith('c_fc.weight')])
    assert proj.std().item() == pytest.approx(0.005, rel=0.03)
    assert fc.std().item() == pytest.approx(0.02, rel=0.03)


def test_the_reference_decays_every_matrix_and_nothing_else():
    m = reference.PlainGPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11, bias=True))
    decay, no_decay = m.configure_optimizers(0.1, 6e-4, (0.9, 0.95)).param_groups
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    # the tied embedding and head once, positions, and per block c_attn, attn c_proj, c_fc, mlp c_proj: 2 + 2 x 4
    assert len(decay['params']) == 10 and all(p.dim() == 2 for p in decay['params'])
    # per block two LayerNorms (weight, bias) and four Linear biases, and ln_f's two: 2 x 8 + 2
    assert len(no_decay['params']) == 18 and all(p.dim() == 1 for p in no_decay['params'])


def test_settings_left_off_do_not_rule_the_reference_out():
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11)
    assert reference.unsupported(cfg, lora_rank=0, chunked_ce=False, activation_checkpointing=False) == []
    assert reference.unsupported(cfg, lora_rank=4, chunked_ce=False) == ['lora_rank=4']


def test_compare_alternates_who_goes_first_runs_the_reference_in_fp32_on_a_cpu_and_divides_right(monkeypatch):
    # ours takes 10 ms a step, the reference 30 ms: 3x, and 64 tokens an iteration
    runs = []

    def steps(model, opt, get_batch, n, ctx, device, accum=1, grad_clip=1.0):
        who = 'ours' if model is ours else 'reference'
        runs.append((who, n, ctx))
        return [0.010 if who == 'ours' else 0.030] * n
    monkeypatch.setattr(timing, 'timed_train_steps', steps)
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11)
    ours, ours_ctx = object(), object()
    figures, line = reference.compare(cfg, ours, None, None, ours_ctx, 'cpu', None, 2, 4, 1, 64)
    assert runs[0][:2] == ('reference', 2)  # its warm-up
    assert [who for who, n, _ in runs[1:]] == ['ours', 'reference', 'reference', 'ours', 'ours', 'reference',
                                              'reference', 'ours']
    assert all(ctx is ours_ctx for who, _, ctx in runs if who == 'ours')
    assert all(isinstance(ctx, nullcontext) for who, _, ctx in runs if who == 'reference')
    assert figures['speedup_vs_reference'] == pytest.approx(3.0)
    assert figures['reference_ms_per_iter'] == pytest.approx(30.0)
    assert figures['paired_ms_per_iter'] == pytest.approx(10.0)
    assert figures['reference_tokens_per_sec'] == pytest.approx(64 / 0.030)
    assert '3.000x its tokens/s' in line and math.isfinite(figures['reference_tokens_per_sec'])


def test_the_reference_ties_its_head_to_the_embedding():
    m = reference.PlainGPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11, bias=False))
    assert m.lm_head.weight is m.transformer.wte.weight
    # wte 11 x 16 = 176, wpe 8 x 16 = 128, ln_f 16, and per block ln_1 16 + c_attn 16 x 48 = 768 + c_proj 256
    # + ln_2 16 + c_fc 16 x 64 = 1024 + c_proj 1024 = 3104: 176 + 128 + 16 + 2 x 3104 = 6528 (the head adds none)
    assert sum(p.numel() for p in m.parameters()) == 6528
