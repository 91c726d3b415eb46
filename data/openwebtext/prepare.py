"""OpenWebText (GPT-2's WebText, reproduced), or FineWeb-Edu, every document followed by <|endoftext|>.

    python data/openwebtext/prepare.py                            # Skylion007/openwebtext: 8 M documents, ~9 B gpt2 tokens
    python data/openwebtext/prepare.py --streaming=True           # no 54 GB datasets cache: streamed, tokenized on the fly
    python data/openwebtext/prepare.py --source=fineweb-edu       # HuggingFaceFW/fineweb-edu sample-10BT -> data/fineweb_edu/
    python data/openwebtext/prepare.py --input=DIR                # local .txt files, one document per file

val is nanoGPT's: a seeded random 0.05% of the documents; when streaming, the first --val_docs
documents. From a cache, datasets.map tokenizes in --num_proc processes and the ids go into a
preallocated memmap; a stream is tokenized by --workers processes and appended. A local single
file is split into documents on blank lines (change with --doc_sep).
"""

import itertools
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repo root, for the core package

from core.data import prepare as P  # noqa: E402

SOURCES = {
    # name: (load_dataset args, load_dataset kwargs, default output folder)
    "openwebtext": (("Skylion007/openwebtext",), {}, HERE),
    "fineweb-edu": (("HuggingFaceFW/fineweb-edu",), {"name": "sample-10BT"}, os.path.join(os.path.dirname(HERE), "fineweb_edu")),
}


def main(argv=None):
    p = P.ArgumentParser(description="OpenWebText (or FineWeb-Edu sample-10BT) into data/openwebtext/")
    p.add_argument("--source", default="openwebtext", choices=sorted(SOURCES), help="which hub dataset (default openwebtext)")
    p.add_argument("--streaming", type=P.parse_bool, nargs="?", const=True, default=False, help="stream instead of caching the dataset")
    p.add_argument("--input", type=os.path.expanduser, default=None, help="a local .txt file or folder of .txt files instead of the hub")
    p.add_argument("--doc_sep", default=None, help="local documents: file (default for a folder), blank (default for a file), or a delimiter")
    p.add_argument("--val_fraction", type=float, default=0.0005, help="share of documents for val (default 0.0005)")
    p.add_argument("--val_docs", type=int, default=4000, help="streaming: the first this many documents are val (default 4000)")
    p.add_argument("--max_docs", type=P.positive_int, default=None, help="use only this many hub documents (a quick smaller run)")
    p.add_argument("--num_proc", type=P.positive_int, default=None, help="processes for datasets.map (default: all cores)")
    p.add_argument("--bpe_docs", type=int, default=100_000, help="documents a bpe is trained on (default 100000)")
    p.add_argument("--out_dir", type=os.path.expanduser, default=None, help="default data/openwebtext, or data/fineweb_edu for fineweb-edu")
    P.add_common_args(p)
    args = p.parse_args(argv)
    hub_args, hub_kwargs, default_out = SOURCES[args.source]
    out_dir = args.out_dir or default_out
    what = " ".join([*hub_args, *hub_kwargs.values()])
    vocab_size = args.vocab_size if args.tokenizer == "bpe" else None

    def local():
        doc_sep = args.doc_sep or ("file" if os.path.isdir(args.input) else "blank")
        P.prepare(args.input, out_dir, tokenizer=args.tokenizer, vocab_size=vocab_size, val_fraction=args.val_fraction,
                  doc_sep=doc_sep, pad=args.pad, force=args.force, workers=args.workers, progress=args.progress)

    def hub():
        settings = {"input": what, "tokenizer": args.tokenizer, "vocab_size": vocab_size, "pad": bool(args.pad),
                    "max_docs": args.max_docs, "streaming": bool(args.streaming),
                    "val": args.val_docs if args.streaming else args.val_fraction}
        if P.check_existing(out_dir, settings, args.force):
            return
        P.require_hub(hub_args[0], "pass --input=DIR with local .txt files")
        if args.streaming:
            stream = P.load_hub(*hub_args, split="train", streaming=True, **hub_kwargs)
            if args.max_docs:
                stream = stream.take(args.max_docs)
            splits = {"train": (row["text"] for row in stream.skip(args.val_docs)),
                      "val": (row["text"] for row in stream.take(args.val_docs))}
            bpe_texts = (row["text"] for row in stream.skip(args.val_docs).take(args.bpe_docs))
        else:
            ds = P.load_hub(*hub_args, split="train", num_proc=args.num_proc, **hub_kwargs)
            if args.max_docs:
                ds = ds.select(range(min(args.max_docs, len(ds))))
            parts = ds.train_test_split(test_size=args.val_fraction, seed=2357, shuffle=True)
            splits = {"train": parts["train"], "val": parts["test"]}
            bpe_texts = (row["text"] for row in itertools.islice(parts["train"], args.bpe_docs))
        tok = P.hub_tokenizer(args.tokenizer, args.vocab_size, bpe_texts, pad=args.pad, progress=args.progress)
        P.hub_to_bins(out_dir, tok, splits, streaming=args.streaming, num_proc=args.num_proc, workers=args.workers,
                      progress=args.progress, source=what, settings=settings)

    if args.input and args.max_docs:
        p.error("--max_docs picks documents of the hub dataset; with --input, give the files or folder you want")
    P.run_main(local if args.input else hub)


if __name__ == "__main__":
    main()
