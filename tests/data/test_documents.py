"""Document-aware attention and chat tokens: a packed window computes each document as if it were
alone; the chat format's special tokens survive encoding; the SFT mask covers assistant tokens only."""

import pytest
import torch
from torch.nn import functional as F

from core.data import chat
from core.data import tokenizer as tk
from model import GPT, GPTConfig, document_layout


def test_layout_positions_restart():
    docs = torch.tensor([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5]])
    positions, mask = document_layout(docs)
    assert positions.tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]]
    # token 4 (document 1, position 1) sees tokens 3 and 4 only
    assert mask[0, 0, 4].tolist() == [False, False, False, True, True, False]
    assert torch.equal(mask[1, 0], torch.ones(6, 6, dtype=torch.bool).tril())


@pytest.mark.parametrize('pos_encoding', ['learned', 'rope'])
def test_packed_window_equals_each_document_alone(pos_encoding):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=50, n_layer=2, n_head=2, n_embd=32, pos_encoding=pos_encoding)).eval()
    lengths = [5, 9, 1, 7]
    pieces = [torch.randint(50, (n,)) for n in lengths]
    idx = torch.cat(pieces).unsqueeze(0)
    docs = torch.cat([torch.full((n,), k) for k, n in enumerate(lengths)]).unsqueeze(0)
    with torch.no_grad():
        packed = model.head(model.hidden_states(idx, docs=docs))[0]
        alone = torch.cat([model.head(model.hidden_states(p.unsqueeze(0)))[0] for p in pieces])
        plain = model.head(model.hidden_states(idx))[0]
    assert torch.allclose(packed, alone, atol=1e-5), (packed - alone).abs().max()
    # the first document is unaffected either way; later ones differ without the mask
    assert torch.allclose(plain[:5], alone[:5], atol=1e-5) and not torch.allclose(plain, alone, atol=1e-3)


def test_chat_tokens_round_trip_gpt2():
    g = tk.with_specials(tk.gpt2(), tk.CHAT_TOKENS)
    assert g.vocab_size == 50261 and [g.special_tokens[t] for t in tk.CHAT_TOKENS] == [50257, 50258, 50259, 50260]
    text = "<|endoftext|><|user|>hi there<|end|><|assistant|>well met<|end|>"
    ids = g.encode(text)
    assert ids[:2] == [50256, 50258] and g.decode(ids) == text
    # the state rebuilds it exactly, and the plain gpt2 state is unchanged
    again = tk.from_state(g.state())
    assert again.encode(text) == ids and again.vocab_size == 50261 and tk.gpt2().state() == {"kind": "gpt2"}
    assert g.encode_ordinary("<|user|>") != [50258]  # typed by a user, it is only text


def test_chat_tokens_char_and_bpe():
    c = tk.with_specials(tk.char("abc ", special_tokens=(tk.EOT,)), tk.CHAT_TOKENS)
    assert chat.has_chat(c) and tk.from_state(c.state()).encode("a<|end|>b") == c.encode("a<|end|>b")
    assert c.decode(c.encode("<|assistant|>ab c<|end|>")) == "<|assistant|>ab c<|end|>"
    b = tk.train_bpe(["some text to learn a few merges from, some text"], 300, special_tokens=(tk.EOT, *tk.CHAT_TOKENS))
    assert chat.has_chat(b) and b.decode(b.encode("<|user|>some<|end|>")) == "<|user|>some<|end|>"
    with pytest.raises(tk.TokenizerError, match="reserves the chat tokens"):
        tk.with_specials(tk.train_bpe(["plain text here"], 270), tk.CHAT_TOKENS)


def test_chat_encode_mask_render():
    g = tk.with_specials(tk.gpt2(), tk.CHAT_TOKENS)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": " Good day"}, {"role": "user", "content": "Bye"}]
    ids, mask = chat.encode(messages + [{"role": "assistant", "content": " Farewell"}], g)
    learned = [i for i, m in zip(ids, mask) if m]
    end = g.special_tokens[chat.END]
    assert learned == g.encode_ordinary(" Good day") + [end] + g.encode_ordinary(" Farewell") + [end]
    prompt = chat.render(messages, g)
    assert prompt == ids[:len(prompt)] and g.decode(prompt).endswith("<|end|><|assistant|>")
    assert chat.reply_text(g.encode_ordinary(" Farewell") + [end, 11], g) == " Farewell"
    for bad, msg in (([{"role": "user", "content": "x"}], "no assistant"), ([{"role": "bot", "content": "x"}], "role 'bot'")):
        with pytest.raises(chat.ChatError, match=msg):
            chat.encode(bad, g)
    with pytest.raises(chat.ChatError, match="no chat tokens"):
        chat.render(messages, tk.gpt2())


def test_sft_loss_is_the_mean_over_assistant_tokens():
    """the loss with targets -1 outside the mask equals a hand average of -log p over assistant tokens."""
    torch.manual_seed(0)
    c = tk.with_specials(tk.char("abcdefgh ", special_tokens=(tk.EOT,)), tk.CHAT_TOKENS)
    ids, mask = chat.encode([{"role": "user", "content": "abc"}, {"role": "assistant", "content": "de f"},
                             {"role": "user", "content": "gh"}, {"role": "assistant", "content": "a"}], c)
    model = GPT(GPTConfig(block_size=32, vocab_size=c.vocab_size, n_layer=1, n_head=2, n_embd=16)).eval()
    x = torch.tensor([ids[:-1]])
    y = torch.tensor([[t if m else -1 for t, m in zip(ids[1:], mask[1:])]])
    with torch.no_grad():
        logits, loss = model(x, y)
    logp = F.log_softmax(logits[0].double(), dim=-1)
    picked = [-logp[i, ids[i + 1]].item() for i in range(len(ids) - 1) if mask[i + 1]]
    assert len(picked) == 4 + 1 + 1 + 1
    assert loss.item() == pytest.approx(sum(picked) / len(picked), rel=1e-5)


