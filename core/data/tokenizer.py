"""One interface over three tokenizers: char, GPT-2 BPE (tiktoken) and a BPE trained on your corpus.

    tok = tokenizer.load("data/shakespeare_char")    # whatever data/<name>/meta.json says
    ids = tok.encode("Hello world")                   # <|endoftext|> in the text becomes the special id
    text = tok.decode(ids)
    tok2 = tokenizer.from_state(tok.state())          # state() is plain JSON and self-contained

Kinds:
    char  the sorted set of characters of the corpus (plus special tokens when asked for)
    gpt2  OpenAI's GPT-2 BPE, built offline from assets/r50k_base.tiktoken (50,257 ids)
    bpe   byte-level BPE trained on your text with HF `tokenizers`, encoded by tiktoken; the
          trainer's own fast path gives the same ids (encode(text, via="hf"))

Also here, because train.py and the loader need them without importing data/: read_meta() and
is_complete() for a prepared data folder.
"""

import functools
import hashlib
import json
import os
import re

import numpy as np
import tiktoken
from tiktoken.load import load_tiktoken_bpe

from core import fileio
from core.errors import UserError
from core.paths import ASSETS, DATA_DIR

GPT2_RANKS = os.path.join(ASSETS, "r50k_base.tiktoken")
GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# gpt-2's pre-tokenizer: contractions, letters, digits, punctuation runs, whitespace; the trained
# bpe uses the very same string in both of its encoders
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"
PAD = "<|pad|>"
# turns of a conversation (core/data/chat.py): a role token opens a message, END closes it
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
KINDS = ("char", "gpt2", "bpe")


class TokenizerError(UserError):
    """a tokenizer or data folder problem the user can fix; the message is one line."""


def _byte_chars():
    # gpt-2's byte-level alphabet: each byte gets a printable stand-in character, so byte strings
    # can live in a json vocab; printable latin-1 bytes stand for themselves, the rest move to 256+
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
    table, shifted = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


BYTE_TO_CHAR = _byte_chars()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def _as_bytes(token):
    try:
        return bytes(CHAR_TO_BYTE[c] for c in token)
    except KeyError:
        raise TokenizerError(f"bpe vocab entry {token!r} is not in the byte-level alphabet") from None


def _as_chars(data):
    return "".join(BYTE_TO_CHAR[b] for b in data)


