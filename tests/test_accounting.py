"""The analytic parameter and FLOP counts against the real model: numel of its tensors and
torch.utils.flop_counter run over a forward and a training step, for every architecture switch."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from conftest import SWITCHES, switch_id
from core.training.accounting import flops_per_token, flops_per_token_breakdown, param_counts
from model import GPT, GPTConfig

B, T = 3, 24


def tiny(**kw):
    args = dict(block_size=32, vocab_size=97, n_layer=2, n_head=4, n_embd=48)
    args.update(kw)
    torch.manual_seed(0)
    return GPT(GPTConfig(**args))


def counted(model, backward):
    """FLOPs the counter sees. The math attention backend runs attention as plain batched matmuls,
    which the counter knows; the CPU flash kernel has no formula in it."""
    idx = torch.randint(0, model.config.vocab_size, (B, T))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss = model(idx, idx)
        if backward:
            loss.backward()
    return counter.get_total_flops(), counter.get_flop_counts()


@pytest.mark.parametrize('switch', SWITCHES, ids=switch_id)
def test_flops_agree_with_the_counter(switch):
    model = tiny(**switch)
    fwd, per_module = counted(model, backward=False)
    analytic = flops_per_token_breakdown(model.config, T, training=False)
    assert abs(fwd / (analytic['total'] * B * T) - 1) < 0.02
    # the components too, from the counter's per-module totals (forward only: the backward
    # runs outside the module hooks)
    layers = model.config.n_layer

    def module_sum(suffix):
        return sum(sum(v.values()) for k, v in per_module.items() if k.endswith(suffix) and '.h.' in k)
    assert module_sum('attn.c_attn') == analytic['qkv'] * B * T
    assert module_sum('attn.c_proj') == analytic['attn_proj'] * B * T
    assert module_sum('.mlp') == analytic['mlp'] * B * T
    assert sum(per_module['GPT.lm_head'].values()) == analytic['lm_head'] * B * T
    attn_bmm = sum(per_module[f'GPT.transformer.h.{i}.attn'].get(torch.ops.aten.bmm, 0) for i in range(layers))
    assert attn_bmm == (analytic['attn_scores'] + analytic['attn_values']) * B * T
    step, _ = counted(model, backward=True)
    assert abs(step / (model.flops_per_token(T) * B * T) - 1) < 0.02


@pytest.mark.parametrize('switch', [{}, dict(prenorm=False), dict(dropout=0.1)], ids=['prenorm', 'postnorm', 'dropout'])
def test_recompute_flops_of_the_memory_savers(switch):
    model = tiny(**switch)
    model.chunked_ce = model.activation_checkpointing = True
    step, _ = counted(model, backward=True)
    assert step == flops_per_token_breakdown(model.config, T, activation_checkpointing=True, chunked_ce=True)['total'] * B * T
    # model FLOPs, the basis of MFU, do not change with the savers
    assert model.flops_per_token(T) == tiny(**switch).flops_per_token(T)


@pytest.mark.parametrize('switch', SWITCHES, ids=switch_id)
def test_param_counts_by_component(switch):
    model = tiny(**switch)
    counts = param_counts(model.config)
    by_name = {'wte': 'transformer.wte.', 'wpe': 'transformer.wpe.', 'qkv': 'attn.c_attn.', 'attn_proj': 'attn.c_proj.',
               'mlp': '.mlp.', 'lm_head': 'lm_head.', 'value_embed': ('transformer.vte.', 'attn.v_mix'),
               'unet': 'skip_weights'}
    seen = {}
    for name, p in model.named_parameters():  # named_parameters lists a tied tensor once, under wte
        part = next((k for k, frags in by_name.items() if any(f in name for f in (frags if isinstance(frags, tuple) else (frags,)))), 'norm')
        seen[part] = seen.get(part, 0) + p.numel()
    assert {k: v for k, v in counts.items() if k != 'total' and v} == seen
    assert counts['total'] == sum(p.numel() for p in model.parameters()) == model.get_num_params(False)


@pytest.mark.parametrize('name,args,published', [
    ('gpt2', dict(n_layer=12, n_head=12, n_embd=768), 124_439_808),
    ('gpt2-medium', dict(n_layer=24, n_head=16, n_embd=1024), 354_823_168),
    ('gpt2-large', dict(n_layer=36, n_head=20, n_embd=1280), 774_030_080),
    ('gpt2-xl', dict(n_layer=48, n_head=25, n_embd=1600), 1_557_611_200),
])
def test_gpt2_sizes_without_building_them(name, args, published):
    cfg = GPTConfig(vocab_size=50257, block_size=1024, bias=True, **args)
    assert param_counts(cfg)['total'] == published
    # the familiar 6N + 12LCT rule with N the matmul weights, a step of the 124M model near 0.88 GFLOP/token
    flops = flops_per_token_breakdown(cfg, 1024)
    n_matmul = published - 1024 * cfg.n_embd - param_counts(cfg)['norm'] - cfg.n_layer * 9 * cfg.n_embd
    assert flops['total'] == 6 * n_matmul + 12 * cfg.n_layer * cfg.n_embd * 1024


# bench.py's TINY model, counted by hand: C=32, L=1, T=16, V=50, the MLP 4C=128 wide, per token forward
# qkv 2*32*96 = 6144, q.k 2*16*32 = 1024, x values 1024, out proj 2*32*32 = 2048,
# mlp 2*(32*128 + 128*32) = 16384, lm_head 2*32*50 = 3200: 29824; a step is 3x that (backward = 2 forwards)
TINY_BENCH_CONFIG = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=50, bias=False)
TINY_BENCH_FLOPS = 3 * (6144 + 1024 + 1024 + 2048 + 16384 + 3200)


def test_flops_of_a_tiny_config_by_hand():
    cfg = GPTConfig(**TINY_BENCH_CONFIG)
    assert flops_per_token_breakdown(cfg, 16, training=False) == dict(
        qkv=6144, attn_scores=1024, attn_values=1024, attn_proj=2048, mlp=16384, lm_head=3200, total=29824)
    assert flops_per_token(cfg) == TINY_BENCH_FLOPS == 89472


def test_mfu_is_flops_times_rate_over_peak():
    model = tiny()
    f = model.flops_per_token(16)
    assert model.estimate_mfu(1000.0, f * 4000.0, 16) == pytest.approx(0.25)