def test_doc_aware_windows_and_chat_targets(tmp_path):
    import numpy as np
    from core.data import prepare as P
    from core.data.loader import Dataset
    docs = [("word " * n).strip() for n in (3, 40, 1, 7, 2, 25, 5, 9, 4, 11) * 3]
    (tmp_path / "d.txt").write_text("\n\n".join(docs), encoding="utf-8")
    P.prepare(str(tmp_path / "d.txt"), str(tmp_path / "d"), tokenizer="char", doc_sep="blank", progress=False)
    data = Dataset(str(tmp_path / "d"))
    tokens = np.asarray(data.split("train"))
    starts = data.document_starts("train", 16).numpy()
    doc_starts = np.union1d([0], np.flatnonzero(tokens == data.eot))
    assert set(doc_starts[doc_starts + 16 < len(tokens)]) <= set(starts)
    for s in set(starts) - set(doc_starts):  # continuations sit a whole number of windows into a long document
        begin = doc_starts[doc_starts < s].max()
        assert (s - begin) % 16 == 0 and not (tokens[begin + 1:s] == data.eot).any()
    covered = np.zeros(len(tokens), bool)
    for s in starts:
        covered[s:s + 16] = True
    assert covered[:starts.max()].all()
    x, y = data.get_batch("train", 8, 16, torch.Generator().manual_seed(0), doc_aware=True)
    assert all(r[0] == data.eot or s == 0 or s in set(starts) for r, s in zip(x, starts))
    d = data.documents(x)
    assert torch.equal(d[:, 1:] != d[:, :-1], x[:, 1:] == data.eot)

    convs = [{"messages": [{"role": "user", "content": "hi " * k}, {"role": "assistant", "content": "yo " * (k + 1)}]}
             for k in range(1, 30)]
    import json
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(c) + "\n" for c in convs), encoding="utf-8")
    P.prepare(str(tmp_path / "c.jsonl"), str(tmp_path / "c"), tokenizer="char", format="chat", progress=False)
    data = Dataset(str(tmp_path / "c"))
    tokens, mask = np.asarray(data.split("train")), np.asarray(data.loss_mask("train"))
    starts = data.sample_starts("train", 6, 16, torch.Generator().manual_seed(1), doc_aware=True)
    x, y = data.get_batch("train", 6, 16, None, starts=starts)
    for row, s in enumerate(starts.tolist()):
        want = np.where(mask[s + 1:s + 17] == 1, tokens[s + 1:s + 17].astype(np.int64), -1)
        assert y[row].tolist() == want.tolist()
    assert (y == -1).any() and (y != -1).any()


@pytest.mark.parametrize('kind', ['gpt2', 'bpe'])
def test_chat_tokens_round_trip_through_hf_tokenizer(tmp_path, kind):
    """the exported Hugging Face tokenizer (core/interop/hf.py) gives the chat tokens the same ids as ours."""
    transformers = pytest.importorskip('transformers')
    from core.interop import hf
    if kind == 'gpt2':
        tok = tk.with_specials(tk.gpt2(), tk.CHAT_TOKENS)
    else:
        tok = tk.train_bpe(["Good morrow, good sir. Farewell, sweet lady."] * 3, 300, special_tokens=(tk.EOT, *tk.CHAT_TOKENS))
    for name, text in hf.tokenizer_files(tok.state(), 64).items():
        (tmp_path / name).write_text(text, encoding='utf-8')
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    messages = [{"role": "user", "content": "Good morrow, sir."}, {"role": "assistant", "content": "Farewell!"}]
    ids, _ = chat.encode(messages, tok)
    text = tok.decode(ids)
    assert theirs.encode(text) == ids == tok.encode(text)
    assert theirs.decode(ids) == text


def test_doc_aware_starts_keep_a_whole_window_and_its_targets(tmp_path):
    import json
    import numpy as np
    from core.data.loader import Dataset
    # documents (each opening with <|endoftext|>, id 0) at 0, 30, 63 and 64 of a 80-token split: a window of 16
    # inputs needs 17 tokens, so 63 (17 left) still starts one and 64 (16 left) does not
    tokens = np.arange(80) % 7 + 1
    tokens[[30, 63, 64]] = 0
    for name in ("train", "val"):
        tokens.astype(np.uint16).tofile(tmp_path / f"{name}.bin")
    tok = {"kind": "char", "chars": [chr(64 + i) for i in range(8)], "special_tokens": {}}
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 8, "dtype": "uint16", "tokenizer": tok,
                                                    "splits": {"train": 80, "val": 80}, "eot_token": 0}))
    data = Dataset(str(tmp_path))
    starts = data.document_starts("train", 16).tolist()
    assert starts == [0, 16, 30, 46, 62, 63]  # long documents continue a window on (16; 46 and 62)
    x, y = data.get_batch("train", len(starts), 16, None, starts=torch.tensor(starts))
    assert torch.equal(y[-1], torch.from_numpy(tokens[64:80].astype(np.int64)))
