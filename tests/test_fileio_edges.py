"""core/fileio.py at its edges: whose leftovers are swept, what the JSON reader takes for UTF-8, what a folder check
and the owned-file guard see, and a staged commit that finds another writer's commit pending."""

import errno
import os
import subprocess

import pytest

from core import fileio


def dead_pid():
    """The pid of a process that has exited and been reaped."""
    p = subprocess.Popen(['true'])
    p.wait()
    return p.pid


def test_a_writer_we_may_not_signal_is_alive_and_keeps_its_temporary(tmp_path, monkeypatch):
    # another user's live writer: os.kill(pid, 0) raises PermissionError (EPERM); the process exists, so its
    # temporary file is a write in progress, not a leftover (as root the kernel never says so: it is simulated)
    other = dead_pid()
    real_kill = os.kill

    def kill(pid, sig):
        if pid == other:
            raise PermissionError(errno.EPERM, 'Operation not permitted')
        return real_kill(pid, sig)
    monkeypatch.setattr(os, 'kill', kill)
    assert fileio.pid_alive(other) is True
    (tmp_path / f'.m.pt.{other}.tmp').write_bytes(b'being written')
    fileio.write_bytes(str(tmp_path / 'm.pt'), b'whole')
    assert sorted(os.listdir(tmp_path)) == sorted(['m.pt', f'.m.pt.{other}.tmp'])


def test_json_with_a_utf8_byte_order_mark_reads_as_utf8():
    # Notepad saves UTF-8 with a BOM (EF BB BF); the bytes after it are plain JSON
    assert fileio.read_json(b'\xef\xbb\xbf{"vocab_size": 65}') == {'vocab_size': 65}


@pytest.mark.parametrize('encoding', ['utf-16-le', 'utf-16-be'])
def test_utf16_json_of_either_byte_order_is_named_as_utf16(encoding):
    bom = b'\xff\xfe' if encoding == 'utf-16-le' else b'\xfe\xff'
    data = bom + '{"a": 1}'.encode(encoding)
    with pytest.raises(fileio.NotUtf8, match='UTF-16'):
        fileio.read_json(data)


def test_a_file_given_as_a_folder_is_said_to_be_a_file(tmp_path):
    # --out_dir=<a checkpoint file>: its parent folder is writable, but the path itself cannot be a folder
    f = tmp_path / 'ckpt.pt'
    f.write_bytes(b'weights')
    assert fileio.unwritable(str(f), folder=True) == f"{f} is a file, not a folder"
    assert fileio.unwritable(str(tmp_path), folder=True) is None


def test_a_datasets_token_files_and_a_runs_lock_are_owned(tmp_path):
    data = tmp_path / 'data'
    data.mkdir()
    (data / 'meta.json').write_text('{}')
    (data / 'train.bin').write_bytes(b'\0\0')
    assert fileio.owned(str(data / 'train.bin')) == "a dataset's train.bin"
    assert fileio.owned(str(data / 'meta.json')) == "a dataset's meta.json"
    assert fileio.owned(str(tmp_path / 'loose.bin')) == ''  # no meta.json beside it: not a dataset's
    assert fileio.owned(str(tmp_path / 'run' / 'run.lock')) == "a run's run.lock"
    assert fileio.owned(str(tmp_path / 'run' / 'metrics.jsonl')) == "a run's metrics.jsonl"


def test_the_repositorys_scripts_and_package_are_owned_and_the_files_users_write_beside_them_are_not(tmp_path):
    # export --dest=train.py --force or eval --markdown=model.py --overwrite=True would replace the code itself
    from core.paths import REPO
    assert fileio.owned(os.path.join(REPO, 'train.py')) == "the repository's own train.py"
    module = os.path.join('core', 'fileio.py')
    assert fileio.owned(os.path.join(REPO, module)) == f"the repository's own {module}"
    # a plot, a report or an export at the root, and a plan under config/, are files users write and rewrite there
    for name in ('loss.png', 'report.md', 'model.gguf', os.path.join('config', 'plan_x_1m.py')):
        assert fileio.owned(os.path.join(REPO, name)) == '', name
    # a .py name elsewhere that links to one of the root's files is what it links to
    os.symlink(os.path.join(REPO, 'README.md'), tmp_path / 'notes.py')
    assert fileio.owned(str(tmp_path / 'notes.py')) == "the repository's own README.md"


def test_a_link_to_a_checkpoint_is_owned_as_the_checkpoint_it_names(tmp_path):
    # export --dest=model.safetensors, where model.safetensors links to a run's ckpt.pt: the write goes through it
    (tmp_path / 'ckpt.pt').write_bytes(b'weights')
    os.symlink(tmp_path / 'ckpt.pt', tmp_path / 'model.safetensors')
    assert fileio.owned(str(tmp_path / 'model.safetensors')) == 'a checkpoint'


def test_replacing_files_sweeps_a_killed_replacers_staging_folder(tmp_path):
    half = tmp_path / f'.export.{dead_pid()}.q8w2e4.tmp'  # replace_files' own staging folder, its writer killed
    half.mkdir()
    (half / 'model.safetensors').write_bytes(b'half')
    live = tmp_path / f'.export.{os.getpid()}.z9y8x7.tmp'
    live.mkdir()
    fileio.replace_files(str(tmp_path), {'a.json': '{}'})
    assert sorted(os.listdir(tmp_path)) == sorted(['a.json', live.name])


def test_a_commit_pending_from_another_writer_goes_in_before_ours(tmp_path):
    # another writer was killed after its stage became .committing, after our stage() looked: our commit finishes
    # its moves first, then ours replace them, and both writers' files are whole
    folder = tmp_path / 'data'
    folder.mkdir()
    (folder / 'meta.json').write_text('old meta')
    staging = fileio.stage(str(folder))
    for name, text in (('meta.json', 'our meta'), ('train.bin', 'our train')):
        with open(os.path.join(staging, name), 'w') as f:
            f.write(text)
    pending = folder / fileio.COMMITTING
    pending.mkdir()
    (pending / 'meta.json').write_text('their meta')
    (pending / 'val.bin').write_text('their val')
    fileio.commit_stage(staging, last=('meta.json',))
    got = {name: (folder / name).read_text() for name in os.listdir(folder)}
    assert got == {'meta.json': 'our meta', 'train.bin': 'our train', 'val.bin': 'their val'}
