"""A run is never lost: atomic checkpoints under kill -9 and full disks, bitwise-exact resume,
interrupts, divergence, early stopping and bad checkpoint files.

Most runs go through run_inprocess (train.py executed in this interpreter, so a run costs its work and
not a torch import); the signal tests need real processes."""

import errno
import glob
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from conftest import ITER_LINE, ONE_THREAD, REPO, assert_one_line_error, run_inprocess, run_script  # noqa: F401

from core import fileio
from core.training import checkpoint
from core.errors import UserError

# dropout on and two micro-steps, so an exact resume needs the RNG and the sampler state
BASE = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
        '--gradient_accumulation_steps=2', '--dropout=0.1', '--eval_iters=2', '--eval_interval=1',
        '--log_interval=1', '--warmup_iters=3', '--lr_decay_iters=40', '--learning_rate=3e-3',
        '--device=cpu', '--compile=False', '--seed=7']
def train(out_dir, data, *args):
    return run_inprocess('train.py', f'--dataset={data}', f'--out_dir={out_dir}', *BASE, *args)


def metrics(out_dir):
    with open(os.path.join(out_dir, 'metrics.jsonl')) as f:
        return [{k: v for k, v in r.items() if k in ('iter', 'tokens', 'train_loss', 'val_loss', 'lr')}
                for r in map(json.loads, f) if 'val_loss' in r]  # the evaluations


def step_losses(stdout):
    return {int(i): loss for i, loss in ITER_LINE.findall(stdout)}


def assert_same_state(a, b):
    """Two checkpoints hold bitwise the same training state."""
    a, b = (checkpoint.load(p) for p in (a, b))
    assert a['iter_num'] == b['iter_num']
    assert a['model'].keys() == b['model'].keys()
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k
    sa, sb = a['optimizer']['state'], b['optimizer']['state']
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k]), (i, k)
    assert torch.equal(a['rng']['torch'], b['rng']['torch'])
    assert torch.equal(a['data_rng'], b['data_rng'])


_references = {}


def reference(data, tmp_path_factory, iters):
    """An uninterrupted run of `iters` iterations: (out_dir, stdout)."""
    if iters not in _references:
        out = str(tmp_path_factory.mktemp(f'reference{iters}'))
        code, stdout, stderr = train(out, data, f'--max_iters={iters}')
        assert code == 0, stderr
        _references[iters] = out, stdout
    return _references[iters]


# ----- checkpoint files -----

def _save_forever(path, first):
    # the payload is built with numpy: torch ops in a forked child may hit a thread pool that did not survive the fork
    i = first
    while True:
        w = torch.from_numpy(np.full(1_000_000, i, dtype=np.float32))  # 4 MB
        checkpoint.save({'model': {'w': w}, 'model_args': {'i': i}}, path)
        i += 1


def test_kill9_during_saves_always_leaves_a_loadable_checkpoint(tmp_path):
    path = str(tmp_path / 'ckpt.pt')
    rng = random.Random(0)
    last, kills, mid_write = -1, 0, 0
    start = time.monotonic()
    # about 6 s; longer only on a machine so loaded that the window was not hit often enough yet (240 s is a hang guard)
    while (time.monotonic() < start + 6 or kills < 10 or last < 0 or mid_write < 3) and time.monotonic() < start + 240:
        pid = os.fork()
        if pid == 0:
            try:
                _save_forever(path, last + 1)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
        mid_write += bool(glob.glob(str(tmp_path / '.ckpt.pt.*.tmp')))  # killed between making the temporary file and the rename
        if os.path.exists(path):
            ckpt = checkpoint.load(path)
            i = ckpt['model_args']['i']
            assert i >= last, "an older checkpoint came back"
            assert torch.all(ckpt['model']['w'] == i), "a checkpoint mixes two saves"
            last = i
    assert last >= 0 and mid_write >= 3, (kills, mid_write, last)
    # the next successful save sweeps away what the killed writers left
    checkpoint.save({'model': {}, 'model_args': {}}, path)
    assert os.listdir(tmp_path) == ['ckpt.pt']


