"""core/data/prepare.py: the command line's parsing, the hub's offline switch, and the token files a prepare writes,
read back with numpy and compared with ids worked out by hand."""

import os

import numpy as np
import pytest

from core.data import prepare as P
from core.data import tokenizer as tk


def ids(folder, split):
    return np.fromfile(os.path.join(folder, f"{split}.bin"), dtype="<u2").tolist()


def test_one_document_per_file_puts_endoftext_after_each_file(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("abab", encoding="utf-8")
    (folder / "b.txt").write_text("ba", encoding="utf-8")
    out = str(tmp_path / "o")
    P.prepare(str(folder), out, tokenizer="char", doc_sep="file", val_fraction=0.3, progress=False)
    # chars a=0, b=1, then <|endoftext|>=2; the val share takes the last whole document (b.txt)
    assert ids(out, "train") == [0, 1, 0, 1, 2] and ids(out, "val") == [1, 0, 2]


def test_hub_datasets_written_whole_put_endoftext_after_each_document(tmp_path):
    datasets = pytest.importorskip("datasets")
    out = str(tmp_path / "o")
    splits = {"train": datasets.Dataset.from_dict({"text": ["hello", "world"]}),
              "val": datasets.Dataset.from_dict({"text": ["hello"]})}
    P.hub_to_bins(out, tk.gpt2(), splits, streaming=False, num_proc=1, progress=False)
    # GPT-2's ids: 'hello' 31373, 'world' 6894, <|endoftext|> 50256
    assert ids(out, "train") == [31373, 50256, 6894, 50256] and ids(out, "val") == [31373, 50256]


@pytest.mark.parametrize("text, value", [("1", True), ("True", True), ("on", True), ("0", False), ("False", False),
                                         ("no", False), ("off", False)])
def test_a_yes_or_no_option_reads_every_spelling_the_right_way(text, value):
    assert P.parse_bool(text) is value


def test_zero_workers_and_a_name_with_a_slash_are_one_line_errors(tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("some text to prepare\n", encoding="utf-8")
    for args, fragment in (([f"--input={source}", f"--out_dir={tmp_path / 'o'}", "--workers=0"], "must be 1 or more"),
                           ([f"--input={source}", "--name=mine/../../escape"], "plain folder name")):
        with pytest.raises(SystemExit) as e:
            P.main(args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error:") and err.count("\n") == 1 and fragment in err, err
    assert not os.path.exists(tmp_path / "o")


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_either_offline_switch_lets_datasets_use_its_cache_without_a_probe(monkeypatch, variable):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "1")

    def probe(*args, **kwargs):
        raise AssertionError("the hub was probed although the user said offline")
    monkeypatch.setattr(P, "hub_problem", probe)
    assert P.require_hub("some/dataset", "a hint") is None


def test_preparing_a_jsonl_again_from_another_field_is_not_taken_for_the_same_dataset(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"a": "abab", "b": "baba"}\n{"a": "aabb", "b": "bbaa"}\n', encoding="utf-8")
    out = str(tmp_path / "o")
    P.prepare(str(source), out, tokenizer="char", text_field="a", progress=False)
    with pytest.raises(P.PrepareError, match="text_field"):
        P.prepare(str(source), out, tokenizer="char", text_field="b", progress=False)
