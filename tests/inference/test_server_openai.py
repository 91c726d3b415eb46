"""/v1/completions and /v1/chat/completions over a model built to always answer <|endoftext|> (its final norm's
bias points at that row of the head): a completion ends there, with none of the token's text."""

import pytest
import torch

pytest.importorskip('fastapi')
from fastapi.testclient import TestClient  # noqa: E402

from core.data import tokenizer  # noqa: E402
from core.inference.engine import Batch, Engine  # noqa: E402
from core.inference.server import make_app  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402


def eot_model(tok, favourite=None):
    """Every position's logits are the head's rows dotted with one fixed vector: the final norm's weight is 0 and
    its bias that vector, so its largest logit is the row set to match it (EOT unless favourite is given)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=tok.vocab_size + 3,
                          tie_embeddings=False)).eval()
    direction = torch.zeros(16)
    direction[0] = 1.0
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(direction)
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.eot_token if favourite is None else favourite] = 10 * direction
    return model


@pytest.fixture
def client():
    tok = tokenizer.char('hello world, how are you? bot>\n', special_tokens=(tokenizer.EOT,))
    engine = Engine(Batch(eot_model(tok), 2, 'cpu', n_vocab=tok.vocab_size, generator=torch.Generator().manual_seed(0)))
    with TestClient(make_app(engine, tok, 'tiny', 32, log=lambda line: None)) as c:
        yield c, tok
    engine.stop()


def test_a_completion_ends_at_endoftext_without_its_text(client):
    c, tok = client
    r = c.post('/v1/completions', json={'prompt': 'hello', 'max_tokens': 5, 'temperature': 0})
    assert r.status_code == 200, r.text
    choice = r.json()['choices'][0]
    assert choice['finish_reason'] == 'stop'
    assert choice['text'] == '' and tokenizer.EOT not in choice['text']
    assert r.json()['usage']['completion_tokens'] == 0


def test_echo_puts_the_prompt_before_the_completion(client):
    c, _ = client
    r = c.post('/v1/completions', json={'prompt': 'how are', 'max_tokens': 3, 'temperature': 0, 'echo': True})
    assert r.status_code == 200, r.text
    assert r.json()['choices'][0]['text'] == 'how are'  # the prompt, then nothing: the model stops at once
    r = c.post('/v1/completions', json={'prompt': 'how are', 'max_tokens': 3, 'temperature': 0})
    assert r.json()['choices'][0]['text'] == ''


def test_a_prompt_of_exactly_the_context_is_accepted_and_one_more_token_is_not(client):
    c, _ = client
    fits = 'hello world, how are you? hello'  # 31 characters
    assert len(fits) == 31
    r = c.post('/v1/completions', json={'prompt': fits + 'o', 'max_tokens': 2, 'temperature': 0})
    assert r.status_code == 200, r.text
    assert r.json()['usage']['prompt_tokens'] == 32
    r = c.post('/v1/completions', json={'prompt': fits + 'oo', 'max_tokens': 2, 'temperature': 0})
    assert r.status_code == 400 and r.json()['error']['code'] == 'context_length_exceeded'


def test_a_developer_message_is_a_system_message(client):
    # OpenAI's newer name for the system role. A base model's plain prompt gives a system message no label, so
    # "hello" as developer is "hello\nbot> " (11 characters) where a user's turn would be "you> hello\nbot> " (16)
    c, _ = client
    counts = {}
    for role in ('developer', 'system', 'user'):
        r = c.post('/v1/chat/completions', json={'messages': [{'role': role, 'content': 'hello'}], 'max_tokens': 2,
                                                 'temperature': 0})
        assert r.status_code == 200, r.text
        counts[role] = r.json()['usage']['prompt_tokens']
    assert counts == {'developer': 11, 'system': 11, 'user': 16}


def test_content_given_as_text_parts_is_their_text_joined_as_it_is(client):
    # OpenAI's list form of a message's content: the parts are one text, nothing put between them
    c, _ = client
    counts = []
    for content in ('hello', [{'type': 'text', 'text': 'hel'}, {'type': 'text', 'text': 'lo'}]):
        r = c.post('/v1/chat/completions', json={'messages': [{'role': 'user', 'content': content}], 'max_tokens': 2,
                                                 'temperature': 0})
        assert r.status_code == 200, r.text
        counts.append(r.json()['usage']['prompt_tokens'])
    assert counts == [16, 16]  # "you> hello\nbot> "
