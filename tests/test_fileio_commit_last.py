"""fileio.commit_stage / finish_commit move a prepared dataset's files in with meta.json last (writer.py,
tokenizer.finish_interrupted_prepare): a kill between two moves must leave meta.json describing the files that
are there, never a new meta.json beside old token files."""

import os

from core import fileio


def test_the_last_names_are_moved_in_after_every_other_file(tmp_path, monkeypatch):
    folder = tmp_path / 'data'
    folder.mkdir()
    for name in ('meta.json', 'train.bin', 'val.bin'):
        (folder / name).write_text('old ' + name)
    staging = fileio.stage(str(folder))
    names = ('meta.json', 'train.bin', 'val.bin', 'train.mask.bin')
    for name in names:
        with open(os.path.join(staging, name), 'w') as f:
            f.write('new ' + name)
    moved, real = [], os.replace

    def replace(src, dst, *a, **kw):
        if os.path.dirname(os.path.abspath(dst)) == str(folder):
            moved.append(os.path.basename(dst))
        return real(src, dst, *a, **kw)
    monkeypatch.setattr(os, 'replace', replace)
    fileio.commit_stage(staging, last=('meta.json',))
    assert sorted(moved) == sorted(names) and moved[-1] == 'meta.json', moved
    for name in names:
        assert (folder / name).read_text() == 'new ' + name