class Tokenizer:
    """kind ('char'|'gpt2'|'bpe'), vocab_size, eot_token (id of <|endoftext|> or None)."""

    def __init__(self, kind, enc=None, chars=None, specials=None, hf_json=None):
        self.kind = kind
        self.special_tokens = dict(specials or {})  # string -> id
        self.eot_token = self.special_tokens.get(EOT)
        self.pad_token = self.special_tokens.get(PAD)
        self._enc = enc            # tiktoken.Encoding for gpt2 and bpe
        self._hf_json = hf_json    # the trained bpe, serialized by `tokenizers`
        self._hf = {}              # lazily built `tokenizers` objects, keyed by ordinary/special
        if kind == "char":
            self.chars = list(chars)
            self._itos = self.chars + [None] * len(self.special_tokens)
            for s, i in self.special_tokens.items():
                self._itos[i] = s
            # chars are sorted by code point, so searchsorted maps text to ids without a python loop
            self._codes = np.array([ord(c) for c in self.chars], dtype=np.int64)
            self._special_re = None
            if self.special_tokens:
                self._special_re = re.compile("(" + "|".join(map(re.escape, sorted(self.special_tokens, key=len, reverse=True))) + ")")
            self.vocab_size = len(self._itos)
        else:
            self.vocab_size = enc.n_vocab

    def __repr__(self):
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, eot_token={self.eot_token})"

    # -- encoding ------------------------------------------------------------------------------

    def encode(self, text, via="tiktoken"):
        """ids for text; special tokens written in the text (like <|endoftext|>) become their ids."""
        if self.kind == "char":
            if self._special_re is None:
                return self._encode_chars(text)
            parts = self._special_re.split(text)  # text, special, text, special, ..., text
            ids = self._encode_chars("".join(parts[0::2]))  # one pass, so an error lists every missing character
            out, at = [], 0
            for i, part in enumerate(parts):
                if i % 2:
                    out.append(self.special_tokens[part])
                else:
                    out.extend(ids[at:at + len(part)])
                    at += len(part)
            return out
        if self._use_hf(via):
            return self._hf_tokenizer(ordinary=False).encode(text).ids
        return self._enc.encode(text, allowed_special="all")

    def encode_ordinary(self, text, via="tiktoken"):
        """ids for text with no special-token parsing: '<|endoftext|>' is just thirteen characters."""
        if self.kind == "char":
            return self._encode_chars(text)
        if self._use_hf(via):
            return self._hf_tokenizer(ordinary=True).encode(text).ids
        return self._enc.encode_ordinary(text)

    def _use_hf(self, via):
        if via not in ("tiktoken", "hf"):
            raise TokenizerError(f"via={via!r}: choose 'tiktoken' or 'hf'")
        return via == "hf"

    def encode_array(self, text, dtype=np.int64):
        """encode_ordinary as a numpy array; for char this never builds a python list."""
        if self.kind == "char":
            return self._char_ids(text).astype(dtype, copy=False)
        return np.array(self._enc.encode_ordinary(text), dtype=dtype)

    def _char_ids(self, text):
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        ids = np.searchsorted(self._codes, codes)
        ids = np.minimum(ids, max(len(self._codes) - 1, 0))
        if len(self._codes) == 0 or not np.array_equal(self._codes[ids], codes):
            missing = sorted(set(text) - set(self.chars))
            shown = " ".join(repr(c) for c in missing)
            raise TokenizerError(f"{len(missing)} character(s) not in the char vocabulary of {len(self.chars)}: {shown}")
        return ids

    def _encode_chars(self, text):
        return self._char_ids(text).tolist()

    def decode(self, ids):
        """text for ids; bytes that do not form valid utf-8 (a cut-off bpe sequence) become U+FFFD."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenizerError(f"token id {bad[0]} is outside this {self.kind} vocabulary of {self.vocab_size}")
        if self.kind == "char":
            return "".join(self._itos[i] for i in ids)
        return self._enc.decode(ids)

    def token_bytes(self, size=None):
        """UTF-8 bytes each id decodes to, as an int64 array of length max(size, vocab_size): the
        denominator of bits per byte. Special tokens (and ids past the vocabulary) count 0 bytes."""
        n = max(size or 0, self.vocab_size)
        out = np.zeros(n, dtype=np.int64)
        specials = set(self.special_tokens.values())
        if self.kind == "char":
            for i, c in enumerate(self.chars):
                out[i] = len(c.encode("utf-8", "surrogatepass"))
        else:
            for i in range(self.vocab_size):
                if i not in specials:
                    out[i] = len(self._enc.decode_single_token_bytes(i))
        return out

    # -- the trained bpe's second encoder --------------------------------------------------------

    def _hf_tokenizer(self, ordinary):
        if self.kind != "bpe":
            raise TokenizerError(f"via='hf' needs a trained bpe tokenizer, this one is {self.kind}")
        if ordinary not in self._hf:
            from tokenizers import Tokenizer as HFTokenizer
            d = json.loads(self._hf_json)
            if ordinary:
                d["added_tokens"] = []  # without them nothing in the text is special
            self._hf[ordinary] = HFTokenizer.from_str(json.dumps(d))
        return self._hf[ordinary]

    def hf(self):
        """the trained bpe as a `tokenizers.Tokenizer` (e.g. to save as tokenizer.json for HF)."""
        return self._hf_tokenizer(ordinary=False)

    # -- serialization ---------------------------------------------------------------------------

    def state(self):
        """plain JSON that rebuilds this tokenizer with from_state(), needing no other file."""
        if self.kind == "gpt2":
            added = {s: i for s, i in self.special_tokens.items() if s != EOT}
            return {"kind": "gpt2", "added_tokens": added} if added else {"kind": "gpt2"}
        if self.kind == "char":
            return {"kind": "char", "chars": list(self.chars), "special_tokens": dict(self.special_tokens)}
        return {"kind": "bpe", "json": self._hf_json}


# -- constructors -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _gpt2_encoding(added=()):
    if not os.path.exists(GPT2_RANKS):
        raise TokenizerError(f"missing {GPT2_RANKS}; it is committed with the repo, restore it with git checkout")
    try:
        ranks = load_tiktoken_bpe(GPT2_RANKS, GPT2_SHA256)
    except ValueError:
        raise TokenizerError(f"{GPT2_RANKS} does not match its sha256; restore it with git checkout") from None
    specials = {EOT: 50256, **{t: 50257 + i for i, t in enumerate(added)}}
    return tiktoken.Encoding("gpt2" if not added else f"gpt2+{len(added)}", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens=specials, explicit_n_vocab=50257 + len(added))


def gpt2(added_tokens=()):
    """GPT-2's tokenizer with no network: <|endoftext|> is 50256, 50,257 ids in all. added_tokens
    (e.g. CHAT_TOKENS) get the ids after it, 50257 on, as special tokens; a model using them needs
    its embedding grown to match."""
    added = tuple(t for t in dict.fromkeys(added_tokens) if t != EOT)
    return Tokenizer("gpt2", enc=_gpt2_encoding(added), specials={EOT: 50256, **{t: 50257 + i for i, t in enumerate(added)}})


def with_specials(tok, tokens):
    """tok with the special tokens it lacks added after its last id: gpt2 and char can grow; a
    trained bpe cannot (its specials are fixed when it is trained, so reserve them then)."""
    missing = [t for t in dict.fromkeys(tokens) if t not in tok.special_tokens]
    if not missing:
        return tok
    if tok.kind == "gpt2":
        return gpt2([s for s in tok.special_tokens if s != EOT] + missing)
    if tok.kind == "char":
        specials = dict(tok.special_tokens)
        for t in missing:
            specials[t] = len(tok.chars) + len(specials)
        return Tokenizer("char", chars=tok.chars, specials=specials)
    raise TokenizerError(f"this trained bpe has no {', '.join(missing)} token(s); prepare the data again so the bpe "
                         f"is trained with them (--format=chat reserves the chat tokens)")


def char(text, special_tokens=()):
    """a char tokenizer whose vocab is the sorted set of characters of text; specials go after."""
    chars = sorted(set(text))
    specials = {s: len(chars) + i for i, s in enumerate(dict.fromkeys(special_tokens))}
    return Tokenizer("char", chars=chars, specials=specials)


def from_state(d, base_dir=None):
    """the inverse of Tokenizer.state(); a bpe may also be {'kind':'bpe','file':...} under base_dir."""
    try:
        return _from_state(d, base_dir)
    except (TypeError, AttributeError, ValueError) as e:
        # a state is read from a meta.json or checkpoint a person may have edited: a field of another type (a list
        # of special tokens, a number for the json, a regex tiktoken cannot compile) is a damaged state, not a bug;
        # the caller says whose state it is
        kind = d.get("kind") if isinstance(d, dict) else None
        raise TokenizerError(f"the {kind} tokenizer state is damaged ({type(e).__name__}: {e})") from None


def _from_state(d, base_dir):
    if not isinstance(d, dict) or d.get("kind") not in KINDS:
        kind = d.get("kind") if isinstance(d, dict) else type(d).__name__
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(KINDS)}")
    kind = d["kind"]
    if kind == "gpt2":
        added = d.get("added_tokens") or {}
        if not isinstance(added, dict) or sorted(added.values()) != list(range(50257, 50257 + len(added))):
            raise TokenizerError("gpt2 tokenizer state: 'added_tokens' ids must run from 50257 without gaps")
        return gpt2(sorted(added, key=added.get))
    if kind == "char":
        chars = d.get("chars")
        if not isinstance(chars, list) or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise TokenizerError("char tokenizer state needs 'chars', a list of single characters")
        if chars != sorted(set(chars)):
            raise TokenizerError("char tokenizer state has unsorted or repeated 'chars'")
        specials = d.get("special_tokens") or {}
        if sorted(specials.values()) != list(range(len(chars), len(chars) + len(specials))):
            raise TokenizerError("char tokenizer special token ids must follow the characters")
        return Tokenizer("char", chars=chars, specials=specials)
    if "json" in d:
        return _bpe_from_json(d["json"])
    if "file" in d:
        path = d["file"] if base_dir is None else os.path.join(base_dir, d["file"])
        try:
            with open(path, encoding="utf-8") as f:
                return _bpe_from_json(f.read())
        except OSError as e:
            raise TokenizerError(f"cannot read bpe tokenizer file {path}: {e.strerror}") from None
    raise TokenizerError("bpe tokenizer state needs 'json' (the serialized tokenizer) or 'file'")


def _bpe_from_json(hf_json):
    # everything tiktoken needs is read out of the trainer's json, so there is one source of truth
    try:
        d = fileio.read_json(hf_json)
        model = d["model"]
        vocab = model["vocab"]
        pattern = _split_pattern(d["pre_tokenizer"])
        specials = {t["content"]: t["id"] for t in d.get("added_tokens", [])}
    except (ValueError, KeyError, TypeError):
        raise TokenizerError("bpe tokenizer json is not one written by tokenizer.train_bpe") from None
    if model.get("type") != "BPE" or pattern is None:
        raise TokenizerError("bpe tokenizer json is not one written by tokenizer.train_bpe")
    ranks = {_as_bytes(tok): i for tok, i in vocab.items()}
    n = len(ranks) + len(specials)
    if sorted(list(ranks.values()) + list(specials.values())) != list(range(n)):
        raise TokenizerError("bpe tokenizer ids are not 0..vocab_size-1 without gaps")
    enc = tiktoken.Encoding(f"bpe{n}", pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials, explicit_n_vocab=n)
    return Tokenizer("bpe", enc=enc, specials=specials, hf_json=hf_json)


def _split_pattern(pre):
    for p in pre.get("pretokenizers", [pre]):
        if p.get("type") == "Split":
            return p["pattern"].get("Regex")
    return None


def load(data_dir):
    """the tokenizer a prepared data folder was made with (from its meta.json)."""
    return from_state(read_meta(data_dir, check=False)["tokenizer"], base_dir=data_dir)


# -- training a bpe ---------------------------------------------------------------------------------


# a cut right after a newline that is followed by a space and a visible ascii character (every
# wikitext line), or by a visible ascii character with another one just before the newline
_SAFE_CUT = re.compile(r"\n(?= [!-~])|(?<=[!-~])\n(?=[!-~])")


def safe_chunks(text, size=1 << 20):
    r"""cut text into pieces of about size chars that encode to the same ids as the whole.

    why such a cut is safe: the gpt-2 pattern has no look-behind, so it is enough that some piece
    ends exactly at the cut in both the whole text and the first part. the whitespace run before
    the cut ends with '\n'; followed by ' x' the whole text ends a piece there (`\s+(?!\S)` backs
    off the space), and so does the part, where the run is last. followed by 'x' directly the
    whole text keeps the final '\n' apart from the run before it (the part would not), hence the
    visible character before it. ascii keeps python's and tiktoken's whitespace apart."""
    start, n = 0, len(text)
    while n - start > size:
        m = _SAFE_CUT.search(text, start + size)
        if m is None:
            break
        yield text[start:m.end()]
        start = m.end()
    if start < n:
        yield text[start:]


def _training_texts(sources, specials):
    # special tokens written in the corpus must not be learned as merges, so training never sees them
    split = re.compile("|".join(map(re.escape, specials)))
    for src in sources:
        if isinstance(src, os.PathLike) or (isinstance(src, str) and "\n" not in src and len(src) < 4096 and os.path.isfile(src)):
            with open(src, encoding="utf-8") as f:
                src = f.read()
        for part in split.split(src):
            for chunk in safe_chunks(part, 1 << 16):  # small pieces keep all of the trainer's threads busy
                yield from _short_words(chunk)


# the trainer's time grows with the square of a word's length when the word repeats itself; a run this long
# without a space is no word, and training sees it in pieces
MAX_TRAINING_WORD = 256
_LONG_RUN = re.compile(r"\S{%d,}|\s{%d,}" % (MAX_TRAINING_WORD, MAX_TRAINING_WORD))


def _short_words(text):
    """text for the bpe trainer, runs of MAX_TRAINING_WORD characters or more cut into pieces of that length, each a
    text of its own; text without such a run is yielded whole, as it was."""
    start = 0
    for m in _LONG_RUN.finditer(text):
        if m.start() > start:
            yield text[start:m.start()]
        run = m.group()
        yield from (run[i:i + MAX_TRAINING_WORD] for i in range(0, len(run), MAX_TRAINING_WORD))
        start = m.end()
    if start < len(text):
        yield text[start:]


MAX_BPE_VOCAB = 1 << 24  # 16.8 M ids: far beyond any model, small enough for the trainer's table


def train_bpe(texts_or_files, vocab_size, special_tokens=(EOT,), show_progress=False, min_frequency=0):
    """train a byte-level BPE with `vocab_size` ids in all (256 bytes, merges, then special tokens).

    texts_or_files: a str, or a list of texts and/or file paths (a str naming an existing file is
    read as one). <|endoftext|> is always a special token; pass (EOT, PAD) for a pad token too.

    The ids are laid out like GPT-2's: id b for byte b, then merges in the order they were
    learned (so an id is also its tiktoken rank), special tokens last."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    specials = list(dict.fromkeys([EOT, *special_tokens]))
    if not isinstance(vocab_size, int) or vocab_size < 256 + len(specials):
        raise TokenizerError(f"bpe vocab_size must be an integer of at least {256 + len(specials)} (256 bytes + special tokens), got {vocab_size!r}")
    if vocab_size > MAX_BPE_VOCAB:  # the trainer sizes a table by it, and a failed allocation there aborts the process
        raise TokenizerError(f"bpe vocab_size must be at most {MAX_BPE_VOCAB:,}, got {vocab_size:,}; "
                             "the largest vocabularies in use are a few hundred thousand ids")
    if isinstance(texts_or_files, (str, os.PathLike)):
        texts_or_files = [texts_or_files]

    def pre_tokenizer():
        # the split is an explicit Split with the same pattern string tiktoken gets, rather than
        # ByteLevel(use_regex=True) whose built-in regex is merely believed to be the same
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(specials), min_frequency=min_frequency,
                                  show_progress=show_progress, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(_training_texts(texts_or_files, specials), trainer)
    merges = json.loads(hf.to_str())["model"]["merges"]

    tokens, pairs = _rank_consistent(merges)
    vocab = {_as_chars(t): i for i, t in enumerate(tokens)}
    out = HFTokenizer(models.BPE(vocab=vocab, merges=[(_as_chars(a), _as_chars(b)) for a, b in pairs], ignore_merges=True))
    out.pre_tokenizer = pre_tokenizer()
    out.decoder = decoders.ByteLevel()
    out.add_special_tokens(specials)
    return _bpe_from_json(out.to_str())


