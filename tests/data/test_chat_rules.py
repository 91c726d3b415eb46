"""core/data/chat.py's documented rules, by hand: a reply ends at <|end|> or <|endoftext|> (or a turn token);
the oldest turns are left out only once the prompt would leave less than a quarter of the context window (64 tokens
at most) for it."""

import pytest

from core.data import chat
from core.data import tokenizer as tk


@pytest.fixture(scope='module')
def tok():
    return tk.with_specials(tk.gpt2(), tk.CHAT_TOKENS)


def test_a_reply_ends_at_end_or_endoftext(tok):
    end, eot = tok.special_tokens['<|end|>'], tok.eot_token
    assert {end, eot} <= set(chat.stop_tokens(tok))
    assert eot in chat.stop_tokens(tk.gpt2())  # a base model's reply ends at <|endoftext|>
    said = tok.encode_ordinary('Hi there')
    assert chat.reply_text(said + [eot] + tok.encode_ordinary(' and more'), tok) == 'Hi there'
    assert chat.reply_text(said + [end] + tok.encode_ordinary(' and more'), tok) == 'Hi there'
    ids, stop_ids, _ = chat.prompt([{'role': 'user', 'content': 'Hello'}], tok, 1024)
    assert {end, eot} <= set(stop_ids)


@pytest.mark.parametrize('context', [128, 1024])
def test_turns_are_kept_while_a_quarter_of_the_window_is_left(tok, context):
    room = min(64, context // 4)
    # a conversation that leaves between `room` and 64 more tokens (context 128: 32 to 64) for the reply
    messages, n = [], 0
    while True:
        role = 'user' if len(messages) % 2 == 0 else 'assistant'
        messages.append({'role': role, 'content': 'one two three'})
        n = len(chat.render(messages, tok))
        if n > context - 64:
            break
    if n > context - room:
        messages.pop()
        n = len(chat.render(messages, tok))
    assert context - 64 - 10 < n <= context - room
    ids, _, _ = chat.prompt(messages, tok, context)
    assert ids == chat.render(messages, tok)  # every turn kept
    longer = messages + [{'role': 'user', 'content': 'one two three ' * 12}]
    kept, _, _ = chat.prompt(longer, tok, context)
    assert len(chat.render(longer, tok)) > context - room  # so the oldest turns must go
    assert len(kept) <= context - room and kept[-1] == tok.special_tokens['<|assistant|>']
    last = tok.encode_ordinary(longer[-1]['content'])
    assert kept[-len(last) - 2:-2] == last  # the newest message is the one kept
    assert kept[0] == tok.eot_token and len(kept) < len(chat.render(longer, tok))


def test_grown_rows_start_as_the_mean_embedding_of_the_text_that_plays_their_part(tok):
    # each new row (embedding and, untied, head) is the mean of GPT-2's rows for its text; <|end|>'s also takes in
    # <|endoftext|>'s row. Written out by hand here, not read from chat.py's table
    import torch
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=50257, tie_embeddings=False))
    wte, head = model.transformer.wte.weight.detach().clone(), model.lm_head.weight.detach().clone()
    assert chat.grow_vocab(model, tok) and model.config.vocab_size == 50261
    g = tk.gpt2()
    for name, text, extra in (('<|system|>', '\n\nSystem:', []), ('<|user|>', '\n\nUser:', []),
                              ('<|assistant|>', '\n\nAssistant:', []), ('<|end|>', '\n\n', [g.eot_token])):
        ids = g.encode_ordinary(text) + extra
        row = tok.special_tokens[name]
        torch.testing.assert_close(model.transformer.wte.weight[row].detach(), wte[ids].mean(0))
        torch.testing.assert_close(model.lm_head.weight[row].detach(), head[ids].mean(0))
    assert torch.equal(model.transformer.wte.weight[:50257].detach(), wte)  # the old rows as they were
    assert not chat.grow_vocab(model, tok)  # grown once
