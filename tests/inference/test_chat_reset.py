"""sample.py --interactive: /reset clears the conversation, so the next turn's prompt holds that turn alone. The
messages each prompt is built from are recorded and compared with the ones written out here."""

import io
import sys

import torch

from conftest import run_inprocess
from core.data import chat, tokenizer
from core.training import checkpoint
from model import GPT, GPTConfig


def test_after_reset_the_next_prompt_holds_only_the_new_turn(tmp_path, monkeypatch):
    tok = tokenizer.char('hello world, you> bot\nx')
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=tok.vocab_size))
    checkpoint.save({'model': model.state_dict(), 'model_args': model.config.to_dict(), 'iter_num': 1,
                     'best_val_loss': 1.0, 'tokenizer': tok.state()}, str(tmp_path / 'ckpt.pt'))
    seen = []
    real = chat.prompt

    def recording(messages, tok, context):
        seen.append([dict(m) for m in messages])
        return real(messages, tok, context)
    monkeypatch.setattr(chat, 'prompt', recording)
    monkeypatch.setattr(sys, 'stdin', io.StringIO('hello\n/reset\nworld\n/quit\n'))
    code, out, err = run_inprocess('sample.py', f'--out_dir={tmp_path}', '--interactive=True', '--max_new_tokens=2',
                                   '--temperature=0', '--device=cpu', '--compile=False', '--threads=1')
    assert code == 0, err[-2000:]
    assert '(history cleared)' in out
    assert len(seen) == 2 and seen[0] == [{'role': 'user', 'content': 'hello'}]
    assert seen[1] == [{'role': 'user', 'content': 'world'}]
