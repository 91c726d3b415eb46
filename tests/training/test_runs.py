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
