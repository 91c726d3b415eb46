"""A fourth fuzz pass: user input that ended in a traceback, or lost a user's file or work, instead of one error line:
checkpoint fields saved as None, plan.py's trial plot, config files that exit, eval's markdown over a checkpoint and
the import graph's --out."""

import os

import pytest

from conftest import FUZZ_TINY, assert_one_error_line, run_inprocess

SAMPLE = ['--device=cpu', '--max_new_tokens=2', '--num_samples=1']


@pytest.mark.parametrize('field', ['iter_num', 'best_val_loss'])
def test_a_checkpoint_field_saved_as_none_is_read_as_absent(field, tiny_run, tmp_path):
    # check_fields let None through as "absent", but the readers' .get(key, default) returned None: a TypeError in
    # sample.py's 'best val loss {:.4f}' and in train.py's resume (iter_num - 1, val_loss < best_val_loss)
    import torch
    state = torch.load(os.path.join(tiny_run, 'ckpt.pt'), weights_only=True)
    state[field] = None
    torch.save(state, tmp_path / 'ckpt.pt')
    code, _, err = run_inprocess('sample.py', f'--out_dir={tmp_path}', *SAMPLE)
    assert code == 0 and 'Traceback' not in err, err[-3000:]
    code, _, err = run_inprocess('train.py', f'--out_dir={tmp_path}', '--init_from=resume', *FUZZ_TINY, '--max_iters=3')
    assert_one_error_line(code, err, f'has no {field}', field)
