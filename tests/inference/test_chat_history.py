"""sample.py --interactive: each turn's prompt holds the conversation so far, the bot's own replies included."""

import io
import sys

import torch

from conftest import run_inprocess
from core.data import chat, tokenizer
from core.training import checkpoint
from model import GPT, GPTConfig


def test_the_next_turn_sees_the_bots_reply(tmp_path, monkeypatch):
    tok = tokenizer.char('hello world, you> bot\nx')
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=tok.vocab_size, tie_embeddings=False))
    x = tok.encode('x')[0]
    with torch.no_grad():  # every position's hidden state is the final norm's bias, which only x's head row matches
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[x, 0] = 10.0
    checkpoint.save({'model': model.state_dict(), 'model_args': model.config.to_dict(), 'iter_num': 1,
                     'best_val_loss': 1.0, 'tokenizer': tok.state()}, str(tmp_path / 'ckpt.pt'))
    seen = []
    real = chat.prompt

    def recording(messages, tok, context):
        seen.append([dict(m) for m in messages])
        return real(messages, tok, context)
    monkeypatch.setattr(chat, 'prompt', recording)
    monkeypatch.setattr(sys, 'stdin', io.StringIO('hello\nworld\n/quit\n'))
    code, out, err = run_inprocess('sample.py', f'--out_dir={tmp_path}', '--interactive=True', '--max_new_tokens=4',
                                   '--temperature=0', '--device=cpu', '--compile=False', '--threads=1')
    assert code == 0, err[-2000:]
    assert 'bot> xxxx\n' in out  # the first reply, as printed
    assert seen[-1] == [{'role': 'user', 'content': 'hello'}, {'role': 'assistant', 'content': 'xxxx'},
                        {'role': 'user', 'content': 'world'}]
