"""The one prompt reader (core/inference/prompts.py) behind sample.py --start=FILE:path and eval.py --prompts=path."""


import pytest

from conftest import assert_one_line_error, run_script
from core.inference.prompts import read_prompt_file
from core.errors import UserError


def test_a_folder_a_missing_file_and_other_bytes_are_named_for_what_they_are(tmp_path):
    with pytest.raises(UserError, match=r"prompt file '.*' is a folder, not a text file"):
        read_prompt_file(str(tmp_path))
    with pytest.raises(UserError, match=r"prompt file '.*nope.txt' not found"):
        read_prompt_file(str(tmp_path / 'nope.txt'))
    (tmp_path / 'latin1.txt').write_bytes('café'.encode('latin-1'))
    with pytest.raises(UserError, match=r"is not UTF-8 text \(byte 3"):
        read_prompt_file(str(tmp_path / 'latin1.txt'))
    (tmp_path / 'bom.txt').write_bytes('\ufeffROMEO:'.encode('utf-8'))
    assert read_prompt_file(str(tmp_path / 'bom.txt')) == 'ROMEO:'


def test_sample_and_eval_say_a_prompt_folder_is_a_folder(tmp_path):
    from test_serve import save_run
    save_run(str(tmp_path / 'run'))
    folder = tmp_path / 'prompts'
    folder.mkdir()
    r = run_script('sample.py', f'--out_dir={tmp_path / "run"}', f'--start=FILE:{folder}', '--device=cpu',
                   '--max_new_tokens=2')
    assert_one_line_error(r, 'is a folder, not a text file')
    r = run_script('eval.py', f'--out_dir={tmp_path / "run"}', f'--prompts={folder}', '--device=cpu')
    assert_one_line_error(r, 'is a folder, not a text file')
