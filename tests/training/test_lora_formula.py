"""LoRA against its formula written out, W x + b + (alpha / r) B A x, with alpha / r not 1 or 2 and
B not zero: each adapted layer, the merged layer, and the whole model's logits against a plain model
whose weights were updated by hand."""

import copy

import pytest
import torch
from torch.nn import functional as F

from core.training import lora
from model import GPT, GPTConfig

RANK, ALPHA = 4, 6  # alpha / r = 1.5, which neither r / alpha nor alpha nor r equals


def adapted(targets='attn,mlp', **switches):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50, bias=True, **switches)).eval()
    base = copy.deepcopy(model)
    lora.add(model, rank=RANK, alpha=ALPHA, targets=targets)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, lora.LoRALinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=gen) * 0.1)  # B starts at zero: make it count
    return base, model.eval()


def test_each_adapted_layer_computes_the_formula():
    _, model = adapted()
    layers = [m for m in model.modules() if isinstance(m, lora.LoRALinear)]
    assert len(layers) == 2 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj in each of 2 blocks
    x = torch.randn(3, 5, layers[0].in_features, generator=torch.Generator().manual_seed(2))
    for m in layers:
        x = torch.randn(3, 5, m.in_features, generator=torch.Generator().manual_seed(2))
        W, b, A, B = m.weight, m.bias, m.lora_A, m.lora_B
        want = x @ W.T + b + (ALPHA / RANK) * (x @ A.T @ B.T)
        with torch.no_grad():
            torch.testing.assert_close(m(x), want, atol=1e-5, rtol=1e-5)
            merged = m.merged()
            torch.testing.assert_close(merged.weight, W + (ALPHA / RANK) * B @ A, atol=1e-6, rtol=0)
            torch.testing.assert_close(merged(x), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('targets', ['attn', 'mlp', 'attn,mlp'])
def test_the_adapted_model_equals_a_plain_one_with_hand_updated_weights(targets):
    base, model = adapted(targets)
    names = {n for n, _, _ in lora.target_modules(model, targets)}
    state = model.state_dict()
    by_hand = base.state_dict()
    for name in names:
        A, B = state[f'{name}.lora_A'], state[f'{name}.lora_B']
        by_hand[f'{name}.weight'] = by_hand[f'{name}.weight'] + (ALPHA / RANK) * B @ A
    plain = copy.deepcopy(base)
    plain.load_state_dict(by_hand)
    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = plain.head(plain.hidden_states(idx))
        torch.testing.assert_close(model.head(model.hidden_states(idx)), want, atol=1e-5, rtol=1e-5)
        # the untouched groups stay the base's: adapters only where targets says
        lora.merge(model)
        torch.testing.assert_close(model.head(model.hidden_states(idx)), want, atol=1e-5, rtol=1e-5)
    for name, w in model.state_dict().items():
        if not any(name.startswith(n) for n in names):
            assert torch.equal(w, base.state_dict()[name]), name


def test_only_the_adapters_train():
    base, model = adapted()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(('lora_A', 'lora_B')) for n in trainable)
    x = torch.randint(0, 50, (2, 16))
    _, loss = model(x, x)
    loss.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == n.endswith(('lora_A', 'lora_B')), n
