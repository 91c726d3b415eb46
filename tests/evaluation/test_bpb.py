"""Bits per byte: the exact whole-split eval against sums written out here, for the three tokenizers."""

import json
import math
import os
import types

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from core.data import tokenizer
from core.data.loader import Dataset
from core.evaluation.exact import exact_eval
from model import GPT, GPTConfig

EOT = tokenizer.EOT
# ascii first (so the first token, never a target, decodes on its own), then multi-byte characters
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak. "
        "Café naïve — 15€ “quoted” 日本語.\n")


def make_tok(kind):
    if kind == 'char':
        return tokenizer.char(TEXT, special_tokens=(EOT,))
    if kind == 'gpt2':
        return tokenizer.gpt2()
    return tokenizer.train_bpe(TEXT * 3, 300)


def write(folder, tok, ids):
    os.makedirs(folder, exist_ok=True)
    dtype = tokenizer.token_dtype(tok.vocab_size)
    np.asarray(ids, dtype=dtype).tofile(os.path.join(folder, 'train.bin'))
    np.asarray(ids, dtype=dtype).tofile(os.path.join(folder, 'val.bin'))
    meta = {'vocab_size': tok.vocab_size, 'dtype': dtype, 'tokenizer': tok.state(),
            'splits': {'train': len(ids), 'val': len(ids)}}
    with open(os.path.join(folder, 'meta.json'), 'w') as f:
        json.dump(meta, f)
    return Dataset(folder)


@pytest.mark.parametrize('kind', ['char', 'gpt2', 'bpe'])
def test_bpb_equals_hand_computation(kind, tmp_path):
    """Nats summed window by window, over the UTF-8 bytes of the text less its first token; the
    <|endoftext|> in the middle costs its loss and counts no bytes."""
    tok = make_tok(kind)
    text = TEXT + EOT + TEXT
    ids = tok.encode(text)
    data = write(str(tmp_path / kind), tok, ids)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=tok.vocab_size, dropout=0.0))
    got = exact_eval(model, data, 'val', block_size=16, batch_size=3)

    model.eval()
    seq = torch.tensor(ids)
    nats = 0.0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, 16):
            x, y = seq[s:s + 16], seq[s + 1:s + 17]
            x = x[:len(y)]
            nats += F.cross_entropy(model.head(model.hidden_states(x[None]))[0], y, reduction='sum').item()
    n_bytes = len(text.replace(EOT, '').encode('utf-8')) - len(tok.decode(ids[:1]).encode('utf-8'))
    assert got['tokens'] == len(ids) - 1
    assert got['bytes'] == n_bytes
    assert got['loss'] == pytest.approx(nats / (len(ids) - 1), rel=1e-5)
    assert got['bpb'] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)


class FixedDistribution(torch.nn.Module):
    """A 'model' that predicts the same distribution over ids at every position."""

    def __init__(self, logp, block_size):
        super().__init__()
        self.logp = logp
        self.config = types.SimpleNamespace(block_size=block_size)

    def forward(self, idx, targets):
        logits = self.logp.expand(*idx.shape, -1)
        return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


@pytest.mark.parametrize('kind', ['char', 'gpt2', 'bpe'])
def test_a_model_uniform_over_bytes_scores_8_bits_per_byte(kind, tmp_path):
    """Each token t of the text gets probability 256^-bytes(t): 8 bits for each of its bytes. Those
    probabilities sum to less than 1 (checked), and the rest of the mass goes to an id the text never
    uses, so this is a proper distribution and the loss is exactly 8 bits per byte of the text, whatever
    the tokenizer. GPT-2 cuts some characters of TEXT between tokens, so a token's bytes are its own
    bytes, not whole characters; the byte total is checked against the text."""
    tok = make_tok(kind)
    ids = tok.encode_ordinary(TEXT * 2)
    sizes = tok.token_bytes()
    sink = tok.vocab_size  # one id past the tokenizer (a padded vocab row)
    logp = torch.full((tok.vocab_size + 1,), -math.inf, dtype=torch.float64)
    for t in set(ids):
        logp[t] = -int(sizes[t]) * math.log(256)
    mass = logp.exp().sum().item()
    assert mass < 1
    logp[sink] = math.log(1 - mass)
    data = write(str(tmp_path / kind), tok, ids)
    got = exact_eval(FixedDistribution(logp, 8), data, 'val', batch_size=4)
    assert got['bytes'] == len((TEXT * 2).encode('utf-8')) - len(tok.decode(ids[:1]).encode('utf-8'))
    assert got['bpb'] == pytest.approx(8.0, abs=1e-9)


def test_token_bytes_table():
    char = tokenizer.char('aé€', special_tokens=(EOT,))
    assert char.token_bytes(6).tolist() == [1, 2, 3, 0, 0, 0]  # the special and the padding count nothing
    gpt2 = tokenizer.gpt2().token_bytes()
    assert gpt2[50256] == 0 and gpt2[15496] == len('Hello') and gpt2[995] == len(' world')
