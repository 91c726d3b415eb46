"""serve.py's API through the official openai client, raw HTTP for the bad requests, many clients at
once, a client that goes away, and the chat page in a real headless browser."""

import json
import os
import shutil
import socket
import threading
import time

import httpx
import pytest
import torch

from conftest import REPO, assert_one_line_error, run_script
from conftest import run_inprocess

KEY = 'sekret'


def save_run(folder):
    """A tiny char model (vocabulary with '>' so the chat uses 'you> ' / 'bot> ' turns) whose embedding
    is padded past the tokenizer, with larger weights so greedy choices are not near ties."""
    from core.training import checkpoint
    from core.data import tokenizer
    from model import GPT, GPTConfig
    with open(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt'), encoding='utf-8') as f:
        tok = tokenizer.char(f.read()[:20000] + '>')
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=128)
    torch.manual_seed(0)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    os.makedirs(folder, exist_ok=True)
    checkpoint.save({'model': model.state_dict(), 'model_args': config.to_dict(), 'iter_num': 0,
                     'best_val_loss': 1.0, 'tokenizer': tok.state()}, os.path.join(folder, 'ckpt.pt'))


class Server:
    """serve.py's pieces in a thread of this process, on a free port of 127.0.0.1."""

    def __init__(self, folder, **kw):
        import uvicorn
        from core.inference.engine import Batch, Engine, load
        from core.inference.server import make_app
        self.model, self.tok, name = load('resume', folder, say=lambda m: None)
        batch = Batch(self.model, 4, 'cpu', n_vocab=self.tok.vocab_size, generator=torch.Generator().manual_seed(0))
        self.engine = Engine(batch)
        app = make_app(self.engine, self.tok, name, self.model.config.block_size, **kw)
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.url = f'http://127.0.0.1:{self.sock.getsockname()[1]}'
        self.server = uvicorn.Server(uvicorn.Config(app, log_level='warning'))
        self.thread = threading.Thread(target=self.server.run, kwargs=dict(sockets=[self.sock]), daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.05)
        assert self.server.started

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.engine.stop()


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('serve_run'))
    save_run(folder)
    return folder


@pytest.fixture(scope='module')
def server(run_dir):
    s = Server(run_dir, api_key=KEY)
    yield s
    s.stop()


def client(server):
    from openai import OpenAI
    return OpenAI(base_url=server.url + '/v1', api_key=KEY, max_retries=0, timeout=60)


def greedy(server, ids, n):
    """The single-sequence greedy continuation, computed here."""
    out = server.model.generate(torch.tensor([ids]), n, temperature=0, n_vocab=server.tok.vocab_size)
    return server.tok.decode(out[0, len(ids):].tolist())


def test_openai_client_completions_chat_streaming_and_models(server, run_dir):
    c = client(server)
    [card] = c.models.list().data
    assert card.id == os.path.basename(run_dir)
    r = c.completions.create(model=card.id, prompt='ROMEO:', max_tokens=30, temperature=0)
    assert r.choices[0].text == greedy(server, server.tok.encode('ROMEO:'), 30)
    assert r.choices[0].finish_reason == 'length'
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (6, 30, 36)
    # greedy through the server is what sample.py prints
    code, out, err = run_inprocess('sample.py', f'--out_dir={run_dir}', '--start=ROMEO:', '--num_samples=1',
                                   '--max_new_tokens=30', '--temperature=0', '--device=cpu')
    assert code == 0, err
    assert out.split('\n---------------')[0] == 'ROMEO:' + r.choices[0].text
    # streamed, the pieces add up to the same text and the last chunk says why it ended
    chunks = list(c.completions.create(model=card.id, prompt='ROMEO:', max_tokens=30, temperature=0, stream=True,
                                       stream_options={'include_usage': True}))
    assert ''.join(ch.choices[0].text for ch in chunks if ch.choices) == r.choices[0].text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == 'length'
    assert chunks[-1].usage.completion_tokens == 30
    # chat: the base-model turns, ended by a blank line or 'you>' (stop strings never reach the client)
    messages = [{'role': 'user', 'content': 'What say you?'}]
    chat = c.chat.completions.create(model=card.id, messages=messages, max_tokens=40, temperature=0, stop=['zz'])
    from core.data import chat as chat_lib
    ids, _, stops = chat_lib.prompt(messages, server.tok, 64)
    assert server.tok.decode(ids).startswith('you> What say you?\nbot> ')
    expected = greedy(server, ids, 40)
    cut = min([expected.find(s) for s in stops + ['zz'] if s in expected] or [len(expected)])
    assert chat.choices[0].message.content == expected[:cut].lstrip()  # a reply starts at its first word
    assert chat.usage.prompt_tokens == len(ids)
    streamed = list(c.chat.completions.create(model=card.id, messages=messages, max_tokens=40, temperature=0,
                                              stream=True, stop=['zz']))
    assert streamed[0].choices[0].delta.role == 'assistant'
    assert ''.join(ch.choices[0].delta.content or '' for ch in streamed) == chat.choices[0].message.content
    # the same seed gives the same sample, whatever else is in the batch
    a = c.completions.create(model=card.id, prompt='ROMEO:', max_tokens=20, temperature=1.0, seed=7)
    b = c.completions.create(model=card.id, prompt='ROMEO:', max_tokens=20, temperature=1.0, seed=7)
    assert a.choices[0].text == b.choices[0].text


