"""The pieces every prepare shares: reading text into documents, making the tokenizer, writing
token files beside their targets, and a dataset folder's meta.json last (see core/data/prepare.py)."""

import errno
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import time

import numpy as np

from core import fileio
from core.data import tokenizer as tk
from core.fileio import commit as commit_file, remove_stale_temps, temp_path  # noqa: F401
from core.errors import UserError
from core.paths import REPO
from core.units import format_bytes
from core.data.tokenizer import EOT, PAD

PARALLEL_MIN_CHARS = 16 << 20  # below this, starting worker processes (about 1 s) costs more than it saves
TASK_CHARS = 1 << 20          # text per worker task


class PrepareError(UserError):
    """a mistake in preparing a dataset the user can fix; run_main() reports it as one line, exit 2."""


def say(*args):
    print(*args, flush=True)


# -- reading text ---------------------------------------------------------------------------------


def not_a_file(path):
    """the error for an input that exists but is neither a file nor a folder, e.g. /dev/stdin or /dev/null."""
    return PrepareError(f"--input={path} is not a regular file or folder but a pipe, terminal or device; prepare "
                        f"reads a file it can measure and read twice: save the text to a .txt file and pass that")


def files_under(path, suffixes):
    """every file under the folder path whose name ends in one of suffixes, in sorted order; a pipe or a device
    among them (a fifo named notes.txt) is refused, as it is as --input: reading it waited forever."""
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(suffixes))
    for f in files:
        if os.path.exists(f) and not os.path.isfile(f):
            raise not_a_file(f)
    return files


def input_files(path):
    """the file itself, or every .txt file under a folder in sorted order."""
    if os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path)):
        raise not_a_file(path)
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        files = files_under(path, ".txt")
        if not files:
            raise PrepareError(f"no .txt files under {path}")
        return files
    raise PrepareError(f"input {path} does not exist")


