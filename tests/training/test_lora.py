"""LoRA: at init the base model's logits exactly, only the adapters train, merged weights give the
adapted model's logits, and the adapter count matches the built model."""

import pytest
import torch

from core.training import lora
from core.errors import UserError
from model import GPT, GPTConfig


def tiny(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=16, vocab_size=40, n_layer=2, n_head=2, n_embd=32, **kw))


@pytest.mark.parametrize('kw', [{}, {'mlp': 'swiglu', 'bias': False}])
def test_lora_init_train_merge(kw):
    model = tiny(**kw)
    x = torch.randint(40, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base_logits, _ = model(x, x)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    lora.add(model, rank=4, alpha=8, targets='attn,mlp')
    with torch.no_grad():
        logits, _ = model(x, x)
    assert torch.equal(logits, base_logits)  # B starts at zero: exactly the base
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(('lora_A', 'lora_B')) for n in trainable) and len(trainable) == 2 * 4 * 2
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == lora.count(model.config, 4, 'attn,mlp')
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base.items())  # the base is bit-identical
    assert set(lora.adapter_state(model)) == {k for k in state if k not in base}
    with torch.no_grad():
        adapted, _ = model(x, x)
        assert not torch.allclose(adapted, base_logits)
        lora.merge(model)
        merged, _ = model(x, x)
    assert not lora.is_lora(model) and set(model.state_dict()) == set(base)
    assert torch.allclose(merged, adapted, atol=1e-5)


def test_lora_mistakes():
    with pytest.raises(UserError, match='at most 32'):
        lora.add(tiny(), rank=33, alpha=1, targets='attn')
    with pytest.raises(UserError, match='lora_targets'):
        lora.add(tiny(), rank=2, alpha=1, targets='attention')
