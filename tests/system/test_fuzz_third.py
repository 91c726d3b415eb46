"""A third fuzz pass: user mistakes that ended in a traceback, a crash or a hang instead of one error line, in data
preparation, export, sample.py's chat, the configurator and serve.py's chat requests."""

import os

import pytest

from conftest import ONE_THREAD, run_inprocess, run_script


def assert_one_error_line(code, err, fragment, what=''):
    lines = err.strip().splitlines()
    assert code == 2 and 'Traceback' not in err, (what, code, err[-3000:])
    assert len(lines) == 1 and lines[0].startswith('error: '), (what, err[-3000:])
    assert fragment in lines[0], (what, fragment, lines[0])


def test_prepare_refuses_a_bpe_vocab_beyond_any_model(tmp_path):
    # --vocab_size=10000000000 (a typo of zeros): the trainer sized a table by it and the process aborted in Rust
    # ("memory allocation of 566935683088 bytes failed", exit 134); a fresh interpreter, so a crash fails the test
    text = tmp_path / 'notes.txt'
    text.write_text('the quick brown fox jumps over the lazy dog\n' * 50)
    r = run_script('data/prepare.py', f'--input={text}', f'--out_dir={tmp_path / "out"}', '--tokenizer=bpe',
                   '--vocab_size=10000000000', '--progress=False', env=dict(ONE_THREAD, RAYON_NUM_THREADS='1'),
                   timeout=60)
    assert_one_error_line(r.returncode, r.stderr, 'vocab_size must be at most')
    assert not os.path.exists(tmp_path / 'out')


@pytest.mark.parametrize('fmt', ['text', 'chat'])
def test_prepare_names_a_jsonl_line_nested_too_deeply(fmt, tmp_path):
    # a line of '[' nested 100,000 deep was json's RecursionError, a traceback, instead of the line's number
    good = ('{"text": "hello there"}' if fmt == 'text' else
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}')
    (tmp_path / 'in.jsonl').write_text(f'{good}\n{good}\n' + '[' * 100_000 + '\n')
    code, _, err = run_inprocess('data/prepare.py', f'--input={tmp_path / "in.jsonl"}', f'--format={fmt}',
                                 f'--out_dir={tmp_path / "out"}', '--progress=False')
    assert_one_error_line(code, err, 'in.jsonl:3: not JSON', fmt)
