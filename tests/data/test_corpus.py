"""Record corpora (core/data/corpus.py): jsonl and parquet give the tokens the same text gives as .txt,
bad records stop with file and line (or are skipped and counted), a failed prepare leaves the old
dataset alone, and chat conversations get a loss mask on the assistant's tokens only."""

import json
import os

import numpy as np
import pytest

from core.data import chat
from core.data import prepare as P
from core.data import tokenizer as tk

DOCS = [f"Story {i}: the cat sat on mat number {i}.\nIt was {'very ' * (i % 5)}happy, naïve café {i * 7}." for i in range(60)]


def tokens(out_dir, name):
    meta = tk.read_meta(out_dir)
    return np.fromfile(os.path.join(out_dir, f"{name}.bin"), dtype=np.dtype(meta["dtype"]).newbyteorder("<"))


def both(out_dir):
    return np.concatenate([tokens(out_dir, "train"), tokens(out_dir, "val")])


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")


def cli(capsys, *args):
    try:
        P.main(list(args) + ["--progress=False"])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("tokenizer", ["gpt2", "char"])
def test_jsonl_parquet_txt_same_tokens(tmp_path, tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq
    (tmp_path / "d.txt").write_text("<|endoftext|>".join(DOCS), encoding="utf-8")
    write_jsonl(tmp_path / "d.jsonl", [{"id": i, "text": d} for i, d in enumerate(DOCS)])
    pq.write_table(pa.table({"body": DOCS, "n": list(range(len(DOCS)))}), tmp_path / "d.parquet", row_group_size=7)
    kw = dict(tokenizer=tokenizer, progress=False)
    P.prepare(str(tmp_path / "d.txt"), str(tmp_path / "t"), doc_sep="<|endoftext|>", **kw)
    P.prepare(str(tmp_path / "d.jsonl"), str(tmp_path / "j"), **kw)
    P.prepare(str(tmp_path / "d.parquet"), str(tmp_path / "p"), text_field="body", **kw)
    ref = both(tmp_path / "t")
    tok = tk.load(str(tmp_path / "t"))
    assert tok.decode(ref).split("<|endoftext|>")[:-1] == DOCS
    for name in "jp":
        out = tmp_path / name
        assert np.array_equal(both(out), ref)
        val = tokens(out, "val")
        assert 0 < len(val) < len(ref) // 4 and tokens(out, "train")[-1] == tok.eot_token  # cut at a record
        assert tk.read_meta(str(out))["documents"]["train"] + tk.read_meta(str(out))["documents"]["val"] == len(DOCS)


def test_folder_and_parallel_workers(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": d} for d in DOCS[:30]])
    write_jsonl(tmp_path / "b.jsonl", [{"text": d} for d in DOCS[30:]])
    write_jsonl(tmp_path / "all.jsonl", [{"text": d} for d in DOCS])
    os.makedirs(tmp_path / "dir")
    for n in "ab":
        os.rename(tmp_path / f"{n}.jsonl", tmp_path / "dir" / f"{n}.jsonl")
    P.prepare(str(tmp_path / "all.jsonl"), str(tmp_path / "one"), progress=False)
    P.prepare(str(tmp_path / "dir"), str(tmp_path / "two"), progress=False, workers=2)
    assert np.array_equal(both(tmp_path / "one"), both(tmp_path / "two"))


def test_bad_lines_stop_or_skip_and_old_dataset_kept(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    write_jsonl(good, [{"text": d} for d in DOCS])
    out = str(tmp_path / "out")
    P.prepare(str(good), out, progress=False)
    before = {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out))}
    bad = tmp_path / "bad.jsonl"
    rows = [{"text": d} for d in DOCS]
    rows[3], rows[50] = '{"text": "cut off', {"body": "no text field"}
    write_jsonl(bad, rows)
    code, err = cli(capsys, f"--input={bad}", f"--out_dir={out}", "--force")
    assert code == 2 and err.count("\n") == 1 and f"{bad}:4: not JSON" in err and "--on_bad_line=skip" in err, err
    assert {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out))} == before
    rows[3] = {"text": 7}
    write_jsonl(bad, rows)
    code, err = cli(capsys, f"--input={bad}", f"--out_dir={out}", "--force", "--on_bad_line=skip")
    assert code == 0, err
    kept = [d for i, d in enumerate(DOCS) if i not in (3, 50)]
    assert tk.gpt2().decode(both(out)).split("<|endoftext|>")[:-1] == kept
    code, err = cli(capsys, f"--input={bad}", f"--out_dir={tmp_path / 'x'}", "--text_field=body")
    assert code == 2 and ":1: no 'body' field" in err and not os.path.exists(tmp_path / "x")


