"""core/network.py, the one probe that prepare (the hub's datasets), tracking (wandb) and hf (the hub's
models) ask before a client that would retry for minutes: bounded in time, DNS lookup included."""

import socket
import threading
import time

import pytest

from core import network
from core.errors import UserError

threading_join = threading.Thread.join


def test_a_closed_port_is_a_reason_not_an_exception():
    t0 = time.time()
    assert network.unreachable('http://127.0.0.1:9', timeout=2)
    assert network.unreachable('http://127.0.0.1:9/api', timeout=2, http=True)
    assert time.time() - t0 < 30  # a hang guard: a refused connection answers at once


def test_a_lookup_that_never_answers_is_given_up_on(monkeypatch):
    # a socket's timeout does not bound getaddrinfo: the probe must not wait for it
    monkeypatch.setattr(socket, 'getaddrinfo', lambda *a, **k: time.sleep(20))
    for http in (False, True):
        t0 = time.time()
        assert network.unreachable('https://huggingface.co', timeout=0.5, http=http) == 'no answer within 0.5 s'
        assert time.time() - t0 < 15  # well before the lookup would answer, however busy the machine


def test_a_silent_server_is_no_answer_whichever_timeout_fires_first(monkeypatch):
    # the probe's socket times out at the same moment the wait for it ends: under load either comes first, and
    # the reason must not depend on which (the thread's own 'timed out' once leaked out of a prepare's error)
    joins = []
    monkeypatch.setattr(network.threading.Thread, 'join', lambda self, timeout=None: joins.append(
        threading_join(self)))  # wait for the probe itself: its socket's timeout fires first
    with socket.socket() as silent:  # takes the connection and never answers
        silent.bind(('127.0.0.1', 0))
        silent.listen(1)
        url = f'http://127.0.0.1:{silent.getsockname()[1]}/'
        assert network.unreachable(url, timeout=0.5, http=True) == 'no answer within 0.5 s'
    assert joins


def test_a_model_download_without_a_network_is_one_line_in_seconds(monkeypatch):
    hub = pytest.importorskip('huggingface_hub')
    import huggingface_hub.constants as hc

    from core.interop import hf

    def not_cached(*a, **k):
        raise FileNotFoundError('not in the cache')
    monkeypatch.setattr(hub, 'hf_hub_download', not_cached)
    monkeypatch.setattr(hc, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(socket, 'getaddrinfo', lambda *a, **k: time.sleep(10))
    t0 = time.time()
    with pytest.raises(UserError, match=r'cannot reach .* \(no answer within 3 s\)'):
        hf.from_pretrained('gpt2')
    assert time.time() - t0 < 9  # before the 10 s lookup would have answered
