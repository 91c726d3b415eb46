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


def test_a_link_is_followed_and_a_pipe_or_device_is_written_into_not_replaced(tmp_path):
    # export.py --dest=/dev/null --force=True, run as root, once replaced the device with a plain file
    import stat
    real, link = tmp_path / 'real.txt', tmp_path / 'link.txt'
    real.write_text('old')
    link.symlink_to(real)
    fileio.write_text(str(link), 'new')
    assert link.is_symlink() and real.read_text() == 'new'
    pipe = tmp_path / 'pipe'
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # open first, so the writer's open does not wait
    try:
        fileio.write_bytes(str(pipe), b'through the pipe')
        assert os.read(reader, 100) == b'through the pipe'
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.stat(pipe).st_mode) and sorted(os.listdir(tmp_path)) == ['link.txt', 'pipe', 'real.txt']


def test_leftovers_of_dead_writers_go_and_a_live_writers_stay(tmp_path):
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    for name in (f'.m.pt.{dead_pid}.x1.tmp', f'.m.pt.{dead_pid}.tmp', f'.m.pt.{os.getpid()}.tmp', f'.other.{dead_pid}.tmp'):
        (tmp_path / name).write_bytes(b'half')
    fileio.write_bytes(str(tmp_path / 'm.pt'), b'whole')
    # only m.pt's own leftovers, and only those of a process that is gone
    assert sorted(os.listdir(tmp_path)) == sorted(['m.pt', f'.m.pt.{os.getpid()}.tmp', f'.other.{dead_pid}.tmp'])


@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='needs /proc, a folder nobody may add to, root included')
def test_a_place_that_refuses_new_entries_is_found_before_the_job_and_the_check_leaves_nothing(tmp_path):
    # /proc is a folder, so the file-or-folder checks passed it, and the job's own makedirs ended in a traceback
    assert 'nothing can be written in /proc ' in fileio.unwritable('/proc/x/runs', folder=True)
    assert 'nothing can be written in /proc ' in fileio.unwritable('/proc/plan.py')
    assert 'nothing can be written in /proc/self ' in fileio.unwritable('/proc/self', folder=True)  # itself
    (tmp_path / 'runs').mkdir()
    for path, folder in ((tmp_path / 'runs', True), (tmp_path / 'runs' / 'a' / 'b', True), (tmp_path / 'runs' / 'p.py', False)):
        assert fileio.unwritable(str(path), folder) is None
    assert os.listdir(tmp_path / 'runs') == []  # the check's own entry is gone
    # the scripts that named the folder before their job: one line, where plan.py's trials folder was a traceback
    from conftest import assert_one_line_error, run_script
    for script, arg in (('plan.py', '--work_dir=/proc/x'), ('studies/ablate.py', '--out_dir=/proc/x')):
        assert_one_line_error(run_script(script, arg), arg, 'nothing can be written in /proc ')


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
        # mutate.py's strings are the writer's lines it plants bugs into, not a writer
        if rel.startswith(('tests', '.venv')) or rel in (os.path.join('core', 'fileio.py'), os.path.join('studies', 'mutate.py')):
            continue
        with open(path, encoding='utf-8') as f:
            if 'os.replace(' in f.read():
                offenders.append(rel)
    assert offenders == []


@pytest.mark.parametrize('umask', [0o022, 0o077, 0o002])
def test_files_we_write_get_the_users_umask(tmp_path, umask):
    # datasets, checkpoints, exports and plots all land through these writers; an ordinary open() or mkdir()
    # under the same umask is the reference
    from core.data import prepare
    from core.interop import export_dest
    from core.training import checkpoint
    old = os.umask(umask)
    try:
        ref_file, ref_dir = tmp_path / 'ref.txt', tmp_path / 'ref'
        ref_file.write_text('x')
        ref_dir.mkdir()
        text = tmp_path / 'in.txt'
        text.write_text('hello world, ' * 200)
        prepare.prepare(str(text), str(tmp_path / 'data'), tokenizer='char', progress=False)
        prepare.prepare(str(text), str(tmp_path / 'data'), tokenizer='char', progress=False, force=True)
        checkpoint.save({'w': 1}, str(tmp_path / 'run' / 'ckpt.pt'))
        fileio.write_bytes(str(tmp_path / 'plot.png'), b'png')
        export_dest.export_folder(str(tmp_path / 'export'), {'config.json': '{}', 'model.bin': b'\0'})
        export_dest.export_folder(str(tmp_path / 'export'), {'config.json': '{ }'}, force=True)
        export_dest.export_file(str(tmp_path / 'model.gguf'), lambda p: open(p, 'wb').write(b'GGUF'))
    finally:
        os.umask(old)

    def mode(p):
        return oct(os.stat(p).st_mode & 0o777)
    files = [tmp_path / 'data' / n for n in ('train.bin', 'val.bin', 'meta.json')] + [
        tmp_path / 'run' / 'ckpt.pt', tmp_path / 'plot.png', tmp_path / 'export' / 'config.json',
        tmp_path / 'export' / 'model.bin', tmp_path / 'model.gguf']
    assert {str(f): mode(f) for f in files} == {str(f): mode(ref_file) for f in files}
    folders = [tmp_path / 'data', tmp_path / 'run', tmp_path / 'export']
    assert {str(d): mode(d) for d in folders} == {str(d): mode(ref_dir) for d in folders}
    assert mode(ref_file) == oct(0o666 & ~umask)


def test_a_killed_exports_half_folder_goes_with_the_next_export(tmp_path):
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    half = tmp_path / f'.export.{int(dead.stdout)}.k2j4x9.tmp'
    live = tmp_path / f'.export.{os.getpid()}.a1b2c3.tmp'
    for d in (half, live):
        d.mkdir()
        (d / 'model.safetensors').write_bytes(b'half')
    fileio.write_folder(str(tmp_path / 'export'), {'a.txt': 'a'})  # the same destination, tried again
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, 'export'])