def _rank_consistent(merges):
    """tokens in rank order and the merge pair of each, such that tiktoken and HF agree.

    tiktoken and HF run BPE differently. HF applies the listed merge (a, b) of lowest priority;
    tiktoken merges any neighbours whose concatenation is a token, lowest rank first, and looks a
    whole pre-token up in the vocab before merging at all. They give the same ids when
      1. rank order is merge order: a token's rank is the index of the merge that first made it;
      2. each token's merge pair is the split tiktoken itself reaches using only lower ranks (then
         every pair tiktoken can merge in any text is that listed pair, so both choose the same
         pair at every step, leftmost first on ties);
      3. HF also looks whole pre-tokens up first (ignore_merges=True in the model).
    The trainer's merges already satisfy 2 on the corpora we tried; any that does not (a repeated
    merge producing an existing token, or a token no lower-ranked split reaches) is replaced by
    the split tiktoken reaches, or dropped when there is none, so the two encoders cannot differ."""
    rank = {bytes([b]): b for b in range(256)}
    tokens = [bytes([b]) for b in range(256)]
    pairs = []
    for a, b in merges:
        token = _as_bytes(a) + _as_bytes(b)
        if token in rank:
            continue
        parts = _bpe_split(token, rank)
        if len(parts) != 2:
            continue
        rank[token] = len(tokens)
        tokens.append(token)
        pairs.append(tuple(parts))
    return tokens, pairs


