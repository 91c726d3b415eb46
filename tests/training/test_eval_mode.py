"""Measurements taken during training of a model with dropout see the model in eval mode, then leave it in train
mode: estimate_loss (the val loss train.py reports and early-stops on; log_health's activation RMS is checked so in
test_wandb.py). The reference is the same forward computed by hand with model.eval()."""

import contextlib

import numpy as np
import pytest
import torch

from core.data.loader import Dataset
from core.training.estimate import estimate_loss
from model import GPT, GPTConfig


def test_estimate_loss_of_a_training_model_with_dropout_is_its_eval_loss(char_data):
    torch.manual_seed(0)
    data = Dataset(char_data)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=data.vocab_size, dropout=0.5))
    model.train()
    out = estimate_loss(model, data, contextlib.nullcontext(), 'cpu', 3, 16, eval_iters=2, eval_full=True)
    assert model.training
    full = np.asarray(data.split('val'), dtype=np.int64)
    model.eval()
    nats = n = 0
    with torch.no_grad():
        for s in range(0, len(full) - 1, 16):
            y = full[s + 1:s + 17]
            x = full[s:s + len(y)]
            nats += model(torch.as_tensor(x)[None], torch.as_tensor(y)[None])[1].item() * len(y)
            n += len(y)
    assert out['val'] == pytest.approx(nats / n, rel=1e-5)
