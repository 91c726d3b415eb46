"""tokenizer.py: the three kinds round-trip, the trained bpe's two encoders agree, merges are learned
most-frequent first, gpt2 needs no network. Offline and quick (a few seconds)."""

import collections
import json
import os
import random
import shutil
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from core.data import tokenizer as tk  # noqa: E402

SHAKESPEARE = os.path.join(ROOT, "data", "shakespeare_char", "input.txt")
UNICODE = ("naïve café — “quotes” 日本語のテキスト 한국어 emoji 👍🏽 e\u0301 ²½٣ tabs\tand\u00a0nbsp\u2028ls\u3000ideo "
           "\u0085nel\r\n\r\n  \n\n\n  x's y'll Z'VE  <|endoftext|> after <|pad|> é")


@pytest.fixture(scope="module")
def shakespeare():
    with open(SHAKESPEARE, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def bpe(shakespeare):
    return tk.train_bpe([shakespeare[:500_000]], 2000, special_tokens=(tk.EOT, tk.PAD))


def roundtrip_json(tok):
    return tk.from_state(json.loads(json.dumps(tok.state())))


def test_gpt2_offline_ids():
    g = tk.gpt2()
    assert g.kind == "gpt2" and g.vocab_size == 50257 and g.eot_token == 50256
    assert g.encode("Hello world") == [15496, 995]
    assert g.encode("a<|endoftext|>b") == [64, 50256, 65]
    assert 50256 not in g.encode_ordinary("a<|endoftext|>b")
    assert g.decode(g.encode(UNICODE)) == UNICODE
    assert g.state() == {"kind": "gpt2"}
    assert roundtrip_json(g).encode(UNICODE) == g.encode(UNICODE)


def test_gpt2_ranks_file_is_checked(tmp_path, monkeypatch):
    bad = tmp_path / "r50k_base.tiktoken"
    shutil.copy(tk.GPT2_RANKS, bad)
    with open(bad, "ab") as f:
        f.write(b"IQ== 50257\n")
    monkeypatch.setattr(tk, "GPT2_RANKS", str(bad))
    tk._gpt2_encoding.cache_clear()
    try:
        with pytest.raises(tk.TokenizerError, match="sha256"):
            tk.gpt2()
    finally:
        tk._gpt2_encoding.cache_clear()


def test_char_roundtrip_and_missing_characters(shakespeare):
    c = tk.char(shakespeare)
    assert c.kind == "char" and c.vocab_size == 65 and c.eot_token is None
    assert c.chars == sorted(set(shakespeare))
    assert c.decode(c.encode(shakespeare[:5000])) == shakespeare[:5000]
    with pytest.raises(tk.TokenizerError) as e:
        c.encode("Zürich ☃ and ☃ again é")
    msg = str(e.value)
    assert "3 character(s)" in msg and all(repr(ch) in msg for ch in "ü☃é") and "\n" not in msg
    u = tk.char(UNICODE, special_tokens=(tk.EOT,))
    assert u.eot_token == len(set(UNICODE)) and u.vocab_size == u.eot_token + 1
    ids = u.encode("x<|endoftext|>é")
    assert ids[1] == u.eot_token and len(ids) == 3
    assert len(u.encode_ordinary("x<|endoftext|>é")) == 15
    assert u.decode(u.encode(UNICODE)) == UNICODE
    with pytest.raises(tk.TokenizerError, match="2 character.*'x' 'y'"):  # all of them, across special tokens
        tk.char("abc", special_tokens=(tk.EOT,)).encode("xa<|endoftext|>yb")
    assert roundtrip_json(u).encode(UNICODE) == u.encode(UNICODE)
    with pytest.raises(tk.TokenizerError, match="outside"):
        c.decode([65])


def test_bpe_two_encoders_agree(bpe, shakespeare):
    assert bpe.kind == "bpe" and bpe.vocab_size == 2000
    assert (bpe.eot_token, bpe.pad_token) == (1998, 1999)
    for text in (shakespeare[400_000:700_000], UNICODE, UNICODE * 3 + shakespeare[-2000:]):
        ids = bpe.encode(text)
        assert ids == bpe.encode(text, via="hf")
        assert bpe.encode_ordinary(text) == bpe.encode_ordinary(text, via="hf")
        assert bpe.decode(ids) == text
    assert bpe.encode("a<|endoftext|>b<|pad|>")[1::2] == [1998, 1999]
    assert 1998 not in bpe.encode_ordinary("a<|endoftext|>b")
    assert bpe.encode_ordinary("a<|endoftext|>b") == bpe.encode_ordinary("a<|endoftext|>b", via="hf")
    # ids 0..255 are the bytes themselves, like gpt-2's ranks but in byte order
    assert bpe.encode_ordinary("\x00A") == [0, 65]


def test_bpe_state_is_self_contained(bpe, tmp_path):
    st = json.loads(json.dumps(bpe.state()))
    assert set(st) == {"kind", "json"} and isinstance(st["json"], str)
    again = tk.from_state(st)
    assert again.vocab_size == bpe.vocab_size and again.encode(UNICODE) == bpe.encode(UNICODE)
    (tmp_path / "tokenizer.json").write_text(st["json"], encoding="utf-8")
    from_file = tk.from_state({"kind": "bpe", "file": "tokenizer.json"}, base_dir=str(tmp_path))
    assert from_file.encode(UNICODE) == bpe.encode(UNICODE)


def test_bpe_random_unicode_agrees():
    rnd = random.Random(0)
    alphabet = list("abcdeéß中文 \n\t'") + ["\u00a0", "\u3000", "\u2028", "👍", "1", "٣", ".", "!?"]
    corpus = ["".join(rnd.choice(alphabet) for _ in range(3000)) for _ in range(20)]
    tok = tk.train_bpe(corpus, 600)
    for text in corpus[:5] + ["".join(rnd.choice(alphabet) for _ in range(5000))]:
        assert tok.encode(text) == tok.encode(text, via="hf")
        assert tok.decode(tok.encode(text)) == text


def test_merges_most_frequent_pair_first():
    # "aaabdaaabac": aa occurs 4 times (overlapping), so it is merged first, giving aa a b d aa a b a c;
    # then (aa, a) and (a, b) tie at 2, and ties go to the pair of lower ids, (a, b); then aa+ab
    tok = tk.train_bpe(["aaabdaaabac"], 256 + 3 + 1)
    merges = json.loads(tok.state()["json"])["model"]["merges"]
    assert [tuple(m) for m in merges] == [("a", "a"), ("a", "b"), ("aa", "ab")]
    assert [tok.decode([i]) for i in range(256, 259)] == ["aa", "ab", "aaab"]
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]


