"""serve.py under load: many concurrent streaming clients, every stream checked.

    python studies/bench_serve.py                                    # 32 clients x 100 requests x 64 tokens
    python studies/bench_serve.py --clients=32 --requests=10 --out_dir=out-shakespeare-char

Starts serve.py in its own process (on a free port of 127.0.0.1) with --out_dir, or with a fresh
random 6x384 char model (block 256) when none is given. Each client thread sends its requests one
after another, all streaming, greedy, max_tokens tokens, each from one of a few prompts. A stream is
correct when it ends with `data: [DONE]`, all its chunks carry one id, the last one says why it ended,
its usage counts max_tokens, and its text is exactly the text of the same request sent alone before
the load began (so no token went missing, came twice, or came from another request). Reports tokens/s
over the whole run, and p50/p99 of the time to the first token and of the whole request.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

import httpx  # noqa: E402

from core.errors import ArgumentParser  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ['ROMEO:', 'JULIET:\nO Romeo', 'First Citizen:\nBefore we proceed any further, hear me speak.',
           'MENENIUS:\nWhy, masters,', 'KING RICHARD III:\nNow is the winter', 'A']


def make_run(folder):
    import torch
    from core.training import checkpoint
    from core.data import tokenizer
    from model import GPT, GPTConfig
    with open(os.path.join(ROOT, 'data', 'shakespeare_char', 'input.txt'), encoding='utf-8') as f:
        tok = tokenizer.char(f.read())
    cfg = GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=128, bias=False)
    torch.manual_seed(0)
    model = GPT(cfg)
    checkpoint.save({'model': model.state_dict(), 'model_args': cfg.to_dict(), 'iter_num': 0, 'best_val_loss': 0.0,
                     'tokenizer': tok.state()}, os.path.join(folder, 'ckpt.pt'))


def stream(client, url, prompt, n):
    """(text, seconds to the first token, seconds in all) of one streaming request, checked."""
    body = {'prompt': prompt, 'max_tokens': n, 'temperature': 0, 'stream': True,
            'stream_options': {'include_usage': True}}
    t0 = time.perf_counter()
    first = None
    lines = []
    with client.stream('POST', url + '/v1/completions', json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"status {r.status_code}: {r.read()[:200]}")
        for line in r.iter_lines():
            if line:
                if first is None and line.startswith('data: {') and json.loads(line[6:]).get('choices', [{}])[0].get('text'):
                    first = time.perf_counter() - t0
                lines.append(line)
    total = time.perf_counter() - t0
    if lines[-1] != 'data: [DONE]':
        raise RuntimeError(f"no [DONE] at the end: {lines[-2:]}")
    chunks = [json.loads(l[6:]) for l in lines[:-1]]
    if len({c['id'] for c in chunks}) != 1:
        raise RuntimeError("chunks of more than one completion in one stream")
    usage = chunks[-1]['usage']
    ends = [c['choices'][0]['finish_reason'] for c in chunks if c['choices']]
    if ends[-1] != 'length' or usage['completion_tokens'] != n:
        raise RuntimeError(f"ended with {ends[-1]} after {usage['completion_tokens']} tokens, asked for {n}")
    return ''.join(c['choices'][0]['text'] for c in chunks if c['choices']), first or total, total


def main():
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--clients', type=int, default=32)
    p.add_argument('--requests', type=int, default=100, help='per client, one after another')
    p.add_argument('--max_tokens', type=int, default=64)
    p.add_argument('--max_batch', type=int, default=32, help="serve.py's rows generated together")
    p.add_argument('--out_dir', default='', help='a run to serve; empty: a random 6x384 char model')
    p.add_argument('--compile', default='auto', choices=('auto', 'True', 'False'),
                   help="serve.py's: True compiles the decode step of every bucket before serving")
    args = p.parse_args()
    for name in ('clients', 'requests', 'max_tokens', 'max_batch'):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    tmp = tempfile.TemporaryDirectory()
    out_dir = args.out_dir
    if not out_dir:
        out_dir = tmp.name
        make_run(out_dir)
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, 'serve.py'), f'--out_dir={out_dir}', '--port=0',
                               f'--max_batch={args.max_batch}', f'--compile={args.compile}'], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONUNBUFFERED='1'))
    try:
        line = server.stdout.readline()
        if not line.startswith('serving'):
            if not line:  # serve.py exited; its own error line (on our stderr) says why, keep its exit code
                sys.exit(server.wait() or 1)
            raise SystemExit(f"serve.py did not start: {line}")
        url = line.split(' at ')[1].split(' ')[0]
        # serve.py logs a line per request on stdout: read them all, or the pipe fills (64 KiB, about 2,000
        # requests) and the server blocks writing its next line (seen: the full run hung, server idle)
        threading.Thread(target=server.stdout.read, daemon=True).start()
        with httpx.Client(timeout=600) as c:
            expected = {prompt: stream(c, url, prompt, args.max_tokens)[0] for prompt in PROMPTS}
        results, errors = [], []

        def client(i):
            with httpx.Client(timeout=600) as c:
                for j in range(args.requests):
                    prompt = PROMPTS[(i + j) % len(PROMPTS)]
                    try:
                        text, first, total = stream(c, url, prompt, args.max_tokens)
                        if text != expected[prompt]:
                            raise RuntimeError(f"text differs from the same request alone: {text[:40]!r}")
                        results.append((first, total))
                    except Exception as e:  # counted and reported; the run goes on
                        errors.append(f"client {i} request {j}: {e}")

        load_before = os.getloadavg()
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()
    finally:
        server.terminate()
        server.wait(timeout=30)
        tmp.cleanup()
    n = args.clients * args.requests
    firsts = sorted(r[0] for r in results)
    totals = sorted(r[1] for r in results)

    def pct(xs, q):
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float('nan')
    report = dict(clients=args.clients, requests=n, max_tokens=args.max_tokens, ok=len(results), errors=len(errors),
                  seconds=wall, tokens_per_sec=len(results) * args.max_tokens / wall,
                  first_token_p50=pct(firsts, 0.5), first_token_p99=pct(firsts, 0.99),
                  latency_p50=pct(totals, 0.5), latency_p99=pct(totals, 0.99),
                  load_before=load_before, load_after=load_after, cpus=os.cpu_count())
    print(f"{args.clients} clients x {args.requests} streaming requests x {args.max_tokens} tokens: "
          f"{len(results)} complete and correct, {len(errors)} errors, in {wall:.1f} s")
    print(f"{report['tokens_per_sec']:,.1f} tokens/s; first token p50 {report['first_token_p50']:.2f} s, "
          f"p99 {report['first_token_p99']:.2f} s; whole request p50 {report['latency_p50']:.2f} s, "
          f"p99 {report['latency_p99']:.2f} s; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
          f"({os.cpu_count()} CPUs)")
    for e in errors[:5]:
        print('  ' + e)
    print(json.dumps(report))
    if errors or len(results) != n:
        raise SystemExit(1)


if __name__ == '__main__':
    main()
