"""serve.py's wiring and core/inference/setup.py's: the limits, seed and window serve.py was given reach the batch
and the app, and setup honours --threads and --seed. The model, the batch and the app are stand-ins that record
what they were given; serve.py is stopped before it listens."""

import types

import pytest
import torch

from conftest import assert_one_error_line, run_inprocess
from core.inference import engine, server
from core.inference import setup as inference_setup
from model import GPT, GPTConfig


class Stop(Exception):
    pass


def stop(*args, **kwargs):
    raise Stop()


def test_a_token_limit_below_the_default_reply_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(inference_setup, 'setup', stop)  # were the limit taken, no model is loaded
    code, out, err = run_inprocess('serve.py', '--port=0', '--max_tokens=10', '--max_tokens_limit=5')
    assert_one_error_line(code, err, 'max_tokens_limit at least max_tokens')


def test_serve_hands_its_limits_seed_and_window_to_the_batch_and_the_app(monkeypatch):
    given = {}
    # the model's vocabulary padded to 128, the tokenizer's 65: ids from 65 on are padding
    config = types.SimpleNamespace(block_size=32, vocab_size=128)
    fake = types.SimpleNamespace(model=types.SimpleNamespace(config=config),
                                 tok=types.SimpleNamespace(vocab_size=65), name='stand-in', device='cpu',
                                 compiled=None, generator=lambda seed: ('generator', seed))
    monkeypatch.setattr(inference_setup, 'setup', lambda *a, **k: given.update(setup=k) or fake)

    def batch(model, max_batch, device, **k):
        given['batch'] = dict(k, max_batch=max_batch)
        return 'batch'
    monkeypatch.setattr(engine, 'Batch', batch)
    monkeypatch.setattr(engine, 'Engine', lambda b: 'engine')

    def make_app(engine_, tok, name, block_size, **k):
        given['app'] = k
        raise Stop()
    monkeypatch.setattr(server, 'make_app', make_app)
    code, out, err = run_inprocess('serve.py', '--port=0', '--max_tokens=7', '--max_tokens_limit=99', '--seed=5',
                                   '--max_batch=6', '--exact_window=True', '--threads=1')
    assert 'Stop' in err, err
    assert given['app']['default_max_tokens'] == 7 and given['app']['max_tokens_limit'] == 99
    b = given['batch']
    assert b['max_batch'] == 6 and b['generator'] == ('generator', 5) and b['exact_window'] is True
    assert b['n_vocab'] == 65
    assert given['setup'].get('tokens') == 7 and given['setup'].get('threads') == 1


@pytest.fixture
def tiny_load(monkeypatch):
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11))
    model.eval()
    monkeypatch.setattr(inference_setup, 'load', lambda *a, **k: (model, None, 'tiny'))
    return model


def test_setup_passes_the_threads_asked_for(tiny_load, monkeypatch):
    from core import hardware
    asked = []
    monkeypatch.setattr(hardware, 'pick_threads', lambda step, requested=0, device='cpu', log=print:
                        asked.append(requested))
    inference_setup.setup('resume', '', 'best', '', 'cpu', 'float32', False, tokens=5, say=lambda m: None, threads=3)
    assert asked == [3]


def test_setups_generator_draws_the_stream_of_the_seed_given(tiny_load, monkeypatch):
    from core import hardware
    monkeypatch.setattr(hardware, 'pick_threads', lambda *a, **k: None)
    s = inference_setup.setup('resume', '', 'best', '', 'cpu', 'float32', False, tokens=5, say=lambda m: None)
    for seed in (5, 6):
        expected = torch.rand(4, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(torch.rand(4, generator=s.generator(seed)), expected)