def read_text(path):
    """a file's text; a UTF-8 byte order mark is a marker, not text, and is dropped."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise PrepareError(f"{path} is not utf-8 text (byte {e.start}); convert it first, e.g. iconv -t utf-8") from None
    except OSError as e:
        raise PrepareError(f"cannot read {path}: {e.strerror}") from None
    nul = text.find("\0")  # text never holds NUL; a token file (.bin) of small ids is otherwise valid utf-8
    if nul >= 0:
        raise PrepareError(f"{path} holds a NUL byte (character {nul}): it is binary, not text; "
                           "give the text the dataset is made from")
    return text


_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n(?:[ \t\r\f\v]*\n)*")


def split_documents(text, doc_sep):
    """documents of one text: doc_sep 'blank' splits on blank lines, anything else but 'none' and
    'file' is a delimiter string (like <|endoftext|>); 'none' and 'file' keep the text whole.

    blank-line documents lose only their surrounding newlines (the first line may be indented);
    delimited ones lose all surrounding whitespace, which delimiters tend to come padded with."""
    if not doc_sep:
        raise PrepareError("--doc_sep is empty; use none, blank, file or a delimiter string such as '<|endoftext|>'")
    if doc_sep in ("none", "file"):
        return [text]
    if doc_sep == "blank":
        docs = (d.strip("\r\n") for d in _BLANK_LINES.split(text))
        return [d for d in docs if d.strip()]
    docs = (d.strip() for d in text.split(doc_sep))
    return [d for d in docs if d]


def read_documents(path, doc_sep):
    """documents from a file or folder: with doc_sep 'none' the files are joined into a single
    text (a one-element list); otherwise a file boundary always ends a document, and 'file'
    makes each file one document."""
    texts = [read_text(f) for f in input_files(path)]
    if doc_sep == "none":
        return ["".join(texts)]
    docs = [d for t in texts for d in split_documents(t, doc_sep)]
    if doc_sep == "file":
        docs = [d.strip() for d in docs if d.strip()]
    if not docs:
        raise PrepareError(f"no documents found in {path} with --doc_sep={doc_sep}")
    return docs


def split_train_val(docs, val_fraction, by_documents):
    """(train, val) lists of text. by characters, the first 1 - val_fraction of the single text is
    train (nanoGPT's split); by documents, the last documents holding about val_fraction of the
    characters are val, so no document is cut in two."""
    if not 0 < val_fraction < 1:
        raise PrepareError(f"--val_fraction must be between 0 and 1, got {val_fraction}")
    if not by_documents:
        text = "".join(docs)
        n = int(len(text) * (1 - val_fraction))
        if min(n, len(text) - n) < 2:  # a split of one token has no (input, next token) pair to train or score on
            raise PrepareError(f"{len(text)} characters are too few to split with --val_fraction={val_fraction}: "
                               f"train and val need 2 or more each")
        return [text[:n]], [text[n:]]
    if len(docs) < 2:
        raise PrepareError("a train/val split needs at least 2 documents; check --doc_sep")
    k = first_val_document([len(d) for d in docs], val_fraction)
    return docs[:k], docs[k:]


def first_val_document(lengths, val_fraction):
    """the index of the first val document: the last documents holding about val_fraction of the characters
    are val, and at least one document is train. The one rule for every input format, so the same
    documents give the same split whatever file they came in."""
    want, have, k = val_fraction * sum(lengths), 0, len(lengths)
    while k > 1 and have < want:
        k -= 1
        have += lengths[k]
    return k


# -- tokenizers -------------------------------------------------------------------------------------


def make_tokenizer(kind, train_docs, all_docs=None, vocab_size=None, eot=False, pad=False, progress=True,
                   extra_specials=()):
    """char: the characters of all the text (val too, so every val character has an id);
    gpt2: fixed; bpe: trained on the training text only, so val stays unseen. extra_specials (the
    chat tokens) are reserved in a trained bpe; gpt2 and char get them added after their ids."""
    specials = [EOT] + ([PAD] if pad else []) + list(extra_specials)
    if kind == "char":
        return tk.char("".join(all_docs or train_docs), special_tokens=specials if eot or pad or extra_specials else ())
    if kind == "gpt2":
        if pad:
            raise PrepareError("gpt2 has no pad token; use --tokenizer=bpe for --pad")
        return tk.with_specials(tk.gpt2(), extra_specials)
    if kind == "bpe":
        if not vocab_size:
            raise PrepareError("--tokenizer=bpe needs --vocab_size, e.g. --vocab_size=8000")
        t0 = time.time()
        size = f"{sum(map(len, train_docs)):,} characters" if isinstance(train_docs, list) else "the train documents"
        say(f"training a {vocab_size:,}-token byte-level bpe on {size}")
        tok = tk.train_bpe(train_docs, vocab_size, special_tokens=specials, show_progress=progress)
        say(f"trained in {time.time() - t0:.1f} s: {tok.vocab_size:,} tokens")
        return tok
    raise PrepareError(f"unknown --tokenizer={kind}; use char, gpt2 or bpe")


# -- writing token files ------------------------------------------------------------------------


def write_error(path, e):
    """a failed write as one line: a full disk says so, anything else names the file and the reason."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return PrepareError(f"the disk is full while writing {path}; nothing half-written was kept: free some space "
                            f"or prepare into --out_dir on another disk")
    return PrepareError(f"cannot write {path} ({e.strerror or e})")


def check_space(out_dir, planned):
    """stop before writing anything when out_dir's disk has less free space than the planned bytes."""
    try:
        st = os.statvfs(out_dir)
    except (OSError, AttributeError):
        return
    free = st.f_bavail * st.f_frsize
    if planned > free:
        raise PrepareError(f"{out_dir} needs about {format_bytes(planned)} for its token files but the disk has "
                           f"{format_bytes(free)} free; free some space or use --out_dir on another disk")


def planned_bytes(tok, pieces, eot):
    """the size a split's token file will have: exact for char; for a bpe at least about one token per six
    utf-8 bytes (english text runs near four), so the check refuses only what cannot fit."""
    itemsize = np.dtype(tk.token_dtype(tok.vocab_size)).itemsize
    if tok.kind == "char":
        tokens = sum(map(len, pieces))
    else:
        tokens = sum(len(p.encode("utf-8", "surrogatepass")) for p in pieces) // 6
    return (tokens + (len(pieces) if eot else 0)) * itemsize


