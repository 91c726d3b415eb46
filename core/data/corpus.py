"""Corpora that come as records: .jsonl and .parquet (and .txt beside them), streamed into token files.

    python data/prepare.py --input=stories.jsonl --text_field=text --name=mystories --tokenizer=bpe --vocab_size=8000
    python data/prepare.py --input=fineweb/ --name=fw                        # a folder of .parquet
    python data/prepare.py --input=chats.jsonl --format=chat --name=mychat   # {"messages": [{"role", "content"}]}

Every record is a document, followed by <|endoftext|> (a conversation starts with it instead, see
core/data/chat.py). Nothing holds the corpus in memory: the main process reads raw lines (jsonl) or
column batches (parquet) and hands them to worker processes that parse and encode them, in order,
into a staging folder inside the dataset's. The last documents holding about val_fraction of the
characters are val, the rule .txt input follows too, so the same documents give the same dataset in
any format. The files replace a previous preparation only once everything was read, so a bad line, an
interrupt or a kill leaves the old dataset as it was. With --format=chat, <split>.mask.bin holds
one byte per token: 1 where the loss sees the token (an assistant's words and its <|end|>).

core/data/prepare.py's prepare() sends an input here when it holds .jsonl or .parquet or --format=chat.
"""

import itertools
import multiprocessing
import os
import shutil
import signal

import numpy as np

from core import fileio
from core.data import chat
from core.data import tokenizer as tk
from core.data.writer import (PARALLEL_MIN_CHARS, NewDataset, PrepareError, files_under, finish, first_val_document,
                              make_tokenizer, not_a_file, progress_bar, read_text, report, say, split_documents)

SUFFIXES = (".txt", ".jsonl", ".parquet")
TASK_BYTES = 1 << 20  # raw input per worker task
BOM = "\ufeff".encode("utf-8")


def wants_records(path, fmt):
    """True when the input needs this module: --format=chat, or any .jsonl/.parquet among its files."""
    if fmt == "chat":
        return True
    if os.path.isdir(path):
        return any(f.endswith((".jsonl", ".parquet")) for _, _, fs in os.walk(path) for f in fs)
    return path.endswith((".jsonl", ".parquet"))


def corpus_files(path):
    """the file itself, or every .txt, .jsonl and .parquet file under a folder, in sorted order."""
    if os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path)):
        raise not_a_file(path)
    if os.path.isfile(path):
        if not path.endswith(SUFFIXES):
            raise PrepareError(f"{path}: prepare reads {', '.join(SUFFIXES)} files")
        return [path]
    if os.path.isdir(path):
        files = files_under(path, SUFFIXES)
        if not files:
            raise PrepareError(f"no {', '.join(SUFFIXES)} files under {path}")
        return files
    raise PrepareError(f"input {path} does not exist")


def _parquet(path, field):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise PrepareError("reading .parquet needs pyarrow: pip install pyarrow") from None
    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # pyarrow's own error types vary by version; the message is what matters
        raise PrepareError(f"{path} is not a readable parquet file ({str(e).splitlines()[0][:200]})") from None
    if field not in f.schema_arrow.names:
        raise PrepareError(f"{path} has no column {field!r} (its columns: {', '.join(f.schema_arrow.names)}); "
                           f"pass --text_field=NAME")
    return f


# -- reading: tasks of raw records, each with where it came from ----------------------------------


