"""
Sample from a trained model, or chat with it.

    python sample.py --start="greeting sire"           # the most recent run under this folder
    python sample.py --out_dir=out-shakespeare-char --num_samples=1 --temperature=0
    python sample.py --init_from=gpt2 --start="FILE:prompt.txt"
    python sample.py --interactive=True                # you> / bot> loop; /reset, /temp 0.7, /quit
    python sample.py --num_samples=8                   # eight samples generated together, one batch
    python sample.py --max_new_tokens=5000 --dtype=int8  # a long one: the decode step compiled, int8 weights

Generation is core/inference/engine.py's (shared with serve.py); the chat's prompt format is core/data/chat.py's.
"""

import re
import sys
import time

import torch

from configurator import config_keys, configure
from core.errors import UserError, install_excepthook
from core.hardware import check_threads
from model import MAX_TEMPERATURE, sampling_problem


# -----------------------------------------------------------------------------
init_from = 'resume'  # 'resume' (a checkpoint in out_dir), 'gpt2', 'gpt2-medium', ... or 'hf:<folder>'
out_dir = ''  # empty: the most recently written run under the current folder
ckpt = 'best'  # 'best' (lowest val loss), 'latest', or a step number (keep_checkpoints); falls back as train saves
dataset = ''  # empty: the tokenizer saved with the checkpoint; else check that this dataset matches it
start = "\n"  # the prompt, or FILE:path to read it from a file
num_samples = 3  # generated together, as one batch
max_new_tokens = 500
temperature = 0.8  # 0 is greedy
top_k = 200  # 0 keeps all tokens
top_p = 1.0  # nucleus sampling; 1.0 keeps all tokens
seed = 1337
device = 'auto'
dtype = 'auto'  # the weights: float32, bfloat16, float16 (GPU), int8 (weight-only, CPU); auto: fp32 on CPU, 16-bit on GPU
compile = 'auto'  # compile the decode step once (core/inference/decode.py); auto: on a GPU, and on a CPU for long generations
cuda_graphs = False  # on a GPU with compile, replay each decode step as a CUDA graph
threads = 0  # CPU threads; 0: the faster of 1 and all cores, timed at start (OMP_NUM_THREADS also decides)
use_cache = True  # KV cache; False recomputes the whole context at each step
exact_window = False  # past block_size: True recomputes the whole window for every token (nanoGPT), False slides the cache
interactive = False
# -----------------------------------------------------------------------------
install_excepthook()
config = configure(globals(), config_keys(globals()), extra={'compile': (True, False)})

check_threads(threads)
if num_samples <= 0 or max_new_tokens < 0:
    raise UserError("num_samples must be positive and max_new_tokens not negative")
if sampling_problem(temperature, top_k, top_p):
    raise UserError(sampling_problem(temperature, top_k, top_p))
if interactive and (sys.stdin is None or sys.stdin.closed):
    raise UserError("--interactive=True reads your lines from stdin, which is closed; run it in a terminal or pipe text in")

from core.data import tokenizer as tokenizer_lib  # noqa: E402  (after the config, so --help stays fast)
from core.data import chat as chat_lib  # noqa: E402
from core.inference.engine import Batch, Params, Sequence, run  # noqa: E402
from core.inference.prompts import read_prompt_file  # noqa: E402
from core.inference.setup import setup  # noqa: E402
from core.training.planner import device_budget  # noqa: E402
from core.units import format_bytes  # noqa: E402

torch.manual_seed(seed)
say = lambda m: print(m, file=sys.stderr)  # noqa: E731
# a chat's length is not known: it is counted as max_new_tokens per reply
s = setup(init_from, out_dir, ckpt, dataset, device, dtype, compile, tokens=max_new_tokens if use_cache else 0,
          say=say, cuda_graphs=cuda_graphs, threads=threads, rows=1 if interactive else num_samples)
model, tok, device = s.model, s.tok, s.device
generator = s.generator(seed)


def new_batch(rows):
    return Batch(model, rows, device, exact_window=exact_window, n_vocab=tok.vocab_size, generator=generator,
                 compiled=s.compiled)


def params():
    return Params(max_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                  stop_ids=(tok.eot_token,) if tok.eot_token is not None else ())


