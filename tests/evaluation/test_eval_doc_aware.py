"""eval.py scores a document-aware run as it was evaluated in training: attention stays inside each document of a
window. Checked against the same windows cut into their documents by hand, each document run on its own."""

import json
import os

import numpy as np
import torch
import torch.nn.functional as F

from conftest import run_inprocess
from core.data import tokenizer
from core.training import checkpoint
from model import GPT, GPTConfig

BLOCK = 16


def test_a_doc_aware_run_is_scored_with_attention_inside_documents(tmp_path):
    tok = tokenizer.char('abcdefgh ', special_tokens=(tokenizer.EOT,))
    rng = np.random.default_rng(0)
    docs = [''.join(rng.choice(list('abcdefgh '), size=int(rng.integers(3, 12)))) for _ in range(30)]
    ids = [i for d in docs for i in [tok.eot_token] + tok.encode(d)]
    data = tmp_path / 'data'
    data.mkdir()
    n = len(ids) // 2
    np.array(ids[:n], dtype=np.uint16).tofile(data / 'train.bin')
    np.array(ids[n:], dtype=np.uint16).tofile(data / 'val.bin')
    (data / 'meta.json').write_text(json.dumps({'vocab_size': tok.vocab_size, 'dtype': 'uint16', 'tokenizer': tok.state(),
                                                'eot_token': tok.eot_token, 'splits': {'train': n, 'val': len(ids) - n}}))
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=BLOCK, vocab_size=tok.vocab_size)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.3)  # a model whose predictions depend on what it attends to
    run = tmp_path / 'run'
    run.mkdir()
    checkpoint.save({'model': model.state_dict(), 'model_args': model.config.to_dict(), 'iter_num': 1, 'best_val_loss': 1.0,
                     'config': {'doc_aware': True}, 'tokenizer': tok.state(), 'dataset': str(data)},
                    os.path.join(run, 'ckpt.pt'))
    code, out, err = run_inprocess('eval.py', f'--out_dir={run}', '--tasks=val', '--json=True', '--device=cpu',
                                   '--dtype=float32')
    assert code == 0, err[-2000:]
    got = json.loads(out)['runs'][0]['val']['loss']

    # by hand: consecutive windows of BLOCK inputs over the val split, each cut where an <|endoftext|> opens a
    # document, every piece run alone from position 0
    val = ids[n:]
    nats = {'docs': 0.0, 'plain': 0.0}
    count = 0
    with torch.no_grad():
        for s in range(0, len(val) - 1, BLOCK):
            x = val[s:s + BLOCK]
            y = val[s + 1:s + 1 + len(x)]
            x = x[:len(y)]
            cuts = [0] + [i for i in range(1, len(x)) if x[i] == tok.eot_token] + [len(x)]
            for a, b in zip(cuts, cuts[1:]):
                logits = model(torch.tensor([x[a:b]]), torch.tensor([y[a:b]]))[0]
                nats['docs'] += F.cross_entropy(logits[0], torch.tensor(y[a:b]), reduction='sum').item()
            logits = model(torch.tensor([x]), torch.tensor([y]))[0]
            nats['plain'] += F.cross_entropy(logits[0], torch.tensor(y), reduction='sum').item()
            count += len(y)
    want, plain = nats['docs'] / count, nats['plain'] / count
    assert abs(want - plain) > 1e-3  # the documents' boundaries matter for this model
    assert abs(got - want) < 1e-4, (got, want, plain)