def test_many_clients_at_once_each_get_their_own_complete_stream(server):
    # 12 clients x 2 streaming requests on 4 rows: batched together, joining and leaving the batch
    # mid-generation; every stream must be complete, in order, and the single-sequence greedy text
    prompts = ['ROMEO:', 'JULIET:\nO', 'First Citizen:\nBefore we proceed', 'A', 'MENENIUS:\nWhy, masters']
    jobs = [(prompts[i % len(prompts)], 5 + 7 * (i % 4)) for i in range(24)]
    expected = {job: greedy(server, server.tok.encode(job[0]), job[1]) for job in set(jobs)}
    results, errors = {}, []

    def worker(i):
        try:
            with httpx.Client(timeout=120, headers={'Authorization': f'Bearer {KEY}'}) as h:
                for j in (i, i + 12):
                    prompt, n = jobs[j]
                    body = {'prompt': prompt, 'max_tokens': n, 'temperature': 0, 'stream': True}
                    with h.stream('POST', server.url + '/v1/completions', json=body) as r:
                        lines = [l for l in r.iter_lines() if l]
                    assert lines[-1] == 'data: [DONE]', lines[-3:]
                    chunks = [json.loads(l[6:]) for l in lines[:-1]]
                    assert len({ch['id'] for ch in chunks}) == 1  # one stream, not pieces of others
                    assert chunks[-1]['choices'][0]['finish_reason'] == 'length'
                    results[j] = ''.join(ch['choices'][0]['text'] for ch in chunks)
        except Exception as e:  # reported below; a thread's exception would be lost
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert all(results[j] == expected[job] for j, job in enumerate(jobs))


def post(server, path, body, key=KEY, raw=None):
    headers = {'Authorization': f'Bearer {key}'} if key is not None else {}
    return httpx.post(server.url + path, content=raw if raw is not None else json.dumps(body), headers=headers,
                      timeout=60)