def test_a_jsonl_file_not_in_utf8_is_named_as_such(tmp_path, capsys):
    # json.loads guessed UTF-16 from the byte order mark PowerShell's `>` writes, and said "'utf-16-le' codec can't
    # decode byte 0x0a" for a file whose lines are cut at its UTF-16 newlines
    lines = "".join(f'{{"text": "{d}"}}\n' for d in ("first", "second"))
    for name, data, fragment in (("utf16.jsonl", lines.encode("utf-16"), ":1: UTF-16 text"),
                                 ("latin1.jsonl", lines.replace("second", "s\u00e9cond").encode("latin-1"),
                                  ":2: not UTF-8 text (byte 11)")):
        (tmp_path / name).write_bytes(data)
        code, err = cli(capsys, f"--input={tmp_path / name}", f"--out_dir={tmp_path / name}.out")
        assert code == 2 and err.count("\n") == 1 and fragment in err and "not JSON" not in err, err
    # UTF-8 with its byte order mark (Notepad's 'UTF-8 with BOM') reads as the same text without it
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + lines.encode())
    (tmp_path / "plain.jsonl").write_bytes(lines.encode())
    for name in ("bom", "plain"):
        P.prepare(str(tmp_path / f"{name}.jsonl"), str(tmp_path / f"{name}.out"), progress=False)
    assert np.array_equal(both(tmp_path / "bom.out"), both(tmp_path / "plain.out"))


def test_parquet_without_the_column(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"content": DOCS}), tmp_path / "d.parquet")
    code, err = cli(capsys, f"--input={tmp_path / 'd.parquet'}", f"--out_dir={tmp_path / 'o'}")
    assert code == 2 and err.count("\n") == 1 and "no column 'text' (its columns: content)" in err
    assert not os.path.exists(tmp_path / "o")


def test_chat_mask_and_bad_conversations(tmp_path, capsys):
    convs = [[{"role": "user", "content": f"Hail, friend {i}!"}, {"role": "assistant", "content": f"Good morrow {i}."},
              {"role": "user", "content": "Farewell."}, {"role": "assistant", "content": "Adieu."}] for i in range(20)]
    path = tmp_path / "c.jsonl"
    write_jsonl(path, [{"messages": m} for m in convs])
    out = str(tmp_path / "c")
    P.prepare(str(path), out, format="chat", progress=False)
    tok = tk.load(out)
    assert chat.has_chat(tok) and tok.vocab_size == 50261
    ids = both(out)
    mask = np.concatenate([np.fromfile(os.path.join(out, f"{s}.mask.bin"), np.uint8) for s in ("train", "val")])
    ref = [chat.encode(m, tok) for m in convs]
    assert ids.tolist() == [i for r in ref for i in r[0]] and mask.tolist() == [m for r in ref for m in r[1]]
    assert tok.decode(ids[mask == 1]) == "".join(f"Good morrow {i}.<|end|>Adieu.<|end|>" for i in range(20))
    for rows, want in (([{"messages": [{"role": "user", "content": "hi"}]}], "no assistant turn"),
                       ([{"messages": [{"role": "bot", "content": "hi"}]}], "role 'bot'")):
        write_jsonl(path, [{"messages": m} for m in convs[:3]] + rows)
        code, err = cli(capsys, f"--input={path}", f"--out_dir={tmp_path / 'bad'}", "--format=chat")
        assert code == 2 and err.count("\n") == 1 and f"{path}:4: " in err and want in err, err
        assert not os.path.exists(tmp_path / "bad")


