"""core/inference/prompts.py: the one prompt-file reader of sample.py and eval.py."""

import os

import pytest

from core.errors import UserError
from core.inference.prompts import MAX_BYTES, prompts_in, read_prompt_file


def test_a_prompt_file_is_its_text_without_an_editors_byte_order_mark(tmp_path):
    path = tmp_path / 'p.txt'
    path.write_bytes('\ufeffTo be, or not\n\nto be'.encode('utf-8'))
    assert read_prompt_file(str(path)) == 'To be, or not\n\nto be'
    path.write_bytes(b'one\r\n\r\ntwo\n\n\n\nthree\n')
    assert prompts_in(str(path)) == ['one', 'two', 'three']


@pytest.mark.parametrize('make, words', [
    (lambda p: p, "is a folder"),  # was "not found"
    (lambda p: p / 'none.txt', "not found"),
    (lambda p: (p / 'l1.txt').write_bytes('caf\xe9'.encode('latin-1')) and p / 'l1.txt', "not UTF-8 text (byte 3"),
    (lambda p: (p / 'blank.txt').write_text('\n\n \n') and p / 'blank.txt', "holds no prompts"),
    (lambda p: os.mkfifo(p / 'fifo.txt') or p / 'fifo.txt', "is not a regular file"),  # waited for a writer forever
    (lambda p: '/dev/zero', "is not a regular file"),  # read until memory ran out
    (lambda p: (p / 'big.txt').touch() or os.truncate(p / 'big.txt', MAX_BYTES + 1) or p / 'big.txt', "64 MiB"),
])
def test_bad_prompt_files_are_one_line(tmp_path, make, words):
    with pytest.raises(UserError, match=words.replace('(', r'\(')):
        prompts_in(str(make(tmp_path)))
