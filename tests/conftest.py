import contextlib
import io
import json
import os
import re
import runpy
import signal
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# the test models are tiny: one thread each is faster, and it keeps subprocesses from fighting over cores
os.environ.setdefault('OMP_NUM_THREADS', '1')
import torch  # noqa: E402
torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))


def make_char_dataset(folder, n_chars=200_000):
    """A small character dataset from the committed Tiny Shakespeare, written as prepare does."""
    from core.data import tokenizer
    with open(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt'), encoding='utf-8') as f:
        text = f.read()[:n_chars]
    return write_dataset(folder, tokenizer.char(text), text)


def write_dataset(folder, tok, text):
    """text as a prepared dataset (90% train, 10% val) with tokenizer tok."""
    ids = np.array(tok.encode(text), dtype=np.uint16)
    n = int(len(ids) * 0.9)
    os.makedirs(folder, exist_ok=True)
    ids[:n].tofile(os.path.join(folder, 'train.bin'))
    ids[n:].tofile(os.path.join(folder, 'val.bin'))
    meta = {'vocab_size': tok.vocab_size, 'dtype': 'uint16', 'tokenizer': tok.state(),
            'splits': {'train': n, 'val': len(ids) - n}}
    with open(os.path.join(folder, 'meta.json'), 'w') as f:
        json.dump(meta, f)
    return folder


@pytest.fixture(scope='session')
def char_data(tmp_path_factory):
    return make_char_dataset(str(tmp_path_factory.mktemp('char_data')))


TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
        '--gradient_accumulation_steps=1', '--eval_iters=4', '--log_interval=1', '--warmup_iters=2',
        '--learning_rate=3e-3', '--device=cpu', '--compile=False']


def run_script(script, *args, timeout=300, input=None, env=None, cwd=REPO):
    """Run a top-level script of the repo in a fresh interpreter."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], capture_output=True, text=True,
                          timeout=timeout, input=input, cwd=cwd, env=full_env)


def assert_one_error_line(code, err, fragment='', what=''):
    """assert_one_line_error for a script run in this process (run_inprocess): exit code 2, no traceback, and
    stderr nothing but one 'error:' line holding fragment."""
    lines = err.strip().splitlines()
    assert code == 2 and 'Traceback' not in err, (what, code, err[-3000:])
    assert len(lines) == 1 and lines[0].startswith('error: '), (what, err[-3000:])
    assert fragment in lines[0], (what, fragment, lines[0])


def assert_one_line_error(result, *fragments):
    """A user mistake: exit code 2, no traceback, one 'error:' line naming what is wrong."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
    assert len(errors) == 1, result.stderr
    for frag in fragments:
        assert frag in errors[0], errors[0]
    return errors[0]


# Every architecture switch alone, bias off, and all the modern ones together: the model-level tests
# (causality, parameter and FLOP counts, KV cache) run over this one list, so a new switch added here
# is checked everywhere. A soft cap of 5 is low enough to bend real logits of the tiny test models.
SWITCHES = [
    {},
    dict(norm='rmsnorm'),
    dict(norm='none'),
    dict(prenorm=False),
    dict(pos_encoding='rope'),
    dict(pos_encoding='none'),
    dict(mlp='swiglu'),
    dict(mlp='relu2'),
    dict(qk_norm=True),
    dict(tie_embeddings=False),
    dict(logit_softcap=5.0),
    dict(bias=False),
    dict(value_embed=True, unet=True, zero_init_proj=True),
    dict(norm='rmsnorm', pos_encoding='rope', mlp='swiglu', qk_norm=True, tie_embeddings=False,
         logit_softcap=15.0, bias=False, attn_scale=0.3),
]


def switch_id(switch):
    return ','.join(f'{k}={v}' for k, v in switch.items()) or 'gpt2'


ITER_LINE = re.compile(r'^iter (\d+): loss (\S+),', re.M)


# one thread per run: on a loaded 2-core machine two OpenMP threads per process spin against each other
ONE_THREAD = {'OMP_NUM_THREADS': '1'}


# the smallest training run the fuzz suites start: train.py's keys, with max_iters left to each
FUZZ_TINY = ['--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16', '--batch_size=2',
             '--gradient_accumulation_steps=1', '--eval_iters=1', '--device=cpu', '--compile=False']


@pytest.fixture(scope='session')
def tiny_run(char_data, tmp_path_factory):
    """A run folder trained for one step on char_data, which the fuzz suites damage copies of."""
    out = str(tmp_path_factory.mktemp('tiny_run'))
    code, _, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={out}', *FUZZ_TINY, '--max_iters=1',
                                 '--eval_interval=1')
    assert code == 0, err
    return out


def run_inprocess(script, *args):
    """Run a top-level script of the repo in this interpreter and return (exit code, stdout, stderr).
    An exception that escapes goes through the hook the script installed, as it would at exit."""
    saved_argv, saved_hook, saved_threads = sys.argv, sys.excepthook, torch.get_num_threads()
    torch.set_num_threads(1)
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out, err = io.StringIO(), io.StringIO()
    code = 0
    sys.argv = [script, *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(os.path.join(REPO, script), run_name='__main__')
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException as e:  # noqa: B902  (what an uncaught exception would do)
                code = 1
                try:
                    sys.excepthook(type(e), e, e.__traceback__)
                except SystemExit as hook_exit:  # the hook ends a user mistake with exit code 2
                    code = hook_exit.code
    finally:
        sys.argv, sys.excepthook = saved_argv, saved_hook
        torch.set_num_threads(saved_threads)
        for s, h in saved_signals.items():
            signal.signal(s, h)
    return code, out.getvalue(), err.getvalue()