def _bpe_split(token, rank):
    # tiktoken's merge loop in python: merge the lowest-ranked neighbouring pair until none is left
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, at = None, -1
        for i in range(len(parts) - 1):
            r = rank.get(parts[i] + parts[i + 1])
            if r is not None and (best is None or r < best):
                best, at = r, i
        if best is None:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


# -- prepared data folders ----------------------------------------------------------------------------


def token_dtype(vocab_size):
    """uint16 holds ids up to 65,535; a bigger vocabulary needs uint32."""
    return "uint16" if vocab_size <= 65536 else "uint32"


def prepare_hint(data_dir):
    """The command that prepares data_dir: its own prepare.py, else data/prepare.py pointed at it."""
    data_dir = os.path.normpath(data_dir)
    script = os.path.join(data_dir, "prepare.py")
    if os.path.exists(script):
        return f"python {os.path.relpath(script)}"
    if os.path.dirname(data_dir) == DATA_DIR:
        return f"python data/prepare.py --input=YOUR_TEXT --name={os.path.basename(data_dir)}"
    return f"python data/prepare.py --input=YOUR_TEXT --out_dir={data_dir}"


def finish_interrupted_prepare(data_dir):
    """a prepare killed while it moved its complete new dataset into place left the rest in a committed
    staging folder: move it in (meta.json last) before reading, so the folder is the new dataset whole."""
    try:
        fileio.finish_commit(data_dir, last=("meta.json",))
    except OSError:
        pass  # a folder we may not write: read what is there, and a mismatch is reported as one