@pytest.mark.parametrize('path, body, status, param', [
    ('/v1/completions', b'{"prompt": "ROMEO:", ', 400, None),  # malformed JSON
    ('/v1/completions', b'[1, 2]', 400, None),
    ('/v1/completions', {'prompt': 'ROMEO:', 'max_tokens': 'ten'}, 400, 'max_tokens'),
    ('/v1/completions', {'prompt': 'ROMEO:', 'max_tokens': -3}, 400, 'max_tokens'),
    ('/v1/completions', {'prompt': 'ROMEO:', 'max_tokens': 10 ** 12}, 400, 'max_tokens'),
    ('/v1/completions', {'prompt': 'ROMEO:', 'temperature': -0.5}, 400, 'temperature'),
    ('/v1/completions', {'prompt': 'ROMEO:', 'temperature': True}, 400, 'temperature'),
    ('/v1/completions', {'prompt': 'ROMEO:', 'top_p': 'all'}, 400, 'top_p'),
    ('/v1/completions', {'prompt': 'ROMEO:', 'top_p': 0}, 400, 'top_p'),  # keeps no token; sample.py refuses it too
    ('/v1/completions', {'prompt': 'ROMEO:', 'stream': True, 'stream_options': []}, 400, 'stream_options'),
    pytest.param('/v1/completions', b'{"prompt": ' + b'[' * 100_000 + b']' * 100_000 + b'}', 400, None,
                 id='nested-past-the-parser'),
    pytest.param('/v1/chat/completions', b'[' * 100_000 + b']' * 100_000, 400, None, id='nested-chat'),
    ('/v1/completions', {'prompt': [5, 10 ** 30]}, 400, 'prompt'),
    ('/v1/completions', {'prompt': [-1]}, 400, 'prompt'),
    ('/v1/completions', {'prompt': 'ROMEO:', 'stream': 'yes'}, 400, 'stream'),
    ('/v1/completions', {'prompt': 'ROMEO:', 'stop': [1, 2]}, 400, 'stop'),
    ('/v1/completions', {'prompt': 'ROMEO:', 'n': 3}, 400, 'n'),
    ('/v1/completions', {'prompt': ''}, 400, 'prompt'),
    ('/v1/completions', {'prompt': 42}, 400, 'prompt'),
    ('/v1/completions', {'prompt': 'x' * 65}, 400, 'prompt'),  # longer than the context of 64
    ('/v1/completions', {'prompt': 'héllo ☃'}, 400, 'prompt'),  # characters outside the char vocabulary
    ('/v1/chat/completions', {'messages': []}, 400, 'messages'),
    ('/v1/chat/completions', {'messages': [{'role': 'wizard', 'content': 'hi'}]}, 400, 'messages'),
    ('/v1/chat/completions', {'messages': [{'role': 'user', 'content': 5}]}, 400, 'messages'),
    ('/v1/chat/completions', {'messages': [{'role': 'user', 'content': 'a' * 200}]}, 400, 'messages'),
    ('/v1/nothing', {}, 404, None),
])
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, path, body, status, param):
    r = post(server, path, body, raw=body if isinstance(body, bytes) else None)
    assert r.status_code == status, r.text
    error = r.json()['error']
    assert error['message'] and error['type'] and error['param'] == param
    ok = post(server, '/v1/completions', {'prompt': 'ROMEO:', 'max_tokens': 3})
    assert ok.status_code == 200 and ok.json()['usage']['completion_tokens'] == 3


def test_wrong_or_missing_api_key(server):
    for key in ('wrong', None):
        r = post(server, '/v1/completions', {'prompt': 'ROMEO:'}, key=key)
        assert r.status_code == 401 and r.json()['error']['code'] == 'invalid_api_key'
        assert httpx.get(server.url + '/v1/models').status_code == 401
    assert httpx.get(server.url + '/').status_code == 200  # the page itself; it asks for the key


@pytest.fixture
def unbounded_server(run_dir):
    """A server that takes a generation no machine finishes while its client reads the first chunk, however busy."""
    s = Server(run_dir, api_key=KEY, max_tokens_limit=10 ** 9)
    yield s
    s.stop()


def test_a_client_that_goes_away_frees_its_row(unbounded_server):
    server = unbounded_server
    batch = server.engine.runner.batch
    with httpx.Client(timeout=60, headers={'Authorization': f'Bearer {KEY}'}) as h:
        body = {'prompt': 'ROMEO:', 'max_tokens': 10 ** 9, 'stream': True}
        with h.stream('POST', server.url + '/v1/completions', json=body) as r:
            # the line iterator is kept: dropped after the break, it would close the connection (httpcore closes a
            # stream whose iteration stops early), and the client would go away before the check below
            reading = r.iter_lines()
            for line in reading:
                if line.startswith('data: {') and json.loads(line[6:])['choices'][0]['text']:
                    break
            assert batch.active(), 'the request should be generating'
    for _ in range(200):  # the engine notices at its next step
        if not batch.active() and not server.engine.runner.waiting:
            break
        time.sleep(0.05)
    assert not batch.active()
    assert post(server, '/v1/completions', {'prompt': 'ROMEO:', 'max_tokens': 2}).status_code == 200


