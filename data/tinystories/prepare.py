"""TinyStories: short stories written by GPT-3.5/4 for small models, every story followed by <|endoftext|>.

    python data/tinystories/prepare.py                                   # hub: roneneldan/TinyStories (train, validation)
    python data/tinystories/prepare.py --input=TinyStories-train.txt --val_input=TinyStories-valid.txt
    python data/tinystories/prepare.py --input=stories.txt --tokenizer=bpe --vocab_size=4096

Local files are the dataset's own .txt layout: stories separated by <|endoftext|> (change with
--doc_sep); without --val_input the last stories holding --val_fraction of the text are val.
From the hub, datasets.map tokenizes in --num_proc processes (about 2.1 M stories, 0.5 B tokens).
"""

import itertools
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repo root, for the core package

from core.data import prepare as P  # noqa: E402

HUB = "roneneldan/TinyStories"


def main(argv=None):
    p = P.ArgumentParser(description="TinyStories into data/tinystories/")
    p.add_argument("--input", type=os.path.expanduser, default=None, help="a local .txt file (or folder) of stories instead of the hub")
    p.add_argument("--val_input", default=None, help="local validation stories (default: split off --val_fraction)")
    p.add_argument("--doc_sep", default="<|endoftext|>", help="what separates local stories (default <|endoftext|>)")
    p.add_argument("--val_fraction", type=float, default=0.01, help="val share when there is no --val_input (default 0.01)")
    p.add_argument("--num_proc", type=P.positive_int, default=None, help="processes for datasets.map (default: all cores)")
    p.add_argument("--bpe_docs", type=int, default=200_000, help="hub stories a bpe is trained on (default 200000)")
    p.add_argument("--out_dir", type=os.path.expanduser, default=HERE, help="write here instead of beside this script")
    P.add_common_args(p)
    args = p.parse_args(argv)

    def local():
        if args.val_input is None:
            return P.prepare(args.input, args.out_dir, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                             val_fraction=args.val_fraction, doc_sep=args.doc_sep, pad=args.pad, force=args.force,
                             workers=args.workers, progress=args.progress)
        settings = {"input": P.input_setting(args.input), "val_input": P.input_setting(args.val_input), "doc_sep": args.doc_sep,
                    "tokenizer": args.tokenizer, "vocab_size": args.vocab_size if args.tokenizer == "bpe" else None, "pad": bool(args.pad)}
        if P.check_existing(args.out_dir, settings, args.force):
            return
        splits = {"train": P.read_documents(args.input, args.doc_sep), "val": P.read_documents(args.val_input, args.doc_sep)}
        P.prepare_splits(args.out_dir, splits, args.tokenizer, args.vocab_size, eot=True, pad=args.pad, settings=settings,
                         source=args.input, workers=args.workers, progress=args.progress)

    def hub():
        settings = {"input": HUB, "tokenizer": args.tokenizer, "vocab_size": args.vocab_size if args.tokenizer == "bpe" else None,
                    "pad": bool(args.pad)}
        if P.check_existing(args.out_dir, settings, args.force):
            return
        P.require_hub(HUB, "pass --input=TinyStories-train.txt (and --val_input) from a local copy")
        ds = P.load_hub(HUB, num_proc=args.num_proc)
        train_texts = (row["text"] for row in itertools.islice(ds["train"], args.bpe_docs))
        tok = P.hub_tokenizer(args.tokenizer, args.vocab_size, train_texts, pad=args.pad, progress=args.progress)
        P.hub_to_bins(args.out_dir, tok, {"train": ds["train"], "val": ds["validation"]}, num_proc=args.num_proc,
                      progress=args.progress, source=HUB, settings=settings)

    P.run_main(local if args.input else hub)


if __name__ == "__main__":
    main()
