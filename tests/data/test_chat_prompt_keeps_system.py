"""core/data/chat.py's prompt() when a conversation outgrows the window, by hand: the oldest turns go, a leading
system message stays; the newest message alone is taken while it fits the whole context, and refused one token past."""

import pytest

from core.data import chat
from core.data import tokenizer as tk


@pytest.fixture(scope='module')
def tok():
    return tk.with_specials(tk.gpt2(), tk.CHAT_TOKENS)


def by_hand(tok, messages):
    # the format written out from the module's docstring: <|endoftext|>, then each message as its role token,
    # its content and <|end|>, then <|assistant|>
    s = tok.special_tokens
    ids = [tok.eot_token]
    for m in messages:
        ids += [s[f"<|{m['role']}|>"]] + tok.encode_ordinary(m['content']) + [s['<|end|>']]
    return ids + [s['<|assistant|>']]


def test_a_leading_system_message_survives_when_old_turns_are_left_out(tok):
    system = {'role': 'system', 'content': 'You are terse.'}
    turns = [{'role': 'user' if i % 2 == 0 else 'assistant', 'content': f'turn {i} ' + 'word ' * 20}
             for i in range(9)]
    messages = [system] + turns
    context = 128  # room for the reply: 32 tokens
    assert len(by_hand(tok, messages)) > context - 32  # so some turns must go
    ids, _, _ = chat.prompt(messages, tok, context)
    # the longest tail of turns that fits beside the system message, found here by trying each
    expected = next(by_hand(tok, [system] + turns[k:]) for k in range(len(turns))
                    if len(by_hand(tok, [system] + turns[k:])) <= context - 32)
    assert ids == expected
    assert ids[1] == tok.special_tokens['<|system|>']


def test_the_newest_message_alone_is_taken_while_it_fits_the_whole_context(tok):
    context = 64
    for n_words, fits in ((context - 4, True), (context - 3, False)):
        # ' x' is one GPT-2 token: eot, <|user|>, the words, <|end|>, <|assistant|> make n_words + 4 tokens
        message = {'role': 'user', 'content': ' x' * n_words}
        assert len(tok.encode_ordinary(message['content'])) == n_words
        if fits:
            ids, _, _ = chat.prompt([{'role': 'user', 'content': 'an older turn'}, message], tok, context)
            assert ids == by_hand(tok, [message]) and len(ids) == context
        else:
            with pytest.raises(chat.ChatError, match=f'takes {context + 1} tokens'):
                chat.prompt([message], tok, context)
