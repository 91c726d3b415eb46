"""One error type for user mistakes: every kind is a UserError, and each ends in one `error:` line, exit code 2."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, assert_one_line_error, run_script


@pytest.mark.parametrize('module, name', [('configurator', 'ConfigError'), ('core.data.tokenizer', 'TokenizerError'),
                                          ('core.data.prepare', 'PrepareError'), ('core.data.chat', 'ChatError')])
def test_every_user_error_kind_exits_2_in_one_line(module, name):
    code = (f"import sys; sys.path.insert(0, {REPO!r})\n"
            f"from core.errors import install_excepthook, UserError\n"
            f"from {module} import {name}\n"
            f"assert issubclass({name}, UserError)\n"
            f"install_excepthook()\n"
            f"raise {name}('the thing is wrong;\\nfix it like so')\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.stderr == 'error: the thing is wrong; fix it like so\n' and r.returncode == 2, r.stderr


def test_a_huge_value_is_shown_by_its_ends_in_the_error_line():
    # --n_layer=<100,000 digits> was echoed whole: a 100 KB error line
    from core.errors import one_line
    digits = '7' * 100_000
    line = one_line(f"n_layer must be an integer, got '{digits}'; give a whole number")  # the word: '7...7';
    assert len(line) < 250 and "(100,003 characters)" in line and line.endswith('; give a whole number')
    assert one_line('a short value ' + '8' * 200) == 'a short value ' + '8' * 200  # up to LONGEST_WORD, whole
    r = run_script('train.py', f'--n_layer={digits}x')
    assert len(assert_one_line_error(r, 'n_layer')) < 400


def test_sample_without_a_tokenizer_is_one_line_naming_the_right_folder(tmp_path):
    # what karpathy/nanoGPT writes: no tokenizer, the dataset only in config
    from model import GPT, GPTConfig
    args = dict(n_layer=1, n_head=1, n_embd=16, block_size=8, vocab_size=65, bias=False, dropout=0.0)
    state = {'model': GPT(GPTConfig(**args)).state_dict(), 'model_args': args, 'iter_num': 0, 'best_val_loss': 9.0,
             'config': {'dataset': 'shakespeare_char'}}
    torch.save(state, tmp_path / 'ckpt.pt')
    r = run_script('sample.py', f'--out_dir={tmp_path}', '--device=cpu', '--max_new_tokens=2')
    if not os.path.exists(os.path.join(REPO, 'data', 'shakespeare_char', 'meta.json')):
        assert 'data/data' not in assert_one_line_error(r, 'shakespeare_char')
    # neither a tokenizer nor a dataset: say what to pass
    del state['config']
    torch.save(state, tmp_path / 'ckpt.pt')
    r = run_script('sample.py', f'--out_dir={tmp_path}', '--device=cpu', '--max_new_tokens=2')
    assert_one_line_error(r, 'names no dataset', '--dataset=')


def test_an_unprepared_folder_names_the_command_that_prepares_it(tmp_path):
    from core.data import tokenizer
    cases = {str(tmp_path / 'nodata'): f'python data/prepare.py --input=YOUR_TEXT --out_dir={tmp_path / "nodata"}',
             os.path.join(REPO, 'data', 'no_such_set'): 'python data/prepare.py --input=YOUR_TEXT --name=no_such_set',
             os.path.join(REPO, 'data', 'wikitext2'): 'data/wikitext2/prepare.py'}
    for folder, hint in cases.items():
        with pytest.raises(tokenizer.TokenizerError, match='not prepared') as e:
            tokenizer.read_meta(folder)
        assert hint in str(e.value) and 'data/data' not in str(e.value)


def test_a_checkpoint_whose_tokenizer_cannot_be_rebuilt_is_one_user_error():
    # sample.py, the server and eval.py all rebuild a checkpoint's tokenizer through checkpoint.load_tokenizer
    import pytest
    from core.training import checkpoint
    from core.errors import UserError
    with pytest.raises(UserError, match='cannot rebuild'):
        checkpoint.load_tokenizer({'tokenizer': {'kind': 'char'}}, 'ckpt.pt')  # no 'chars'
    with pytest.raises(UserError, match='pass --dataset'):
        checkpoint.load_tokenizer({}, 'ckpt.pt')  # no tokenizer and no dataset named
    tok, where = checkpoint.load_tokenizer({'tokenizer': {'kind': 'char', 'chars': ['a', 'b']}}, 'ckpt.pt')
    assert tok.encode('ba') == [1, 0] and where == 'the checkpoint'
