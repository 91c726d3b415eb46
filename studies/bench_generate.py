"""Our generation against Hugging Face transformers' model.generate, the same weights, in one run.

    python studies/bench_generate.py                               # 6x384 GPT-2-shaped model, block 1024, 500 tokens
    python studies/bench_generate.py --n_layer=12 --n_head=12 --n_embd=768 --vocab_size=50304 --tokens=200

A GPT-2-shaped model (learned positions, LayerNorm, tanh GELU, biases) is built with random weights,
exported with core/interop/hf.py's save_hf_folder and loaded back as transformers' GPT2LMHeadModel (SDPA
attention). Both generate greedily with their KV cache, from the same random prompts, for each batch
size; each timing is the median of --repeats runs, the two taking turns so load on a shared machine
hits both alike. The greedy tokens of the two are compared too (they may part after a near tie,
which random weights make common, so the count of equal tokens is reported rather than asserted).
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
from core.errors import ArgumentParser  # noqa: E402
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
    args = p.parse_args()
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
    if args.threads < 0:
        p.error(f"--threads must be positive or 0 (the default), got {args.threads}")
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


if __name__ == '__main__':
    main()
