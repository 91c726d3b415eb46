"""HellaSwag's acc and acc_norm on a fixture where they differ, with every loss worked out by hand.

The model is a unigram: each next character has a fixed probability whatever came before, a power of
two, so an ending's summed loss is a whole number of ln 2 units you can add up on paper. Characters are
one byte and one token each, so acc_norm's mean loss per ending token is also lm-evaluation-harness's
loss per byte of ' ' + ending."""

import math

import pytest
import torch

from core.data import tokenizer
from core.evaluation import hellaswag
from model import GPTConfig

# id: ' ' 0, 'a' 1, 'b' 2, 'z' 3, and an unused padded row 4; -log2 p: ' ' 2, 'a' 1, 'b' 3, 'z' 4
PROBS = [0.25, 0.5, 0.125, 0.0625, 0.0625]
BITS = {' ': 2, 'a': 1, 'b': 3, 'z': 4}

# (endings, label, which ending acc picks, which acc_norm picks), from the bits above:
EXAMPLES = [
    # (each ending is scored as ' ' + ending, so its space counts too)
    (['z', 'bbbb', 'zz', 'zzz'], 0, 0, 1),                # sums 6 14 10 14; means 3 2.8 3.33 3.5
    (['z', 'a', 'zb', 'bz'], 1, 1, 1),                    # sums 6 3 9 9; means 3 1.5 3 3
    (['b', 'zz', 'aaaaaa', 'zzz'], 2, 0, 2),              # sums 5 10 8 14; means 2.5 3.33 1.14 3.5
    (['zz', 'abbbbbbbbbbb', 'zzzz', 'z'], 3, 3, 1),       # sums 10 36 18 6; means 3.33 2.77 3.6 3
]


class Unigram(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.config = GPTConfig(n_layer=1, n_head=1, n_embd=4, block_size=64, vocab_size=len(PROBS))
        self.logp = torch.log(torch.tensor(PROBS))

    def hidden_states(self, idx):
        return idx

    def head(self, h):
        return self.logp.expand(*h.shape, len(PROBS))


def test_acc_and_acc_norm_by_hand_on_a_fixture_where_they_differ():
    tok = tokenizer.char(' abz')
    examples = [dict(ctx='ab ba', endings=e, label=label) for e, label, _, _ in EXAMPLES]
    got = hellaswag.evaluate(Unigram(), tok, examples)
    ln2 = math.log(2)
    for ex, (endings, label, pred, pred_norm) in zip(got['examples'], EXAMPLES):
        bits = [sum(BITS[c] for c in ' ' + e) for e in endings]
        assert ex['sum_loss'] == pytest.approx([b * ln2 for b in bits], abs=1e-5)
        assert ex['mean_loss'] == pytest.approx([b * ln2 / len((' ' + e).encode()) for b, e in zip(bits, endings)],
                                                abs=1e-5)
        assert (ex['pred'], ex['pred_norm']) == (pred, pred_norm)
    assert got['acc'] == 3 / 4 and got['acc_norm'] == 2 / 4
    assert got['n'] == 4 and got['skipped'] == 0 and got['cut'] == 0


def test_an_ending_that_cannot_be_encoded_skips_its_example():
    tok = tokenizer.char(' abz')
    examples = [dict(ctx='ab', endings=['a', 'b', 'z', 'q'], label=0)] + \
        [dict(ctx='ab ba', endings=e, label=label) for e, label, _, _ in EXAMPLES]
    got = hellaswag.evaluate(Unigram(), tok, examples)
    assert got['skipped'] == 1 and got['n'] == 4 and got['acc'] == 3 / 4 and got['acc_norm'] == 2 / 4
