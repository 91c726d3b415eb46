"""The OpenAI-compatible HTTP API and the chat page over core/inference/engine.py's Engine; serve.py runs it.

    GET  /                      the chat page (assets/chat.html, nothing from a CDN)
    GET  /v1/models             the one model served
    POST /v1/completions        prompt -> text; "stream": true sends server-sent events
    POST /v1/chat/completions   messages -> the model's prompt format (core/data/chat.py) -> reply

Requests are checked by hand rather than by pydantic so every mistake gets OpenAI's error shape,
{"error": {"message", "type", "param", "code"}}, with a 4xx status. Each request becomes a Sequence
handed to the engine's thread, which batches it with whatever else is generating; its text comes back
through an asyncio queue. A client that goes away cancels its sequence and frees its row.
"""

import asyncio
import hmac
import json
import os
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from core.data import chat as chat_lib
from core.data import tokenizer as tokenizer_lib
from core.inference.engine import Params, Sequence
from core.errors import UserError
from core.paths import ASSETS

PAGE = os.path.join(ASSETS, 'chat.html')


class ApiError(Exception):
    def __init__(self, status, message, param=None, code=None, kind='invalid_request_error'):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self):
        return {'error': {'message': self.message, 'type': self.kind, 'param': self.param, 'code': self.code}}


def _number(data, name, default, low=None, high=None, integer=False, above=None):
    """data[name] checked to be a number (an integer) in [low, high], or above `above` when that is given."""
    value = data.get(name)
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value != value:
        raise ApiError(400, f"'{name}' must be {'an integer' if integer else 'a number'}, got {json.dumps(value)}", name)
    if (low is not None and value < low) or (high is not None and value > high) or (above is not None and
                                                                                    not value > above):
        where = (f"in ({above}, {high}]" if above is not None else f"at most {high}" if low is None else
                 f"at least {low}" if high is None else f"between {low} and {high}")
        raise ApiError(400, f"'{name}' must be {where}, got {value}", name)
    return value


def _params(data, default_max_tokens, max_tokens_limit, vocab_size):
    for name in ('logprobs', 'top_logprobs', 'logit_bias', 'tools', 'functions', 'suffix'):
        if data.get(name) not in (None, False, 0, {}, []):
            raise ApiError(400, f"'{name}' is not supported by this server", name)
    for name in ('presence_penalty', 'frequency_penalty'):
        if _number(data, name, 0) != 0:
            raise ApiError(400, f"'{name}' is not supported by this server (only 0)", name)
    if _number(data, 'n', 1, integer=True) != 1:
        raise ApiError(400, "'n' must be 1: one completion per request", 'n')
    if 'model' in data and not isinstance(data['model'], str):
        raise ApiError(400, "'model' must be a string", 'model')
    name = 'max_completion_tokens' if data.get('max_completion_tokens') is not None else 'max_tokens'
    stop = data.get('stop')
    if isinstance(stop, str):
        stop = [stop]
    if stop is None:
        stop = []
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, "'stop' must be a non-empty string or a list of at most 4 of them", 'stop')
    seed = data.get('seed')
    if seed is not None:
        seed = _number(data, 'seed', None, -2 ** 63, 2 ** 64 - 1, integer=True) % 2 ** 63
    stream = data.get('stream', False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", 'stream')
    options = data.get('stream_options')
    options = {} if options is None else options
    if not isinstance(options, dict) or not isinstance(options.get('include_usage', False), bool):
        raise ApiError(400, "'stream_options' must be an object like {\"include_usage\": true}", 'stream_options')
    params = Params(max_tokens=_number(data, name, default_max_tokens, 1, max_tokens_limit, integer=True),
                    temperature=float(_number(data, 'temperature', 1.0, 0, 2)),
                    top_p=float(_number(data, 'top_p', 1.0, high=1, above=0)),  # 0 would keep no token: sample.py refuses it too
                    top_k=_number(data, 'top_k', 0, 0, None, integer=True), stop=tuple(stop), seed=seed)
    if params.top_k >= vocab_size:
        params.top_k = 0  # every token, said the way the sampler understands at any size

    return params, stream, bool(options.get('include_usage'))


def _text(content, i):
    # a message's content: a string, or OpenAI's list of parts of which only text ones are understood
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get('type') == 'text' and
                                         isinstance(p.get('text'), str) for p in content):
        return ''.join(p['text'] for p in content)
    raise ApiError(400, f"messages[{i}].content must be a string (or a list of text parts)", 'messages')


def log_line(line):
    print(line, flush=True)


