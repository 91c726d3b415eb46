"""
Sample from a trained model, or chat with it.

    python sample.py --start="greeting sire"           # the most recent run under this folder
    python sample.py --out_dir=out-shakespeare-char --num_samples=1 --temperature=0
    python sample.py --init_from=gpt2 --start="FILE:prompt.txt"
    python sample.py --interactive=True                # you> / bot> loop; /reset, /temp 0.7, /quit
"""

import os
import sys
import time

import torch

from core import checkpoint
from core import hardware
from configurator import config_keys, configure
from core.errors import UserError, install_excepthook

# -----------------------------------------------------------------------------
init_from = 'resume'  # 'resume' (a checkpoint in out_dir), 'gpt2', 'gpt2-medium', ... or 'hf:<folder>'
out_dir = ''  # empty: the most recently written run under the current folder
ckpt = 'best'  # 'best' (lowest val loss) or 'latest'; falls back to the other when missing
dataset = ''  # empty: the tokenizer saved with the checkpoint; else check that this dataset matches it
start = "\n"  # the prompt, or FILE:path to read it from a file
num_samples = 3
max_new_tokens = 500
temperature = 0.8  # 0 is greedy
top_k = 200  # 0 keeps all tokens
top_p = 1.0  # nucleus sampling; 1.0 keeps all tokens
seed = 1337
device = 'auto'
dtype = 'auto'
compile = False
use_cache = True  # KV cache; False recomputes the whole context at each step
interactive = False
# -----------------------------------------------------------------------------
install_excepthook()
config = configure(globals(), config_keys(globals()))

if num_samples <= 0 or max_new_tokens < 0:
    raise UserError("num_samples must be positive and max_new_tokens not negative")
if temperature < 0:
    raise UserError(f"temperature must be >= 0, got {temperature}")
if not 0 < top_p <= 1:
    raise UserError(f"top_p must be in (0, 1], got {top_p}")
if ckpt not in ('best', 'latest'):
    raise UserError(f"ckpt must be 'best' or 'latest', got '{ckpt}'")

from core import tokenizer as tokenizer_lib  # noqa: E402  (after the config, so --help stays fast)


