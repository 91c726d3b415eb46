"""tokenizer.keeps_ids, which decides whether a Hugging Face folder's weights learned a dataset's token ids
(train.py --init_from=hf:...): a tokenizer keeps its own ids, a grown one (chat tokens after the last id) keeps
them, a smaller or reordered one does not."""

from core.data import tokenizer


def test_the_same_tokenizer_keeps_its_ids():
    for tok in (tokenizer.char('hello world'), tokenizer.gpt2(), tokenizer.char('abc', special_tokens=(tokenizer.EOT,))):
        again = tokenizer.from_state(tok.state())
        assert again.vocab_size == tok.vocab_size
        assert tokenizer.keeps_ids(tok, again)


def test_a_grown_tokenizer_keeps_them_and_a_smaller_or_other_one_does_not():
    base = tokenizer.char('hello world')
    grown = tokenizer.with_specials(base, ('<|user|>',))
    assert grown.vocab_size == base.vocab_size + 1
    assert tokenizer.keeps_ids(base, grown)
    assert not tokenizer.keeps_ids(grown, base)
    assert not tokenizer.keeps_ids(base, tokenizer.char('hello worlds'))  # 's' sorts into the middle