def chat():
    """A you> / bot> loop: the conversation so far is the prompt (core/data/chat.py's format), oldest turns
    left out once it outgrows the context window."""
    global temperature
    messages, batch = [], new_batch(1)
    print("chat: type a line; /reset clears the history, /temp 0.7 sets the temperature, /quit or Ctrl-D exits")
    while True:
        try:
            line = input('you> ')
        except EOFError:
            print()
            return
        cmd = line.strip()
        if cmd == '/quit':
            return
        if cmd == '/reset':
            messages = []
            print('(history cleared)')
            continue
        if cmd.startswith('/temp'):
            try:
                value = float(cmd.split()[1])
                if sampling_problem(value):
                    raise ValueError
                temperature = value
                print(f'(temperature {temperature:g})')
            except (IndexError, ValueError):
                print(f'(usage: /temp 0.7, a number from 0 to {MAX_TEMPERATURE:.3g})')
            continue
        if re.fullmatch(r'/[A-Za-z]+', cmd.split()[0] if cmd else ''):  # a mistyped command, not a message
            print('(commands: /reset, /temp 0.7, /quit)')
            continue
        try:
            ids, stop_ids, stops = chat_lib.prompt(messages + [{'role': 'user', 'content': line}], tok,
                                                   model.config.block_size)
        except UserError as e:
            print(f'({e})')
            continue
        messages.append({'role': 'user', 'content': line})
        p = params()
        p.stop_ids, p.stop = tuple(stop_ids), tuple(stops)
        seq = Sequence(ids, p, decode=tok.decode)
        print('bot> ', end='', flush=True)
        with torch.no_grad():
            for _, delta, _ in run(batch, [seq], sync_every=1):
                print(delta, end='', flush=True)
        print()
        messages.append({'role': 'assistant', 'content': seq.text.strip('\n')})


if interactive:
    chat()
    sys.exit(0)

if start.startswith('FILE:'):
    start = read_prompt_file(start[5:])
try:
    start_ids = tok.encode(start)
except tokenizer_lib.TokenizerError as e:
    raise UserError(str(e))
if not start_ids:
    raise UserError("the prompt encodes to no tokens; give --start some text")


def samples_memory(prompt_len):
    """Bytes the samples take: each is held to the end (its Sequence, about 1 KB, and 40 bytes a token); without the
    KV cache all of them are one batch whose window is recomputed for each token (activations and the last logits)."""
    cfg, tokens = model.config, prompt_len + max_new_tokens
    held = 1024 + 8 * prompt_len + 40 * max_new_tokens
    row = 0 if use_cache else 4 * (min(tokens, cfg.block_size) * (16 * cfg.n_embd + cfg.n_head * cfg.block_size)
                                   + 3 * cfg.vocab_size)
    return num_samples * (held + row)


# a count of samples far beyond the memory (a typo of zeros) is refused before it fills the machine
need, have = samples_memory(len(start_ids)), device_budget('cpu')
if have is not None and need > have:
    raise UserError(f"--num_samples={num_samples:,} with --max_new_tokens={max_new_tokens:,} needs about "
                    f"{format_bytes(need)} of memory, you have {format_bytes(have)} available; ask for fewer samples")

t0 = time.time()
stream = num_samples == 1 and use_cache  # one sample is printed as it is generated, as the chat does
seqs = [Sequence(start_ids, params(), decode=tok.decode if stream else None) for _ in range(num_samples)]
with torch.no_grad():
    if use_cache:
        if stream:
            head = tok.decode(start_ids)
            print(head, end='', flush=True)
        # one batch; tokens are read back every 16 steps, not after each one
        done, shown = 0, None
        for _, delta, _ in run(new_batch(min(num_samples, 64)), seqs, sync_every=16):
            done += 1
            if shown is None:  # the first tokens read back: a compile is behind them, the rate counts from here
                since, shown, before = time.time(), time.time(), done
            if stream:
                print(delta, end='', flush=True)
            elif time.time() - shown > 10:  # several samples come out at the end: say how far they are
                shown = time.time()
                rate = (done - before) / (shown - since)
                left = num_samples * max_new_tokens - done
                say(f"({done:,} of at most {num_samples * max_new_tokens:,} tokens, {rate:.0f} tokens/s, "
                    f"at most {left / rate:.0f}s left)")
        outs = [s.out for s in seqs]
    else:
        x = torch.tensor([start_ids] * num_samples, dtype=torch.long, device=device)
        y = model.generate(x, max_new_tokens, temperature, top_k=top_k, top_p=top_p, stop_token=tok.eot_token,
                           use_cache=False, generator=generator, n_vocab=tok.vocab_size)
        outs = [[t for t in row if t != tok.eot_token] for row in y[:, len(start_ids):].tolist()]
new = sum(map(len, outs))
if stream:
    # the text so far came out piece by piece; the last piece, held back while it could start a
    # multi-byte character, is what the whole decode adds
    full = tok.decode(start_ids + outs[0])
    print(full[len(head) + len(seqs[0].text):] if full.startswith(head + seqs[0].text) else '')
    print('---------------')
else:
    for out in outs:
        print(tok.decode(start_ids + out))
        print('---------------')
dt = time.time() - t0
print(f"({num_samples} sample{'s' * (num_samples > 1)}, {new} new tokens in {dt:.2f}s, {new / max(dt, 1e-9):.1f} tokens/s)",
      file=sys.stderr)
