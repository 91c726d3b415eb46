"""The exact whole-split evaluation of chat data: only the assistant's tokens (and its closing <|end|>)
are scored, each once, and the loss, token count and bytes equal a sum written out over the split's
files as a reader sees them (val.bin and val.mask.bin).

The model's final norm has a zero gain, so its logits are the same at every position (the head applied
to the norm's bias): each target's loss is then a number read off one log-softmax, whatever window
it falls in, and the reference needs no model at all."""

import json
import math
import os
import re

import numpy as np
import pytest
import torch

from core.data import prepare as P
from core.data import tokenizer as tk
from core.data.loader import Dataset
from core.evaluation.exact import exact_eval
from model import GPT, GPTConfig

CONVS = [[{"role": "user", "content": f"Hail, friend {i}!"}, {"role": "assistant", "content": f"Good morrow {i}."},
          {"role": "user", "content": "Farewell."}, {"role": "assistant", "content": "Adieu, sweet prince."}]
         for i in range(40)]


@pytest.fixture(scope='module')
def chat_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp('chat')
    with open(folder / 'c.jsonl', 'w') as f:
        for m in CONVS:
            f.write(json.dumps({"messages": m}) + '\n')
    P.prepare(str(folder / 'c.jsonl'), str(folder / 'data'), format="chat", val_fraction=0.2, progress=False)
    return str(folder / 'data')


def constant_model(vocab_size):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=vocab_size))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(torch.randn(16))
    logp = torch.log_softmax(model.lm_head.weight.double() @ model.transformer.ln_f.bias.double(), dim=0)
    return model.eval(), logp


def test_the_val_mask_covers_exactly_the_assistant_turns(chat_data):
    tok = tk.load(chat_data)
    meta = json.load(open(os.path.join(chat_data, 'meta.json')))
    ids = np.fromfile(os.path.join(chat_data, 'val.bin'), dtype=meta['dtype'])
    mask = np.fromfile(os.path.join(chat_data, 'val.mask.bin'), dtype=np.uint8)
    assert len(ids) == len(mask) and 0 < mask.sum() < len(mask)
    friends = [int(n) for n in re.findall(r"Hail, friend (\d+)!", tok.decode(ids.tolist()))]
    assert friends
    assert tok.decode(ids[mask == 1].tolist()) == ''.join(f"Good morrow {i}.<|end|>Adieu, sweet prince.<|end|>"
                                                         for i in friends)


@pytest.mark.parametrize('block_size, batch_size', [(32, 4), (7, 3)])
def test_exact_eval_of_chat_data_is_the_masked_sum_by_hand(chat_data, block_size, batch_size):
    tok = tk.load(chat_data)
    data = Dataset(chat_data)
    model, logp = constant_model(data.vocab_size)
    meta = json.load(open(os.path.join(chat_data, 'meta.json')))
    ids = np.fromfile(os.path.join(chat_data, 'val.bin'), dtype=meta['dtype']).astype(np.int64)
    mask = np.fromfile(os.path.join(chat_data, 'val.mask.bin'), dtype=np.uint8)
    # every token after the first is a target once; the mask says which of them the loss sees
    targets = [int(ids[i]) for i in range(1, len(ids)) if mask[i]]
    nats = sum(-logp[t].item() for t in targets)
    specials = set(tok.special_tokens.values())
    n_bytes = sum(len(tok.decode([t]).encode('utf-8')) for t in targets if t not in specials)
    got = exact_eval(model, data, 'val', block_size=block_size, batch_size=batch_size)
    assert got['tokens'] == len(targets)
    assert got['bytes'] == n_bytes
    assert got['loss'] == pytest.approx(nats / len(targets), rel=1e-5)
    assert got['bpb'] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)