def test_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / 'ckpt.pt')
    checkpoint.save({'model': {'w': torch.ones(3)}, 'model_args': {}}, path)
    before = open(path, 'rb').read()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    class FullDisk(io.FileIO):
        def write(self, data):
            no_space()

    failures = {'replace': (os, 'replace', no_space), 'fsync': (os, 'fsync', no_space),
                'write': (fileio, 'open', lambda p, mode='r', *a, **k: FullDisk(p, 'wb') if mode == 'wb' else
                          open(p, mode, *a, **k))}
    for name, (module, attr, fake) in failures.items():
        with monkeypatch.context() as m:
            m.setattr(module, attr, fake, raising=False)
            with pytest.raises(UserError) as e:
                checkpoint.save({'model': {'w': torch.zeros(3)}, 'model_args': {}}, path)
        message = str(e.value)
        assert path in message and os.strerror(errno.ENOSPC) in message and 'previous one is untouched' in message, name
        assert open(path, 'rb').read() == before, name
        assert os.listdir(tmp_path) == ['ckpt.pt'], name
    assert torch.equal(checkpoint.load(path)['model']['w'], torch.ones(3))


def _bad_files(folder):
    """name -> a file that is not a usable checkpoint."""
    good = os.path.join(folder, 'good.pt')
    torch.save({'model': {'w': torch.ones(10_000)}, 'model_args': {}}, good)
    data = open(good, 'rb').read()
    files = {}

    def put(name, content):
        path = os.path.join(folder, name, 'ckpt.pt')
        os.makedirs(os.path.dirname(path))
        with open(path, 'wb') as f:
            f.write(content)
        files[name] = path

    put('truncated', data[:len(data) // 2])
    put('empty', b'')
    put('random', random.Random(1).randbytes(50_000))
    buf = io.BytesIO()
    torch.save({'weights': torch.ones(3), 'step': 5}, buf)
    put('foreign', buf.getvalue())
    buf = io.BytesIO()
    torch.save({'model': {'w': torch.ones(3)}, 'model_args': {}, 'extra': io.StringIO('a Python object')}, buf)
    put('object', buf.getvalue())
    return files


def test_bad_checkpoint_files_give_one_line(tmp_path, char_data):
    files = _bad_files(str(tmp_path))
    expected = {'truncated': 'truncated or corrupted', 'empty': 'empty', 'random': 'not a PyTorch checkpoint',
                'foreign': 'not a checkpoint of this repository', 'object': '_io.StringIO'}
    for name, path in files.items():
        with pytest.raises(UserError, match=re.escape(path)) as e:
            checkpoint.load(path)
        assert expected[name] in str(e.value) and '\n' not in str(e.value)
        code, _, err = train(os.path.dirname(path), char_data, '--init_from=resume', '--max_iters=1')
        assert code == 2 and 'Traceback' not in err
        assert err.strip().splitlines() == [f'error: {e.value}'], err
    # and through the real exit path of both scripts that read checkpoints
    r1 = run_script('train.py', f'--dataset={char_data}', f"--out_dir={os.path.dirname(files['object'])}",
                    '--init_from=resume', '--device=cpu', env=ONE_THREAD)
    assert_one_line_error(r1, files['object'], '_io.StringIO')
    if os.path.exists(os.path.join(REPO, 'sample.py')):
        r2 = run_script('sample.py', f"--out_dir={os.path.dirname(files['truncated'])}", '--ckpt=latest',
                        '--device=cpu', env=ONE_THREAD)
        assert_one_line_error(r2, files['truncated'])


# ----- exact resume -----

def test_resume_is_bitwise_exact(char_data, tmp_path, tmp_path_factory):
    ref_dir, ref_out = reference(char_data, tmp_path_factory, 16)
    out = str(tmp_path)
    code, first, err = train(out, char_data, '--max_iters=8')
    assert code == 0, err
    code, second, err = train(out, char_data, '--max_iters=16', '--init_from=resume')
    assert code == 0, err
    assert 'resumed from' in second and 'at iteration 8' in second
    # every iteration's losses (eval at every step: full precision in metrics.jsonl) and the final state
    assert metrics(out) == metrics(ref_dir)
    assert len(metrics(out)) == 17
    assert {**step_losses(first), **step_losses(second)} == step_losses(ref_out)
    assert_same_state(os.path.join(out, 'ckpt.pt'), os.path.join(ref_dir, 'ckpt.pt'))


def same_tree(a, b, where='state'):
    """Two nested checkpoint values are bitwise equal (tensors with torch.equal)."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            same_tree(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same_tree(x, y, f'{where}[{i}]')
    else:
        assert a == b, where


def test_muon_resume_is_bitwise_exact(char_data, tmp_path):
    # Muon's momentum buffers and AdamW's moments both come back: 6 straight steps equal 3, resume, 3
    ref, out = str(tmp_path / 'ref'), str(tmp_path / 'run')
    muon = ['--optimizer=muon', '--eval_interval=3']
    assert train(ref, char_data, *muon, '--max_iters=6')[0] == 0
    assert train(out, char_data, *muon, '--max_iters=3')[0] == 0
    code, second, err = train(out, char_data, *muon, '--max_iters=6', '--init_from=resume')
    assert code == 0 and 'at iteration 3' in second, err
    a, b = (checkpoint.load(os.path.join(d, 'ckpt.pt')) for d in (out, ref))
    assert a['iter_num'] == 6 and len(a['optimizer']['optimizers']) == 2
    for key in ('model', 'optimizer', 'rng', 'data_rng'):
        same_tree(a[key], b[key], key)


def test_time_schedule_resumes_on_the_saved_clock(char_data, tmp_path):
    # lr_schedule='time' decays over max_seconds of training: a resumed run goes on from the clock it saved
    # instead of starting the decay again from the peak
    out = str(tmp_path)
    # a linear decay from the first second on (warmdown over the whole budget), so any elapsed time shows
    # a short budget, so even a fast machine's 12 steps move the lr visibly (0.07 s of 4 s is 1.75%)
    timed = ['--lr_schedule=time', '--max_seconds=4', '--warmdown_frac=1', '--warmup_iters=0', '--dropout=0',
             '--eval_interval=100']
    code, first, err = train(out, char_data, *timed, '--max_iters=12')
    assert code == 0, err
    saved = checkpoint.load(os.path.join(out, 'ckpt.pt'))['train_seconds']
    assert saved > 0
    code, second, err = train(out, char_data, *timed, '--max_iters=14', '--init_from=resume')
    assert code == 0, err
    lrs = lambda s: [float(v) for v in re.findall(r'^iter \d+: loss \S+, lr (\S+),', s, re.M)]
    assert lrs(first)[-1] < 3e-3 * 0.995  # BASE's peak: the first run's decay is visible in 3 digits
    assert lrs(second) and lrs(second)[0] <= lrs(first)[-1], (lrs(first), lrs(second))
    assert checkpoint.load(os.path.join(out, 'ckpt.pt'))['train_seconds'] > saved


def test_compiled_run_saves_and_resumes_without_the_compile_prefix(char_data, tmp_path, monkeypatch):
    # torch.compile's wrapper names every weight '_orig_mod.<name>'; inductor's CPU code generation takes
    # minutes on a loaded 2-core machine, so the same wrapper runs with the aot_eager backend here (the
    # GPU tests run inductor)
    from model import GPT, GPTConfig
    real = torch.compile
    monkeypatch.setattr(torch, 'compile', lambda model, **kw: real(model, backend='aot_eager'))
    wrapped = torch.compile(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=65)))
    assert all(k.startswith('_orig_mod.') for k in wrapped.state_dict())  # what a careless save would write
    out = str(tmp_path)
    code, first, err = train(out, char_data, '--compile=True', '--max_iters=2', '--eval_interval=2')
    assert code == 0 and 'compiling the model' in first and 'compile True' in first, err
    raw = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)['model']  # as saved, before any stripping
    plain = GPT(GPTConfig(**checkpoint.load(os.path.join(out, 'ckpt.pt'))['model_args'])).state_dict()
    assert raw.keys() == plain.keys()
    code, second, err = train(out, char_data, '--compile=True', '--max_iters=3', '--eval_interval=3',
                              '--init_from=resume')
    assert code == 0 and 'at iteration 2' in second, err


def test_always_save_checkpoint_and_the_save_at_max_seconds(char_data, tmp_path):
    # learning rate 0: the val loss never improves on the first eval's (at iteration 0, which is not
    # saved), so only always_save_checkpoint writes ckpt.pt at the later evals
    frozen = ['--learning_rate=0', '--min_lr=0', '--dropout=0', '--eval_interval=2', '--max_iters=4']
    for always in (False, True):
        out = str(tmp_path / str(always))
        code, _, err = train(out, char_data, *frozen, f'--always_save_checkpoint={always}')
        assert code == 0, err
        path = os.path.join(out, 'ckpt.pt')
        assert os.path.exists(path) == always and not os.path.exists(os.path.join(out, 'best.pt'))
        if always:
            assert checkpoint.load(path)['iter_num'] == 4
    # at the time budget the run evaluates, saves and stops, far from its max_iters and eval_interval
    out = str(tmp_path / 'timed')
    code, stdout, err = train(out, char_data, '--max_seconds=2', '--max_iters=100000', '--eval_interval=100000')
    assert code == 0, err
    last = checkpoint.load(os.path.join(out, 'ckpt.pt'))
    assert 0 < last['iter_num'] < 100000 and last['train_seconds'] >= 2
    assert re.search(rf"^step {last['iter_num']}: train loss", stdout, re.M)


def test_vocab_is_padded_to_a_multiple_of_64_only_above_256(char_data, tmp_path):
    from conftest import write_dataset
    from core.data import tokenizer
    rng = random.Random(0)
    text = ''.join(rng.choice([chr(0x100 + i) for i in range(300)]) for _ in range(20_000))
    big = write_dataset(str(tmp_path / 'data300'), tokenizer.char(text), text)
    with open(os.path.join(char_data, 'meta.json')) as f:
        small = json.load(f)['vocab_size']
    assert small <= 256
    for data, want in ((char_data, small), (big, 320)):
        out = str(tmp_path / str(want))
        code, _, err = train(out, data, '--max_iters=2', '--eval_interval=2')
        assert code == 0, err
        assert checkpoint.load(os.path.join(out, 'ckpt.pt'))['model_args']['vocab_size'] == want


def test_resume_refuses_another_architecture_and_reports_changed_keys(char_data, tmp_path, tmp_path_factory):
    ref_dir, _ = reference(char_data, tmp_path_factory, 16)
    out = str(tmp_path / 'run')
    shutil.copytree(ref_dir, out)
    code, _, err = train(out, char_data, '--init_from=resume', '--n_layer=3', '--n_head=4')
    assert code == 2 and 'Traceback' not in err
    [line] = err.strip().splitlines()
    assert line.startswith('error: ') and 'architecture differs' in line
    assert 'n_layer (checkpoint 2, config 3)' in line and 'n_head (checkpoint 2, config 4)' in line
    # model construction errors on the resume path are one line too
    code, _, err = train(out, char_data, '--init_from=resume', '--dropout=1.5')
    assert code == 2 and err.strip().splitlines() == ['error: cannot resume ' + os.path.join(out, 'ckpt.pt') +
                                                      ': dropout must be in [0, 1), got 1.5']
    # training-only keys may change, and the change is printed
    code, stdout, err = train(out, char_data, '--init_from=resume', '--max_iters=16', '--learning_rate=1e-3')
    assert code == 0, err
    assert 'resume: changed learning_rate 0.003 -> 0.001' in stdout



def test_resume_of_a_checkpoint_from_before_the_gelu_key_keeps_tanh(char_data, tmp_path, tmp_path_factory):
    ref_dir, _ = reference(char_data, tmp_path_factory, 16)
    out = str(tmp_path / 'run')
    shutil.copytree(ref_dir, out)
    path = os.path.join(out, 'ckpt.pt')
    old = torch.load(path, weights_only=True)
    assert old['model_args']['gelu'] == 'erf'  # what a run from scratch records now
    del old['model_args']['gelu'], old['config']['gelu']
    checkpoint.save(old, path)
    code, _, err = train(out, char_data, '--init_from=resume', '--max_iters=17')
    assert code == 0, err
    assert torch.load(path, weights_only=True)['model_args']['gelu'] == 'tanh'


# ----- interrupts -----

def _start(args):
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'train.py'), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=dict(os.environ, PYTHONUNBUFFERED='1', **ONE_THREAD))
    watchdog = threading.Timer(600, proc.kill)  # a hung run fails the test instead of hanging it
    watchdog.daemon = True
    watchdog.start()
    return proc


def _read_until(proc, pattern, lines):
    """Read stdout lines until one matches pattern; fail if the process ends first."""
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"process ended before printing {pattern!r}:\n{''.join(lines)}\n{proc.stderr.read()}")


def test_sigint_saves_and_the_resume_matches_an_uninterrupted_run(char_data, tmp_path, tmp_path_factory):
    out = str(tmp_path)
    args = [f'--dataset={char_data}', f'--out_dir={out}', *BASE]
    proc = _start(args + ['--max_iters=1000'])
    lines = []
    _read_until(proc, r'^iter 2:', lines)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=300)
    stdout = ''.join(lines) + rest
    assert proc.returncode == 128 + signal.SIGINT, err
    assert 'SIGINT received' in stdout and 'Traceback' not in err
    stopped = re.search(r'stopped at iteration (\d+); resume with: python train\.py (.*) --init_from=resume$',
                        stdout, re.M)
    assert stopped, stdout
    k = int(stopped.group(1))
    assert checkpoint.load(os.path.join(out, 'ckpt.pt'))['iter_num'] == k
    # the resume goes on to the reference's length and matches it bit for bit, step by step
    total = max(16, k + 4)
    ref_dir, ref_out = reference(char_data, tmp_path_factory, total)
    code, second, err = train(out, char_data, '--init_from=resume', f'--max_iters={total}')
    assert code == 0, err
    assert 'resume: changed max_iters 1000 -> ' + str(total) in second
    assert metrics(out) == metrics(ref_dir)
    assert {**step_losses(stdout), **step_losses(second)} == step_losses(ref_out)
    assert_same_state(os.path.join(out, 'ckpt.pt'), os.path.join(ref_dir, 'ckpt.pt'))


def test_sigterm_saves_and_exits_like_sigint(char_data, tmp_path):
    out = str(tmp_path)
    proc = _start([f'--dataset={char_data}', f'--out_dir={out}', *BASE, '--max_iters=1000'])
    lines = []
    _read_until(proc, r'^iter 2:', lines)
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=300)
    stdout = ''.join(lines) + rest
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert 'SIGTERM received' in stdout and 'Traceback' not in err
    k = int(re.search(r'stopped at iteration (\d+); resume with', stdout).group(1))
    saved = checkpoint.load(os.path.join(out, 'ckpt.pt'))
    assert saved['iter_num'] == k and saved['evaluated'] is False


def test_second_sigint_exits_at_once(char_data, tmp_path):
    out = str(tmp_path)
    # steps of a second or more, so the second signal lands inside the step the first one lets finish
    proc = _start([f'--dataset={char_data}', f'--out_dir={out}', '--n_layer=4', '--n_head=4', '--n_embd=128',
                   '--block_size=64', '--batch_size=16', '--gradient_accumulation_steps=8', '--eval_interval=1',
                   '--eval_iters=1', '--max_iters=1000', '--device=cpu', '--compile=False'])
    lines = []
    _read_until(proc, r'^saved checkpoint', lines)  # the save at iteration 1
    proc.send_signal(signal.SIGINT)
    _read_until(proc, r'SIGINT received', lines)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=300)
    stdout = ''.join(lines) + rest
    assert proc.returncode == 130  # the shell's code for Ctrl-C
    assert 'stopped at iteration' not in stdout, "the second Ctrl-C waited for the step and the save"
    assert 'Traceback' not in err and 'interrupted' in err
    assert checkpoint.load(os.path.join(out, 'ckpt.pt'))['iter_num'] >= 1
    assert not glob.glob(os.path.join(out, '*.tmp'), include_hidden=True)


# ----- divergence and early stopping -----

def nan_loss_at(monkeypatch, iterations, micro_steps):
    """Make the training loss (and so every gradient) NaN at these iterations, by wrapping GPT.forward in
    this interpreter: train.py run in-process uses the same class. Evals run without grad and stay finite."""
    import model as model_lib
    real_forward, calls = model_lib.GPT.forward, [0]

    def forward(self, idx, targets=None, *args, **kwargs):
        logits, loss = real_forward(self, idx, targets, *args, **kwargs)
        if loss is not None and torch.is_grad_enabled():
            if calls[0] // micro_steps in iterations:
                loss = loss * float('nan')
            calls[0] += 1
        return logits, loss

    monkeypatch.setattr(model_lib.GPT, 'forward', forward)


def test_nan_steps_are_skipped_and_a_run_of_them_stops(char_data, tmp_path, monkeypatch):
    out = str(tmp_path)
    nan_loss_at(monkeypatch, {3, 4, 7, 8, 9}, micro_steps=2)  # BASE has two micro-steps
    code, stdout, err = train(out, char_data, '--max_iters=30', '--max_bad_steps=3', '--dropout=0')
    assert code == 3, err
    skipped = re.findall(r'^iter (\d+): non-finite loss or gradient norm, step skipped \((\d) in a row, (\d) in all\)',
                         stdout, re.M)
    assert skipped == [('3', '1', '1'), ('4', '2', '2'), ('7', '1', '3'), ('8', '2', '4'), ('9', '3', '5')]
    [line] = [l for l in err.splitlines() if l.startswith('error:')]
    assert 'diverged' in line and 'learning_rate' in line
    # a skipped step leaves the model as it was: the eval after it (same batches) gives the very same loss
    val = {r['iter']: r['val_loss'] for r in metrics(out)}
    assert list(val) == list(range(10))
    assert val[4] == val[3] and val[5] == val[4] and val[8] == val[7] and val[9] == val[8]
    assert val[6] != val[5] and val[3] != val[2]
    # nothing non-finite reached a checkpoint, and the best one is the best eval before the divergence
    best, latest = checkpoint.load(os.path.join(out, 'best.pt')), checkpoint.load(os.path.join(out, 'ckpt.pt'))
    assert latest['iter_num'] == 9
    assert best['best_val_loss'] == min(v for i, v in val.items() if i > 0)
    assert best['iter_num'] == min((v, i) for i, v in val.items() if i > 0)[1]
    for ckpt in (best, latest):
        assert all(torch.isfinite(t).all() for t in ckpt['model'].values())


def test_early_stopping(char_data, tmp_path):
    out = str(tmp_path)
    patience = 3
    # the learning rate falls to 0 after 3 steps, so the val loss stops improving there
    code, stdout, err = train(out, char_data, '--max_iters=100', f'--early_stop_patience={patience}',
                              '--warmup_iters=0', '--lr_decay_iters=3', '--min_lr=0', '--learning_rate=1e-2',
                              '--dropout=0')
    assert code == 0, err
    records = metrics(out)
    best, waited, expected_stop = float('inf'), 0, None
    for r in records:
        if r['val_loss'] < best:
            best, best_iter, waited = r['val_loss'], r['iter'], 0
        else:
            waited += 1
            if waited >= patience:
                expected_stop = r['iter']
                break
    assert expected_stop is not None and records[-1]['iter'] == expected_stop < 100
    assert f'early stop: val loss has not improved for {patience} evaluations' in stdout
    kept = checkpoint.load(os.path.join(out, 'best.pt'))
    assert kept['best_val_loss'] == best and kept['iter_num'] == best_iter
