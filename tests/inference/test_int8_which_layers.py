"""core/inference/precision.py's int8: which Linear layers become int8, by the rule its docstring states (an input
size that is a multiple of 32), checked on widths where 32 and other multiples disagree."""

import pytest
import torch
import torch.nn as nn

from core.inference import precision
from model import GPT, GPTConfig


@pytest.mark.parametrize('n_embd', [32, 96, 48])
def test_every_linear_whose_input_is_a_multiple_of_32_is_int8(n_embd):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=64, n_layer=1, n_head=2, n_embd=n_embd))
    inputs = {name: m.in_features for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    precision.convert(model, 'int8')
    for name, fan_in in inputs.items():
        m = model.get_submodule(name)
        want = torch.int8 if fan_in % 32 == 0 else torch.bfloat16
        assert m.weight.dtype == want, (name, fan_in, m.weight.dtype)
    x = torch.randint(0, 64, (1, 5))
    with torch.no_grad():
        assert torch.isfinite(model.head(model.hidden_states(x)).float()).all()


def test_an_int8_linear_adds_its_bias():
    # y = x @ (scale * w8).T + bias, written out here from the stored int8 matrix and scale; the bias is made large
    # and nonzero (a fresh model's are zero, which would hide a bias left out)
    torch.manual_seed(0)
    linear = nn.Linear(64, 16)
    with torch.no_grad():
        linear.bias.copy_(torch.linspace(-3, 3, 16))
    q = precision.Int8Linear(linear, torch.bfloat16)
    x = torch.randn(3, 64)
    by_hand = x @ (q.weight.float() * q.scale.float()[:, None]).T + linear.bias
    torch.testing.assert_close(q(x).float(), by_hand, atol=0.05, rtol=0.02)
    assert (q(x).float() - x @ linear.weight.T - linear.bias).abs().max() < 0.1
