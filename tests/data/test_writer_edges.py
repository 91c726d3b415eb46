"""core/data/writer.py figures checked by hand: files joined without a separator, and the planned size of a split
with its end-of-text tokens."""

from core.data import tokenizer as tk
from core.data import writer


def test_files_of_a_folder_are_joined_as_they_are_with_doc_sep_none(tmp_path):
    (tmp_path / "a.txt").write_text("first line\nno newline at the end", encoding="utf-8")
    (tmp_path / "b.txt").write_text("second file", encoding="utf-8")
    assert writer.read_documents(str(tmp_path), "none") == ["first line\nno newline at the endsecond file"]
    # with a separator each file ends its documents
    assert writer.read_documents(str(tmp_path), "file") == ["first line\nno newline at the end", "second file"]


def test_planned_bytes_count_one_end_of_text_token_per_document():
    tok = tk.char("abcde", special_tokens=(tk.EOT,))  # 6 ids: uint16, 2 bytes each
    docs = ["abc", "de", "e"]
    assert writer.planned_bytes(tok, docs, eot=False) == (3 + 2 + 1) * 2
    assert writer.planned_bytes(tok, docs, eot=True) == (3 + 2 + 1 + 3) * 2


def test_a_bpe_datasets_own_tokenizer_json_is_not_foreign(tmp_path):
    out = str(tmp_path / "bpe")
    docs = {"train": ["hello world, hello there"] * 4, "val": ["hello world"]}
    settings = {"input": "x.txt", "tokenizer": "bpe", "vocab_size": 264}
    writer.prepare_splits(out, docs, tokenizer="bpe", vocab_size=264, eot=True, settings=settings, progress=False,
                          workers=1)
    assert (tmp_path / "bpe" / "tokenizer.json").exists()
    assert writer.foreign_files(out) == []
    assert writer.check_existing(out, settings, force=False) is True  # the same prepare again: already done


def test_nanogpt_token_files_beside_meta_pkl_are_not_foreign(tmp_path):
    for name in ("train.bin", "val.bin"):
        (tmp_path / name).write_bytes(b"\0\0")
    assert writer.foreign_files(str(tmp_path)) == ["train.bin", "val.bin"]  # nothing accounts for them
    (tmp_path / "meta.pkl").write_bytes(b"")  # nanoGPT's prepare.py wrote them
    assert writer.foreign_files(str(tmp_path)) == []


def test_a_vocab_size_given_to_gpt2_does_not_make_the_same_prepare_differ(tmp_path):
    from core.data import prepare as P
    text = tmp_path / "in.txt"
    text.write_text("To be, or not to be, that is the question. " * 8, encoding="utf-8")
    out = str(tmp_path / "ds")
    meta = P.prepare(str(text), out, tokenizer="gpt2", progress=False, workers=1)
    assert meta["prepare"]["vocab_size"] is None  # gpt2 has its own size
    # the same prepare with a vocab_size gpt2 ignores: already prepared, not a different dataset
    again = P.prepare(str(text), out, tokenizer="gpt2", vocab_size=8000, progress=False, workers=1)
    assert again["splits"] == meta["splits"]
