"""core/training/runs.py: a run folder belongs to one run; an old run is never overwritten, only moved aside whole."""

import os

import pytest

from core.errors import UserError
from core.training import runs


def test_a_folder_of_step_checkpoints_alone_is_a_run(tmp_path):
    out = tmp_path / 'run'
    out.mkdir()
    (out / 'ckpt_00000500.pt').write_bytes(b'weights')  # keep_checkpoints' files, ckpt.pt and best.pt gone
    (out / 'metrics.jsonl').write_text('{}\n')
    with pytest.raises(UserError, match=r'already holds a run \(ckpt_00000500.pt\)'):
        runs.claim(str(out), 'scratch', overwrite=False)
    assert not (out / runs.LOCK_NAME).exists()  # a refused claim leaves no lock behind
    lock, moved = runs.claim(str(out), 'scratch', overwrite=True)
    try:
        assert sorted(os.listdir(moved)) == ['ckpt_00000500.pt', 'metrics.jsonl']  # all of the old run, whole
        assert os.listdir(out) == [runs.LOCK_NAME]  # the new run's lock stays where the new run is
        assert f'"pid": {os.getpid()}' in (out / runs.LOCK_NAME).read_text()
    finally:
        lock.release()
    assert not (out / runs.LOCK_NAME).exists()


def test_overwrite_refuses_to_move_aside_the_run_it_fine_tunes_from(tmp_path):
    # the source run was moved aside, then 'no checkpoint in ...' left an empty folder where the run had been
    out = tmp_path / 'run'
    out.mkdir()
    (out / 'ckpt.pt').write_bytes(b'weights')
    for source in (out, out / 'ckpt.pt', tmp_path / 'run' / '.' / 'ckpt.pt'):
        with pytest.raises(UserError, match=r"is in --out_dir=.*--overwrite=True would move aside"):
            runs.claim(str(out), str(source), overwrite=True)
        assert sorted(os.listdir(out)) == ['ckpt.pt']  # nothing moved, no lock left
    other = tmp_path / 'other.pt'
    other.write_bytes(b'weights')
    lock, moved = runs.claim(str(out), str(other), overwrite=True)  # from elsewhere, the old run moves aside
    lock.release()
    assert os.listdir(moved) == ['ckpt.pt']


def test_an_out_dir_that_is_a_file_is_said_to_be_one(tmp_path):
    # train.py --init_from=resume --out_dir=<run>/ckpt.pt read the checkpoint, then: cannot create out_dir (File exists)
    ckpt = tmp_path / 'ckpt.pt'
    ckpt.write_bytes(b'weights')
    with pytest.raises(UserError, match=rf"out_dir '{ckpt}' is a file, not a run folder; .* --out_dir={tmp_path}$"):
        runs.claim(str(ckpt), 'resume', overwrite=False)
    assert ckpt.read_bytes() == b'weights'