def test_serve_script_answers_and_a_taken_port_is_one_line(run_dir, tmp_path):
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'serve.py'), f'--out_dir={run_dir}', '--port=0',
                             '--device=cpu'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'))
    try:
        line = proc.stdout.readline()
        assert line.startswith('serving '), line + proc.stderr.read() if proc.poll() is not None else line
        url = line.split(' at ')[1].split(' ')[0]
        r = httpx.post(url + '/v1/completions', json={'prompt': 'ROMEO:', 'max_tokens': 5, 'temperature': 0}, timeout=60)
        assert r.status_code == 200 and len(r.json()['choices'][0]['text']) == 5
        taken = run_script('serve.py', f'--out_dir={run_dir}', f'--port={url.rsplit(":", 1)[1]}', timeout=60)
        assert taken.returncode == 2
        assert_one_line_error(taken, 'in use', '--port')
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def browser_or_skip():
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    driver = shutil.which('chromedriver')
    if not (chromium and driver):
        pytest.skip("needs chromium and chromium-driver (apt-get install chromium chromium-driver); not installed here")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_chat_page_in_a_browser_streams_a_reply(run_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    server = Server(run_dir, default_max_tokens=40)  # no key: the page needs none
    driver = browser_or_skip()
    try:
        driver.get(server.url + '/')
        temperature = driver.find_element(By.ID, 'temperature')
        temperature.clear()
        temperature.send_keys('0')
        box = driver.find_element(By.ID, 'input')
        box.send_keys('What say you?')
        driver.find_element(By.ID, 'send').click()
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '.msg.bot[data-done="true"]'))
        reply = driver.find_element(By.CSS_SELECTOR, '.msg.bot').get_attribute('textContent')
        # the page showed the reply the API gives for the same conversation at temperature 0
        from openai import OpenAI
        c = OpenAI(base_url=server.url + '/v1', api_key='x', max_retries=0)
        api = c.chat.completions.create(model='m', messages=[{'role': 'user', 'content': 'What say you?'}],
                                        temperature=0).choices[0].message.content
        assert reply and reply == api and not reply[0].isspace()
        driver.find_element(By.ID, 'reset').click()
        assert not driver.find_elements(By.CSS_SELECTOR, '.msg')
    finally:
        driver.quit()
        server.stop()


def test_chat_prompt_uses_chat_tokens_when_there_are_some_and_trims_old_turns():
    from core.data import chat
    from core.data import tokenizer
    text = 'abcdefghijklmnopqrstuvwxyz ?>\n'
    plain = tokenizer.char(text)
    with_chat = tokenizer.char(text, special_tokens=(tokenizer.EOT,) + chat.CHAT_TOKENS)
    turns = [{'role': 'system', 'content': 'be brief'}] + [
        {'role': r, 'content': f'turn {c}'} for c, r in zip('abcdef', ['user', 'assistant'] * 3)]
    ids, stop_ids, stops = chat.prompt(turns, with_chat, 1000)
    assert ids == chat.render(turns, with_chat) and stops == []
    # the end of a turn, of a text, or another turn's start: a reply that went on past <|assistant|> kept its text,
    # which the char vocabulary cannot encode, and every next line was refused
    assert set(stop_ids) == {with_chat.special_tokens[t] for t in chat.CHAT_TOKENS} | {with_chat.eot_token}
    assert len(stop_ids) == 5
    ids, stop_ids, stops = chat.prompt(turns, plain, 1000)
    assert plain.decode(ids) == 'be brief\nyou> turn a\nbot> turn b\nyou> turn c\nbot> turn d\nyou> turn e\nbot> turn f\nbot> '
    assert stops == ['\n\n', '\nyou>'] and stop_ids == []
    # a small window keeps the system message and the newest turns that fit with room for a reply
    ids, _, _ = chat.prompt(turns, plain, 60)
    assert plain.decode(ids) == 'be brief\nyou> turn e\nbot> turn f\nbot> '
    assert len(ids) <= 60 - 15
    with pytest.raises(chat.ChatError):
        chat.prompt([{'role': 'user', 'content': 'z' * 100}], plain, 60)


