"""KV-cache generation against the uncached path and against a by-hand loop of full forwards."""

import pytest
import torch

from conftest import SWITCHES, switch_id
from model import GPT, GPTConfig


def tiny(**kw):
    args = dict(block_size=16, vocab_size=61, n_layer=2, n_head=2, n_embd=32)
    args.update(kw)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**args)).eval()
    # larger weights than the init gives sharper logits, so a greedy choice is never a near tie
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return model


def by_hand(model, idx, n):
    """Greedy continuation with one full forward of the last block_size tokens per new token."""
    for _ in range(n):
        logits = model.head(model.hidden_states(idx[:, -model.config.block_size:]))
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize('switch', SWITCHES, ids=switch_id)
def test_cached_greedy_equals_uncached_past_block_size(switch):
    model = tiny(**switch)
    prompt = torch.randint(0, 61, (2, 5), generator=torch.Generator().manual_seed(1))
    # 5 + 27 tokens: 16 inside the window, then 16 steps that slide it
    cached = model.generate(prompt, 27, temperature=0, use_cache=True)
    uncached = model.generate(prompt, 27, temperature=0, use_cache=False)
    assert cached.shape == (2, 32)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, by_hand(model, prompt, 27))


@pytest.mark.parametrize('switch', [{}, dict(pos_encoding='rope', qk_norm=True)], ids=['learned', 'rope'])
def test_cached_logits_match_the_full_forward(switch):
    # the cache's logits at every step, not only their argmax, equal a full forward's
    model = tiny(**switch)
    idx = torch.randint(0, 61, (3, 16), generator=torch.Generator().manual_seed(2))
    full = model.head(model.hidden_states(idx))  # (B, T, V)
    caches = model.new_caches(3, idx.device, torch.float32)
    with torch.no_grad():
        first, _ = model(idx[:, :4], caches=caches, pos=0)  # prefill 4, then one token at a time
        assert torch.allclose(first[:, -1], full[:, 3], atol=1e-5)
        for t in range(4, 16):
            step, _ = model(idx[:, t:t + 1], caches=caches, pos=t)
            assert torch.allclose(step[:, -1], full[:, t], atol=1e-5), t


def test_prompt_longer_than_the_window_and_sampling_agree():
    model = tiny(pos_encoding='rope')
    prompt = torch.randint(0, 61, (1, 20), generator=torch.Generator().manual_seed(3))  # longer than block_size 16
    cached = model.generate(prompt, 6, temperature=0, use_cache=True)
    assert torch.equal(cached, by_hand(model, prompt, 6))
    # seeded sampling draws the same tokens from the same distributions on both paths
    a = model.generate(prompt[:, :3], 20, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(4))
    b = model.generate(prompt[:, :3], 20, temperature=1.0, top_k=20, use_cache=False,
                       generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
