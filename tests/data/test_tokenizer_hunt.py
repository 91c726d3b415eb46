"""core/data/tokenizer.py: ids given to added special tokens, what a bpe learns from a corpus that writes its
special tokens out, and the checks read_meta and a bpe json make; each expectation worked out by hand."""

import json

import numpy as np
import pytest

from core.data import tokenizer as tk
from core.paths import DATA_DIR


def test_special_tokens_added_to_a_char_vocabulary_each_get_their_own_id_after_the_characters():
    tok = tk.char("ab", special_tokens=[tk.EOT])  # a=0, b=1, <|endoftext|>=2
    grown = tk.with_specials(tok, ["<|user|>", "<|end|>"])
    # the new ones follow in order: 3 and 4, five ids in all
    assert grown.special_tokens == {tk.EOT: 2, "<|user|>": 3, "<|end|>": 4} and grown.vocab_size == 5
    assert grown.encode("<|user|>ab<|end|>") == [3, 0, 1, 4]
    assert grown.decode([3, 0, 1, 4]) == "<|user|>ab<|end|>"


def test_a_bpe_never_learns_the_text_of_a_special_token_the_corpus_writes_out():
    # the corpus is mostly <|endoftext|> written out: were it trained on, 'endoftext' would be among the first merges
    text = "the cat sat<|endoftext|>" * 200 + "a dog ran<|endoftext|>" * 200
    tok = tk.train_bpe(text, 300)
    pieces = [tok._enc.decode_single_token_bytes(i) for i in range(tok.vocab_size) if i != tok.eot_token]
    # every learned token is a piece of 'the cat sat' or 'a dog ran'; none reaches into '<|endoftext|>'
    assert not [p for p in pieces if len(p) > 1 and (b"<" in p or b"|" in p or b"endo" in p or b"ext" in p)]
    assert tok.encode("the cat sat<|endoftext|>")[-1] == tok.eot_token


def prepared(folder, train=10, val=4, vocab_size=65, dtype="uint16"):
    np.arange(train, dtype="<u2").tofile(folder / "train.bin")
    np.arange(val, dtype="<u2").tofile(folder / "val.bin")
    meta = {"vocab_size": vocab_size, "dtype": dtype, "tokenizer": {"kind": "gpt2"}, "splits": {"train": train, "val": val}}
    (folder / "meta.json").write_text(json.dumps(meta))


def test_a_token_file_longer_than_meta_json_promises_is_not_read(tmp_path):
    prepared(tmp_path)
    with open(tmp_path / "train.bin", "ab") as f:
        f.write(b"\x00\x00")  # 11 uint16 ids where meta.json says 10: 22 bytes, not 20
    with pytest.raises(tk.TokenizerError, match="holds 22 bytes but meta.json promises 10"):
        tk.read_meta(tmp_path)
    assert not tk.is_complete(tmp_path)


def test_a_dtype_too_small_for_the_vocabulary_is_refused(tmp_path):
    # 70,000 ids do not fit uint16 (65,536 values): such a file would hold ids cut to 16 bits
    prepared(tmp_path, vocab_size=70000, dtype="uint16")
    with pytest.raises(tk.TokenizerError, match="dtype 'uint16' does not fit vocab_size 70000"):
        tk.read_meta(tmp_path)


def test_the_prepare_hint_for_a_folder_outside_data_names_that_folder(tmp_path):
    outside = str(tmp_path / "mine")
    assert tk.prepare_hint(outside) == f"python data/prepare.py --input=YOUR_TEXT --out_dir={outside}"
    inside = DATA_DIR + "/hunt_no_such_dataset"
    assert tk.prepare_hint(inside) == "python data/prepare.py --input=YOUR_TEXT --name=hunt_no_such_dataset"


def test_a_bpe_json_with_a_gap_in_its_ids_is_one_tokenizer_error():
    tok = tk.train_bpe("hello hello world world", 260)
    d = json.loads(tok.state()["json"])
    last = max(d["model"]["vocab"], key=d["model"]["vocab"].get)
    del d["model"]["vocab"][last]  # the newest merge's id is now missing below the special token's
    with pytest.raises(tk.TokenizerError, match="without gaps"):
        tk.from_state({"kind": "bpe", "json": json.dumps(d)})


def test_a_token_file_changed_since_it_was_written_is_hashed_again(tmp_path):
    import hashlib
    import os
    path = tmp_path / "train.bin"
    path.write_bytes(b"\x01\x00\x02\x00")
    real = os.path.realpath(path)
    st = os.stat(real)
    tk.WRITTEN[real] = ((st.st_size, st.st_mtime_ns), "the digest from when it was written")
    try:
        assert tk.file_sha256(str(path)) == "the digest from when it was written"  # unchanged: the remembered one
        path.write_bytes(b"\x01\x00\x02\x00\x03\x00")  # rewritten since (another prepare in this process)
        assert tk.file_sha256(str(path)) == hashlib.sha256(b"\x01\x00\x02\x00\x03\x00").hexdigest()
    finally:
        tk.WRITTEN.pop(real, None)