def make_app(engine, tok, model_name, context, api_key='', default_max_tokens=256, max_tokens_limit=4096, log=log_line):
    """The FastAPI app. context: the model's block_size; a completion prompt longer than it is refused,
    a chat leaves out its oldest turns. max_tokens_limit bounds one request's generation. log(line) gets
    one line per request: method, path, status and the time to its answer (a stream's first bytes)."""
    app = FastAPI(title='nanoGPT server', docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def api_error(request, e):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def http_error(request, e):
        return JSONResponse(ApiError(e.status_code, str(e.detail)).body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def our_bug(request, e):
        return JSONResponse(ApiError(500, f"internal error: {type(e).__name__}: {e}", kind='server_error').body(),
                            status_code=500)

    @app.middleware('http')
    async def check_key(request, call_next):
        if api_key and request.url.path.startswith('/v1'):
            given = request.headers.get('authorization', '')
            if not hmac.compare_digest(given.encode(), f'Bearer {api_key}'.encode()):
                e = ApiError(401, "incorrect or missing API key: send 'Authorization: Bearer KEY' with --api_key's "
                                  "value", code='invalid_api_key')
                return JSONResponse(e.body(), status_code=401)
        return await call_next(request)

    @app.middleware('http')  # added last, so it is outermost and sees every answer, a 401 too
    async def log_request(request, call_next):
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            log(f"{request.method} {request.url.path} {status} {(time.perf_counter() - t0) * 1000:.0f} ms")

    @app.get('/favicon.ico')
    async def favicon():
        return Response(status_code=204)  # the page names an inline icon; this answers browsers that ask anyway

    @app.get('/', response_class=HTMLResponse)
    async def page():
        with open(PAGE, encoding='utf-8') as f:
            return f.read()

    def model_card():
        return {'id': model_name, 'object': 'model', 'created': created, 'owned_by': 'nanogpt'}

    @app.get('/v1/models')
    async def models():
        return {'object': 'list', 'data': [model_card()]}

    @app.get('/v1/models/{name:path}')
    async def one_model(name: str):
        if name != model_name:
            raise ApiError(404, f"no model '{name}'; this server has '{model_name}'", 'model', 'model_not_found')
        return model_card()

    async def body_of(request):
        try:
            raw = await request.body()
        except ClientDisconnect:
            raise ApiError(400, "the client closed the connection before sending the whole body") from None
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON ({e})") from None
        except RecursionError:
            raise ApiError(400, "the request body is JSON nested too deeply to read") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object")
        try:  # JSON may escape half of a surrogate pair ("\ud800"): no text, and an echo of it could not be sent back
            json.dumps(data, ensure_ascii=False).encode('utf-8')
        except UnicodeEncodeError as e:
            bad = e.object[e.start:e.end].encode('unicode_escape').decode()
            raise ApiError(400, f"the request body holds {bad}, half of a UTF-16 surrogate pair, which is no text; "
                                f"send whole characters") from None
        return data

    def encode(text, param):
        try:
            return tok.encode(text)
        except tokenizer_lib.TokenizerError as e:
            raise ApiError(400, str(e), param) from None

    @app.post('/v1/completions')
    async def completions(request: Request):
        data = await body_of(request)
        params, stream, usage = _params(data, 16, max_tokens_limit, tok.vocab_size)
        prompt = data.get('prompt')
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = encode(prompt, 'prompt')
        elif isinstance(prompt, list) and prompt and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
            if not all(0 <= i < tok.vocab_size for i in prompt):
                raise ApiError(400, f"'prompt' token ids must be in 0..{tok.vocab_size - 1}", 'prompt')
            ids, prompt = list(prompt), tok.decode(prompt)
        else:
            raise ApiError(400, "'prompt' must be a string (or a list of token ids); one prompt per request", 'prompt')
        if not ids:
            raise ApiError(400, "'prompt' is empty; give some text to continue", 'prompt')
        if len(ids) > context:
            raise ApiError(400, f"the prompt has {len(ids)} tokens; this model's context is {context}", 'prompt',
                           'context_length_exceeded')
        echo = data.get('echo', False)
        if not isinstance(echo, bool):
            raise ApiError(400, "'echo' must be true or false", 'echo')
        params.stop_ids = (tok.eot_token,) if tok.eot_token is not None else ()
        head = prompt if echo else ''

        def chunk(cid, text, finish):
            return {'id': cid, 'object': 'text_completion', 'created': int(time.time()), 'model': model_name,
                    'choices': [{'index': 0, 'text': text, 'logprobs': None, 'finish_reason': finish}]}

        def whole(cid, seq):
            out = chunk(cid, head + seq.text, seq.finish_reason)
            out['usage'] = usage_of(ids, seq)
            return out
        return await respond(request, ids, params, stream, usage, chunk, whole, 'cmpl', first=head)

    @app.post('/v1/chat/completions')
    async def chat_completions(request: Request):
        data = await body_of(request)
        params, stream, usage = _params(data, default_max_tokens, max_tokens_limit, tok.vocab_size)
        messages = data.get('messages')
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "'messages' must be a non-empty list of {\"role\": ..., \"content\": ...}", 'messages')
        turns = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                raise ApiError(400, f"messages[{i}] must be an object", 'messages')
            role = 'system' if m.get('role') == 'developer' else m.get('role')
            if role not in chat_lib.ROLES:
                raise ApiError(400, f"messages[{i}].role must be one of {', '.join(chat_lib.ROLES)}", 'messages')
            turns.append({'role': role, 'content': _text(m.get('content'), i)})
        if not any(t['content'] for t in turns):
            raise ApiError(400, "the messages are all empty; say something", 'messages')
        try:
            ids, stop_ids, stops = chat_lib.prompt(turns, tok, context)
        except UserError as e:
            code = 'context_length_exceeded' if 'context' in str(e) else None
            raise ApiError(400, str(e), 'messages', code) from None
        params.stop_ids = tuple(stop_ids)
        params.stop = tuple(dict.fromkeys(params.stop + tuple(stops)))

        def chunk(cid, text, finish):
            delta = {} if finish else {'content': text}
            return {'id': cid, 'object': 'chat.completion.chunk', 'created': int(time.time()), 'model': model_name,
                    'choices': [{'index': 0, 'delta': delta, 'logprobs': None, 'finish_reason': finish}]}

        def whole(cid, seq):
            return {'id': cid, 'object': 'chat.completion', 'created': int(time.time()), 'model': model_name,
                    'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': seq.text.lstrip()},
                                 'logprobs': None, 'finish_reason': seq.finish_reason}],
                    'usage': usage_of(ids, seq)}
        # a reply starts at its first word: the newline or space a model often begins with is not shown
        return await respond(request, ids, params, stream, usage, chunk, whole, 'chatcmpl', lstrip=True,
                             role_chunk=lambda cid: {**chunk(cid, '', None), 'choices': [
                                 {'index': 0, 'delta': {'role': 'assistant', 'content': ''}, 'logprobs': None,
                                  'finish_reason': None}]})

    def usage_of(ids, seq):
        return {'prompt_tokens': len(ids), 'completion_tokens': len(seq.out),
                'total_tokens': len(ids) + len(seq.out)}

    async def respond(request, ids, params, stream, include_usage, chunk, whole, prefix, first='', role_chunk=None,
                      lstrip=False):
        loop = asyncio.get_running_loop()
        events = asyncio.Queue()
        seq = Sequence(ids, params, decode=tok.decode)

        def callback(kind, value):  # on the engine's thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # the server is shutting down
                seq.cancelled = True
        engine.submit(seq, callback)
        cid = f'{prefix}-{uuid.uuid4().hex[:24]}'
        if not stream:
            try:
                while True:
                    try:
                        kind, value = await asyncio.wait_for(events.get(), timeout=1.0)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            return JSONResponse({}, status_code=499)
                        continue
                    if kind == 'error':
                        raise ApiError(500, value, kind='server_error')
                    if kind == 'done':
                        return whole(cid, seq)
            finally:
                seq.cancelled = seq.cancelled or not seq.finished

        def sse(obj):
            return f"data: {json.dumps(obj)}\n\n"

        async def events_out():
            try:
                if role_chunk is not None:
                    yield sse(role_chunk(cid))
                if first:
                    yield sse(chunk(cid, first, None))
                started = not lstrip
                while True:
                    kind, value = await events.get()
                    if kind == 'delta':
                        if not started:
                            value = value.lstrip()
                            started = bool(value)
                            if not started:
                                continue
                        yield sse(chunk(cid, value, None))
                    elif kind == 'error':
                        yield sse(ApiError(500, value, kind='server_error').body())
                        break
                    else:
                        yield sse(chunk(cid, '', value))
                        if include_usage:
                            yield sse({**chunk(cid, '', None), 'choices': [], 'usage': usage_of(ids, seq)})
                        break
                yield "data: [DONE]\n\n"
            finally:  # the client went away (or we are done): free the row
                seq.cancelled = seq.cancelled or not seq.finished
        return StreamingResponse(events_out(), media_type='text/event-stream',
                                 headers={'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no'})

    return app
