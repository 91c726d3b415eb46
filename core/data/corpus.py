"""Corpora that come as records: .jsonl and .parquet (and .txt beside them), streamed into token files.

    python data/prepare.py --input=stories.jsonl --text_field=text --name=mystories --tokenizer=bpe --vocab_size=8000
    python data/prepare.py --input=fineweb/ --name=fw                        # a folder of .parquet
    python data/prepare.py --input=chats.jsonl --format=chat --name=mychat   # {"messages": [{"role", "content"}]}

Every record is a document, followed by <|endoftext|> (a conversation starts with it instead, see
core/data/chat.py). Nothing holds the corpus in memory: the main process reads raw lines (jsonl) or
column batches (parquet) and hands them to worker processes that parse and encode them, in order,
into temp files beside the dataset. The last val_fraction of the input's bytes (at a record
boundary) is val. The files replace a previous preparation only once everything was read, so a bad
line or an interrupt leaves the old dataset as it was. With --format=chat, <split>.mask.bin holds
one byte per token: 1 where the loss sees the token (an assistant's words and its <|end|>).

core/data/prepare.py's prepare() sends an input here when it holds .jsonl or .parquet or --format=chat.
"""

import json
import multiprocessing
import os
import signal

import numpy as np

from core.data import chat
from core.data import tokenizer as tk
from core.data.writer import (PARALLEL_MIN_CHARS, PrepareError, begin, commit_file, finish, make_tokenizer, progress_bar,
                          read_text, report, say, split_documents, temp_path)

SUFFIXES = (".txt", ".jsonl", ".parquet")
TASK_BYTES = 1 << 20  # raw input per worker task


def wants_records(path, fmt):
    """True when the input needs this module: --format=chat, or any .jsonl/.parquet among its files."""
    if fmt == "chat":
        return True
    if os.path.isdir(path):
        return any(f.endswith((".jsonl", ".parquet")) for _, _, fs in os.walk(path) for f in fs)
    return path.endswith((".jsonl", ".parquet"))


def corpus_files(path):
    """the file itself, or every .txt, .jsonl and .parquet file under a folder, in sorted order."""
    if os.path.isfile(path):
        if not path.endswith(SUFFIXES):
            raise PrepareError(f"{path}: prepare reads {', '.join(SUFFIXES)} files")
        return [path]
    if os.path.isdir(path):
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(SUFFIXES))
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


