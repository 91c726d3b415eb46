"""export.py's 'load it in Python with' lines: trust_remote_code=True appears for a folder with its own modeling file
(a switch GPT-2 and Llama do not have, here QK-norm) and only then: not for a GPT-2 or a Llama folder."""

import pytest
import torch

from conftest import run_inprocess
from model import GPT, GPTConfig


def save_run(folder, **switches):
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=64, **switches)
    folder.mkdir()
    torch.save({'model': GPT(cfg).state_dict(), 'model_args': cfg.to_dict(), 'iter_num': 0, 'config': {},
                'tokenizer': {'kind': 'char', 'chars': [chr(32 + i) for i in range(64)], 'special_tokens': {}}},
               folder / 'ckpt.pt')
    return folder


@pytest.mark.parametrize('switches, trusted', [(dict(qk_norm=True), True), ({}, False),
                                               (dict(norm='rmsnorm', pos_encoding='rope', mlp='swiglu', bias=False), False)])
def test_only_a_custom_modeling_folder_is_loaded_with_trust_remote_code(tmp_path, switches, trusted):
    run = save_run(tmp_path / 'run', **switches)
    code, out, err = run_inprocess('export.py', f'--out_dir={run}', f'--dest={tmp_path / "hf"}')
    assert code == 0, err
    lines = out.split('load it in Python with:\n')[1].splitlines()
    assert len(lines) == 3
    assert ('trust_remote_code=True' in lines[1]) is trusted and ('trust_remote_code=True' in lines[2]) is trusted
