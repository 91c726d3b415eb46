"""core/training/estimate.py: train.py's evaluation against the loss computed window by window by hand."""

import contextlib
import math

import numpy as np
import pytest
import torch

from core.data.loader import Dataset
from core.training.estimate import estimate_loss
from model import GPT, GPTConfig


@pytest.fixture(scope='module')
def setup(char_data):
    torch.manual_seed(0)
    data = Dataset(char_data)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=data.vocab_size))
    return model, data


def window_nats(model, x, y):
    """The summed loss of one window, alone: the model's mean loss times its targets."""
    return model(torch.as_tensor(x)[None], torch.as_tensor(y)[None])[1].item() * len(y), len(y)


def test_whole_val_split_is_every_target_once(setup):
    model, data = setup
    out = estimate_loss(model, data, contextlib.nullcontext(), 'cpu', 3, 16, eval_iters=2, eval_full=True)
    full = np.asarray(data.split('val'), dtype=np.int64)
    nats = n = 0
    with torch.no_grad():
        for s in range(0, len(full) - 1, 16):  # one window at a time, the last one short
            y = full[s + 1:s + 17]
            a, b = window_nats(model, full[s:s + len(y)], y)
            nats, n = nats + a, n + b
    assert out['val_tokens'] == len(full) - 1
    assert out['val'] == pytest.approx(nats / n, rel=1e-5)
    assert out['val_bpb'] == pytest.approx(nats / n / math.log(2), rel=1e-5)  # one byte per ascii character
    assert model.training  # left in the mode it was in


def test_random_batches_are_the_same_every_eval(setup):
    model, data = setup
    model.eval()
    first = estimate_loss(model, data, contextlib.nullcontext(), 'cpu', 2, 16, eval_iters=3, seed=5)
    assert not model.training  # left as it was
    model.train()
    assert estimate_loss(model, data, contextlib.nullcontext(), 'cpu', 2, 16, eval_iters=3, seed=5) == first
    losses = []
    with torch.no_grad():
        for split in ('train', 'val'):
            gen = torch.Generator().manual_seed(6)  # seed + 1, the same draws every eval
            batch = []
            for _ in range(3):
                starts = torch.randint(len(data.split(split)) - 16, (2,), generator=gen)
                tokens = np.asarray(data.split(split), dtype=np.int64)
                nats = sum(window_nats(model, tokens[s:s + 16], tokens[s + 1:s + 17])[0] for s in starts.tolist())
                batch.append(nats / 32)
            losses.append(sum(batch) / 3)
    assert (first['train'], first['val']) == pytest.approx(losses, rel=1e-5)
    # Tiny Shakespeare is ascii, a byte a target: bits per byte is the mean loss over ln 2
    assert (first['train_bpb'], first['val_bpb']) == pytest.approx([v / math.log(2) for v in losses], rel=1e-5)
