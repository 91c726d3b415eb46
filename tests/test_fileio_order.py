"""The order of the system calls that make a write survive a power cut, as the kernel receives them: the
new file's data is flushed before the rename, and the folder holding the rename is flushed after it."""

import os

import pytest

from core import fileio

pytestmark = pytest.mark.skipif(not os.path.isdir('/proc/self/fd'), reason='reads /proc/self/fd to name an fd')


@pytest.fixture
def calls(monkeypatch):
    """[('fsync', path) | ('rename', src, dst)] in the order they happen."""
    seen = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd):
        seen.append(('fsync', os.readlink(f'/proc/self/fd/{fd}')))
        return real_fsync(fd)

    def replace(src, dst, *a, **kw):
        seen.append(('rename', os.path.abspath(src), os.path.abspath(dst)))
        return real_replace(src, dst, *a, **kw)

    def rename(src, dst, *a, **kw):
        seen.append(('rename', os.path.abspath(src), os.path.abspath(dst)))
        return real_rename(src, dst, *a, **kw)
    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'replace', replace)
    monkeypatch.setattr(os, 'rename', rename)
    return seen


def check_durable(calls, dst):
    """The rename onto dst comes after an fsync of its source and before an fsync of dst's folder."""
    renames = [i for i, c in enumerate(calls) if c[0] == 'rename' and c[2] == dst]
    assert len(renames) == 1, calls
    i = renames[0]
    src = calls[i][1]
    assert ('fsync', src) in calls[:i] or any(c[0] == 'fsync' and c[1].startswith(src + os.sep) for c in calls[:i]), \
        calls
    assert ('fsync', os.path.dirname(dst)) in calls[i + 1:], calls


def test_a_file_is_flushed_renamed_then_its_folder_flushed(tmp_path, calls):
    path = str(tmp_path / 'sub' / 'f.bin')
    fileio.write_bytes(path, b'data')
    check_durable(calls, path)
    calls.clear()
    fileio.write_bytes(path, b'new data')  # replacing an existing file: the same order
    check_durable(calls, path)
    assert open(path, 'rb').read() == b'new data'


def test_a_folder_is_flushed_renamed_then_its_parent_flushed(tmp_path, calls):
    dest = str(tmp_path / 'model')
    fileio.write_folder(dest, {'a.json': '{}', 'b.bin': b'\0' * 10})
    check_durable(calls, dest)
    i = next(i for i, c in enumerate(calls) if c[0] == 'rename')
    src = calls[i][1]
    flushed = {c[1] for c in calls[:i] if c[0] == 'fsync'}
    assert {os.path.join(src, 'a.json'), os.path.join(src, 'b.bin'), src} <= flushed  # each file, and the folder


def test_files_replaced_in_a_folder_are_flushed_before_and_the_folder_after(tmp_path, calls):
    (tmp_path / 'keep.txt').write_text('mine')
    fileio.replace_files(str(tmp_path), {'a.json': '{}', 'b.bin': b'xy'})
    for name in ('a.json', 'b.bin'):
        check_durable(calls, str(tmp_path / name))
    assert (tmp_path / 'keep.txt').read_text() == 'mine'


def test_finishing_a_commit_flushes_the_folder_after_its_last_move(tmp_path, calls):
    # the moves out of .committing are renames in folder: a power cut after them must not undo them
    folder = tmp_path / 'data'
    (folder / fileio.COMMITTING).mkdir(parents=True)
    for name in ('meta.json', 'train.bin'):
        (folder / fileio.COMMITTING / name).write_text(name)
    fileio.finish_commit(str(folder), last=('meta.json',))
    last_move = max(i for i, c in enumerate(calls) if c[0] == 'rename')
    assert calls[last_move][2] == str(folder / 'meta.json')
    assert ('fsync', str(folder)) in calls[last_move + 1:], calls
    assert sorted(os.listdir(folder)) == ['meta.json', 'train.bin']


def test_the_later_ckpt_pt_kept_aside_is_flushed_after_its_rename(tmp_path, calls):
    # a resume from best.pt moves the later ckpt.pt to its step's name: that rename is the only copy of those
    # iterations, so the folder is flushed after it
    from core.training import checkpoint
    out = str(tmp_path)
    for name, step in (('ckpt.pt', 300), ('best.pt', 100)):
        checkpoint.save({'model': {}, 'model_args': {'n_layer': 1}, 'iter_num': step}, os.path.join(out, name))
    calls.clear()
    checkpoint.keep_later_latest(out, os.path.join(out, 'best.pt'), 100)
    i = calls.index(('rename', os.path.join(out, 'ckpt.pt'), os.path.join(out, 'ckpt_00000300.pt')))
    assert ('fsync', out) in calls[i + 1:], calls
