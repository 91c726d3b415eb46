"""Ctrl-C and SIGTERM land in seconds wherever train.py is: in an evaluation, in the compile warm-up, in a save.
Real signals to a real train.py process; the slow part is made slow on purpose by a runner that wraps it."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from core.training import checkpoint
from conftest import REPO, TINY

RUNNER = r'''
import runpy, sys, time
{patch}
sys.argv = ['train.py'] + sys.argv[1:]
runpy.run_path('train.py', run_name='__main__')
'''


def start(args, patch='', env=None):
    proc = subprocess.Popen([sys.executable, '-c', RUNNER.format(patch=patch), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=dict(os.environ, PYTHONUNBUFFERED='1', PYTHONPATH=REPO, OMP_NUM_THREADS='1',
                                     **(env or {})))
    watchdog = threading.Timer(600, proc.kill)  # a hung run fails the test instead of hanging it
    watchdog.daemon = True
    watchdog.start()
    return proc


def read_until(proc, pattern, lines):
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"ended before printing {pattern!r}:\n{''.join(lines)}\n{proc.stderr.read()}")


def finish(proc, lines):
    """(exit code, stdout, stderr, seconds it took to exit)."""
    t0 = time.time()
    rest, err = proc.communicate(timeout=600)
    return proc.returncode, ''.join(lines) + rest, err, time.time() - t0


def test_a_signal_in_an_evaluation_stops_it_between_batches_and_records_nothing(char_data, tmp_path):
    # the step-0 evaluation of 200,000 batches would take an hour
    proc = start([f'--dataset={char_data}', f'--out_dir={tmp_path}', *TINY, '--eval_iters=200000',
                  '--max_iters=1000', '--eval_interval=500'])
    lines = []
    read_until(proc, r'^device cpu', lines)  # the last line before the loop and its first evaluation
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    code, out, err, seconds = finish(proc, lines)
    assert code == 130 and 'Traceback' not in err, err
    assert seconds < 120, f"the evaluation went on for {seconds:.0f} s after the signal"
    assert 'step 0: evaluation interrupted, not recorded' in out and 'stopped at iteration 0' in out
    assert 'val loss' not in out
    with open(tmp_path / 'metrics.jsonl') as f:
        assert [r for r in map(json.loads, f) if 'val_loss' in r] == []
    saved = checkpoint.load(str(tmp_path / 'ckpt.pt'))
    assert saved['iter_num'] == 0 and saved['evaluated'] is False  # the resumed run does the evaluation


SLOW_WARM_UP = '''
from core.training import init
def warm_up(*args, **kwargs):
    print('warming up', flush=True)
    time.sleep(600)
init.warm_up = warm_up
'''


def test_a_signal_in_the_compile_warm_up_stops_at_once(char_data, tmp_path):
    # TORCH_COMPILE_DISABLE makes torch.compile a no-op and any program passes the compiler check: the warm-up
    # path alone, made ten minutes long
    proc = start([f'--dataset={char_data}', f'--out_dir={tmp_path}', *TINY, '--compile=True', '--max_iters=10'],
                 SLOW_WARM_UP, env={'TORCH_COMPILE_DISABLE': '1', 'CXX': sys.executable})
    lines = []
    read_until(proc, r'^warming up', lines)
    proc.send_signal(signal.SIGTERM)
    code, out, err, seconds = finish(proc, lines)
    assert code == 128 + signal.SIGTERM and 'Traceback' not in err, err
    assert seconds < 120
    assert 'interrupted during the compile warm-up: nothing was trained, so nothing to save' in err
    assert not os.path.exists(tmp_path / 'ckpt.pt') and not os.path.exists(tmp_path / 'run.lock')


SLOW_SAVE = '''
from core import fileio
def write_bytes(path, data):
    def writer(tmp):
        with open(tmp, 'wb') as f:
            f.write(data)
        print('slow save', flush=True)
        time.sleep(600)
    fileio.write_with(path, writer)
fileio.write_bytes = write_bytes
'''


def test_in_a_save_a_second_signal_says_so_and_a_third_abandons_it(char_data, tmp_path):
    proc = start([f'--dataset={char_data}', f'--out_dir={tmp_path}', *TINY, '--max_iters=1000',
                  '--eval_interval=500'], SLOW_SAVE)
    lines = []
    read_until(proc, r'^iter 2:', lines)
    proc.send_signal(signal.SIGINT)  # the first: finish the step and save
    read_until(proc, r'^slow save', lines)
    proc.send_signal(signal.SIGINT)
    read_until(proc, r'SIGINT received: still saving the checkpoint of iteration \d+ to .*; press Ctrl-C once more',
               lines)
    proc.send_signal(signal.SIGINT)
    code, out, err, seconds = finish(proc, lines)
    assert code == 130 and 'Traceback' not in err, err
    assert seconds < 120
    assert f'interrupted: the save was abandoned; {tmp_path} keeps its last checkpoint' in err
    assert not os.path.exists(tmp_path / 'ckpt.pt')  # nothing half-written in its place
    assert not glob.glob(str(tmp_path / '*.tmp'), include_hidden=True)
