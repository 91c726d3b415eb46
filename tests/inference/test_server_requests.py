"""The server's answers at the edges: token ids one past the vocabulary and options one past their range
get a 400 naming the field (and the values at the edge are served); the API key is compared whole, so
a prefix, an extension or another case of it gets a 401."""

import httpx
import pytest

from test_serve import KEY, Server, post, save_run


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('serve_edges'))
    save_run(folder)
    s = Server(folder, api_key=KEY, max_tokens_limit=64)
    yield s
    s.stop()


def test_token_ids_outside_the_tokenizer_are_refused(server):
    n = server.tok.vocab_size  # the model's embedding has more rows (128): those ids decode to nothing
    assert server.model.config.vocab_size > n
    for ids in ([n], [0, n], [-1], [server.model.config.vocab_size], [10 ** 12], [1, True], [1.0]):
        r = post(server, '/v1/completions', {'prompt': ids, 'max_tokens': 1})
        assert r.status_code == 400, (ids, r.text)
        assert r.json()['error']['param'] == 'prompt'
    for ids in ([0], [n - 1], [0, n - 1, 5]):
        r = post(server, '/v1/completions', {'prompt': ids, 'max_tokens': 1})
        assert r.status_code == 200, (ids, r.text)


BAD = [('max_tokens', 0), ('max_tokens', 65), ('max_tokens', 2.5), ('temperature', 2.01), ('temperature', -1e-9),
       ('temperature', 'hot'), ('top_p', 1.01), ('top_p', -0.01), ('top_p', 0), ('top_p', [0.5]), ('top_k', -1),
       ('top_k', 2.5), ('top_k', '5'), ('seed', 'x'), ('seed', 2 ** 64), ('seed', 1.5), ('n', 2), ('n', 0),
       ('stop', ''), ('stop', ['a', 'b', 'c', 'd', 'e']), ('stop', [None]), ('stream', 1), ('echo', 'no'),
       ('stream_options', 'yes'), ('stream_options', {'include_usage': 'yes'}), ('presence_penalty', 0.5),
       ('frequency_penalty', -1), ('logit_bias', {'5': 10}), ('logprobs', 2), ('model', 7)]
GOOD = [('max_tokens', 1), ('max_tokens', 64), ('temperature', 0), ('temperature', 2), ('top_p', 1e-9), ('top_p', 1),
        ('top_k', 0), ('top_k', 1000), ('seed', -2 ** 63), ('seed', 2 ** 64 - 1), ('n', 1), ('stop', ['a', 'b', 'c', 'd']),
        ('presence_penalty', 0), ('logit_bias', {}), ('echo', True)]


@pytest.mark.parametrize('name, value', BAD, ids=[f'{n}={v!r}' for n, v in BAD])
def test_malformed_options_get_a_400_naming_them(server, name, value):
    body = {'prompt': 'ROMEO:', 'max_tokens': 2, name: value}
    r = post(server, '/v1/completions', body)
    assert r.status_code == 400, r.text
    assert r.json()['error']['param'] == name


def test_a_range_with_one_end_is_said_without_the_other():
    # 'top_p' must be between None and 1, 'top_k' must be between 0 and None
    from core.inference.server import ApiError, _params
    for body, said in (({'top_p': 1.5}, "'top_p' must be in (0, 1], got 1.5"),
                       ({'top_k': -5}, "'top_k' must be at least 0, got -5"),
                       ({'max_tokens': 0}, "'max_tokens' must be between 1 and 64, got 0")):
        with pytest.raises(ApiError) as e:
            _params(body, 16, 64, 65)
        assert e.value.message == said


@pytest.mark.parametrize('name, value', GOOD, ids=[f'{n}={v!r}' for n, v in GOOD])
def test_options_at_their_edges_are_served(server, name, value):
    body = {'prompt': 'ROMEO:', 'max_tokens': 2, name: value}
    r = post(server, '/v1/completions', body)
    assert r.status_code == 200, r.text


def test_the_api_key_is_compared_whole(server):
    for key in (KEY[:-1], KEY[:1], KEY + 'x', KEY.upper(), 'x' + KEY):
        r = post(server, '/v1/completions', {'prompt': 'ROMEO:', 'max_tokens': 1}, key=key)
        assert r.status_code == 401, (key, r.text)
        assert r.json()['error']['code'] == 'invalid_api_key'
    for header in (KEY, f'Bearer{KEY}', f'Basic {KEY}', f'Bearer {KEY[:-1]}'):
        r = httpx.post(server.url + '/v1/completions', json={'prompt': 'ROMEO:', 'max_tokens': 1},
                       headers={'Authorization': header}, timeout=60)
        assert r.status_code == 401, (header, r.text)
    assert post(server, '/v1/completions', {'prompt': 'ROMEO:', 'max_tokens': 1}).status_code == 200


def test_request_params_reach_the_sequence_as_given_and_default_as_openai_does():
    # server._params by itself (no server): what a request's options become in the sequence's Params
    from core.inference.engine import Params
    from core.inference.server import ApiError, _params
    assert _params({}, 16, 64, 65) == (Params(max_tokens=16, temperature=1.0, top_k=0, top_p=1.0), False, False)
    params, stream, usage = _params({'max_tokens': 9, 'temperature': 0.5, 'top_p': 0.9, 'top_k': 7, 'stop': 'x',
                                     'seed': 3, 'stream': True, 'stream_options': {'include_usage': True}}, 16, 64, 65)
    assert params == Params(max_tokens=9, temperature=0.5, top_k=7, top_p=0.9, stop=('x',), seed=3)
    assert stream and usage
    # max_completion_tokens, OpenAI's newer name, wins over max_tokens and is the one checked against the limit
    assert _params({'max_completion_tokens': 5, 'max_tokens': 9}, 16, 64, 65)[0].max_tokens == 5
    with pytest.raises(ApiError) as e:
        _params({'max_completion_tokens': 65, 'max_tokens': 9}, 16, 64, 65)
    assert e.value.param == 'max_completion_tokens'
    # top_k of the whole vocabulary or more keeps every token (0); seeds fold into [0, 2^63)
    assert [_params({'top_k': k}, 16, 64, 65)[0].top_k for k in (64, 65, 1000)] == [64, 0, 0]
    assert [_params({'seed': s}, 16, 64, 65)[0].seed for s in (2 ** 64 - 1, -1, 5)] == [2 ** 63 - 1, 2 ** 63 - 1, 5]
    # JSON's NaN (Python's json reads it) is no number in any range
    for name in ('temperature', 'top_p', 'presence_penalty', 'seed', 'max_tokens'):
        with pytest.raises(ApiError) as e:
            _params({name: float('nan')}, 16, 64, 65)
        assert e.value.status == 400 and e.value.param == name, name
