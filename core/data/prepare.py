"""Turn any text into token files for train.py: one prepare for a file or a folder of .txt files.

    python data/prepare.py --input=notes.txt --name=notes                     # gpt2 ids -> data/notes/
    python data/prepare.py --input=stories/ --name=stories --tokenizer=bpe --vocab_size=8000 --doc_sep=blank

Writes into data/NAME/ (or --out_dir):
    train.bin, val.bin[, test.bin]   raw little-endian uint16 token ids (uint32 above 65,536 ids)
    meta.json                        vocab_size, dtype, tokenizer (its full state), splits (token counts),
                                     fingerprint (tokenizer and per-split sha256: the dataset's identity)
    tokenizer.json                   a trained bpe again, as the file HF `tokenizers` loads
Every file is written into a staging folder inside the target and the whole set is moved into place
when complete, meta.json last (writer.NewDataset): until then the folder keeps its previous dataset,
whole and trainable, and a killed or failed prepare changes nothing a loader reads.

data/prepare.py and the per-dataset prepares (data/<name>/prepare.py) are thin layers over the functions here.
"""

import argparse
import multiprocessing
import os
import re
import sys
import time

import numpy as np

from core import network
from core.data import corpus
from core.data import tokenizer as tk
from core.data.tokenizer import EOT, PAD  # noqa: F401  (data/<name>/prepare.py read them here)
from core.data.writer import (BinWriter, NewDataset, PrepareError, _encode_batch, _init_worker, check_existing,  # noqa: F401
                              check_space, encode_to_bin, finish, input_setting, make_tokenizer, prepare_splits,
                              progress_bar, read_documents, read_text, report, say, split_documents, split_train_val,
                              remove_stale_temps, write_bin, write_error)
from core.errors import ArgumentParser, UserError, fail
from core.paths import DATA_DIR


def prepare(input, out_dir, tokenizer="gpt2", vocab_size=None, val_fraction=0.1, doc_sep="none", pad=False,
            force=False, workers=None, progress=True, source=None, format="text", text_field=None, on_bad_line="stop"):
    """the whole of `python data/prepare.py`: read, split, make the tokenizer, encode, write meta.
    .jsonl and .parquet inputs and --format=chat stream through core/data/corpus.py."""
    settings = {"input": input_setting(input), "tokenizer": tokenizer, "vocab_size": vocab_size if tokenizer == "bpe" else None,
                "val_fraction": val_fraction, "doc_sep": doc_sep, "pad": bool(pad)}
    records = corpus.wants_records(input, format)
    if records:
        settings.update(format=format, text_field=text_field, on_bad_line=on_bad_line)
    if check_existing(out_dir, settings, force):
        return tk.read_meta(out_dir)
    if records:
        return corpus.prepare_records(input, out_dir, tokenizer, vocab_size, val_fraction, doc_sep, pad, format, text_field,
                                      on_bad_line, workers, progress, settings, source)
    docs = read_documents(input, doc_sep)
    by_docs = doc_sep != "none"
    train, val = split_train_val(docs, val_fraction, by_documents=by_docs)
    return prepare_splits(out_dir, {"train": train, "val": val}, tokenizer, vocab_size, eot=by_docs, pad=pad,
                          settings=settings, source=source or input, workers=workers, progress=progress)


# -- the hugging face hub -------------------------------------------------------------------------


def _env_offline():
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_problem(repo, timeout=3.0, url=None):
    """None when the hub serves repo's dataset page within timeout seconds, else what went wrong
    (core/network.py, the one probe); datasets itself would retry for about 23 s before giving up."""
    url = url or os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/") + f"/api/datasets/{repo}"
    return network.unreachable(url, timeout, http=True)


def require_hub(repo, local_hint, timeout=3.0, url=None):
    """fail fast with one line when the hub cannot be reached. with HF_DATASETS_OFFLINE=1 set by
    the user, datasets is let through so that it can use its cache."""
    if _env_offline():
        return
    problem = hub_problem(repo, timeout, url)
    if problem:
        raise PrepareError(f"cannot reach the Hugging Face hub for {repo}, no network? ({problem}); {local_hint}, or set HF_DATASETS_OFFLINE=1 to use a cached copy")


