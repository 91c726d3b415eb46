"""core/training/runs.py at its edges: the lock file read back by the json module after a killed run left a longer
one, a process taking its own lock again, a lock from another machine without flock, and old runs moved aside
within one second."""

import errno
import json
import os
import socket
import subprocess
import time

import pytest

from core.errors import UserError
from core.training import runs


def test_a_lock_over_a_killed_runs_longer_lock_file_holds_only_ours(tmp_path):
    # kill -9 leaves run.lock behind; a run with a long command wrote more bytes than ours will
    stale = {'pid': 999999, 'host': socket.gethostname(), 'started': 0, 'command': 'train.py ' + '--x=y ' * 40}
    (tmp_path / 'run.lock').write_text(json.dumps(stale) + '\n')
    lock = runs.RunLock(str(tmp_path)).acquire()
    try:
        with open(tmp_path / 'run.lock') as f:
            info = json.load(f)  # the whole file is one JSON object: ours, nothing of the old one after it
        assert info['pid'] == os.getpid() and info['host'] == socket.gethostname()
    finally:
        lock.release()


def test_a_process_takes_its_own_lock_again(tmp_path):
    # a script run twice in one interpreter (tests, notebooks) re-takes the lock its first run still holds
    first = runs.RunLock(str(tmp_path)).acquire()
    second = runs.RunLock(str(tmp_path)).acquire()
    try:
        with open(tmp_path / 'run.lock') as f:
            assert json.load(f)['pid'] == os.getpid()
    finally:
        second.release()
        first.release()
    assert not (tmp_path / 'run.lock').exists()


def test_without_flock_a_lock_from_another_machine_is_never_taken_over(tmp_path, monkeypatch):
    # on a shared file system without flock (ENOLCK) a pid is only meaningful on its own host: a pid that is dead
    # here may be a live run on the other machine
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, 'No locks available')
    monkeypatch.setattr(fcntl, 'flock', no_flock)
    p = subprocess.Popen(['true'])
    p.wait()  # a pid that is dead on this host
    (tmp_path / 'run.lock').write_text(json.dumps({'pid': p.pid, 'host': 'other-node-7', 'started': 0,
                                                   'command': 'train.py'}))
    with pytest.raises(UserError, match=rf"in use by another run: pid {p.pid} on other-node-7"):
        runs.RunLock(str(tmp_path)).acquire()
    # the same dead pid on this host is a stale lock, taken over
    (tmp_path / 'run.lock').write_text(json.dumps({'pid': p.pid, 'host': socket.gethostname()}))
    runs.RunLock(str(tmp_path)).acquire().release()


def test_a_third_run_moved_aside_in_the_same_second_gets_its_own_folder(tmp_path, monkeypatch):
    # the folder names carry the second: the first two of that second already exist
    monkeypatch.setattr(time, 'strftime', lambda fmt, *a: fmt.replace('%Y%m%d', '20240102').replace('%H%M%S', '030405'))
    out = tmp_path / 'run'
    out.mkdir()
    (out / 'ckpt.pt').write_bytes(b'third')
    base = str(out) + '-prev-20240102-030405'
    os.mkdir(base)
    os.mkdir(base + '-2')
    moved = runs.move_aside(str(out))
    assert moved == base + '-3'
    assert os.listdir(moved) == ['ckpt.pt'] and os.listdir(base) == [] and os.listdir(base + '-2') == []
