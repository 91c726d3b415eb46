"""core/data/prepare.py's hub_tokenizer: a bpe learned for a hub dataset gets <|endoftext|>, and <|pad|> too when
--pad asks for it, as a local prepare's bpe does."""

from core.data import prepare
from core.data import tokenizer as tk

TEXTS = ['the quick brown fox jumps over the lazy dog'] * 40


def test_pad_gives_a_hub_bpe_a_pad_token_and_only_then():
    with_pad = prepare.hub_tokenizer('bpe', 300, TEXTS, pad=True, progress=False)
    without = prepare.hub_tokenizer('bpe', 300, TEXTS, pad=False, progress=False)
    assert set(with_pad.special_tokens) == {'<|endoftext|>', '<|pad|>'} == {tk.EOT, tk.PAD}
    assert set(without.special_tokens) == {'<|endoftext|>'}
    assert with_pad.vocab_size == without.vocab_size + 1