def test_requests_are_logged_in_one_line_and_nothing_logs_a_traceback(run_dir, caplog):
    import logging
    import socket as sockets
    lines = []
    server = Server(run_dir, log=lines.append, api_key=KEY)
    try:
        with caplog.at_level(logging.DEBUG):
            assert httpx.get(server.url + '/favicon.ico').status_code in (200, 204)  # no 404 in the browser's console
            r = post(server, '/v1/completions', None, raw=b'[' * 100_000 + b']' * 100_000)
            assert r.status_code == 400 and 'nested too deeply' in r.json()['error']['message']
            # a client that sends part of its body and hangs up
            c = sockets.create_connection(('127.0.0.1', int(server.url.rsplit(':', 1)[1])))
            c.sendall(b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                      b'Authorization: Bearer ' + KEY.encode() + b'\r\nContent-Length: 1000\r\n\r\n{"prompt": "RO')
            time.sleep(0.3)
            c.close()
            # a top_k past the vocabulary keeps every token, as top_k=0 does
            big = post(server, '/v1/completions', {'prompt': 'ROMEO:', 'max_tokens': 4, 'top_k': 10 ** 30, 'seed': 1})
            every = post(server, '/v1/completions', {'prompt': 'ROMEO:', 'max_tokens': 4, 'top_k': 0, 'seed': 1})
            assert big.status_code == 200 and big.json()['choices'][0]['text'] == every.json()['choices'][0]['text']
            assert post(server, '/v1/completions', {'prompt': 'ROMEO:'}, key='wrong').status_code == 401
            for _ in range(100):
                if len(lines) >= 6:
                    break
                time.sleep(0.05)
    finally:
        server.stop()
    assert not [r for r in caplog.records if r.exc_info or 'Traceback' in r.getMessage() or r.levelno >= logging.ERROR]
    assert lines[0].startswith('GET /favicon.ico 20') and lines[0].endswith(' ms')
    assert lines[1].startswith('POST /v1/completions 400 ') and len(lines) == 6 and all('\n' not in x for x in lines)
    assert lines[-1].startswith('POST /v1/completions 401 ')  # refused requests are logged too


def test_a_chat_reply_starts_at_its_first_word(server):
    from core.data import chat
    turns = [{'role': 'user', 'content': 'What say you?'}]
    ids, _, _ = chat.prompt(turns, server.tok, server.model.config.block_size)
    raw = greedy(server, ids, 12)
    assert raw[0].isspace()  # this model starts its reply with spaces
    c = client(server)
    whole = c.chat.completions.create(model='m', messages=turns, temperature=0, max_tokens=12).choices[0].message.content
    stream = ''.join(ch.choices[0].delta.content or '' for ch in c.chat.completions.create(
        model='m', messages=turns, temperature=0, max_tokens=12, stream=True) if ch.choices)
    assert whole == stream == raw.lstrip()


def test_a_chat_requests_own_stop_strings_cut_its_reply(server):
    # the chat's turn markers are added to the request's stop strings, not put in their place: a stop string taken
    # from the greedy reply (worked out here) ends it just before that string
    from core.data import chat
    turns = [{'role': 'user', 'content': 'What say you?'}]
    ids, _, stops = chat.prompt(turns, server.tok, server.model.config.block_size)
    raw = greedy(server, ids, 20)
    reply = raw[:min([raw.find(s) for s in stops if s in raw] or [len(raw)])]
    start = len(reply) - len(reply.lstrip())
    stop = next(reply[i:i + 2] for i in range(start + 3, len(reply) - 1) if reply.find(reply[i:i + 2]) == i)
    r = post(server, '/v1/chat/completions', {'messages': turns, 'temperature': 0, 'max_tokens': 20, 'stop': [stop]})
    assert r.status_code == 200, r.text
    content = r.json()['choices'][0]['message']['content']
    assert content == reply[:reply.find(stop)].lstrip() and len(content) >= 3
    assert r.json()['choices'][0]['finish_reason'] == 'stop'
