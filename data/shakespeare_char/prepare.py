"""Tiny Shakespeare, one token per character: 65 characters, 1,003,854 train / 111,540 val tokens.

    python data/shakespeare_char/prepare.py        # from any folder; writes train.bin, val.bin, meta.json here

The first 90% of the characters are train, the rest val (nanoGPT's split). The vocabulary is the
sorted set of characters of the whole text and lives in meta.json (no pickle).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repo root, for the core package

from core.data import prepare as P  # noqa: E402

INPUT = os.path.join(HERE, "input.txt")  # karpathy/char-rnn's tinyshakespeare, committed


def main(argv=None):
    p = P.ArgumentParser(description="Tiny Shakespeare as characters, into data/shakespeare_char/")
    p.add_argument("--out_dir", type=os.path.expanduser, default=HERE, help="write here instead of beside this script")
    p.add_argument("--force", type=P.parse_bool, nargs="?", const=True, default=False, help="redo a complete preparation")
    args = p.parse_args(argv)
    P.run_main(lambda: P.prepare(INPUT, args.out_dir, tokenizer="char", val_fraction=0.1, doc_sep="none",
                                 force=args.force, progress=False, source="tinyshakespeare (karpathy/char-rnn)"))


if __name__ == "__main__":
    main()
