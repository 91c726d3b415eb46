"""Tokenizer numbers: bpe training time and peak memory, encoding speed, compression.

    python studies/bench_tokenizer.py                                   # Shakespeare only, plus the 100 MB training run
    python studies/bench_tokenizer.py --wikitext_dir=/path/to/wikitext-2-raw --big_mb=0

1. training a 10,000-token bpe, each run in a fresh process so its peak resident memory
   (getrusage maxrss, which also sees the Rust side that tracemalloc cannot) is its own: on Tiny
   Shakespeare, and on --big_mb MB built from it: copies with their lines shuffled, and in a tenth
   of each copy's lines the letters rotated by the copy's number, so the copies are not just
   repeats of the same words (that would make the count of distinct words, which drives the
   merge phase, unrealistically small).
2. encoding speed in MB of utf-8 per second, one call on one thread, best of three: gpt2
   (tiktoken) and the trained bpe through tiktoken and through HF `tokenizers`.
3. compression in bytes per token, on held-out text: the bpe is trained on Shakespeare's first
   90% and measured on the last 10%; for WikiText-2 (wiki.valid.raw and wiki.test.raw from
   --wikitext_dir) it is trained on valid and measured on test.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root, for the core package

from core.data import tokenizer as tk
from core.errors import ArgumentParser, install_excepthook

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo root
SHAKESPEARE = os.path.join(ROOT, "data", "shakespeare_char", "input.txt")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def maxrss_mb():
    try:  # not core.hardware: importing torch would add to the peak this measures
        import resource
    except ImportError:  # Windows
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # linux reports KiB


def cpu_seconds():
    t = os.times()  # user and system time of this process, on every platform
    return t.user + t.system


def child_train(path, vocab_size):
    # runs in its own process: the baseline is python, the libraries and the text itself
    import tokenizers  # noqa: F401  (loaded before the baseline so it is not counted as training)
    text = read(path)
    base = maxrss_mb()
    t0, c0 = time.perf_counter(), cpu_seconds()
    tok = tk.train_bpe([text], vocab_size)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    print(json.dumps({"seconds": seconds, "cpu": cpu, "base_mb": base, "peak_mb": maxrss_mb(), "vocab": tok.vocab_size,
                      "mb": len(text.encode()) / 1e6}))


def train_in_fresh_process(path, vocab_size):
    r = subprocess.run([sys.executable, os.path.abspath(__file__), f"--_train={path}", f"--vocab_size={vocab_size}"],
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"error: the training run failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def rotate(line, k):
    out = []
    for c in line:
        if "a" <= c <= "z":
            c = chr((ord(c) - 97 + k) % 26 + 97)
        elif "A" <= c <= "Z":
            c = chr((ord(c) - 65 + k) % 26 + 65)
        out.append(c)
    return "".join(out)


def build_big(path, mb):
    lines = read(SHAKESPEARE).splitlines(keepends=True)
    rnd = random.Random(0)
    size, copy = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while size < mb * 1e6:
            copy += 1
            order = lines[:]
            rnd.shuffle(order)
            k = copy % 25 + 1
            text = "".join(rotate(line, k) if rnd.random() < 0.1 else line for line in order)
            f.write(text)
            size += len(text.encode("utf-8"))
    return size


def speed(fn, text):
    mb = len(text.encode("utf-8")) / 1e6
    best = min(timed(fn, text) for _ in range(3))
    return mb / best


def timed(fn, text):
    t0 = time.perf_counter()
    fn(text)
    return time.perf_counter() - t0


def main():
    p = ArgumentParser(description="tokenizer benchmarks: bpe training, encoding speed, compression")
    p.add_argument("--vocab_size", type=int, default=10_000)
    p.add_argument("--big_mb", type=float, default=100, help="size of the built corpus for the big training run; 0 skips it")
    p.add_argument("--wikitext_dir", default=None, help="a folder with wiki.valid.raw and wiki.test.raw")
    p.add_argument("--_train", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.vocab_size < 257:
        p.error(f"--vocab_size must be at least 257 (256 bytes + special tokens), got {args.vocab_size}")
    if args._train:
        return child_train(args._train, args.vocab_size)
    wt_files = [os.path.join(args.wikitext_dir or '', f) for f in ("wiki.valid.raw", "wiki.test.raw")]
    if args.wikitext_dir and not all(os.path.isfile(f) for f in wt_files):
        p.error(f"--wikitext_dir={args.wikitext_dir} does not hold wiki.valid.raw and wiki.test.raw")

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # wall time depends on what else runs; cpu seconds (all threads) and the load say how much
    load = os.getloadavg()[0]
    print(f"# tokenizer benchmark: {cores} cores, load average {load:.1f} at start, python {sys.version.split()[0]}, bpe vocab {args.vocab_size:,}\n")

    print("bpe training (fresh process each)   MB    wall s    cpu s   peak RSS MB   (baseline MB)")
    runs = [("Tiny Shakespeare", SHAKESPEARE)]
    tmp = tempfile.TemporaryDirectory()
    if args.big_mb > 0:
        big = os.path.join(tmp.name, "big.txt")
        build_big(big, args.big_mb)
        runs.append((f"{args.big_mb:g} MB built from it", big))
    for name, path in runs:
        r = train_in_fresh_process(path, args.vocab_size)
        print(f"  {name:<33} {r['mb']:6.1f} {r['seconds']:8.1f} {r['cpu']:8.1f} {r['peak_mb']:11.0f}   ({r['base_mb']:.0f})")
    tmp.cleanup()

    text = read(SHAKESPEARE)
    cut = int(len(text) * 0.9)
    g = tk.gpt2()
    bpe = tk.train_bpe([text[:cut]], args.vocab_size)
    print("\nencoding speed, Tiny Shakespeare (one call, one thread)   MB/s")
    print(f"  gpt2 via tiktoken                                      {speed(g.encode_ordinary, text):7.1f}")
    print(f"  trained bpe via tiktoken                               {speed(bpe.encode_ordinary, text):7.1f}")
    print(f"  trained bpe via HF tokenizers                          {speed(lambda t: bpe.encode_ordinary(t, via='hf'), text):7.1f}")
    assert bpe.encode_ordinary(text) == bpe.encode_ordinary(text, via="hf")

    print("\ncompression, bytes per token on held-out text    char    gpt2   trained bpe")
    corpora = [("Tiny Shakespeare (last 10%)", text[:cut], text[cut:])]
    wt = args.wikitext_dir
    if wt and all(os.path.exists(os.path.join(wt, f)) for f in ("wiki.valid.raw", "wiki.test.raw")):
        corpora.append(("WikiText-2 test (bpe from valid)", read(os.path.join(wt, "wiki.valid.raw")), read(os.path.join(wt, "wiki.test.raw"))))
    for name, train, held in corpora:
        nbytes = len(held.encode("utf-8"))
        c = tk.char(train + held)
        b = bpe if train is corpora[0][1] else tk.train_bpe([train], args.vocab_size)
        ratios = [nbytes / len(t.encode_ordinary(held)) for t in (c, g, b)]
        print(f"  {name:<45} {ratios[0]:6.2f} {ratios[1]:7.2f} {ratios[2]:9.2f}")
    if len(corpora) == 1:
        print("  (WikiText-2 skipped: pass --wikitext_dir=DIR holding wiki.valid.raw and wiki.test.raw)")


if __name__ == "__main__":
    install_excepthook()
    main()
