"""
Serve a model over HTTP: an OpenAI-compatible API and a chat page in the browser.

    python serve.py --out_dir=out-shakespeare-char          # http://127.0.0.1:8000: chat page + /v1 API
    curl localhost:8000/v1/completions -d '{"prompt": "ROMEO:", "max_tokens": 50}'
    python serve.py --init_from=gpt2 --host=0.0.0.0 --api_key=SECRET   # reachable from other machines

Concurrent requests are generated together, one batch (core/inference/engine.py); the HTTP side is
core/inference/server.py on FastAPI + uvicorn.
"""

import socket
import sys

from configurator import config_keys, configure
from core.errors import UserError, fail, install_excepthook

# -----------------------------------------------------------------------------
init_from = 'resume'  # 'resume' (a checkpoint in out_dir), 'gpt2', 'gpt2-medium', ... or 'hf:<folder>'
out_dir = ''  # empty: the most recently written run under the current folder
ckpt = 'best'  # 'best', 'latest' or a step number
dataset = ''  # empty: the tokenizer saved with the checkpoint
host = '127.0.0.1'  # this machine only; 0.0.0.0 to serve other machines too (set api_key then)
port = 8000  # 0 picks a free one
api_key = ''  # when set, every /v1 request must send 'Authorization: Bearer <api_key>'
max_batch = 16  # requests generated together; more wait for a free row
max_tokens = 256  # a chat reply's length when the request does not say
max_tokens_limit = 4096  # the most one request may ask for
seed = 1337  # the random stream of requests without a seed of their own
device = 'auto'
dtype = 'auto'  # the weights: float32, bfloat16, float16 (GPU), int8 (weight-only, CPU); auto: fp32 on CPU, 16-bit on GPU
compile = 'auto'  # compile the decode step at start, one graph per bucket; auto: on a GPU, on a CPU for long replies
cuda_graphs = False  # on a GPU with compile, replay each decode step as a CUDA graph
threads = 0  # CPU threads; 0: the faster of 1 and all cores, timed at start (OMP_NUM_THREADS also decides)
exact_window = False  # past block_size: True recomputes the whole window for every token (nanoGPT)
# -----------------------------------------------------------------------------
install_excepthook()
configure(globals(), config_keys(globals()), extra={'compile': (True, False)})

from core.hardware import check_threads  # noqa: E402  (after the config, so --help stays fast)

check_threads(threads)
if not 0 <= port <= 65535:
    raise UserError(f"port must be in 0..65535, got {port}")
if max_batch < 1 or max_tokens < 1 or max_tokens_limit < max_tokens:
    raise UserError("max_batch and max_tokens must be positive, and max_tokens_limit at least max_tokens")


def bind(host, port):
    """The listening socket, bound before the model loads so a taken port fails at once, in one line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        fail(f"cannot use host '{host}' ({e.strerror}); try --host=127.0.0.1")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            fail(f"port {port} on {host} is in use (another server?); stop it or pick another with --port=")
        fail(f"cannot listen on {host}:{port} ({e.strerror}); check --host and --port")
    return sock


sock = bind(host, port)

import torch  # noqa: E402  (after the socket, so a taken port is reported at once)
import uvicorn  # noqa: E402

from core.inference.engine import Batch, Engine  # noqa: E402
from core.inference.server import make_app  # noqa: E402
from core.inference.setup import setup  # noqa: E402

say = lambda m: print(m, file=sys.stderr)  # noqa: E731
s = setup(init_from, out_dir, ckpt, dataset, device, dtype, compile, tokens=max_tokens, say=say,
          cuda_graphs=cuda_graphs, threads=threads)
model, tok, name = s.model, s.tok, s.name
# rows in use are the lowest free ones, so a step runs over the smallest power of two that holds them
buckets = [2 ** i for i in range(max_batch.bit_length())] + [max_batch]
batch = Batch(model, max_batch, s.device, exact_window=exact_window, n_vocab=tok.vocab_size,
              generator=s.generator(seed), compiled=s.compiled, buckets=buckets, greedy_graphs=False)
if s.compiled is not None:
    with torch.no_grad():
        batch.compile_all()  # paid here, not by the first requests
engine = Engine(batch)
app = make_app(engine, tok, name, model.config.block_size, api_key=api_key, default_max_tokens=max_tokens,
               max_tokens_limit=max_tokens_limit)

bound = sock.getsockname()[1]
shown = f'[{host}]' if ':' in host else host
print(f"serving {name} at http://{shown}:{bound} (chat page at /, OpenAI API at /v1); Ctrl-C stops", flush=True)
if host not in ('127.0.0.1', 'localhost', '::1') and not api_key:
    print("note: reachable from other machines with no --api_key: anyone who can connect can use it", file=sys.stderr)
server = uvicorn.Server(uvicorn.Config(app, log_level='warning', timeout_graceful_shutdown=2))
server.run(sockets=[sock])
engine.stop()
