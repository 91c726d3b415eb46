"""LoRA's edges: a rank as large as the smallest side of a target matrix is allowed (one more is not), and a merged
model trains again as a whole (a full fine-tune of a LoRA run starts from it)."""

import pytest
import torch

from core.errors import UserError
from core.training import lora
from model import GPT, GPTConfig


def tiny():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=8))


def test_rank_up_to_the_smallest_side_of_a_target_is_allowed():
    # attn's c_attn is 24 x 8 and c_proj 8 x 8: rank 8 fits both, rank 9 neither
    model = lora.add(tiny(), rank=8, alpha=8, targets='attn')
    assert model.transformer.h[0].attn.c_proj.lora_A.shape == (8, 8)
    with pytest.raises(UserError, match='at most 8'):
        lora.add(tiny(), rank=9, alpha=8, targets='attn')


def test_a_merged_model_trains_every_parameter_again():
    model = lora.add(tiny(), rank=2, alpha=4, targets='attn,mlp')
    assert not model.transformer.wte.weight.requires_grad
    merged = lora.merge(model)
    assert not lora.is_lora(merged)
    params = dict(merged.named_parameters())
    assert params and all(p.requires_grad for p in params.values())
    x = torch.randint(16, (2, 8), generator=torch.Generator().manual_seed(0))
    _, loss = merged(x, x)
    loss.backward()
    assert all(p.grad is not None for p in params.values())
