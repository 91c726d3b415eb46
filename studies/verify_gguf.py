"""Check GGUF files in llama.cpp itself (llama-cpp-python) against our model: one table row per file.

    python studies/verify_gguf.py --out_dir=out-shakespeare-char      # a run: exported at every GGUF dtype
    python studies/verify_gguf.py --out_dir=out --gguf=model-q8_0.gguf # a file export.py wrote from that run
    python studies/verify_gguf.py                                      # tiny random models: every tokenizer x shape x dtype

Columns: load (llama.cpp loads it), ids (llama.cpp's tokens of the text equal ours), the largest logit
difference from ours over --positions tokens with llama.cpp's default f16 KV cache and with an f32 one,
argmax agreement over those positions (f32 cache), greedy --greedy tokens equal to ours (f32 cache,
kept within block_size), and tokens/s of greedy decoding, llama.cpp's and ours (one thread each,
alternating, median of --repeats). Needs: pip install gguf llama-cpp-python==0.3.36.
"""

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.errors import ArgumentParser, UserError, install_excepthook  # noqa: E402
from core.paths import REPO  # noqa: E402

SHAPES = {'gpt2 (tanh)': dict(gelu='tanh'), 'gpt2 (erf)': dict(gelu='erf'),
          'llama': dict(norm='rmsnorm', pos_encoding='rope', mlp='swiglu', bias=False)}


def ours_greedy(model, prompt, n):
    with torch.no_grad():
        return model.generate(torch.tensor([prompt]), n, temperature=0)[0, len(prompt):].tolist()


def theirs_greedy(llm, prompt, n):
    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([out[-1]])
    return out


def row(llama_cpp, model, path, tok, text, args):
    """The table's columns for one file."""
    ids = tok.encode(text)
    n = min(args.positions, len(ids), model.config.block_size)
    with torch.no_grad():
        ours = model.head(model.hidden_states(torch.tensor([ids[:n]])))[0].float().numpy()
    out = dict(load='no', ids='-', f16kv='-', f32kv='-', argmax='-', greedy='-', speed='-')
    try:
        llms = {kv: llama_cpp.Llama(str(path), n_ctx=model.config.block_size, n_threads=1, verbose=False,
                                    logits_all=True, **({} if kv == 'f16' else dict(type_k=0, type_v=0)))
                for kv in ('f16', 'f32')}
    except Exception as e:  # llama.cpp says why on stderr; the table says that it did not load
        out['load'] = f"no ({str(e)[:40]})"
        return out
    out['load'] = 'yes'
    out['ids'] = 'yes' if llms['f32'].tokenize(text.encode(), add_bos=False, special=True) == ids else 'NO'
    for kv, llm in llms.items():
        llm.reset()
        llm.eval(ids[:n])
        theirs = np.array(llm.scores[:n])
        out[f'{kv}kv'] = f"{np.abs(theirs - ours).max():.2g}"
        if kv == 'f32':
            out['argmax'] = f"{(theirs.argmax(-1) == ours.argmax(-1)).mean():.0%}"
    prompt = ids[:8]
    steps = min(args.greedy, model.config.block_size - len(prompt))
    same = theirs_greedy(llms['f32'], prompt, steps) == ours_greedy(model, prompt, steps)
    out['greedy'] = f"{'equal' if same else 'DIFFER'} ({steps})"
    times = {'llama.cpp': [], 'ours': []}
    fast = llama_cpp.Llama(str(path), n_ctx=model.config.block_size, n_threads=1, verbose=False)  # last logits only
    for _ in range(args.repeats):
        for who in times:
            t0 = time.perf_counter()
            theirs_greedy(fast, prompt, steps) if who == 'llama.cpp' else ours_greedy(model, prompt, steps)
            times[who].append(steps / (time.perf_counter() - t0))
    out['speed'] = ' / '.join(f"{statistics.median(v):.0f}" for v in times.values())
    return out


def tiny_models(args):
    """(label, model, tokenizer, text) for each tokenizer x shape, random weights."""
    from core.data import tokenizer
    from model import GPT, GPTConfig
    text = open(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt'), encoding='utf-8').read()[:20000]
    text += ' naïve café — 日本語 '
    toks = {'char': tokenizer.char(text, special_tokens=(tokenizer.EOT,)), 'trained BPE': tokenizer.train_bpe([text], 512),
            'GPT-2 BPE': tokenizer.gpt2()}
    for tname, tok in toks.items():
        for sname, switches in SHAPES.items():
            torch.manual_seed(0)
            model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=128,
                                  vocab_size=-(-tok.vocab_size // 64) * 64, **switches)).eval()
            yield f"{tname}, {sname}", model, tok, text[3000:3000 + 2000]


def run_models(args):
    from core.data.tokenizer import from_state
    from core.training import checkpoint
    if not args.out_dir:
        yield from tiny_models(args)
        return
    path = checkpoint.resolve(args.out_dir, args.ckpt)
    state = checkpoint.load(path)
    model = checkpoint.build_model(state, path).eval()
    tok = from_state(checkpoint.tokenizer_state(state, path, args.dataset)[0])
    text = open(args.text, encoding='utf-8').read() if args.text else \
        open(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt'), encoding='utf-8').read()[:4000]
    yield os.path.basename(os.path.abspath(args.out_dir)), model, tok, text


def main():
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out_dir', default='', help='a run folder or .pt file; empty: tiny random models')
    p.add_argument('--ckpt', default='best')
    p.add_argument('--dataset', default='', help="a checkpoint without a tokenizer: its data folder")
    p.add_argument('--gguf', default='', help='a file export.py wrote from --out_dir; empty: export every dtype')
    p.add_argument('--text', default='', help='a text file to tokenize and score; default: Shakespeare')
    p.add_argument('--positions', type=int, default=128)
    p.add_argument('--greedy', type=int, default=50)
    p.add_argument('--repeats', type=int, default=3)
    args = p.parse_args()
    if args.gguf and not args.out_dir:
        raise UserError("--gguf needs --out_dir: the run it was exported from, to compare with")
    try:
        import llama_cpp
    except ImportError:
        raise UserError("llama.cpp is not installed: python3 -m pip install llama-cpp-python==0.3.36")
    from core.interop import gguf as gguf_export
    torch.set_num_threads(1)
    print(f"llama-cpp-python {llama_cpp.__version__}, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}")
    cols = ['load', 'ids', 'f16kv', 'f32kv', 'argmax', 'greedy', 'speed']
    heads = ['load', 'ids equal', 'max |dlogit| f16 KV', 'f32 KV', 'argmax', 'greedy', 'tok/s llama.cpp / ours']
    print('| model | file | ' + ' | '.join(heads) + ' |')
    print('|' + '---|' * (len(heads) + 2))
    with tempfile.TemporaryDirectory() as tmp:
        for label, model, tok, text in run_models(args):
            files = [(os.path.basename(args.gguf), args.gguf)] if args.gguf else []
            for dtype in ([] if args.gguf else gguf_export.DTYPES):
                path = os.path.join(tmp, f'{dtype}.gguf')
                gguf_export.save_gguf(model, path, tok.state(), dtype, force=True)
                files.append((dtype, path))
            for name, path in files:
                r = row(llama_cpp, model, path, tok, text, args)
                print(f"| {label} | {name} | " + ' | '.join(r[c] for c in cols) + ' |', flush=True)


if __name__ == '__main__':
    install_excepthook()
    main()