def tasks(files, field, doc_sep, task_bytes=TASK_BYTES):
    """(path, first line or row, kind, payload, bytes) in input order, where kind is 'lines' (raw jsonl
    bytes) or 'values' (texts or message lists)."""
    for path in files:
        size = os.path.getsize(path)
        if path.endswith(".jsonl"):
            with open(path, "rb") as f:
                chunk, first, nbytes = [], 1, 0
                for line_no, line in enumerate(f, 1):
                    if line_no == 1 and line.startswith(BOM):
                        line = line[len(BOM):]  # a byte order mark is a marker, not text
                    if not chunk:
                        first = line_no
                    chunk.append(line)
                    nbytes += len(line)
                    if nbytes >= task_bytes:
                        yield (path, first, "lines", chunk, nbytes)
                        chunk, nbytes = [], 0
                if chunk:
                    yield (path, first, "lines", chunk, nbytes)
        elif path.endswith(".parquet"):
            pf = _parquet(path, field)
            rows, total = 0, max(pf.metadata.num_rows, 1)
            for batch in pf.iter_batches(columns=[field], batch_size=1024):
                values = batch.column(0).to_pylist()
                # a parquet file is compressed: its bytes are shared out over its rows for the progress bar
                yield (path, rows + 1, "values", values, size * (rows + len(values)) // total - size * rows // total)
                rows += len(values)
        else:
            docs = split_documents(read_text(path), doc_sep)
            n, done = max(sum(map(len, docs)), 1), 0
            for i, d in enumerate(docs):
                yield (path, i + 1, "values", [d], size * (done + len(d)) // n - size * done // n)
                done += len(d)


# -- the workers: parse and encode one task ---------------------------------------------------------


_job = {}


def _init(state, fmt, field):
    _job.update(tok=tk.from_state(state), fmt=fmt, field=field)


def _init_worker(state, fmt, field):
    # Ctrl-C reaches every process of the terminal: the parent handles it and ends the pool
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init(state, fmt, field)


def _check_text(text):
    """JSON may spell half of a UTF-16 pair ("\\ud83d", what a broken exporter leaves of an emoji): no tokenizer can
    encode it, and the char one made it a character its fingerprint could not hash (a traceback at the end)."""
    if not text.isascii():  # O(1) in CPython: only text beyond ASCII is scanned
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"holds {e.object[e.start]!r} at character {e.start}, half of a UTF-16 surrogate pair, "
                             f"which is not text") from None


def _record(value, field, fmt):
    """the document of one parsed record, or raise ValueError saying what is wrong with it."""
    if fmt == "chat":
        messages = value.get("messages") if isinstance(value, dict) else value
        try:
            chat.check(messages)
        except chat.ChatError as e:
            raise ValueError(str(e)) from None
        for m in messages:
            _check_text(m["content"])
        return messages
    if isinstance(value, dict):
        if field not in value:
            raise ValueError(f"no {field!r} field (it has {', '.join(map(repr, list(value)[:8]))}); pass --text_field=NAME")
        value = value[field]
    if not isinstance(value, str):
        raise ValueError(f"{field!r} is {type(value).__name__}, not text")
    _check_text(value)
    return value.removeprefix("\ufeff")  # a byte order mark carried over from a file is not text


def _texts(doc):
    """the text of a document: itself, or a conversation's message contents."""
    return [doc] if isinstance(doc, str) else [m["content"] for m in doc]


def _chars(doc):
    return len(doc) if isinstance(doc, str) else sum(map(len, _texts(doc)))


def _parse(raw, kind, field, fmt):
    """the document of one raw record, None for a blank jsonl line, or ValueError saying what is wrong."""
    if kind == "lines":
        if not raw.strip():
            return None  # blank lines are allowed between records
        try:
            value = fileio.read_json(raw)
        except fileio.NotUtf8:
            raise
        except ValueError as e:
            raise ValueError(f"not JSON ({e})") from None
        if fmt != "chat" and not isinstance(value, dict):
            raise ValueError(f"a JSON {type(value).__name__}, not an object with a {field!r} field")
    else:
        value = raw
        if value is None:
            raise ValueError(f"{field!r} is empty (null)")
    return _record(value, field, fmt)


def encode_task(task):
    """(ids uint32, mask uint8 or None, characters per document, tokens per document, bad [(path, line, why)],
    bytes) of one task."""
    path, first, kind, payload, nbytes = task
    tok, fmt, field = _job["tok"], _job["fmt"], _job["field"]
    ids, mask, chars, counts, bad = [], [], [], [], []
    eot = np.array([tok.eot_token], dtype=np.uint32)
    for i, raw in enumerate(payload):
        try:
            doc = _parse(raw, kind, field, fmt)
        except ValueError as e:
            bad.append((path, first + i, str(e)))
            continue
        if doc is None:
            continue
        if fmt == "chat":
            d_ids, d_mask = chat.encode(doc, tok, check_messages=False)
            ids.append(np.array(d_ids, dtype=np.uint32))
            mask.append(np.array(d_mask, dtype=np.uint8))
            counts.append(len(d_ids))
        else:
            ids += (tok.encode_array(doc, dtype=np.uint32), eot)
            counts.append(len(ids[-2]) + 1)
        chars.append(_chars(doc))
    cat = (lambda a, t: np.concatenate(a) if a else np.zeros(0, t))
    return (cat(ids, np.uint32), (cat(mask, np.uint8) if fmt == "chat" else None), np.array(chars, np.int64),
            np.array(counts, np.int64), bad, nbytes)


def documents(files, field, fmt, doc_sep, on_bad_line):
    """the parsed documents, in this process (to learn a tokenizer from)."""
    for path, first, kind, payload, _ in tasks(files, field, doc_sep):
        for i, raw in enumerate(payload):
            try:
                doc = _parse(raw, kind, field, fmt)
            except ValueError as e:
                if on_bad_line == "stop":
                    raise PrepareError(_bad_message(path, first + i, str(e))) from None
                continue
            if doc is not None:
                yield doc


def _bad_message(path, line, why):
    return f"{path}:{line}: {why}; fix it or pass --on_bad_line=skip"


# -- the whole preparation -----------------------------------------------------------------------


def prepare_records(input, out_dir, tokenizer="gpt2", vocab_size=None, val_fraction=0.1, doc_sep="none", pad=False,
                    fmt="text", text_field=None, on_bad_line="stop", workers=None, progress=True, settings=None,
                    source=None):
    """read, make the tokenizer, encode in workers, split by documents, and only then replace out_dir's dataset."""
    if fmt not in ("text", "chat"):
        raise PrepareError(f"--format={fmt}: use text or chat")
    if on_bad_line not in ("stop", "skip"):
        raise PrepareError(f"--on_bad_line={on_bad_line}: use stop or skip")
    if not 0 < val_fraction < 1:
        raise PrepareError(f"--val_fraction must be between 0 and 1, got {val_fraction}")
    field = text_field or ("messages" if fmt == "chat" else "text")
    files = corpus_files(input)
    for f in files:
        if f.endswith(".parquet"):
            _parquet(f, field)  # a missing column stops us before anything is written
    total = sum(os.path.getsize(f) for f in files)
    if total == 0:
        raise PrepareError(f"{input} is empty")

    reserve = tk.CHAT_TOKENS if fmt == "chat" else ()
    if tokenizer == "gpt2":
        tok = make_tokenizer("gpt2", [], pad=pad)
    else:
        # char needs every character, bpe learns from the train documents: a reading pass in this process first
        say(f"reading {input} for the {tokenizer} tokenizer")
        lengths, chars = [], set()
        for d in documents(files, field, fmt, doc_sep, on_bad_line):
            lengths.append(_chars(d))
            if tokenizer == "char":
                chars.update(*_texts(d))
        if len(lengths) < 2:
            raise PrepareError(f"{input} holds {len(lengths)} document(s); a train/val split needs at least 2")
        if tokenizer == "char":
            texts = ["".join(sorted(chars))]
        else:
            k = first_val_document(lengths, val_fraction)
            texts = (t for d in itertools.islice(documents(files, field, fmt, doc_sep, on_bad_line), k) for t in _texts(d))
        tok = make_tokenizer(tokenizer, texts, texts, vocab_size=vocab_size, eot=True, pad=pad, progress=progress,
                             extra_specials=reserve)
    tok = tk.with_specials(tok, reserve)

    dtype = np.dtype(tk.token_dtype(tok.vocab_size)).newbyteorder("<")
    n_workers = workers if workers is not None else ((os.cpu_count() or 1) if total >= PARALLEL_MIN_CHARS else 1)
    with NewDataset(out_dir) as new:
        # every document goes to train.bin in order; the val documents are moved off its end once all are read
        names = ["train"] + (["train.mask"] if fmt == "chat" else [])
        paths = {k: new.path(f"{k}.bin") for k in names}
        chars, counts, bad = [], [], []
        bar = progress_bar(total, os.path.basename(os.path.normpath(input)), progress)
        bar.unit = "B"
        handles = {}
        try:
            handles = {k: open(p, "wb") for k, p in paths.items()}

            def take(result):
                ids, mask, doc_chars, doc_tokens, bad_here, nbytes = result
                if bad_here:
                    if on_bad_line == "stop":
                        raise PrepareError(_bad_message(*bad_here[0]))
                    bad.extend(bad_here)
                handles["train"].write(ids.astype(dtype).tobytes())
                if mask is not None:
                    handles["train.mask"].write(mask.tobytes())
                chars.append(doc_chars)
                counts.append(doc_tokens)
                bar.update(nbytes)

            work = tasks(files, field, doc_sep)
            if n_workers > 1:
                # spawn, not fork: the parent may hold HF tokenizers' thread pool, which fork would copy
                with multiprocessing.get_context("spawn").Pool(n_workers, initializer=_init_worker,
                                                               initargs=(tok.state(), fmt, field)) as pool:
                    for result in pool.imap(encode_task, work):
                        take(result)
            else:
                _init(tok.state(), fmt, field)
                for task in work:
                    take(encode_task(task))
        finally:
            for h in handles.values():
                h.close()
            bar.close()
        if bad:
            path, line, why = bad[0]
            say(f"skipped {len(bad):,} bad record(s); the first: {path}:{line}: {why}")
        chars = np.concatenate(chars).tolist() if chars else []
        counts = np.concatenate(counts) if counts else np.zeros(0, np.int64)
        if len(chars) < 2:
            raise PrepareError(f"{input} holds {len(chars)} document(s); a train/val split needs at least 2")
        k = first_val_document(chars, val_fraction)
        cut = int(counts[:k].sum())
        _split_off(paths["train"], new.path("val.bin"), cut * dtype.itemsize)
        if fmt == "chat":
            _split_off(paths["train.mask"], new.path("val.mask.bin"), cut)
        split_counts = {"train": cut, "val": int(counts.sum()) - cut}
        extra = {"documents": {"train": k, "val": len(chars) - k}, "format_of_records": fmt}
        if fmt == "chat":
            extra["loss_mask"] = "<split>.mask.bin: one uint8 per token, 1 where the loss sees it (assistant turns)"
        meta = finish(new.dir, tok, split_counts, eot=True, source=source or input, settings=settings, extra=extra)
    report(out_dir, meta)
    return meta


def _split_off(path, tail_path, at):
    """move the bytes of path from offset at onwards into the new file tail_path."""
    with open(path, "rb+") as f, open(tail_path, "wb") as out:
        f.seek(at)
        shutil.copyfileobj(f, out, 1 << 24)
        f.truncate(at)