def test_first_merge_is_the_most_frequent_pair(shakespeare):
    import regex  # a dependency of tiktoken; it knows \p{L}
    words = regex.findall(tk.GPT2_PATTERN, shakespeare[:200_000])
    pairs = collections.Counter()
    for w in words:
        b = w.encode("utf-8")
        pairs.update(zip(b, b[1:]))
    (best, n), (_, n2) = pairs.most_common(2)
    assert n > n2
    tok = tk.train_bpe([shakespeare[:200_000]], 300)
    assert tok.decode([256]).encode("utf-8") == bytes(best)


def test_safe_chunks_keep_ids(shakespeare):
    g = tk.gpt2()
    rnd = random.Random(1)
    pieces = ["\n", "\n\n", " ", "  ", "\t", "a", "B", "1", ".", "é", "\u00a0", "\u3000", "'s", " \n", "\n "]
    wiki = "".join(" = Title = \n \n" if rnd.random() < 0.1 else f" word {i} , more text . \n" for i in range(3000))
    for text in (shakespeare[:200_000], wiki, "".join(rnd.choice(pieces) for _ in range(100_000))):
        whole = g.encode_ordinary(text)
        for size in (7, 300, 20_000):
            parts = list(tk.safe_chunks(text, size))
            assert "".join(parts) == text
            assert [i for p in parts for i in g.encode_ordinary(p)] == whole
        assert len(list(tk.safe_chunks(text, 300))) > 10


def test_encode_array_matches_encode(shakespeare, bpe):
    c = tk.char(shakespeare)
    for tok in (c, tk.gpt2(), bpe):
        arr = tok.encode_array(shakespeare[:3000])
        assert isinstance(arr, np.ndarray) and arr.tolist() == tok.encode_ordinary(shakespeare[:3000])


def test_from_state_errors():
    for bad in ({"kind": "wordpiece"}, {}, "gpt2", {"kind": "char", "chars": ["b", "a"]}, {"kind": "bpe"},
                {"kind": "bpe", "json": "{}"}, {"kind": "bpe", "file": "/nonexistent/tokenizer.json"}):
        with pytest.raises(tk.TokenizerError):
            tk.from_state(bad)


def test_bpe_vocab_size_checked():
    with pytest.raises(tk.TokenizerError, match="at least 257"):
        tk.train_bpe(["hello"], 100)


def test_meta_helpers(tmp_path):
    assert not tk.is_complete(tmp_path)
    with pytest.raises(tk.TokenizerError, match="not prepared"):
        tk.read_meta(tmp_path)
    np.arange(10, dtype="<u2").tofile(tmp_path / "train.bin")
    np.arange(4, dtype="<u2").tofile(tmp_path / "val.bin")
    meta = {"vocab_size": 65, "dtype": "uint16", "tokenizer": {"kind": "gpt2"}, "splits": {"train": 10, "val": 4}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert tk.is_complete(tmp_path) and tk.read_meta(tmp_path)["splits"]["val"] == 4
    assert tk.load(tmp_path).kind == "gpt2"
    np.arange(9, dtype="<u2").tofile(tmp_path / "train.bin")  # a short file is not accepted
    assert not tk.is_complete(tmp_path)
    with pytest.raises(tk.TokenizerError, match="promises 10"):
        tk.read_meta(tmp_path)
    (tmp_path / "meta.json").write_text("{")
    assert not tk.is_complete(tmp_path)
    assert tk.token_dtype(65536) == "uint16" and tk.token_dtype(65537) == "uint32"


def test_gpt2_added_tokens_come_back_by_id_whatever_order_the_state_lists_them():
    # a state read back from JSON someone edited (or sorted by key) lists the added tokens out of id order
    state = {"kind": "gpt2", "added_tokens": {"<|user|>": 50258, "<|system|>": 50257, "<|end|>": 50259}}
    tok = tk.from_state(state)
    assert tok.vocab_size == 50260
    assert tok.special_tokens == {tk.EOT: 50256, "<|system|>": 50257, "<|user|>": 50258, "<|end|>": 50259}
    assert tok.encode("<|system|>hi<|user|><|end|>") == [50257, 5303, 50258, 50259]  # 'hi' is GPT-2's 5303
    assert tok.decode([50258]) == "<|user|>"


def test_decode_refuses_the_first_id_past_the_vocabulary():
    for tok in (tk.char("abc", special_tokens=(tk.EOT,)), tk.gpt2()):
        last = tok.vocab_size - 1
        assert tok.decode([last]) == "<|endoftext|>"  # the last id of each is <|endoftext|>
        with pytest.raises(tk.TokenizerError, match=f"token id {tok.vocab_size} is outside"):
            tok.decode([0, tok.vocab_size])