def tasks(files, field, doc_sep, cut, task_bytes=TASK_BYTES):
    """(split, path, first line or row, kind, payload, bytes) in input order, where kind is 'lines'
    (raw jsonl bytes) or 'values' (texts or message lists). A task never straddles the train/val cut:
    records starting at input byte offset cut or later are val."""
    offset = 0
    for path in files:
        size = os.path.getsize(path)
        if path.endswith(".jsonl"):
            with open(path, "rb") as f:
                chunk, first, start, where = [], 1, offset, "train"
                for line_no, line in enumerate(f, 1):
                    split = "val" if offset >= cut else "train"
                    if chunk and (split != where or offset - start >= task_bytes):
                        yield (where, path, first, "lines", chunk, offset - start)
                        chunk = []
                    if not chunk:
                        first, start, where = line_no, offset, split
                    chunk.append(line)
                    offset += len(line)
                if chunk:
                    yield (where, path, first, "lines", chunk, offset - start)
        elif path.endswith(".parquet"):
            pf = _parquet(path, field)
            rows, total = 0, max(pf.metadata.num_rows, 1)
            for batch in pf.iter_batches(columns=[field], batch_size=1024):
                values = batch.column(0).to_pylist()
                # a parquet file is compressed: its bytes are shared out over its rows for the split
                at = offset + size * rows // total
                k = len(values)
                if at < cut <= offset + size * (rows + k) // total:
                    k = next(i for i in range(len(values)) if offset + size * (rows + i) // total >= cut)
                for part, start in ((values[:k], rows), (values[k:], rows + k)):
                    if part:
                        pos = offset + size * start // total
                        yield ("val" if pos >= cut else "train", path, start + 1, "values", part,
                               size * len(part) // total)
                rows += len(values)
            offset += size
        else:
            docs = split_documents(read_text(path), doc_sep)
            n, done = max(sum(map(len, docs)), 1), 0
            for i, d in enumerate(docs):
                # a .txt file's documents share its bytes in proportion to their length
                pos = offset + size * done // n
                done += len(d)
                yield ("val" if pos >= cut else "train", path, i + 1, "values", [d], offset + size * done // n - pos)
            offset += size


# -- the workers: parse and encode one task ---------------------------------------------------------


_job = {}


def _init(state, fmt, field):
    _job.update(tok=tk.from_state(state), fmt=fmt, field=field)


def _init_worker(state, fmt, field):
    # Ctrl-C reaches every process of the terminal: the parent handles it and ends the pool
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init(state, fmt, field)


def _record(value, field, fmt):
    """the document of one parsed record, or raise ValueError saying what is wrong with it."""
    if fmt == "chat":
        messages = value.get("messages") if isinstance(value, dict) else value
        try:
            chat.check(messages)
        except chat.ChatError as e:
            raise ValueError(str(e)) from None
        return messages
    if isinstance(value, dict):
        if field not in value:
            raise ValueError(f"no {field!r} field (it has {', '.join(map(repr, list(value)[:8]))}); pass --text_field=NAME")
        value = value[field]
    if not isinstance(value, str):
        raise ValueError(f"{field!r} is {type(value).__name__}, not text")
    return value


def encode_task(task):
    """(split, ids uint32, mask uint8 or None, records, bad [(path, line, why)], bytes) of one task."""
    split, path, first, kind, payload, nbytes = task
    tok, fmt, field = _job["tok"], _job["fmt"], _job["field"]
    ids, mask, bad, n = [], [], [], 0
    for i, raw in enumerate(payload):
        where = first + i
        try:
            if kind == "lines":
                if not raw.strip():
                    continue  # blank lines are allowed between records
                try:
                    value = json.loads(raw)
                except ValueError as e:
                    raise ValueError(f"not JSON ({e})") from None
                if fmt != "chat" and not isinstance(value, dict):
                    raise ValueError(f"a JSON {type(value).__name__}, not an object with a {field!r} field")
            else:
                value = raw
                if value is None:
                    raise ValueError(f"{field!r} is empty (null)")
            doc = _record(value, field, fmt)
        except ValueError as e:
            bad.append((path, where, str(e)))
            continue
        n += 1
        if fmt == "chat":
            d_ids, d_mask = chat.encode(doc, tok, check_messages=False)
            ids.append(np.array(d_ids, dtype=np.uint32))
            mask.append(np.array(d_mask, dtype=np.uint8))
        else:
            ids.append(tok.encode_array(doc, dtype=np.uint32))
            ids.append(np.array([tok.eot_token], dtype=np.uint32))
    cat = (lambda a, t: np.concatenate(a) if a else np.zeros(0, t))
    return split, cat(ids, np.uint32), (cat(mask, np.uint8) if fmt == "chat" else None), n, bad, nbytes


def documents(files, field, fmt, doc_sep, cut, on_bad_line, only="train"):
    """the parsed documents of one split, in this process (to learn a tokenizer from)."""
    for task in tasks(files, field, doc_sep, cut):
        if task[0] != only:
            continue
        split, path, first, kind, payload, _ = task
        for i, raw in enumerate(payload):
            try:
                value = raw
                if kind == "lines":
                    if not raw.strip():
                        continue
                    value = json.loads(raw)
                doc = _record(value, field, fmt)
            except ValueError as e:
                if on_bad_line == "stop":
                    raise PrepareError(_bad_message(path, first + i, str(e))) from None
                continue
            if fmt == "chat":
                yield from (m["content"] for m in doc)
            else:
                yield doc


def _bad_message(path, line, why):
    return f"{path}:{line}: {why}; fix it or pass --on_bad_line=skip"


# -- the whole preparation -----------------------------------------------------------------------


def prepare_records(input, out_dir, tokenizer="gpt2", vocab_size=None, val_fraction=0.1, doc_sep="none", pad=False,
                    fmt="text", text_field=None, on_bad_line="stop", workers=None, progress=True, settings=None,
                    source=None):
    """read, split, make the tokenizer, encode in workers, and only then replace out_dir's dataset."""
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
    cut = int(total * (1 - val_fraction))

    reserve = tk.CHAT_TOKENS if fmt == "chat" else ()
    if tokenizer == "gpt2":
        tok = make_tokenizer("gpt2", [], pad=pad)
    else:
        # char needs every character, bpe learns from train: a reading pass in this process first
        say(f"reading {input} for the {tokenizer} tokenizer")
        if tokenizer == "char":
            chars = set()
            for only in ("train", "val"):
                for d in documents(files, field, fmt, doc_sep, cut, on_bad_line, only=only):
                    chars.update(d)
            texts = ["".join(sorted(chars))]
        else:
            texts = documents(files, field, fmt, doc_sep, cut, on_bad_line, only="train")
        tok = make_tokenizer(tokenizer, texts, texts, vocab_size=vocab_size, eot=True, pad=pad, progress=progress,
                             extra_specials=reserve)
    tok = tk.with_specials(tok, reserve)

    dtype = np.dtype(tk.token_dtype(tok.vocab_size)).newbyteorder("<")
    made_dir = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    names = ["train", "val"]
    paths = {s: os.path.join(out_dir, f"{s}.bin") for s in names}
    if fmt == "chat":
        paths.update({f"{s}.mask": os.path.join(out_dir, f"{s}.mask.bin") for s in names})
    tmps = {k: temp_path(p) for k, p in paths.items()}
    counts, records, bad = dict.fromkeys(names, 0), dict.fromkeys(names, 0), []
    n_workers = workers if workers is not None else ((os.cpu_count() or 1) if total >= PARALLEL_MIN_CHARS else 1)
    bar = progress_bar(total, os.path.basename(os.path.normpath(input)), progress)
    bar.unit = "B"
    handles = {}
    try:
        handles = {k: open(t, "wb") for k, t in tmps.items()}

        def take(result):
            split, ids, mask, n, bad_here, nbytes = result
            if bad_here:
                if on_bad_line == "stop":
                    raise PrepareError(_bad_message(*bad_here[0]))
                bad.extend(bad_here)
            handles[split].write(ids.astype(dtype).tobytes())
            if mask is not None:
                handles[f"{split}.mask"].write(mask.tobytes())
            counts[split] += len(ids)
            records[split] += n
            bar.update(nbytes)

        work = tasks(files, field, doc_sep, cut)
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
        for h in handles.values():
            h.close()
        bar.close()
        if bad:
            path, line, why = bad[0]
            say(f"skipped {len(bad):,} bad record(s); the first: {path}:{line}: {why}")
        for s in names:
            if records[s] == 0:
                raise PrepareError(f"no {s} records: {records['train']:,} train and {records['val']:,} val documents "
                                   f"with --val_fraction={val_fraction}; a split needs at least one whole record")
        # everything was read: now the old dataset goes and the new one takes its place
        begin(out_dir)
        for k in tmps:
            commit_file(tmps[k], paths[k])
    finally:
        for h in handles.values():
            h.close()
        bar.close()
        for t in tmps.values():
            if os.path.exists(t):
                os.remove(t)
        if made_dir and not os.listdir(out_dir):
            os.rmdir(out_dir)
    extra = {"documents": records, "format_of_records": fmt}
    if fmt == "chat":
        extra["loss_mask"] = "<split>.mask.bin: one uint8 per token, 1 where the loss sees it (assistant turns)"
    meta = finish(out_dir, tok, counts, eot=True, source=source or input, settings=settings, extra=extra)
    report(out_dir, meta)
    return meta
