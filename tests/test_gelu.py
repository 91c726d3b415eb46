"""GELU kind: the exact erf GELU for models trained here, GPT-2's tanh one for its weights and for the
checkpoints written before the choice existed; both checked against torch and transformers."""

import json
import math

import pytest
import torch
from torch.nn import functional as F

from core.training import checkpoint
from core.interop import hf
from core.errors import UserError
from model import GPT, GPTConfig, MLP

SMALL = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11)


def test_default_is_erf_and_unknown_kinds_are_refused():
    assert GPTConfig().gelu == 'erf'
    with pytest.raises(ValueError, match="gelu='exact' is not one of erf, tanh"):
        GPTConfig(gelu='exact')


@pytest.mark.parametrize('kind, approximate, hf_name', [('erf', 'none', 'gelu'), ('tanh', 'tanh', 'gelu_new')])
def test_mlp_applies_its_kind(kind, approximate, hf_name):
    torch.manual_seed(0)
    mlp = MLP(GPTConfig(**SMALL, gelu=kind))
    x = torch.randn(3, 5, 16) * 3  # wide enough that the two kinds differ visibly
    h = mlp.c_fc(x)
    assert torch.equal(mlp(x), mlp.c_proj(F.gelu(h, approximate=approximate)))
    # the kind against the other, and against the formulas written out
    other = 'tanh' if approximate == 'none' else 'none'
    assert (F.gelu(h, approximate=approximate) - F.gelu(h, approximate=other)).abs().max() > 1e-4
    if kind == 'erf':
        by_hand = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    else:
        by_hand = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
    torch.testing.assert_close(F.gelu(h, approximate=approximate), by_hand, atol=1e-6, rtol=0)
    transformers = pytest.importorskip('transformers')
    from transformers.activations import ACT2FN
    torch.testing.assert_close(mlp(x), mlp.c_proj(ACT2FN[hf_name](h)), atol=1e-6, rtol=0)


def _save(path, model, drop=()):
    args = {k: v for k, v in model.config.to_dict().items() if k not in drop}
    checkpoint.save({'model': model.state_dict(), 'model_args': args}, path)


def test_checkpoints_record_their_kind_and_older_ones_keep_tanh(tmp_path):
    torch.manual_seed(0)
    for kind in ('erf', 'tanh'):
        _save(tmp_path / f'{kind}.pt', GPT(GPTConfig(**SMALL, gelu=kind)))
        assert checkpoint.load_model(tmp_path / f'{kind}.pt')[0].config.gelu == kind
    # written before the gelu key existed: our model_args had every switch and the model used tanh
    tanh_model = GPT(GPTConfig(**SMALL, gelu='tanh')).eval()
    _save(tmp_path / 'old.pt', tanh_model, drop=('gelu',))
    loaded, state = checkpoint.load_model(tmp_path / 'old.pt')
    assert loaded.config.gelu == 'tanh' and state['model_args']['gelu'] == 'tanh'
    idx = torch.randint(0, 11, (2, 8))
    assert torch.equal(loaded.eval()(idx, idx)[0], tanh_model(idx, idx)[0])
    # nanoGPT's own checkpoints carry only the shape keys, and nanoGPT uses nn.GELU(): erf
    nano = {k: SMALL[k] for k in ('n_layer', 'n_head', 'n_embd', 'block_size', 'vocab_size')}
    nano.update(bias=True, dropout=0.0)
    checkpoint.save({'model': GPT(GPTConfig(**nano)).state_dict(), 'model_args': nano}, tmp_path / 'nano.pt')
    assert checkpoint.load_model(tmp_path / 'nano.pt')[0].config.gelu == 'erf'


@pytest.mark.parametrize('kind, activation', [('erf', 'gelu'), ('tanh', 'gelu_new')])
def test_hf_round_trip_keeps_the_kind(tmp_path, kind, activation):
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(0)
    ours = GPT(GPTConfig(**SMALL, gelu=kind)).eval()
    with torch.no_grad():  # weights large enough for the two kinds to give different logits
        for p in ours.parameters():
            p.add_(torch.randn(p.shape) * 0.3)
    hf.save_hf_folder(ours, tmp_path / 'hf')
    assert json.loads((tmp_path / 'hf' / 'config.json').read_text())['activation_function'] == activation
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / 'hf').eval()
    back = hf.from_pretrained(f"hf:{tmp_path / 'hf'}").eval()
    assert back.config.gelu == kind
    idx = torch.randint(0, 11, (2, 8))
    with torch.no_grad():
        ref = theirs(idx).logits
        torch.testing.assert_close(ours(idx, idx)[0], ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(back(idx, idx)[0], ref, atol=1e-5, rtol=0)
        # the other kind is measurably off, so the checks above can fail
        flipped = GPT(GPTConfig(**SMALL, gelu='tanh' if kind == 'erf' else 'erf')).eval()
        flipped.load_state_dict(ours.state_dict())
        assert (flipped(idx, idx)[0] - ref).abs().max() > 1e-4


def test_hf_activation_names():
    base = dict(n_layer=1, n_head=2, n_embd=16, n_positions=8, vocab_size=11)
    assert hf.hf_gpt2_to_config({**base, 'activation_function': 'gelu_pytorch_tanh'}).gelu == 'tanh'
    assert hf.hf_gpt2_to_config(base).gelu == 'tanh'  # GPT2Config's default is gelu_new
    with pytest.raises(UserError, match="activation_function='relu'"):
        hf.hf_gpt2_to_config({**base, 'activation_function': 'relu'})
