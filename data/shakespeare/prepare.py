"""Tiny Shakespeare in GPT-2 tokens (301,966 train / 36,059 val), or in a BPE trained on it.

    python data/shakespeare/prepare.py                     # gpt2 -> data/shakespeare/
    python data/shakespeare/prepare.py --tokenizer=bpe     # 10,000-token bpe -> data/shakespeare_bpe/

gpt2: the first 90% of the characters are train (nanoGPT's split), each part encoded with
encode_ordinary. bpe: every speech (speeches are separated by blank lines) is a document followed
by <|endoftext|>; the last speeches holding about 10% of the characters are val, and the bpe is
trained on the train speeches only. The text is read from ../shakespeare_char/input.txt.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repo root, for the core package

from core.data import prepare as P  # noqa: E402

INPUT = os.path.join(os.path.dirname(HERE), "shakespeare_char", "input.txt")


def main(argv=None):
    p = P.ArgumentParser(description="Tiny Shakespeare as GPT-2 tokens (or a trained bpe)")
    p.add_argument("--tokenizer", default="gpt2", choices=("gpt2", "bpe"), help="gpt2 (default) or a bpe trained on the text")
    p.add_argument("--vocab_size", type=int, default=10000, help="ids in the trained bpe (default 10000)")
    p.add_argument("--out_dir", type=os.path.expanduser, default=None, help="default data/shakespeare, or data/shakespeare_bpe for bpe")
    p.add_argument("--force", type=P.parse_bool, nargs="?", const=True, default=False, help="redo a complete preparation")
    args = p.parse_args(argv)
    bpe = args.tokenizer == "bpe"
    out_dir = args.out_dir or (os.path.join(os.path.dirname(HERE), "shakespeare_bpe") if bpe else HERE)
    P.run_main(lambda: P.prepare(INPUT, out_dir, tokenizer=args.tokenizer, vocab_size=args.vocab_size if bpe else None,
                                 val_fraction=0.1, doc_sep="blank" if bpe else "none", force=args.force, progress=False,
                                 source="tinyshakespeare (karpathy/char-rnn)"))


if __name__ == "__main__":
    main()
