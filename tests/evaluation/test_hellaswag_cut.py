"""HellaSwag's render at the edge of the window: a context and ending whose inputs exactly fill block_size are not cut
(and not counted as cut); one token more is."""

from core.data import tokenizer
from core.evaluation import hellaswag


def test_an_example_that_exactly_fills_the_window_is_not_cut():
    tok = tokenizer.char('abcdefgh ')
    # 'abcdef' + ' ab' is 9 tokens: 8 inputs and 8 targets, block_size 8 holds it whole
    ex = dict(ctx='abcdef', endings=['ab', 'cd', 'ef', 'gh'], label=0)
    rows, cut = hellaswag.render(ex, tok, block_size=8)
    assert cut is False
    x, y = rows[0]
    assert x == tok.encode('abcdef a')
    assert y == [-1] * 5 + tok.encode(' ab')
    # one more context character: the first one is dropped, and the example counts as cut
    rows, cut = hellaswag.render(dict(ex, ctx='habcdef'), tok, block_size=8)
    assert cut is True and rows[0][0] == tok.encode('abcdef a')


def test_evaluate_counts_only_the_examples_that_were_cut():
    import torch
    from model import GPT, GPTConfig
    tok = tokenizer.char('abcdefgh ')
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=tok.vocab_size))
    fits = dict(ctx='abcdef', endings=['ab', 'cd', 'ef', 'gh'], label=0)
    longer = dict(fits, ctx='habcdef')
    out = hellaswag.evaluate(model, tok, [fits, fits, longer])
    assert out['n'] == 3 and out['cut'] == 1
