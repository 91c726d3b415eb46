"""More malformed input that once ended in a traceback or a crash instead of one error line: a thread count
beyond the machine, hand-edited metrics.jsonl records, and plan.py's output paths and budget."""

import os

import pytest

from conftest import ONE_THREAD, run_inprocess, run_script

TINY = ['--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16', '--batch_size=2',
        '--gradient_accumulation_steps=1', '--eval_iters=1', '--device=cpu', '--compile=False']


def assert_one_error_line(code, err, fragment, what=''):
    lines = err.strip().splitlines()
    assert code == 2 and 'Traceback' not in err, (what, code, err)
    assert len(lines) == 1 and lines[0].startswith('error: '), (what, err)
    assert fragment in lines[0], (what, fragment, lines[0])


@pytest.fixture(scope='module')
def tiny_run(char_data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('tiny_run'))
    code, _, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={out}', *TINY, '--max_iters=1',
                                 '--eval_interval=1')
    assert code == 0, err
    return out


@pytest.mark.parametrize('script', ['train.py', 'sample.py', 'serve.py', 'bench.py', 'studies/bench_generate.py'])
def test_threads_beyond_the_machine_are_refused(script, tiny_run, char_data, tmp_path):
    # torch started OpenMP's threads and the process died of a segfault, with no message at all; in a fresh
    # interpreter, so that a crash fails this test instead of ending the test run
    args = {'train.py': [f'--dataset={char_data}', f'--out_dir={tmp_path / "out"}', *TINY, '--max_iters=1'],
            'sample.py': [f'--out_dir={tiny_run}', '--device=cpu', '--max_new_tokens=2', '--num_samples=1'],
            'serve.py': [f'--out_dir={tiny_run}', '--device=cpu', '--port=0'],
            'bench.py': ['--device=cpu', '--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16',
                         '--vocab_size=64', '--batch_size=1', '--iters=1', '--compile=False'],
            'studies/bench_generate.py': ['--n_layer=1', '--n_head=2', '--n_embd=16', '--tokens=2',
                                          '--batch=1']}[script]
    r = run_script(script, *args, '--threads=100000', env=ONE_THREAD, timeout=120)
    assert_one_error_line(r.returncode, r.stderr, 'threads must be', script)