def read_meta(data_dir, check=True):
    """data_dir/meta.json as a dict; with check, also that every split's .bin has its full size."""
    path = os.path.join(data_dir, "meta.json")
    finish_interrupted_prepare(data_dir)
    if not os.path.exists(path):
        raise TokenizerError(f"{data_dir} is not prepared (no meta.json); run: {prepare_hint(data_dir)}")
    try:
        with open(path, encoding="utf-8") as f:
            meta = fileio.read_json(f)
        vocab_size, dtype, splits = int(meta["vocab_size"]), meta["dtype"], meta["splits"]
        meta["tokenizer"]["kind"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TokenizerError(f"{path} is unreadable or incomplete ({type(e).__name__}: {e}); prepare the data again with --force") from None
    if dtype not in ("uint16", "uint32") or dtype != token_dtype(vocab_size):
        raise TokenizerError(f"{path}: dtype {dtype!r} does not fit vocab_size {vocab_size}")
    if check:
        itemsize = np.dtype(dtype).itemsize
        for split, n in splits.items():
            bin_path = os.path.join(data_dir, f"{split}.bin")
            if os.path.isdir(bin_path):
                raise TokenizerError(f"{bin_path} is a folder, not a token file; move it away and prepare again with --force")
            size = os.path.getsize(bin_path) if os.path.exists(bin_path) else None
            if size != int(n) * itemsize:
                raise TokenizerError(f"{bin_path} holds {size} bytes but meta.json promises {n} {dtype} tokens; prepare again with --force")
    return meta


def keeps_ids(base, tok):
    """True when tok gives every id of base the same meaning (the same bytes, or the same special token);
    tok may add ids after base's, as chat tokens do. States can differ in form (a tokenizer.json written
    pretty) and still agree."""
    if tok.vocab_size < base.vocab_size or any(tok.special_tokens.get(s) != i for s, i in base.special_tokens.items()):
        return False
    if base.kind == "char" or tok.kind == "char":
        return base.kind == tok.kind and base.chars == tok.chars
    specials = set(base.special_tokens.values())
    return all(base._enc.decode_single_token_bytes(i) == tok._enc.decode_single_token_bytes(i)
               for i in range(base.vocab_size) if i not in specials)


# sha256 of .bin files as they were written, by real path: ((size, mtime), hex digest), so fingerprint() need
# not read them again unless they changed since
WRITTEN = {}


def file_sha256(path):
    real = os.path.realpath(path)
    st = os.stat(real)
    if WRITTEN.get(real, (None,))[0] == (st.st_size, st.st_mtime_ns):
        return WRITTEN[real][1]
    h = hashlib.sha256()
    with open(real, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(data_dir, state, counts, checksums=True):
    """a prepared dataset's identity: its tokenizer (kind, size and the sha256 of its state) and, per split,
    the token count and the sha256 of the .bin file. Equal fingerprints mean the same ids for the same text
    and the same token files; checksums=False leaves the file hashes out (cheap, for large old datasets)."""
    try:
        tok = from_state(state, base_dir=data_dir)
        kind, size = tok.kind, tok.vocab_size
    except TokenizerError:  # a folder made elsewhere may carry no usable tokenizer; its state still identifies it
        kind, size = state.get("kind") if isinstance(state, dict) else None, None
    text = json.dumps(state, sort_keys=True, ensure_ascii=False)
    out = {"tokenizer": {"kind": kind, "vocab_size": size,
                         "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()},
           "splits": {}}
    for name, n in counts.items():
        split = {"tokens": int(n)}
        if checksums:
            split["sha256"] = file_sha256(os.path.join(data_dir, f"{name}.bin"))
        out["splits"][name] = split
    return out


def is_complete(data_dir):
    """True when data_dir holds meta.json and every .bin it lists, each at its promised size."""
    try:
        meta = read_meta(data_dir, check=True)
    except TokenizerError:
        return False
    return "train" in meta["splits"] and "val" in meta["splits"]
