"""core/interop/export_dest.py: what an export may write where, decided before anything is written."""

import os

import pytest

from core.errors import UserError
from core.interop.export_dest import export_file, export_folder


def test_a_folder_where_export_writes_a_file_stops_it_before_anything_is_replaced(tmp_path):
    dest = tmp_path / 'm'
    dest.mkdir()
    (dest / 'config.json').write_text('old')
    (dest / 'tokenizer.json').mkdir()  # someone's folder, named as a file export writes after config.json
    with pytest.raises(UserError, match='tokenizer.json is a folder where export writes a file'):
        export_folder(str(dest), {'config.json': 'new', 'tokenizer.json': 'new'}, force=True)
    assert (dest / 'config.json').read_text() == 'old'  # not half an export
    assert sorted(os.listdir(dest)) == ['config.json', 'tokenizer.json']


def test_a_link_at_the_destination_is_something_there_even_when_it_points_nowhere(tmp_path):
    link = tmp_path / 'model.gguf'
    os.symlink(tmp_path / 'gone' / 'model.gguf', link)
    write = lambda path: open(path, 'wb').write(b'gguf')
    with pytest.raises(UserError, match='exists; choose another name, or pass --force'):
        export_file(str(link), write)
    assert os.path.islink(link) and not (tmp_path / 'gone').exists()
    export_file(str(tmp_path / 'new.gguf'), write)
    assert (tmp_path / 'new.gguf').read_bytes() == b'gguf'


def test_a_destination_named_as_a_folder_is_no_file_name(tmp_path):
    # --format=gguf --dest=models/ wrote a file named 'models' (abspath drops the slash); an existing folder was refused
    write = lambda path: open(path, 'wb').write(b'gguf')
    (tmp_path / 'models').mkdir()
    for dest in (tmp_path / 'models', tmp_path / 'new'):  # a folder that is there, and one that is not yet
        with pytest.raises(UserError, match=f"--dest={dest} is a folder; give the file to write, e.g. "):
            export_file(f"{dest}/", write)
    assert sorted(os.listdir(tmp_path)) == ['models'] and os.listdir(tmp_path / 'models') == []
