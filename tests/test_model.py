import math

import pytest
import torch
from torch.nn import functional as F

from conftest import SWITCHES, switch_id
from model import GPT, GPTConfig, sample as sample_next


def tiny(**kw):
    args = dict(block_size=32, vocab_size=65, n_layer=2, n_head=4, n_embd=32, dropout=0.0)
    args.update(kw)
    return GPT(GPTConfig(**args))


def full_logits(model, idx):
    return model.head(model.hidden_states(idx))


def test_shapes_and_loss_at_init_is_uniform():
    torch.manual_seed(0)
    model = tiny()
    idx = torch.randint(0, 65, (8, 32))
    targets = torch.randint(0, 65, (8, 32))
    logits, loss = model(idx, targets)
    assert logits.shape == (8, 32, 65)
    # small init: predictions are close to uniform, so the loss is close to ln(vocab)
    assert abs(loss.item() - math.log(65)) < 0.1
    logits, loss = model(idx)
    assert logits.shape == (8, 1, 65) and loss is None


def test_loss_ignores_minus_one_targets():
    torch.manual_seed(0)
    model = tiny()
    idx = torch.randint(0, 65, (2, 16))
    targets = torch.randint(0, 65, (2, 16))
    targets[:, 8:] = -1
    logits, loss = model(idx, targets)
    expected = F.cross_entropy(logits[:, :8].reshape(-1, 65), targets[:, :8].reshape(-1))
    assert torch.allclose(loss, expected, atol=1e-6)


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = tiny(n_layer=2, n_embd=64)
    idx = torch.randint(0, 65, (4, 16))
    targets = torch.randint(0, 65, (4, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        _, loss = model(idx, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize('switch', SWITCHES, ids=switch_id)
def test_causality(switch):
    torch.manual_seed(0)
    model = tiny(**switch).eval()
    idx = torch.randint(0, 65, (2, 24))
    t = 10
    changed = idx.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 7) % 65
    a, b = full_logits(model, idx), full_logits(model, changed)
    assert torch.allclose(a[:, :t + 1], b[:, :t + 1], atol=1e-6)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:], atol=1e-4)


def test_gpt2_parameter_count_matches_published():
    # GPT-2 small as published: 124,439,808 parameters with the head tied to the embedding
    with torch.device('meta'):
        model = GPT(GPTConfig(vocab_size=50257, bias=True))
    assert model.get_num_params(non_embedding=False) == 124_439_808
    assert model.get_num_params() == 124_439_808 - 1024 * 768


def test_seeded_generation_is_deterministic_and_temperature_zero_is_greedy():
    torch.manual_seed(0)
    model = tiny().eval()
    prompt = torch.randint(0, 65, (1, 5))
    outs = [model.generate(prompt, 20, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(7))
            for _ in range(2)]
    assert torch.equal(outs[0], outs[1])
    greedy = model.generate(prompt, 15, temperature=0)
    # the same greedy continuation by hand, one full forward per token
    idx = prompt
    for _ in range(15):
        nxt = full_logits(model, idx)[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat([idx, nxt], dim=1)
    assert torch.equal(greedy, idx)


def test_generate_stops_at_stop_token():
    torch.manual_seed(0)
    model = tiny().eval()
    prompt = torch.randint(0, 65, (1, 3))
    free = model.generate(prompt, 30, temperature=0)
    stop = int(free[0, 6])  # the 4th generated token
    first = (free[0, 3:] == stop).nonzero()[0].item() + 3
    stopped = model.generate(prompt, 30, temperature=0, stop_token=stop)
    assert torch.equal(stopped, free[:, :first + 1])


def test_top_k_and_top_p_restrict_the_choice():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = lambda **kw: {int(sample_next(logits, 1.0, generator=gen, **kw)) for _ in range(300)}
    assert draws(top_k=1) == {0}
    assert draws(top_k=2) == {0, 1}
    assert draws(top_p=0.4) == {0}  # 0.5 alone covers 0.4
    assert draws(top_p=0.7) == {0, 1}  # 0.5 + 0.3 covers 0.7
    assert draws(top_p=0.9) == {0, 1, 2}
    assert draws() == {0, 1, 2, 3}


def test_crop_block_size():
    torch.manual_seed(0)
    model = tiny().eval()
    idx = torch.randint(0, 65, (1, 16))
    before = full_logits(model, idx)
    model.crop_block_size(16)
    assert model.config.block_size == 16 and model.transformer.wpe.weight.shape[0] == 16
    assert torch.allclose(before, full_logits(model, idx))
    with pytest.raises(ValueError):
        model(torch.randint(0, 65, (1, 17)))


def test_invalid_configs_raise_clear_errors():
    with pytest.raises(ValueError, match='divisible'):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match='norm'):
        GPTConfig(norm='batchnorm')
    with pytest.raises(ValueError, match='positive'):
        GPTConfig(n_layer=0)


def test_weight_decay_only_on_matrices():
    model = tiny(bias=True)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    for group in opt.param_groups:
        assert all((p.dim() >= 2) == (group['weight_decay'] > 0) for p in group['params'])
    n_opt = sum(p.numel() for g in opt.param_groups for p in g['params'])
    assert n_opt == model.get_num_params(non_embedding=False)


def test_residual_projections_start_at_gpt2s_scaled_std():
    # GPT-2 (Radford et al. 2019, section 2.3): the residual layers' weights start scaled by 1/sqrt(N), N the
    # residual layers, two per block; every other matrix keeps std 0.02
    torch.manual_seed(0)
    n_layer = 4
    model = GPT(GPTConfig(n_layer=n_layer, n_head=4, n_embd=256, block_size=16, vocab_size=64, bias=True))
    for name, p in model.named_parameters():
        if name.endswith('c_proj.weight'):
            assert p.std().item() == pytest.approx(0.02 / (2 * n_layer) ** 0.5, rel=0.03), name
        elif name.endswith('c_attn.weight') or name.endswith('c_fc.weight'):
            assert p.std().item() == pytest.approx(0.02, rel=0.03), name
