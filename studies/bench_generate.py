"""Our generation against Hugging Face transformers' model.generate, the same weights, in one run.

    python studies/bench_generate.py                               # 6x384 GPT-2-shaped model, block 1024, 500 tokens
    python studies/bench_generate.py --n_layer=12 --n_head=12 --n_embd=768 --vocab_size=50304 --tokens=200

A GPT-2-shaped model (learned positions, LayerNorm, tanh GELU, biases) is built with random weights,
exported with core/interop/hf.py's save_hf_folder and loaded back as transformers' GPT2LMHeadModel (SDPA
attention). Both generate greedily with their KV cache, from the same random prompts, for each batch
size; each timing is the median of --repeats runs, the two taking turns so load on a shared machine
hits both alike. The greedy tokens of the two are compared too (they may part after a near tie,
which random weights make common, so the count of equal tokens is reported rather than asserted).

--against=llama.cpp (with llama-cpp-python installed): the four models of issue 27's table (random weights,
the same shapes), each exported with core/interop/gguf.py and run by llama.cpp from that file; ours runs
the engine eager and with the compiled decode step. Batch 1, greedy, --tokens after a 1-token prompt,
--threads on each side, rounds alternating, medians; fp32 against llama.cpp's f32, bf16 against its f16
(--precisions=int8: our int8 weight-only against its q8_0, both 8-bit weights with a scale per row or block):

    python studies/bench_generate.py --against=llama.cpp --tokens=256 --threads=1
"""

import json
import os
import statistics
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

import torch  # noqa: E402

from core.interop import hf  # noqa: E402
from core.errors import ArgumentParser, UserError  # noqa: E402
from core.hardware import check_threads  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402


