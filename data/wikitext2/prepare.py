"""WikiText-2 (raw) with its own train / validation / test splits -> train.bin, val.bin, test.bin.

    python data/wikitext2/prepare.py                            # from the hub: Salesforce/wikitext, wikitext-2-raw-v1
    python data/wikitext2/prepare.py --data_dir=DIR             # DIR holds wiki.train.raw, wiki.valid.raw, wiki.test.raw
    python data/wikitext2/prepare.py --tokenizer=bpe --vocab_size=8000

GPT-2 tokens by default (encode_ordinary); a trained bpe learns from the train split only. Both
sources give the same text: the original raw files, line for line. Without a network the hub is
given up on after a 3-second probe, with a hint to use --data_dir.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repo root, for the core package

from core.data import prepare as P  # noqa: E402

HUB = ("Salesforce/wikitext", "wikitext-2-raw-v1")
RAW_FILES = {"train": "wiki.train.raw", "val": "wiki.valid.raw", "test": "wiki.test.raw"}
HUB_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def rows_to_raw(rows):
    """the hub's rows back into the raw file's text. each row is one line of the raw file with its
    '\\n' kept, except that the blank lines (' \\n' in the raw files) arrive as ''."""
    return "".join(row if row else " \n" for row in rows)


def read_local(data_dir):
    missing = [f for f in RAW_FILES.values() if not os.path.isfile(os.path.join(data_dir, f))]
    if missing:
        raise P.PrepareError(f"{data_dir} lacks {', '.join(missing)}; --data_dir needs wiki.train.raw, wiki.valid.raw and wiki.test.raw")
    return {split: P.read_text(os.path.join(data_dir, f)) for split, f in RAW_FILES.items()}


def read_hub():
    P.require_hub(HUB[0], "pass --data_dir=DIR holding wiki.train.raw, wiki.valid.raw and wiki.test.raw")
    ds = P.load_hub(*HUB)
    return {split: rows_to_raw(ds[name]["text"]) for split, name in HUB_SPLITS.items()}


def main(argv=None):
    p = P.ArgumentParser(description="WikiText-2 raw into data/wikitext2/ (train, val and test)")
    p.add_argument("--data_dir", type=os.path.expanduser, default=None, help="a folder with wiki.{train,valid,test}.raw to use instead of the hub")
    p.add_argument("--out_dir", type=os.path.expanduser, default=HERE, help="write here instead of beside this script")
    P.add_common_args(p)
    args = p.parse_args(argv)

    def go():
        # the text is the same from either source, so the source is not part of what must match
        settings = {"dataset": "/".join(HUB), "tokenizer": args.tokenizer, "pad": bool(args.pad),
                    "vocab_size": args.vocab_size if args.tokenizer == "bpe" else None}
        if P.check_existing(args.out_dir, settings, args.force):
            return
        texts = read_local(args.data_dir) if args.data_dir else read_hub()
        source = f"{args.data_dir} (wiki.*.raw)" if args.data_dir else "hub: " + "/".join(HUB)
        P.prepare_splits(args.out_dir, {split: [text] for split, text in texts.items()}, args.tokenizer, args.vocab_size,
                         pad=args.pad, settings=settings, source=source, workers=args.workers, progress=args.progress)

    P.run_main(go)


if __name__ == "__main__":
    main()
