"""sample.py --interactive: each turn's prompt holds the conversation so far, the bot's own replies included, and
/reset clears it. The messages each prompt is built from are recorded and compared with the ones written out here."""

import io
import sys

import torch

from conftest import run_inprocess
from core.data import chat, tokenizer
from core.training import checkpoint
from model import GPT, GPTConfig


def chat_with(tmp_path, monkeypatch, lines, shape_model=None, new_tokens=4):
    """Run sample.py --interactive on a tiny char model over `lines` typed in; returns (stdout, [the messages of
    each prompt])."""
    tok = tokenizer.char('hello world, you> bot\nx')
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=tok.vocab_size, tie_embeddings=False))
    if shape_model:
        shape_model(model, tok)
    checkpoint.save({'model': model.state_dict(), 'model_args': model.config.to_dict(), 'iter_num': 1,
                     'best_val_loss': 1.0, 'tokenizer': tok.state()}, str(tmp_path / 'ckpt.pt'))
    seen = []
    real = chat.prompt

    def recording(messages, tok, context):
        seen.append([dict(m) for m in messages])
        return real(messages, tok, context)
    monkeypatch.setattr(chat, 'prompt', recording)
    monkeypatch.setattr(sys, 'stdin', io.StringIO(''.join(line + '\n' for line in lines)))
    code, out, err = run_inprocess('sample.py', f'--out_dir={tmp_path}', '--interactive=True',
                                   f'--max_new_tokens={new_tokens}', '--temperature=0', '--device=cpu',
                                   '--compile=False', '--threads=1')
    assert code == 0, err[-2000:]
    return out, seen


def test_the_next_turn_sees_the_bots_reply(tmp_path, monkeypatch):
    def always_x(model, tok):
        x = tok.encode('x')[0]
        with torch.no_grad():  # every position's hidden state is the final norm's bias, which only x's head row matches
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.zero_()
            model.transformer.ln_f.bias[0] = 1.0
            model.lm_head.weight.zero_()
            model.lm_head.weight[x, 0] = 10.0
    out, seen = chat_with(tmp_path, monkeypatch, ['hello', 'world', '/quit'], always_x)
    assert 'bot> xxxx\n' in out  # the first reply, as printed
    assert seen[-1] == [{'role': 'user', 'content': 'hello'}, {'role': 'assistant', 'content': 'xxxx'},
                        {'role': 'user', 'content': 'world'}]


def test_after_reset_the_next_prompt_holds_only_the_new_turn(tmp_path, monkeypatch):
    out, seen = chat_with(tmp_path, monkeypatch, ['hello', '/reset', 'world', '/quit'], new_tokens=2)
    assert '(history cleared)' in out
    assert len(seen) == 2 and seen[0] == [{'role': 'user', 'content': 'hello'}]
    assert seen[1] == [{'role': 'user', 'content': 'world'}]