def latest_run(root='.'):
    """The folder under root (two levels deep at most) whose checkpoint was written last."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = os.path.relpath(dirpath, root).count(os.sep) + (dirpath != root)
        if depth >= 2:
            dirnames[:] = []
        dirnames[:] = [d for d in dirnames if not d.startswith('.') and d not in ('data', '__pycache__', 'wandb')]
        for name in ('ckpt.pt', 'best.pt'):
            if name in filenames:
                found.append((os.path.getmtime(os.path.join(dirpath, name)), dirpath))
    if not found:
        raise UserError("no checkpoint found under the current folder; train one (python train.py ...) "
                        "or pass --out_dir=... or --init_from=gpt2")
    return max(found)[1]


torch.manual_seed(seed)
device = hardware.pick_device(device)
dtype = hardware.pick_dtype(dtype, device)
ctx = hardware.autocast_context(device, dtype)

if init_from == 'resume':
    if not out_dir:
        out_dir = latest_run()
        print(f"using {out_dir} (the most recently written run; pass --out_dir to choose)", file=sys.stderr)
    order = ['best.pt', 'ckpt.pt'] if ckpt == 'best' else ['ckpt.pt', 'best.pt']
    paths = [os.path.join(out_dir, n) for n in order if os.path.exists(os.path.join(out_dir, n))]
    ckpt_path = paths[0] if paths else os.path.join(out_dir, order[0])
    model, state = checkpoint.load_model(ckpt_path)
    # ours carry their tokenizer; nanoGPT's name a dataset whose meta.pkl (or ours, or GPT-2's BPE) has it
    tok_state, tok_from = checkpoint.tokenizer_state(state, ckpt_path, dataset)
    if tok_state is None:
        raise UserError(f"{ckpt_path} holds no tokenizer and names no dataset; pass --dataset=<its data folder>")
    try:
        tok = tokenizer_lib.from_state(tok_state)
    except tokenizer_lib.TokenizerError as e:
        raise UserError(f"{ckpt_path}: its tokenizer cannot be rebuilt ({e})")
    if state.get('nanogpt'):
        print(f"a nanoGPT checkpoint: tokenizer from {tok_from}", file=sys.stderr)
    trained_on = state.get('dataset') or (state.get('config') or {}).get('dataset', '?')
    print(f"loaded {ckpt_path} (iteration {state.get('iter_num')}, best val loss {state.get('best_val_loss', float('nan')):.4f})",
          file=sys.stderr)
    del state
elif init_from.startswith('gpt2') or init_from.startswith('hf:'):
    from core import hf
    model = hf.from_pretrained(init_from, dropout=0.0)
    tok = (hf.folder_tokenizer(os.path.expanduser(init_from[3:])) if init_from.startswith('hf:') else None) \
        or tokenizer_lib.gpt2()
    trained_on = init_from
else:
    raise UserError(f"init_from must be resume, gpt2[-medium|-large|-xl] or hf:<folder>, got '{init_from}'")

if tok.vocab_size > model.config.vocab_size:
    raise UserError(f"the tokenizer has {tok.vocab_size} tokens but the model only {model.config.vocab_size}")
if dataset:
    from core.loader import resolve_data_dir
    other = tokenizer_lib.load(resolve_data_dir(dataset))
    if other.state() != tok.state():
        raise UserError(f"the checkpoint was trained on '{trained_on}' ({tok.kind}, {tok.vocab_size} tokens); dataset "
                        f"'{dataset}' uses another tokenizer ({other.kind}, {other.vocab_size} tokens)")

model.eval()
model.to(device)
if compile:
    model = torch.compile(model)


def encode(text):
    try:
        return tok.encode(text)
    except tokenizer_lib.TokenizerError as e:
        raise UserError(str(e))


generator = torch.Generator(device=device).manual_seed(seed)
sample_kw = dict(top_k=top_k or None, top_p=top_p if top_p < 1 else None, use_cache=use_cache, generator=generator)


def chat():
    """A you> / bot> loop: the conversation so far is the prompt, cut to the context window."""
    global temperature
    history = []
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
            history = []
            print('(history cleared)')
            continue
        if cmd.startswith('/temp'):
            try:
                temperature = float(cmd.split()[1])
                if temperature < 0:
                    raise ValueError
                print(f'(temperature {temperature:g})')
            except (IndexError, ValueError):
                print('(usage: /temp 0.7, a number >= 0)')
            continue
        try:
            history += tok.encode(line + '\n')
        except tokenizer_lib.TokenizerError as e:
            print(f'({e})')
            continue
        history = history[-model.config.block_size:]
        idx = torch.tensor([history], dtype=torch.long, device=device)
        reply, shown = [], ''
        print('bot> ', end='', flush=True)
        with ctx:
            for t in model.generate_stream(idx, max_new_tokens, temperature, stop_token=tok.eot_token, **sample_kw):
                t = t.item()
                if t == tok.eot_token:
                    break
                reply.append(t)
                text = tok.decode(reply)
                if '\n\n' in text:  # a blank line ends the turn
                    text = text[:text.index('\n\n')]
                    print(text[len(shown):], end='', flush=True)
                    shown = text
                    break
                if not text.endswith('\ufffd'):  # wait for the rest of a multi-byte character
                    print(text[len(shown):], end='', flush=True)
                    shown = text
        if not shown.endswith('\n'):
            print()
        history += tok.encode(shown.rstrip('\n') + '\n')


if interactive:
    chat()
    sys.exit(0)

if start.startswith('FILE:'):
    path = start[5:]
    if not os.path.isfile(path):
        raise UserError(f"prompt file '{path}' not found")
    with open(path, encoding='utf-8') as f:
        start = f.read()
start_ids = encode(start)
if not start_ids:
    raise UserError("the prompt encodes to no tokens; give --start some text")
x = torch.tensor(start_ids, dtype=torch.long, device=device)[None, ...]
with torch.no_grad(), ctx:
    for k in range(num_samples):
        t0 = time.time()
        y = model.generate(x, max_new_tokens, temperature, stop_token=tok.eot_token, **sample_kw)
        new = y.size(1) - x.size(1)
        print(tok.decode(y[0].tolist()))
        print('---------------')
        print(f"({new} tokens in {time.time() - t0:.2f}s)", file=sys.stderr)
