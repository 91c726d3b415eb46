"""train.py's bits per byte on random batches (estimate_loss, eval_full=False) divides the summed nats by the bytes
the *targets* decode to. With GPT-2's BPE a token is 1 to many bytes, so the targets' bytes differ from the inputs'
(the window shifted by one); the reference here decodes every target id with tiktoken's own table."""

import contextlib
import math
import os

import numpy as np
import pytest
import torch

from conftest import REPO, write_dataset
from core.data import tokenizer
from core.data.loader import Dataset
from core.training.estimate import estimate_loss
from model import GPT, GPTConfig


def test_random_batch_bpb_counts_the_bytes_of_the_targets(tmp_path):
    with open(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt'), encoding='utf-8') as f:
        text = f.read()[:40_000]
    tok = tokenizer.gpt2()
    data = Dataset(write_dataset(str(tmp_path / 'bpe'), tok, text))
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=tok.vocab_size))
    model.eval()
    out = estimate_loss(model, data, contextlib.nullcontext(), 'cpu', 2, 16, eval_iters=3, seed=5)
    for split in ('train', 'val'):
        tokens = np.asarray(data.split(split), dtype=np.int64)
        gen = torch.Generator().manual_seed(6)  # estimate_loss's seed + 1
        nats = n_bytes = 0
        with torch.no_grad():
            for _ in range(3):
                for s in torch.randint(len(tokens) - 16, (2,), generator=gen).tolist():
                    x, y = tokens[s:s + 16], tokens[s + 1:s + 17]
                    nats += model(torch.as_tensor(x)[None], torch.as_tensor(y)[None])[1].item() * 16
                    n_bytes += sum(len(tok._enc.decode_single_token_bytes(int(t))) for t in y)
        assert out[f'{split}_bpb'] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5), split
