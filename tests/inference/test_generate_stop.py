"""model.generate with a stop token over a batch (sample.py --use_cache=False --num_samples=N, eval.py): a row that
has produced the stop token is padded with it from there on, so every row is what it would be generated alone (greedy),
cut after its stop, then padded with the stop token to the longest row."""

import pytest
import torch

from model import GPT, GPTConfig


def tiny():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=65, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():  # larger weights than at init: greedy runs that vary instead of repeating one token
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


@pytest.mark.parametrize('use_cache', [True, False])
def test_rows_that_stop_early_are_padded_with_the_stop_token(use_cache):
    model = tiny()
    g = torch.Generator().manual_seed(1)
    for _ in range(50):  # two prompts whose greedy runs first meet some token at different steps
        prompts = torch.randint(0, 65, (2, 4), generator=g)
        free = model.generate(prompts, 20, temperature=0)[:, 4:]
        firsts = {}
        for t in free[0, :6].tolist():
            hits = [(free[r] == t).nonzero() for r in range(2)]
            firsts = [h[0].item() if len(h) else None for h in hits]
            # row 0 stops well before row 1, and would have gone on with another token
            if (firsts[1] is None or firsts[1] > firsts[0] + 2) and free[0, firsts[0] + 1].item() != t:
                stop = t
                break
        else:
            continue
        break
    else:
        pytest.skip('no prompts found whose rows stop apart')
    got = model.generate(prompts, 20, temperature=0, stop_token=stop, use_cache=use_cache)[:, 4:]
    rows = []
    for r in range(2):
        alone = model.generate(prompts[r:r + 1], 20, temperature=0, stop_token=stop, use_cache=use_cache)[0, 4:]
        rows.append(alone.tolist())
    width = max(map(len, rows))
    assert got.size(1) == width
    for r in range(2):
        assert got[r].tolist() == rows[r] + [stop] * (width - len(rows[r])), r