def load_hub(*args, **kwargs):
    """datasets.load_dataset with its failures turned into one line."""
    try:
        import datasets
    except ImportError:
        raise PrepareError("the hub path needs the datasets package: pip install datasets") from None
    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as e:  # whatever the library raises, the user gets its first line, not a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = ""
        if "scripts are no longer supported" in first:
            hint = "; this datasets version cannot run the dataset's loading script: pip install 'datasets<4' or use local files"
        raise PrepareError(f"load_dataset({', '.join(map(repr, args))}) failed: {first}{hint}") from None


class _HubEncoder:
    # a picklable callable for datasets.map: it carries the tokenizer state, not the tokenizer
    def __init__(self, state, key, eot):
        self.state, self.key, self.eot = state, key, eot
        self.tok = None

    def __call__(self, batch):
        if self.tok is None:
            self.tok = tk.from_state(self.state)
        ids = [self.tok.encode_ordinary(t) + ([self.tok.eot_token] if self.eot else []) for t in batch[self.key]]
        return {"ids": ids, "len": [len(x) for x in ids]}


def dataset_to_bin(ds, tok, path, key="text", eot=True, num_proc=None, progress=True):
    """a (non-streaming) datasets.Dataset into a token file: datasets.map tokenizes in num_proc
    processes into its on-disk cache, the summed lengths size a preallocated memmap, and shards
    are copied in order."""
    num_proc = num_proc or os.cpu_count() or 1
    enc = ds.map(_HubEncoder(tok.state(), key, eot), batched=True, remove_columns=ds.column_names,
                 num_proc=num_proc if len(ds) >= 1000 * num_proc else None, desc=f"tokenizing {os.path.basename(path)}")
    n = int(np.sum(enc["len"], dtype=np.int64))
    check_space(os.path.dirname(path) or ".", n * np.dtype(tk.token_dtype(tok.vocab_size)).itemsize)
    shards = max(1, min(1024, len(enc) // 1000))
    from tqdm import tqdm
    with BinWriter(path, tok.vocab_size) as out:
        for i in tqdm(range(shards), desc=f"writing {os.path.basename(path)}", disable=not progress, file=sys.stdout):
            shard = enc.shard(num_shards=shards, index=i, contiguous=True).with_format("numpy")
            if len(shard):
                out.write(np.concatenate(list(shard["ids"])))
        return out.commit()


def stream_to_bin(texts, tok, path, eot=True, workers=None, progress=True, batch_docs=1000):
    """an iterable of documents (a streaming dataset) into a token file. the total is unknown
    until the stream ends, so ids are appended to the temp file rather than preallocated."""
    workers = workers or os.cpu_count() or 1

    def batches():
        batch = []
        for t in texts:
            batch.append((t, eot))
            if len(batch) == batch_docs:
                yield batch
                batch = []
        if batch:
            yield batch

    bar = progress_bar(None, os.path.basename(path), progress)
    try:
        with BinWriter(path, tok.vocab_size) as out, \
                multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(tok.state(),)) as pool:
            for ids, chars in pool.imap(_encode_batch, batches()):
                out.write(ids)
                bar.update(chars)
            return out.commit()
    finally:
        bar.close()


def hub_tokenizer(kind, vocab_size, train_texts, pad=False, progress=True):
    """the tokenizer for a hub dataset; a bpe learns from train_texts (an iterable of documents)."""
    if kind == "char":
        raise PrepareError("char is for small local text; use --tokenizer=gpt2 or bpe for a hub dataset")
    if kind != "bpe":
        return make_tokenizer(kind, [], pad=pad)
    if not vocab_size:
        raise PrepareError("--tokenizer=bpe needs --vocab_size, e.g. --vocab_size=32000")
    t0 = time.time()
    say(f"training a {vocab_size:,}-token byte-level bpe on the train documents")
    tok = tk.train_bpe(train_texts, vocab_size, special_tokens=[EOT] + ([PAD] if pad else []), show_progress=progress)
    say(f"trained in {time.time() - t0:.1f} s: {tok.vocab_size:,} tokens")
    # datasets.map forks next; the trainer's threads are done, and this keeps HF from warning about it
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return tok


def hub_to_bins(out_dir, tok, splits, streaming=False, num_proc=None, workers=None, progress=True, source=None, settings=None):
    """write each split (name -> datasets.Dataset, or an iterable of documents when streaming),
    every document followed by <|endoftext|>, then meta.json, in place of out_dir's dataset at once."""
    os.makedirs(out_dir, exist_ok=True)
    remove_stale_temps(out_dir)
    with NewDataset(out_dir) as new:
        counts = {}
        for name, ds in splits.items():
            path = new.path(f"{name}.bin")
            if streaming:
                counts[name] = stream_to_bin(ds, tok, path, eot=True, workers=workers, progress=progress)
            else:
                counts[name] = dataset_to_bin(ds, tok, path, eot=True, num_proc=num_proc, progress=progress)
        meta = finish(new.dir, tok, counts, eot=True, source=source, settings=settings)
    report(out_dir, meta)
    return meta


# -- command line -----------------------------------------------------------------------------------


def parse_bool(s):
    v = str(s).lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {s!r}")


def positive_int(s):
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n


def add_common_args(p, tokenizer="gpt2"):
    """the options every prepare shares."""
    p.add_argument("--tokenizer", default=tokenizer, choices=tk.KINDS, help=f"char, gpt2 or bpe (default {tokenizer})")
    p.add_argument("--vocab_size", type=int, default=None, help="ids in a trained bpe, e.g. 8000")
    p.add_argument("--pad", type=parse_bool, nargs="?", const=True, default=False, help="give a trained bpe a <|pad|> token too")
    p.add_argument("--force", type=parse_bool, nargs="?", const=True, default=False, help="redo a complete preparation")
    p.add_argument("--workers", type=positive_int, default=None, help="tokenizer processes (default: all cores for inputs over 16 M characters)")
    p.add_argument("--progress", type=parse_bool, nargs="?", const=True, default=True, help="progress bars (default True)")


def run_main(fn):
    """run fn() so that a user mistake ends in one line on stderr and exit status 2 (errors.fail)."""
    try:
        fn()
    except UserError as e:
        fail(e)
    except MemoryError:
        fail("out of memory; use a smaller input or fewer --workers")
    except OSError as e:  # a write outside BinWriter (meta.json, another writer): the same one line
        fail(write_error(e.filename or 'the dataset', e))
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was left in place: the folder keeps its last complete dataset",
              file=sys.stderr)
        sys.exit(130)