def write_text_atomic(path, text):
    try:
        fileio.write_text(path, text)
    except OSError as e:
        raise write_error(path, e) from None


class BinWriter:
    """token ids appended to a temp file beside path with plain writes (a memmap's page faults on a full
    disk kill the process with SIGBUS), hashed as they go; commit() renames the file into place. Any
    write error is one PrepareError and the temp file goes."""

    def __init__(self, path, vocab_size):
        self.path, self.tmp = path, temp_path(path)
        self.dtype = np.dtype(tk.token_dtype(vocab_size)).newbyteorder("<")
        self.n, self.sha, self.f = 0, hashlib.sha256(), None
        self.f = self._io(lambda: open(self.tmp, "wb"))

    def _io(self, fn):
        try:
            return fn()
        except OSError as e:
            raise write_error(self.path, e) from None

    def write(self, ids):
        data = np.asarray(ids).astype(self.dtype, copy=False).tobytes()
        self._io(lambda: self.f.write(data))
        self.sha.update(data)
        self.n += len(ids)

    def commit(self):
        self._io(self.f.close)
        self._io(lambda: commit_file(self.tmp, self.path))
        st = os.stat(self.path)
        tk.WRITTEN[os.path.realpath(self.path)] = ((st.st_size, st.st_mtime_ns), self.sha.hexdigest())
        return self.n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.f.closed:
            self.f.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def write_bin(path, ids, vocab_size):
    """write token ids as raw little-endian uint16 (uint32 when vocab_size > 65,536); returns the count."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise PrepareError(f"token ids run from {ids.min()} to {ids.max()}, outside a vocabulary of {vocab_size}")
    with BinWriter(path, vocab_size) as out:
        out.write(ids)
        return out.commit()


def _tasks(pieces, eot, size):
    # ((text, eot after it?), ...) batches of about `size` characters; a long text is cut with
    # safe_chunks so the parts encode to exactly the ids the whole would
    batch, n = [], 0
    for piece in pieces:
        parts = list(tk.safe_chunks(piece, size))
        for i, part in enumerate(parts):
            batch.append((part, eot and i == len(parts) - 1))
            n += len(part)
            if n >= size:
                yield batch
                batch, n = [], 0
    if batch:
        yield batch


def progress_bar(total, desc, enabled):
    # on stdout: stderr is kept for the one line an error gets
    from tqdm import tqdm
    return tqdm(total=total, unit="char", unit_scale=True, desc=desc, disable=not enabled, file=sys.stdout)


_worker_tok = None


def _init_worker(state):
    global _worker_tok
    # Ctrl-C reaches every process of the terminal: the parent handles it and ends the pool
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_tok = tk.from_state(state)


def _encode_batch(batch, tok=None):
    tok = tok or _worker_tok
    arrays, chars = [], 0
    for text, eot in batch:
        arrays.append(tok.encode_array(text, dtype=np.uint32))
        if eot:
            arrays.append(np.array([tok.eot_token], dtype=np.uint32))
        chars += len(text)
    return (np.concatenate(arrays) if arrays else np.zeros(0, np.uint32)), chars


def encode_to_bin(tok, pieces, path, eot=False, workers=None, progress=True, task_chars=TASK_CHARS, parallel_min=PARALLEL_MIN_CHARS):
    """encode texts (documents, each followed by <|endoftext|> when eot) into a token file.

    big inputs go to worker processes in order-preserving tasks; their ids are appended to a temp
    file that is renamed into place when complete. workers=None
    means all cores for inputs of parallel_min characters or more; an explicit workers > 1 always
    uses processes."""
    if eot and tok.eot_token is None:
        raise PrepareError(f"the {tok.kind} tokenizer has no <|endoftext|> token to separate documents with")
    total_chars = sum(map(len, pieces))
    bound = sum(len(p.encode("utf-8", "surrogatepass")) for p in pieces) + (len(pieces) if eot else 0)
    if bound == 0:
        raise PrepareError(f"no text for {os.path.basename(path)}")
    if workers is None:
        workers = (os.cpu_count() or 1) if total_chars >= parallel_min else 1
    tasks = _tasks(pieces, eot, task_chars)
    bar = progress_bar(total_chars, os.path.basename(path), progress)
    try:
        with BinWriter(path, tok.vocab_size) as out:
            if workers > 1 and total_chars > task_chars:
                # spawn, not fork: the parent may hold HF tokenizers' thread pool, which fork would copy
                ctx = multiprocessing.get_context("spawn")
                with ctx.Pool(workers, initializer=_init_worker, initargs=(tok.state(),)) as pool:
                    for ids, chars in pool.imap(_encode_batch, tasks):
                        out.write(ids)
                        bar.update(chars)
            else:
                for batch in tasks:
                    ids, chars = _encode_batch(batch, tok)
                    out.write(ids)
                    bar.update(chars)
            return out.commit()
    finally:
        bar.close()


# -- the folder as a whole ------------------------------------------------------------------------


# what a prepare may write into its out_dir, and so replace there
DATASET_FILES = ("meta.json", "tokenizer.json") + tuple(f"{s}{x}.bin" for s in ("train", "val", "test")
                                                        for x in ("", ".mask"))


def foreign_files(out_dir):
    """The files in out_dir that a prepare would replace but that no prepare wrote: a meta.json that is not a
    dataset's, or token files that no dataset's meta.json (nor nanoGPT's meta.pkl) accounts for."""
    ours = _our_files(out_dir)
    if os.path.isfile(os.path.join(out_dir, "meta.pkl")):  # nanoGPT's dataset: its token files are a dataset's too
        ours |= {"train.bin", "val.bin"}
    return [n for n in DATASET_FILES if n not in ours and os.path.lexists(os.path.join(out_dir, n))]


def check_existing(out_dir, settings, force):
    """True when out_dir already holds a complete preparation with these settings (so skip it);
    a complete one made differently is an error unless --force, and so are files there that no prepare wrote."""
    foreign = [] if force or not os.path.isdir(out_dir) else foreign_files(out_dir)
    if foreign:
        raise PrepareError(f"{out_dir} holds {', '.join(foreign)}, which no readable meta.json of a dataset lists (files "
                           f"of yours, or a damaged dataset) and this prepare would replace; choose another --out_dir, "
                           f"or pass --force to replace them")
    if force or not tk.is_complete(out_dir):
        return False
    meta = tk.read_meta(out_dir)
    made = meta.get("prepare", {})
    # the input first: a setting this prepare does not have (a local file's doc_sep) is not one the user gave
    diff = [k for k in sorted(set(made) | set(settings), key=lambda k: (k != "input", k)) if made.get(k) != settings.get(k)]
    if diff:
        k = diff[0]
        now = f"not {settings[k]!r}" if k in settings else "which this prepare does not use"
        raise PrepareError(f"{out_dir} was prepared with {k}={made.get(k)!r}, {now}; pass --force to replace it")
    counts = ", ".join(f"{n:,} {s}" for s, n in meta["splits"].items())
    say(f"{out_dir} is already prepared ({counts} tokens); pass --force to redo it")
    return True


def _our_files(out_dir):
    """the files a previous prepare wrote into out_dir, as its meta.json accounts for them."""
    try:
        meta = tk.read_meta(out_dir, check=False)
    except tk.TokenizerError:
        return set()
    names = {"meta.json"} | {f"{s}{x}.bin" for s in meta.get("splits", {}) for x in ("", ".mask")}
    if meta.get("tokenizer", {}).get("kind") == "bpe":
        names.add("tokenizer.json")
    return {n for n in names if os.path.isfile(os.path.join(out_dir, n))}


class NewDataset:
    """out_dir's next dataset, built in a staging folder inside out_dir (self.dir) and put in place only
    when complete (fileio.commit_stage, meta.json last). Until then out_dir keeps its previous dataset
    whole and trainable; an error, a Ctrl-C or a kill leaves it as it was. Files of the previous dataset
    that the new one has no use for (a split or a mask it lacks, a bpe's tokenizer.json) go after the commit."""

    def __init__(self, out_dir):
        self.out_dir, self.dir = out_dir, None

    def path(self, name):
        return os.path.join(self.dir, name)

    def __enter__(self):
        self.made = not os.path.isdir(self.out_dir)
        try:
            self.dir = fileio.stage(self.out_dir)
        except OSError as e:
            raise write_error(self.out_dir, e) from None
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._discard()
            return False
        old, new = _our_files(self.out_dir), set(os.listdir(self.dir))
        try:
            fileio.commit_stage(self.dir, last=("meta.json",))
        except OSError as e:
            if os.path.isdir(self.dir):  # else it was committed and only a move failed: the next reader finishes it
                self._discard()
            raise write_error(self.out_dir, e) from None
        for name in old - new:
            try:
                os.remove(os.path.join(self.out_dir, name))
            except OSError:
                pass
        return False

    def _discard(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.made and not os.listdir(self.out_dir):
            try:
                os.rmdir(self.out_dir)
            except OSError:
                pass


def write_splits(out_dir, tok, splits, eot=False, source=None, settings=None, workers=None, progress=True, extra=None):
    """encode each split (name -> list of texts) into out_dir/<name>.bin, then write meta.json, all in
    place of out_dir's previous dataset at once (NewDataset). returns the meta dict."""
    os.makedirs(out_dir, exist_ok=True)
    remove_stale_temps(out_dir)  # a killed prepare's leftovers would count against the space this one needs
    check_space(out_dir, sum(planned_bytes(tok, pieces, eot) for pieces in splits.values()))
    with NewDataset(out_dir) as new:
        counts = {}
        for name, pieces in splits.items():
            counts[name] = encode_to_bin(tok, pieces, new.path(f"{name}.bin"), eot=eot, workers=workers, progress=progress)
        return finish(new.dir, tok, counts, eot=eot, source=source, settings=settings, extra=extra)


def finish(out_dir, tok, counts, eot=False, source=None, settings=None, extra=None):
    """write tokenizer.json (a bpe) and, last of all, meta.json (into a NewDataset's staging folder)."""
    if tok.kind == "bpe":
        write_text_atomic(os.path.join(out_dir, "tokenizer.json"), tok.hf().to_str(pretty=True))
    meta = {
        "vocab_size": tok.vocab_size,
        "dtype": tk.token_dtype(tok.vocab_size),
        "tokenizer": tok.state(),
        "splits": counts,
        "eot_token": tok.eot_token,
        "eot_after_each_document": bool(eot),
        "source": source,
        "prepare": settings or {},
        "fingerprint": tk.fingerprint(out_dir, tok.state(), counts),
        "format": "<split>.bin holds raw little-endian token ids of dtype, one after another",
        **(extra or {}),
    }
    # one line per key: a char vocab stays on one readable line, a bpe's json string on another
    lines = (f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in meta.items())
    write_text_atomic(os.path.join(out_dir, "meta.json"), "{\n" + ",\n".join(lines) + "\n}\n")
    return meta


def report(out_dir, meta):
    counts = ", ".join(f"{n:,} {s}" for s, n in meta["splits"].items())
    say(f"wrote {out_dir}: {counts} tokens, {meta['tokenizer']['kind']} vocab {meta['vocab_size']:,}, {meta['dtype']}")


def input_setting(path):
    # inside the repo the path is kept relative, so a moved checkout still matches its own meta
    real = os.path.realpath(path)
    return os.path.relpath(real, REPO) if real.startswith(os.path.realpath(REPO) + os.sep) else real


def prepare_splits(out_dir, splits, tokenizer="gpt2", vocab_size=None, eot=False, pad=False, settings=None, source=None,
                   workers=None, progress=True, extra=None):
    """make the tokenizer from splits['train'] (char: from all splits), encode every split, write meta."""
    every = [d for docs in splits.values() for d in docs]
    tok = make_tokenizer(tokenizer, splits["train"], every, vocab_size=vocab_size, eot=eot, pad=pad, progress=progress)
    meta = write_splits(out_dir, tok, splits, eot=eot, source=source, settings=settings, workers=workers, progress=progress, extra=extra)
    report(out_dir, meta)
    return meta