@pytest.mark.parametrize("tokenizer", ["gpt2", "char", "bpe"])
def test_the_same_documents_in_any_format_give_the_same_dataset(tmp_path, tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq
    # documents of very different lengths, so a split by source bytes and one by documents disagree
    docs = [d * (1 + 7 * (i % 3 == 0)) for i, d in enumerate(DOCS)]
    bom = "\ufeff"
    (tmp_path / "d.txt").write_text(bom + "\n\n".join(docs), encoding="utf-8")
    write_jsonl(tmp_path / "d.jsonl", [{"text": d, "pad": "x" * (900 if i > 50 else 0)} for i, d in enumerate(docs)])
    (tmp_path / "d.jsonl").write_bytes(bom.encode() + (tmp_path / "d.jsonl").read_bytes())
    pq.write_table(pa.table({"text": [bom + docs[0]] + docs[1:]}), tmp_path / "d.parquet")
    kw = dict(tokenizer=tokenizer, vocab_size=400 if tokenizer == "bpe" else None, progress=False, doc_sep="blank")
    for ext in ("txt", "jsonl", "parquet"):
        P.prepare(str(tmp_path / f"d.{ext}"), str(tmp_path / ext), **kw)
    metas = {ext: tk.read_meta(str(tmp_path / ext)) for ext in ("txt", "jsonl", "parquet")}
    for ext in ("jsonl", "parquet"):
        for f in ("train.bin", "val.bin"):
            assert (tmp_path / ext / f).read_bytes() == (tmp_path / "txt" / f).read_bytes(), (ext, f)
        assert metas[ext]["splits"] == metas["txt"]["splits"]
        assert metas[ext]["fingerprint"] == metas["txt"]["fingerprint"]
    tok = tk.load(str(tmp_path / "txt"))
    assert bom not in tok.decode(both(tmp_path / "txt")) and tok.decode(both(tmp_path / "txt")).split("<|endoftext|>")[:-1] == docs
    # the rule: the last documents holding about a tenth of the characters are val
    val_docs = tok.decode(tokens(tmp_path / "txt", "val")).split("<|endoftext|>")[:-1]
    assert val_docs == docs[-len(val_docs):]
    held = sum(map(len, val_docs))
    assert held >= 0.1 * sum(map(len, docs)) > held - len(val_docs[0])


def test_a_re_prepare_leaves_none_of_the_old_datasets_files_it_has_no_use_for(tmp_path):
    convs = [[{"role": "user", "content": f"Hail {i}"}, {"role": "assistant", "content": f"Adieu {i}."}] for i in range(20)]
    write_jsonl(tmp_path / "c.jsonl", [{"messages": m} for m in convs])
    write_jsonl(tmp_path / "t.jsonl", [{"text": d} for d in DOCS])
    out = str(tmp_path / "out")
    P.prepare(str(tmp_path / "c.jsonl"), out, format="chat", progress=False)
    (tmp_path / "out" / "notes.txt").write_text("the user's own file")
    assert {"train.mask.bin", "val.mask.bin"} <= set(os.listdir(out))
    P.prepare(str(tmp_path / "t.jsonl"), out, progress=False, force=True)
    assert sorted(os.listdir(out)) == ["meta.json", "notes.txt", "train.bin", "val.bin"]
    from core.data.loader import Dataset
    assert Dataset(out).loss_mask("train") is None


def test_chat_masks_are_cut_where_their_tokens_are(tmp_path):
    convs = [[{"role": "user", "content": f"Hail {i}!"}, {"role": "assistant", "content": f"Good morrow {i}."}]
             for i in range(30)]
    write_jsonl(tmp_path / "c.jsonl", [{"messages": m} for m in convs])
    out = str(tmp_path / "c")
    P.prepare(str(tmp_path / "c.jsonl"), out, format="chat", progress=False)  # gpt2 ids: two bytes a token
    tok = tk.load(out)
    meta = tk.read_meta(out)
    n_val = meta["documents"]["val"]
    for split, first in (("train", 0), ("val", len(convs) - n_val)):
        ids = tokens(out, split)
        mask = np.fromfile(os.path.join(out, f"{split}.mask.bin"), np.uint8)
        ref = [chat.encode(m, tok) for m in convs[first:first + meta["documents"][split]]]
        assert ids.tolist() == [i for r in ref for i in r[0]]
        assert mask.tolist() == [m for r in ref for m in r[1]]  # one byte a token, the same tokens


def test_a_bpe_for_a_record_corpus_learns_from_the_train_records_only(tmp_path):
    # the val records alone repeat 'zyzzyva'; the train records hold neither z nor y, so no merge may join them
    train = [f"the cat sat on the mat {i % 10} and the rat ran" for i in range(60)]
    val = ["zyzzyva " * 10 for _ in range(4)]
    write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in train + val])
    out = str(tmp_path / "d")
    P.prepare(str(tmp_path / "d.jsonl"), out, tokenizer="bpe", vocab_size=300, val_fraction=0.1, progress=False)
    assert tk.read_meta(out)["documents"] == {"train": 60, "val": 4}
    tok = tk.load(out)
    assert len(tok.encode_ordinary("zyzzyva")) == 7  # one byte a token: never seen in training
    assert len(tok.encode_ordinary(" the cat sat")) < 12  # while the train text did get merges
