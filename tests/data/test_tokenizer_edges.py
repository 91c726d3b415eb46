"""core/data/tokenizer.py at its edges: the smallest bpe there is, and a fingerprint that does not depend on the
order a state's keys were written in."""

import hashlib
import json

from core.data import tokenizer as tk


def test_the_smallest_bpe_is_the_bytes_and_the_special_tokens():
    tok = tk.train_bpe(["hello hello world"], 256 + 1)  # 256 bytes and <|endoftext|>: no room for a merge
    assert tok.vocab_size == 257 and tok.eot_token == 256
    assert tok.encode("hi") == [ord("h"), ord("i")]
    tok2 = tk.train_bpe(["hello hello world"], 256 + 2, special_tokens=(tk.EOT, tk.PAD))
    assert tok2.vocab_size == 258 and tok2.pad_token == 257


def test_fingerprint_is_the_same_for_a_state_written_in_another_key_order(tmp_path):
    a = {"kind": "char", "chars": ["a", "b"], "special_tokens": {}}
    b = {"special_tokens": {}, "chars": ["a", "b"], "kind": "char"}
    fa = tk.fingerprint(str(tmp_path), a, {"train": 3}, checksums=False)
    fb = tk.fingerprint(str(tmp_path), b, {"train": 3}, checksums=False)
    assert fa == fb
    want = hashlib.sha256('{"chars": ["a", "b"], "kind": "char", "special_tokens": {}}'.encode()).hexdigest()
    assert fa["tokenizer"]["sha256"] == want
    assert fa["tokenizer"]["vocab_size"] == 2 and fa["splits"] == {"train": {"tokens": 3}}


def test_byte_level_alphabet_is_gpt2s():
    # GPT-2's bytes_to_unicode: printable latin-1 bytes stand for themselves, the other 68 move to U+0100 on
    assert tk.BYTE_TO_CHAR[ord("A")] == "A" and tk.BYTE_TO_CHAR[255] == "\u00ff"
    assert tk.BYTE_TO_CHAR[0] == "\u0100" and tk.BYTE_TO_CHAR[32] == "\u0120"  # the famous 'Ġ' for a space
    assert tk.BYTE_TO_CHAR[173] == "\u0143"  # the soft hyphen, the last byte moved
    from tokenizers import pre_tokenizers
    assert set(tk.BYTE_TO_CHAR.values()) == set(pre_tokenizers.ByteLevel.alphabet())  # the same 256 characters


def test_a_folder_with_only_a_train_split_is_not_complete(tmp_path):
    import numpy as np
    tok = tk.char("abc")
    np.zeros(5, dtype=np.uint16).tofile(tmp_path / "train.bin")
    meta = {"vocab_size": tok.vocab_size, "dtype": "uint16", "tokenizer": tok.state(), "splits": {"train": 5}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert not tk.is_complete(str(tmp_path))
    np.zeros(2, dtype=np.uint16).tofile(tmp_path / "val.bin")
    meta["splits"]["val"] = 2
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert tk.is_complete(str(tmp_path))