def main(argv=None):
    p = ArgumentParser(description="tokenize a .txt, .jsonl or .parquet file, or a folder of them, into data/NAME/")
    p.add_argument("--input", type=os.path.expanduser, required=True, help="a .txt, .jsonl or .parquet file, or a folder of them")
    p.add_argument("--format", default="text", choices=("text", "chat"),
                   help="text (a document per record) or chat (jsonl of {\"messages\": [{\"role\", \"content\"}]})")
    p.add_argument("--text_field", default=None, help="the jsonl field or parquet column to read (default text; chat: messages)")
    p.add_argument("--on_bad_line", default="stop", choices=("stop", "skip"),
                   help="a record that is not JSON or lacks the field: stop (default) or skip and count it")
    p.add_argument("--name", default=None, help="the dataset name: output goes to data/NAME (default: the input's name)")
    p.add_argument("--out_dir", type=os.path.expanduser, default=None, help="write here instead of data/NAME")
    p.add_argument("--val_fraction", type=float, default=0.1, help="share of the text that goes to val.bin (default 0.1)")
    p.add_argument("--doc_sep", default="none", help="none (one text), blank (blank lines end documents), file (one per file), "
                   "or a delimiter string; documents get <|endoftext|> after each")
    add_common_args(p)
    args = p.parse_args(argv)

    def go():
        name = args.name if args.name is not None else os.path.splitext(os.path.basename(os.path.normpath(args.input)))[0]
        if not re.fullmatch(r"\w[\w.-]*", name) and (args.out_dir is None or args.name is not None):
            if args.name is None:  # the input's own name, which --out_dir would not have needed
                raise PrepareError(f"the input's name {name!r} is no plain folder name for data/ (letters, digits, "
                                   f"_ . -); give --name=NAME or --out_dir=FOLDER")
            raise PrepareError(f"--name={name!r} should be a plain folder name (letters, digits, _ . -)")
        out_dir = args.out_dir or os.path.join(DATA_DIR, name)
        prepare(args.input, out_dir, tokenizer=args.tokenizer, vocab_size=args.vocab_size, val_fraction=args.val_fraction,
                doc_sep=args.doc_sep, pad=args.pad, force=args.force, workers=args.workers, progress=args.progress,
                format=args.format, text_field=args.text_field, on_bad_line=args.on_bad_line)

    run_main(go)
