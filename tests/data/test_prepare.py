"""data/prepare.py and the per-dataset prepares: exact Shakespeare counts, three WikiText splits from
raw files, uint32 above 65,536 ids, fast offline failure, skip / --force, and a re-prepare killed with
SIGKILL or Ctrl-C at any moment leaving the old dataset whole. Offline; outputs go to pytest's tmp dirs."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from core.data import tokenizer as tk  # noqa: E402
from core.data import prepare as P  # noqa: E402

SHAKESPEARE = os.path.join(ROOT, "data", "shakespeare_char", "input.txt")
ENV = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}


def run(script, *args, timeout=120):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd="/")


def tokens(out_dir, split):
    meta = tk.read_meta(out_dir)
    return np.fromfile(os.path.join(out_dir, f"{split}.bin"), dtype=np.dtype(meta["dtype"]).newbyteorder("<"))


@pytest.fixture(scope="module")
def shakespeare():
    with open(SHAKESPEARE, encoding="utf-8") as f:
        return f.read()


def test_shakespeare_char_exact(tmp_path, shakespeare):
    out = str(tmp_path / "sc")
    r = run("data/shakespeare_char/prepare.py", f"--out_dir={out}")
    assert r.returncode == 0, r.stderr
    meta = tk.read_meta(out)
    assert meta["splits"] == {"train": 1_003_854, "val": 111_540}
    assert meta["vocab_size"] == 65 and meta["dtype"] == "uint16" and meta["tokenizer"]["kind"] == "char"
    assert tk.is_complete(out) and not os.path.exists(os.path.join(out, "meta.pkl"))
    tok = tk.load(out)
    assert tok.decode(tokens(out, "val")) == shakespeare[1_003_854:]
    assert tok.decode(tokens(out, "train")[:1000]) == shakespeare[:1000]

    # a second run sees the complete folder and skips; --force redoes it
    stamp = os.stat(os.path.join(out, "train.bin")).st_mtime_ns
    r = run("data/shakespeare_char/prepare.py", f"--out_dir={out}")
    assert r.returncode == 0 and "already prepared" in r.stdout
    assert os.stat(os.path.join(out, "train.bin")).st_mtime_ns == stamp
    r = run("data/shakespeare_char/prepare.py", f"--out_dir={out}", "--force")
    assert r.returncode == 0 and "wrote" in r.stdout
    assert os.stat(os.path.join(out, "train.bin")).st_mtime_ns != stamp and tk.is_complete(out)


def test_shakespeare_gpt2_exact(tmp_path, shakespeare):
    out = str(tmp_path / "s")
    r = run("data/shakespeare/prepare.py", f"--out_dir={out}")
    assert r.returncode == 0, r.stderr
    meta = tk.read_meta(out)
    assert meta["splits"] == {"train": 301_966, "val": 36_059}
    assert meta["tokenizer"] == {"kind": "gpt2"} and meta["vocab_size"] == 50257
    assert tk.gpt2().decode(tokens(out, "val")) == shakespeare[1_003_854:]


def test_shakespeare_bpe_speeches(tmp_path, shakespeare):
    out = str(tmp_path / "sb")
    r = run("data/shakespeare/prepare.py", "--tokenizer=bpe", f"--out_dir={out}")
    assert r.returncode == 0, r.stderr
    meta = tk.read_meta(out)
    tok = tk.load(out)
    assert meta["vocab_size"] == tok.vocab_size == 10_000 and tok.eot_token == 9_999 and meta["eot_after_each_document"]
    speeches = P.split_documents(shakespeare, "blank")
    train, val = tokens(out, "train"), tokens(out, "val")
    assert int((train == 9_999).sum() + (val == 9_999).sum()) == len(speeches)
    text = tok.decode(val)
    assert text.endswith("<|endoftext|>") and text.split("<|endoftext|>")[-2] == speeches[-1]
    assert os.path.exists(os.path.join(out, "tokenizer.json"))


def test_uint32_above_65536(tmp_path):
    ids = np.array([0, 1, 65535, 65536, 69999, 42], dtype=np.int64)
    path = str(tmp_path / "train.bin")
    assert P.write_bin(path, ids, vocab_size=70_000) == 6
    assert os.path.getsize(path) == 6 * 4
    assert np.fromfile(path, dtype="<u4").tolist() == ids.tolist()
    P.write_bin(str(tmp_path / "val.bin"), ids[:2], vocab_size=70_000)
    meta = {"vocab_size": 70_000, "dtype": tk.token_dtype(70_000), "tokenizer": {"kind": "gpt2"}, "splits": {"train": 6, "val": 2}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert tk.is_complete(str(tmp_path)) and tokens(str(tmp_path), "train").tolist() == ids.tolist()
    with pytest.raises(P.PrepareError, match="outside"):
        P.write_bin(path, [70_000], vocab_size=70_000)
    P.write_bin(path, [65535], vocab_size=65536)
    assert os.path.getsize(path) == 2


def wiki_lines(n, seed):
    # the raw layout: every line starts with a space and ends ' \n'; blank lines are ' \n'
    rnd = np.random.default_rng(seed)
    words = ["the", "of", "@-@", "Valkyria", "1 @,@ 000", "é", "(", ")", "=", "'s", "naïve"]
    lines = []
    for i in range(n):
        if i % 7 == 0:
            lines += [" \n", f" = Heading {i} = \n", " \n"]
        lines.append(" " + " ".join(rnd.choice(words, 12)) + " . \n")
    return "".join(lines)


def test_wikitext_local_raw_three_splits(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    texts = {"train": wiki_lines(300, 0), "val": wiki_lines(40, 1), "test": wiki_lines(50, 2)}
    for split, name in (("train", "wiki.train.raw"), ("val", "wiki.valid.raw"), ("test", "wiki.test.raw")):
        (raw / name).write_text(texts[split], encoding="utf-8")
    out = str(tmp_path / "w")
    r = run("data/wikitext2/prepare.py", f"--data_dir={raw}", f"--out_dir={out}")
    assert r.returncode == 0, r.stderr
    meta = tk.read_meta(out)
    g = tk.gpt2()
    assert meta["splits"] == {s: len(g.encode_ordinary(t)) for s, t in texts.items()}
    for s in texts:
        assert g.decode(tokens(out, s)) == texts[s]
    # the hub gives one row per line with '\n' kept and blank lines as '': both paths give the same text
    from data.wikitext2.prepare import rows_to_raw
    rows = ["" if line == " \n" else line for line in texts["val"].splitlines(keepends=True)]
    assert rows_to_raw(rows) == texts["val"]
    r = run("data/wikitext2/prepare.py", f"--data_dir={tmp_path}", f"--out_dir={tmp_path / 'x'}")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "wiki.train.raw" in r.stderr


def test_offline_hub_fails_fast(tmp_path):
    import socket
    with pytest.raises(P.PrepareError, match="cannot reach"):
        P.require_hub("x/y", "pass --data_dir", timeout=2, url="http://127.0.0.1:9/")  # a closed port
    with socket.socket() as silent:  # a server that takes the connection and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        assert P.hub_problem("x/y", timeout=1, url=f"http://127.0.0.1:{silent.getsockname()[1]}/") == "no answer within 1 s"
    # the real script, on this network-less machine: one line from the probe, not datasets' half a minute of retries
    r = run("data/wikitext2/prepare.py", f"--out_dir={tmp_path / 'w'}")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--data_dir" in r.stderr and "Traceback" not in r.stderr
    assert "cannot reach the Hugging Face hub" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "w" / "meta.json")


def test_documents_and_eot(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("First speech\nline two\n\n\n  Second, indented\n \nThird\n", encoding="utf-8")
    (folder / "b.txt").write_text("Fourth in b\n\nFifth\n", encoding="utf-8")
    assert P.read_documents(str(folder), "blank") == ["First speech\nline two", "  Second, indented", "Third", "Fourth in b", "Fifth"]
    assert len(P.read_documents(str(folder), "file")) == 2
    assert P.split_documents(" one <|endoftext|>\ntwo\n<|endoftext|>\n", "<|endoftext|>") == ["one", "two"]
    out = str(tmp_path / "o")
    meta = P.prepare(str(folder), out, tokenizer="char", doc_sep="blank", val_fraction=0.05, progress=False)
    tok = tk.load(out)
    assert tok.eot_token == meta["eot_token"] == meta["vocab_size"] - 1
    both = tok.decode(np.concatenate([tokens(out, "train"), tokens(out, "val")]))
    assert both == "<|endoftext|>".join(P.read_documents(str(folder), "blank")) + "<|endoftext|>"
    assert tok.decode(tokens(out, "val")) == "Fifth<|endoftext|>"
    # the same folder asked for differently is refused, in one line, unless forced
    with pytest.raises(P.PrepareError, match="pass --force"):
        P.prepare(str(folder), out, tokenizer="gpt2", doc_sep="blank", val_fraction=0.05, progress=False)
    meta = P.prepare(str(folder), out, tokenizer="gpt2", doc_sep="blank", val_fraction=0.05, progress=False, force=True)
    assert meta["tokenizer"]["kind"] == "gpt2" and tokens(out, "val")[-1] == 50256


def test_parallel_equals_serial(tmp_path, shakespeare):
    g = tk.gpt2()
    pieces = [shakespeare[:300_000], "a doc", shakespeare[300_000:400_000]]
    a = P.encode_to_bin(g, pieces, str(tmp_path / "a.bin"), eot=True, workers=1, progress=False, task_chars=20_000)
    b = P.encode_to_bin(g, pieces, str(tmp_path / "b.bin"), eot=True, workers=2, progress=False, task_chars=20_000)
    want = [i for p in pieces for i in g.encode_ordinary(p) + [50256]]
    assert a == b == len(want)
    assert np.fromfile(tmp_path / "b.bin", dtype="<u2").tolist() == want
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_hub_writers_on_local_datasets(tmp_path, shakespeare):
    datasets = pytest.importorskip("datasets")
    g = tk.gpt2()
    docs = [d for d in P.split_documents(shakespeare[:60_000], "blank")]
    want = [i for d in docs for i in g.encode_ordinary(d) + [50256]]
    ds = datasets.Dataset.from_dict({"text": docs})
    assert P.dataset_to_bin(ds, g, str(tmp_path / "d.bin"), num_proc=1, progress=False) == len(want)
    assert np.fromfile(tmp_path / "d.bin", dtype="<u2").tolist() == want
    assert P.stream_to_bin(iter(docs), g, str(tmp_path / "s.bin"), workers=2, progress=False, batch_docs=50) == len(want)
    assert (tmp_path / "s.bin").read_bytes() == (tmp_path / "d.bin").read_bytes()


def test_tinystories_and_openwebtext_local(tmp_path):
    stories = [f"Once upon a time there was story number {i}. The end." for i in range(20)]
    f = tmp_path / "stories.txt"
    f.write_text("\n<|endoftext|>\n".join(stories) + "\n<|endoftext|>\n", encoding="utf-8")
    out = str(tmp_path / "ts")
    r = run("data/tinystories/prepare.py", f"--input={f}", f"--out_dir={out}", "--val_fraction=0.1", "--progress=False")
    assert r.returncode == 0, r.stderr
    text = tk.gpt2().decode(np.concatenate([tokens(out, "train"), tokens(out, "val")]))
    assert text == "".join(s + "<|endoftext|>" for s in stories)
    owt = tmp_path / "owt"
    owt.mkdir()
    for i in range(10):
        (owt / f"{i:02d}.txt").write_text(f"web page {i}\n\nwith two paragraphs\n", encoding="utf-8")
    out = str(tmp_path / "o")
    r = run("data/openwebtext/prepare.py", f"--input={owt}", f"--out_dir={out}", "--val_fraction=0.1", "--progress=False")
    assert r.returncode == 0, r.stderr
    assert tk.gpt2().decode(tokens(out, "val")) == "web page 9\n\nwith two paragraphs<|endoftext|>"


def test_what_used_to_be_accepted_or_misreported_is_one_true_line(tmp_path, capsys):
    def err_of(*args):
        with pytest.raises(SystemExit) as e:
            P.main([*args, "--progress=False"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        return err
    out = f"--out_dir={tmp_path / 'o'}"
    for n in ("0", "-3"):
        assert f"argument --workers: must be 1 or more, got {n}" in err_of(f"--input={SHAKESPEARE}", out, f"--workers={n}")
    assert "--name='' should be a plain folder name" in err_of(f"--input={SHAKESPEARE}", "--name=")
    spaced = tmp_path / "my notes.txt"  # its name was refused as --name='my notes', which the user never gave
    spaced.write_text("First Citizen: before we proceed any further, hear me speak.\n" * 20, encoding="utf-8")
    assert "the input's name 'my notes' is no plain folder name" in err_of(f"--input={spaced}")
    P.main([f"--input={spaced}", f"--out_dir={tmp_path / 'notes'}", "--tokenizer=char", "--progress=False"])
    assert os.path.exists(tmp_path / "notes" / "train.bin")
    assert not os.path.exists(os.path.join(ROOT, "data", "input"))  # not quietly named after the input
    for dev in ("/dev/null", "/dev/stdin"):
        if os.path.exists(dev) and not os.path.isfile(dev):
            err = err_of(f"--input={dev}", out)
            assert f"--input={dev} is not a regular file or folder but a pipe, terminal or device" in err
            assert "does not exist" not in err
    assert not os.path.exists(tmp_path / "o")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "data", "prepare.py"), "--input=/dev/stdin", out],
                       input="some text", capture_output=True, text=True, env=ENV, timeout=120)  # a pipe
    assert r.returncode == 2 and "is not a regular file or folder but a pipe" in r.stderr, r.stderr
    r = run("data/tinystories/prepare.py", f"--input={SHAKESPEARE}", "--num_proc=0", out)
    assert r.returncode == 2 and "argument --num_proc: must be 1 or more" in r.stderr
    # two characters made a dataset of 1 train and 1 val token, which no block_size can train on
    tiny = tmp_path / "two.txt"
    tiny.write_text("ab", encoding="utf-8")
    assert "2 characters are too few to split with --val_fraction=0.1: train and val need 2 or more each" in \
        err_of(f"--input={tiny}", out, "--tokenizer=char")
    # a character dataset's token file is valid utf-8 (small ids, NUL high bytes) and was prepared as text
    tokens = tmp_path / "train.bin"
    np.array([ord(c) for c in "First Citizen"], dtype=np.uint16).tofile(tokens)
    assert f"{tokens} holds a NUL byte (character 1): it is binary, not text" in err_of(f"--input={tokens}", out)
    assert not os.path.exists(tmp_path / "o")


def test_cli_mistakes_are_one_line(tmp_path, capsys):
    for args in ([f"--input={tmp_path}/nope.txt", f"--out_dir={tmp_path}/o"],
                 [f"--input={SHAKESPEARE}", f"--out_dir={tmp_path}/o", "--tokenizer=bpe"],
                 [f"--input={SHAKESPEARE}", f"--out_dir={tmp_path}/o", "--val_fraction=1.5"],
                 [f"--input={SHAKESPEARE}", "--name=../escape"]):
        with pytest.raises(SystemExit) as e:
            P.main(args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error:") and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as e:  # argparse's own kind of mistake: exit 2, one line, no usage block
        P.main([f"--input={SHAKESPEARE}", "--tokenizer=wordpiece"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and "invalid choice" in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "o")


HUB_LIKE = """import sys
sys.path.insert(0, {root!r})
from core.data import prepare as P, tokenizer as tk
docs = open({docs!r}, encoding="utf-8").read().split("\\n\\n")
P.run_main(lambda: P.hub_to_bins({out!r}, tk.gpt2(), {{"train": iter(docs[:-300]), "val": iter(docs[-300:])}},
                                 streaming=True, workers=2, progress=False))
