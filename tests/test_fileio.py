"""core/fileio.py, the one atomic writer: a target is the old file or the new one, never half, and no
temporary file outlives a failed or killed write."""

import glob
import os
import subprocess
import sys

import pytest

from conftest import REPO
from core import fileio


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / 'a.json')
    fileio.write_json(path, {'v': 1})

    def half_then_fail(tmp):
        with open(tmp, 'w') as f:
            f.write('{"v": 2')
        raise OSError(28, 'No space left on device')

    with pytest.raises(OSError):
        fileio.write_with(path, half_then_fail)
    assert open(path).read() == '{\n "v": 1\n}\n' and os.listdir(tmp_path) == ['a.json']
    fileio.write_text(path, 'new')
    assert open(path).read() == 'new'


def test_leftovers_of_dead_writers_go_and_a_live_writers_stay(tmp_path):
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    for name in (f'.m.pt.{dead_pid}.x1.tmp', f'.m.pt.{dead_pid}.tmp', f'.m.pt.{os.getpid()}.tmp', f'.other.{dead_pid}.tmp'):
        (tmp_path / name).write_bytes(b'half')
    fileio.write_bytes(str(tmp_path / 'm.pt'), b'whole')
    # only m.pt's own leftovers, and only those of a process that is gone
    assert sorted(os.listdir(tmp_path)) == sorted(['m.pt', f'.m.pt.{os.getpid()}.tmp', f'.other.{dead_pid}.tmp'])


def test_folders_appear_whole_and_replacing_keeps_other_files(tmp_path):
    dest = str(tmp_path / 'export')

    def fail(path):
        raise OSError(5, 'Input/output error')

    with pytest.raises(OSError):
        fileio.write_folder(dest, {'a.txt': 'a', 'b.bin': fail})
    assert os.listdir(tmp_path) == []  # no half folder, no temporary one
    fileio.write_folder(dest, {'a.txt': 'a', 'b.bin': b'\x00\x01', 'c.txt': lambda p: open(p, 'w').write('c')})
    assert sorted(os.listdir(dest)) == ['a.txt', 'b.bin', 'c.txt'] and open(os.path.join(dest, 'c.txt')).read() == 'c'
    fileio.replace_files(dest, {'a.txt': 'A'})
    assert sorted(os.listdir(dest)) == ['a.txt', 'b.bin', 'c.txt'] and open(os.path.join(dest, 'a.txt')).read() == 'A'


def test_os_replace_lives_only_in_the_writer():
    # every file we produce goes through core/fileio.py; a rename elsewhere is a second writer
    offenders = []
    for path in glob.glob(os.path.join(REPO, '**', '*.py'), recursive=True):
        rel = os.path.relpath(path, REPO)
        if rel.startswith(('tests', '.venv')) or rel == os.path.join('core', 'fileio.py'):
            continue
        with open(path, encoding='utf-8') as f:
            if 'os.replace(' in f.read():
                offenders.append(rel)
    assert offenders == []