def main():
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n_layer', type=int, default=6)
    p.add_argument('--n_head', type=int, default=6)
    p.add_argument('--n_embd', type=int, default=384)
    p.add_argument('--block_size', type=int, default=1024)
    p.add_argument('--vocab_size', type=int, default=65)
    p.add_argument('--tokens', type=int, default=500, help='new tokens per sequence')
    p.add_argument('--prompt_len', type=int, default=16)
    p.add_argument('--batch', default='1,8', help='comma-separated batch sizes')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=0, help='torch threads; 0 keeps the default')
    p.add_argument('--json', action='store_true')
    p.add_argument('--against', default='transformers', choices=('transformers', 'llama.cpp'))
    p.add_argument('--models', default='gpt2-4x128,gpt2-6x384,llama-6x384,gpt2-6x384-bpe2k',
                   help='--against=llama.cpp: which of the table\'s models')
    p.add_argument('--precisions', default='float32,bfloat16',
                   help='--against=llama.cpp: ours float32, bfloat16 and/or int8 (weight-only, against q8_0)')
    args = p.parse_args()
    if args.against == 'llama.cpp':
        # checked before a model is built: an unknown name was exit code 1 after the first ones ran, an unknown
        # precision was skipped, and none at all printed an empty table
        unknown = [m for m in args.models.split(',') if m not in TABLE]
        if unknown:
            p.error(f"unknown model(s) {', '.join(map(repr, unknown))} in --models; use some of {', '.join(TABLE)}")
        precisions = args.precisions.split(',')
        if not set(precisions) <= {'float32', 'bfloat16', 'int8'} or not any(precisions):
            p.error(f"--precisions must be float32, bfloat16 and/or int8, comma separated; got {args.precisions!r}")
        return against_llama_cpp(args)
    for name in ('n_layer', 'n_head', 'n_embd', 'block_size', 'vocab_size', 'tokens', 'prompt_len', 'repeats'):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    try:
        batches = [int(b) for b in args.batch.split(',')]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        p.error(f"--batch must be comma-separated positive batch sizes such as 1,8, got {args.batch!r}")
    if args.n_embd % args.n_head:
        p.error(f"n_embd={args.n_embd} is not divisible by n_head={args.n_head}")
    try:
        check_threads(args.threads)
    except UserError as e:
        p.error(str(e))
    if args.prompt_len + args.tokens > args.block_size:
        p.error(f"prompt_len + tokens must fit in block_size {args.block_size} (transformers' GPT-2 stops there)")
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    warnings.filterwarnings('ignore')

    torch.manual_seed(1337)
    cfg = GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=args.block_size,
                    vocab_size=args.vocab_size, bias=True, gelu='tanh')
    ours = GPT(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, 'hf')
        hf.save_hf_folder(ours, folder)
        theirs = GPT2LMHeadModel.from_pretrained(folder, attn_implementation='sdpa').eval()
    N = args.tokens
    print(f"model: {args.n_layer}x{args.n_embd}, block {args.block_size}, vocab {args.vocab_size}, "
          f"{ours.get_num_params(False) / 1e6:.2f}M parameters; {N} new tokens after a {args.prompt_len}-token prompt; "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}", flush=True)

    def run_ours(x):
        return ours.generate(x, N, temperature=0)[:, x.size(1):]

    def run_theirs(x):
        out = theirs.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N, min_new_tokens=N,
                              do_sample=False, use_cache=True, pad_token_id=0)
        return out[:, x.size(1):]

    rows = []
    for B in batches:
        x = torch.randint(0, args.vocab_size, (B, args.prompt_len), generator=torch.Generator().manual_seed(B))
        with torch.no_grad():
            run_ours(x[:, :4])  # warm-up of both
            run_theirs(x[:, :4])
            times = {'ours': [], 'transformers': []}
            outs = {}
            for _ in range(args.repeats):
                for name, fn in (('ours', run_ours), ('transformers', run_theirs)):
                    t0 = time.perf_counter()
                    outs[name] = fn(x)
                    times[name].append(time.perf_counter() - t0)
        same = int((outs['ours'] == outs['transformers']).cumprod(dim=1).sum())  # equal tokens before the first difference, over all rows
        row = dict(batch=B, ours_tokens_per_sec=B * N / statistics.median(times['ours']),
                   transformers_tokens_per_sec=B * N / statistics.median(times['transformers']),
                   equal_greedy_prefix=same, tokens=B * N)
        row['ratio'] = row['ours_tokens_per_sec'] / row['transformers_tokens_per_sec']
        rows.append(row)
        print(f"batch {B}: ours {row['ours_tokens_per_sec']:,.1f} tokens/s, transformers "
              f"{row['transformers_tokens_per_sec']:,.1f} tokens/s, ratio {row['ratio']:.2f}x; greedy tokens equal "
              f"before the first difference: {same} of {B * N}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps(dict(rows=rows, threads=torch.get_num_threads())))


TABLE = {  # issue 27's models: name -> (GPTConfig switches, tokenizer)
    'gpt2-4x128': (dict(n_layer=4, n_head=4, n_embd=128), 'gpt2'),
    'gpt2-6x384': (dict(n_layer=6, n_head=6, n_embd=384), 'gpt2'),
    'llama-6x384': (dict(n_layer=6, n_head=6, n_embd=384, norm='rmsnorm', pos_encoding='rope', mlp='swiglu',
                         bias=False), 'gpt2'),
    'gpt2-6x384-bpe2k': (dict(n_layer=6, n_head=6, n_embd=384), 'bpe2k'),
}


def against_llama_cpp(args):
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed (pip install llama-cpp-python): no llama.cpp column")
        return
    import numpy as np
    from core.data import tokenizer as tokenizer_lib
    from core.interop import gguf
    from core.inference import precision
    from core.inference.decode import CompiledDecode
    from core.bench.generate import greedy_run
    torch.set_num_threads(args.threads or 1)
    threads, N = torch.get_num_threads(), args.tokens
    rows = []
    for name in args.models.split(','):
        switches, tok_kind = TABLE[name]
        if tok_kind == 'gpt2':
            tok = tokenizer_lib.gpt2()
        else:
            text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data',
                                     'shakespeare_char', 'input.txt'), encoding='utf-8').read()
            tok = tokenizer_lib.train_bpe([text], 2048)
        vocab = -(-tok.vocab_size // 64) * 64
        gelu = {} if switches.get('mlp') == 'swiglu' else dict(gelu='tanh')  # llama.cpp's gpt2 has tanh GELU only
        for ours_dtype, their_dtype in (('float32', 'float32'), ('bfloat16', 'float16'), ('int8', 'q8_0')):
            if ours_dtype not in args.precisions.split(','):
                continue
            torch.manual_seed(0)
            model = GPT(GPTConfig(block_size=args.block_size, vocab_size=vocab, **switches, **gelu)).eval()
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, 'model.gguf')
                gguf.save_gguf(model, path, tok.state(), their_dtype)
                llm = llama_cpp.Llama(path, n_ctx=args.block_size, n_threads=threads, n_threads_batch=threads,
                                      verbose=False)
            precision.convert(model, ours_dtype)
            compiled = CompiledDecode(say=lambda line: None)
            t0 = time.perf_counter()
            greedy_run(model, [0], 2, compiled)
            compile_s = time.perf_counter() - t0

            def theirs():
                llm.reset()
                llm.eval([0])
                out = []
                for _ in range(N):
                    out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
                    llm.eval([out[-1]])
                return out

            runs = {'llama.cpp': theirs, 'ours eager': lambda: greedy_run(model, [0], N)[2],
                    'ours compiled': lambda: greedy_run(model, [0], N, compiled)[2]}
            times, outs = {k: [] for k in runs}, {}
            load = [os.getloadavg()[0]]
            for _ in range(args.repeats):
                for who, fn in runs.items():
                    t0 = time.perf_counter()
                    outs[who] = fn()
                    times[who].append(time.perf_counter() - t0)
            load.append(os.getloadavg()[0])
            row = dict(model=name, params_m=round(model.get_num_params(False) / 1e6, 1), ours=ours_dtype,
                       theirs=their_dtype, threads=threads, compile_seconds=round(compile_s, 1),
                       load=f"{load[0]:.1f} -> {load[1]:.1f}",
                       compiled_equals_eager=outs['ours compiled'] == outs['ours eager'],
                       **{f"{k} tok/s": round(N / statistics.median(v), 1) for k, v in times.items()})
            row['compiled / llama.cpp'] = round(row['ours compiled tok/s'] / row['llama.cpp tok/s'], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
            del llm
    if args.json:
        print(json.dumps(dict(rows=rows)))


if __name__ == '__main__':
    main()
