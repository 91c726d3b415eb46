"""configure_optimizers: which parameters get which learning rate and weight decay, with embed_lr set, for AdamW
and for Muon + AdamW (model.py's docstrings: embed_lr is the AdamW rate of the embeddings and the head; gains and
biases keep learning_rate and no decay; the hidden matrices take learning_rate, or muon_lr under Muon)."""

import pytest
import torch

from model import GPT, GPTConfig
from core.training.optim import Muon

LR, EMBED_LR, MUON_LR, WD = 1e-3, 7e-3, 0.05, 0.1


def build():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, tie_embeddings=False))


def settings(opt):
    """{id(param): (lr, initial_lr, weight_decay, optimizer class)}"""
    opts = getattr(opt, 'optimizers', [opt])
    return {id(p): (g['lr'], g['initial_lr'], g['weight_decay'], type(o)) for o in opts for g in o.param_groups
            for p in g['params']}


@pytest.mark.parametrize('optimizer', ['adamw', 'muon'])
def test_embed_lr_reaches_the_embeddings_and_head_and_nothing_else(optimizer):
    model = build()
    opt = model.configure_optimizers(WD, LR, (0.9, 0.95), 'cpu', optimizer, MUON_LR, 0.9, EMBED_LR)
    s = settings(opt)
    assert len(s) == len(list(model.parameters()))
    hidden = LR if optimizer == 'adamw' else MUON_LR
    for name, p in model.named_parameters():
        lr, initial, wd, kind = s[id(p)]
        assert lr == initial, name
        if name in ('transformer.wte.weight', 'transformer.wpe.weight', 'lm_head.weight'):
            assert (lr, wd) == (EMBED_LR, WD) and kind is torch.optim.AdamW, name
        elif p.dim() < 2:
            assert (lr, wd) == (LR, 0.0) and kind is torch.optim.AdamW, name
        else:
            assert (lr, wd) == (hidden, WD), name
            assert kind is (Muon if optimizer == 'muon' else torch.optim.AdamW), name
