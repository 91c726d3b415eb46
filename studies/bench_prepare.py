"""
How fast data/prepare.py turns a jsonl corpus into tokens: wall time, CPU time, MB/s.

    python studies/bench_prepare.py                   # a 1 GiB jsonl in /tmp, GPT-2 tokens
    python studies/bench_prepare.py --size_mb=100     # a smaller file (scale the CPU time to guess a bigger one)

The corpus is generated from Tiny Shakespeare: records of 1 to 12 consecutive speeches, {"id", "text",
"source"} per line, into a temp folder that is removed afterwards. The prepare runs as a user runs it
(python data/prepare.py, all cores); CPU time is the user + system time of it and its workers, which
with the load average tells what an idle machine would take (CPU seconds / cores).
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from configurator import config_keys, configure  # noqa: E402
from core.errors import UserError, install_excepthook  # noqa: E402

# -----------------------------------------------------------------------------
size_mb = 1024  # MiB of jsonl
tokenizer = 'gpt2'
workers = 0  # 0: prepare's default (all cores)
# -----------------------------------------------------------------------------
install_excepthook()
configure(globals(), config_keys(globals()))


def write_corpus(path, size):
    with open(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt'), encoding='utf-8') as f:
        speeches = [s for s in f.read().split('\n\n') if s.strip()]
    rng, n, i = random.Random(0), 0, 0
    with open(path, 'w', encoding='utf-8') as f:
        while n < size:
            k = rng.randint(1, 12)
            j = rng.randrange(len(speeches) - k)
            line = json.dumps({"id": i, "text": "\n\n".join(speeches[j:j + k]), "source": "shakespeare"}) + "\n"
            f.write(line)
            n, i = n + len(line.encode()), i + 1
    return n, i


def main():
    if size_mb <= 0:
        raise UserError(f"size_mb must be positive, got {size_mb}")
    if tokenizer not in ('char', 'gpt2', 'bpe'):
        raise UserError(f"unknown tokenizer '{tokenizer}'; use char, gpt2 or bpe")
    if workers < 0:
        raise UserError(f"workers must be positive or 0 (prepare's default), got {workers}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'corpus.jsonl')
        nbytes, records = write_corpus(path, size_mb * 2 ** 20)
        load = ' '.join(f"{x:.2f}" for x in os.getloadavg())
        cmd = [sys.executable, os.path.join(REPO, 'data', 'prepare.py'), f'--input={path}', f'--out_dir={tmp}/out',
               f'--tokenizer={tokenizer}', '--progress=False'] + ([f'--workers={workers}'] if workers else [])
        before = os.times()  # children's user and system time, on every platform
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        after = os.times()
        if r.returncode != 0:
            print(r.stderr.strip(), file=sys.stderr)
            sys.exit(r.returncode)  # prepare's own error line already says what to do, with its exit code
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        mb = nbytes / 1e6
        print(r.stdout.strip().splitlines()[-1])
        print(f"{mb:,.0f} MB of jsonl ({records:,} records), {tokenizer}: {wall:.1f} s wall ({mb / wall:.1f} MB/s), "
              f"{cpu:.1f} CPU-seconds ({mb / cpu:.1f} MB per CPU-second, {os.cpu_count()} cores); "
              f"load average {load} -> {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == '__main__':
    main()