"""


def _inputs(tmp_path, text, kind):
    """the same speeches as one input of kind, and the prepare command that reads it into out."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    docs = [d for d in text.split("\n\n") if d.strip()]
    path = tmp_path / f"in-{len(docs)}.{'txt' if kind in ('txt', 'hub') else kind}"
    if kind in ("txt", "hub"):
        path.write_text("\n\n".join(docs), encoding="utf-8")
    elif kind == "jsonl":
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    else:
        pq.write_table(pa.table({"text": docs}), path)
    out = tmp_path / "out"
    if kind == "hub":
        return [sys.executable, "-c", HUB_LIKE.format(root=ROOT, docs=str(path), out=str(out))], out
    return [sys.executable, os.path.join(ROOT, "data", "prepare.py"), f"--input={path}", f"--out_dir={out}", "--doc_sep=blank",
            "--workers=2", "--progress=False", "--force"], out


def _whole(out):
    """the splits of the dataset in out, after checking that every token file is the one its meta.json names."""
    from core.data.loader import Dataset
    meta = tk.read_meta(str(out))
    for split, fp in meta["fingerprint"]["splits"].items():
        assert tk.file_sha256(str(out / f"{split}.bin")) == fp["sha256"]
    data = Dataset(str(out))
    assert [len(data.split(s)) for s in ("train", "val")] == [meta["splits"]["train"], meta["splits"]["val"]]
    return meta["splits"]


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet", "hub"])
def test_a_killed_or_interrupted_re_prepare_keeps_the_old_dataset_whole(tmp_path, shakespeare, kind):
    # the old dataset from a third of the text; the re-prepare with --force reads all of it, three times over
    old_cmd, out = _inputs(tmp_path, shakespeare[:len(shakespeare) // 3], kind)
    new_cmd, _ = _inputs(tmp_path, shakespeare * 3, kind)
    assert subprocess.run(old_cmd, capture_output=True, env=ENV, timeout=300).returncode == 0
    old, old_bytes = _whole(out), (out / "train.bin").read_bytes()

    def staged():
        return [n for n in os.listdir(out) if n.startswith(".staged.") or n == ".committing"]

    def start_and_wait_for_the_staging_folder():
        p = subprocess.Popen(new_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, start_new_session=True)
        t0 = time.time()
        while p.poll() is None and not staged() and time.time() < t0 + 300:
            time.sleep(0.01)
        return p, t0, time.time()
    p, _, t_staged = start_and_wait_for_the_staging_folder()
    assert p.wait(timeout=300) == 0
    writing, new = time.time() - t_staged, _whole(out)  # how long the staging folder lives
    assert new != old
    assert subprocess.run(old_cmd, capture_output=True, env=ENV, timeout=300).returncode == 0 and _whole(out) == old
    mid_way = 0
    for share, sig in ((0.1, signal.SIGKILL), (0.4, signal.SIGINT), (0.6, signal.SIGKILL), (0.95, signal.SIGKILL)):
        p, _, _ = start_and_wait_for_the_staging_folder()
        time.sleep(share * writing)
        running = p.poll() is None and bool(staged())
        if sig == signal.SIGINT:
            p.send_signal(signal.SIGINT)  # Ctrl-C reaches the prepare (its workers ignore it)
        else:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the prepare and its worker processes
            except ProcessLookupError:  # it finished first, and the poll above reaped it: nothing left to kill
                pass
        err = p.communicate(timeout=120)[1].decode()
        if sig == signal.SIGINT and running and p.returncode == 130:
            assert "the folder keeps its last complete dataset" in err, err
        mid_way += running
        # whatever the moment, the folder holds one whole dataset: the old one, or the new one if it was complete
        splits = _whole(out)
        assert splits in (old, new)
        if splits == old:
            assert (out / "train.bin").read_bytes() == old_bytes
        else:
            assert subprocess.run(old_cmd, capture_output=True, env=ENV, timeout=300).returncode == 0
    assert mid_way >= 2
    # what killed prepares left behind is swept by the next one
    assert subprocess.run(new_cmd, capture_output=True, env=ENV, timeout=300).returncode == 0
    assert _whole(out) == new and not [n for n in os.listdir(out) if n.startswith(".")]


def test_a_commit_cut_short_is_finished_by_the_next_reader(tmp_path, shakespeare, monkeypatch):
    from core import fileio
    (tmp_path / "a.txt").write_text(shakespeare[:20_000], encoding="utf-8")
    (tmp_path / "b.txt").write_text(shakespeare[:30_000], encoding="utf-8")
    out = str(tmp_path / "out")
    P.prepare(str(tmp_path / "a.txt"), out, tokenizer="char", progress=False)
    new = P.prepare(str(tmp_path / "b.txt"), str(tmp_path / "ref"), tokenizer="char", progress=False)["splits"]
    moves, replace = [], os.replace

    def killed_after_one_move(src, dst):  # the process dies after the commit point, one file moved in
        if fileio.COMMITTING in str(src):
            if moves:
                raise KeyboardInterrupt
            moves.append(dst)
        replace(src, dst)
    monkeypatch.setattr(fileio.os, "replace", killed_after_one_move)
    with pytest.raises(KeyboardInterrupt):
        P.prepare(str(tmp_path / "b.txt"), out, tokenizer="char", progress=False, force=True)
    monkeypatch.undo()
    assert os.path.isdir(os.path.join(out, ".committing")) and len(moves) == 1
    from core.data.loader import Dataset
    data = Dataset(out)  # the reader finishes the moves: the new dataset, whole
    assert data.meta["splits"] == new and len(data.split("val")) == new["val"]
    assert (tmp_path / "out" / "train.bin").read_bytes() == (tmp_path / "ref" / "train.bin").read_bytes()
    assert not os.path.exists(os.path.join(out, ".committing"))


def test_a_prepare_over_a_different_one_names_a_setting_the_user_gave(tmp_path):
    f = tmp_path / "stories.txt"
    f.write_text("Once upon a time.<|endoftext|>" * 50 + "The end.<|endoftext|>" * 50, encoding="utf-8")
    out = f"--out_dir={tmp_path / 'ts'}"
    assert run("data/tinystories/prepare.py", f"--input={f}", out, "--progress=False").returncode == 0
    hub = subprocess.run([sys.executable, os.path.join(ROOT, "data", "tinystories", "prepare.py"), out], capture_output=True,
                         text=True, timeout=120, env=dict(ENV, HF_DATASETS_OFFLINE="1"))
    assert hub.returncode == 2 and "doc_sep" not in hub.stderr
    assert f"was prepared with input='{f}', not 'roneneldan/TinyStories'; pass --force" in hub.stderr, hub.stderr


def test_home_in_paths_is_expanded(tmp_path):
    # `--out_dir=~/ds` reaches the script unexpanded (a shell expands ~ only at a word's start): the dataset went into
    # a folder named '~' in the current one
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    (home / "t.txt").write_text("to be or not to be, that is the question\n" * 50)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "data", "prepare.py"), "--input=~/t.txt", "--tokenizer=char",
                        "--out_dir=~/ds", "--progress=False"], capture_output=True, text=True, timeout=120,
                       env={**ENV, "HOME": str(home)}, cwd=str(work))
    assert r.returncode == 0, r.stderr
    assert tk.is_complete(str(home / "ds")) and os.listdir(work) == []
