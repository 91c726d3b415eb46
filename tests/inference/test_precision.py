"""Weights in bf16 and int8 (core/inference/precision.py), compared by logits with the fp32 model."""

import pytest
import torch

from conftest import SWITCHES
from core.errors import UserError
from core.inference import precision
from model import GPT, GPTConfig


def model_and_logits(**kw):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=96, n_layer=2, n_head=2, n_embd=64, **kw)).eval()
    idx = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model.head(model.hidden_states(idx)).float()
    return model, idx, ref


@pytest.mark.parametrize('kind, tolerance', [('bfloat16', 0.03), ('int8', 0.05)])
@pytest.mark.parametrize('switch', [{}, SWITCHES[-1]], ids=['gpt2', 'modern'])
def test_logits_stay_close_to_fp32(kind, tolerance, switch):
    model, idx, ref = model_and_logits(**switch)
    precision.convert(model, kind)
    with torch.no_grad():
        got = model.head(model.hidden_states(idx)).float()
    # relative to the logits' spread: rounding the weights moves them a little, never a lot
    err = (got - ref).abs().max() / ref.std()
    assert err < tolerance, float(err)
    assert err > 0  # the weights really changed precision
    agree = (got.argmax(-1) == ref.argmax(-1)).float().mean()
    assert agree > 0.9, float(agree)


def test_int8_stores_int8_matrices_with_a_scale_per_row():
    model, _, _ = model_and_logits()
    w = model.transformer.h[0].mlp.c_fc.weight.detach().clone()
    precision.convert(model, 'int8')
    q = model.transformer.h[0].mlp.c_fc
    assert q.weight.dtype == torch.int8
    back = q.weight.float() * q.scale.float()[:, None]
    # every weight is within half a step of the original, plus bf16's rounding of the scale
    step = q.scale.float()[:, None]
    assert ((back - w).abs() <= step * 0.5 + (w.abs() + step) * 2 ** -8).all()
    # the tied embedding keeps its own bf16 table, the head is int8
    assert model.transformer.wte.weight.dtype == torch.bfloat16 and model.lm_head.weight.dtype == torch.int8


def test_precision_names_are_checked_in_one_line():
    assert precision.pick('auto', 'cpu') == 'float32'
    with pytest.raises(UserError, match='float16 is not supported on CPU'):
        precision.pick('float16', 'cpu')
    with pytest.raises(UserError, match='unknown dtype'):
        precision.pick('fp8', 'cpu')
