"""Where an export lands: a new folder or file appears whole or not at all, and a destination that
already holds something is refused unless force, in which case only the files export writes are
replaced. An export never deletes or moves anything it did not write."""

import os
import re
import shutil

from core import fileio
from core.errors import UserError


def _as_writer(content):
    # a function returning the bytes builds them only when the file is written: fileio wants a writer(path)
    if not callable(content):
        return content

    def write(path):
        data = content()
        with open(path, 'wb') as f:
            f.write(data.encode('utf-8') if isinstance(data, str) else data)
    return write


def _reason(e):
    return e.strerror or str(e) if isinstance(e, OSError) else str(e)


def _parent(dest):
    parent = os.path.dirname(dest)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write {dest}: cannot create its folder {parent} ({_reason(e)}); choose another --dest")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {dest}: {parent} is not writable; choose another --dest")
    return parent


def remove_stale_folders(folder, name):
    """Delete the temporary folders that exports killed mid-write left in folder for the target name:
    fileio's exact naming (a hidden '.<name>.<pid>.<8 random characters>.tmp') and a pid no longer
    running; a look-alike, a link, a file or a live writer's folder stays."""
    pattern = re.compile(rf"\.{re.escape(name)}\.(\d+)\.[a-z0-9_]{{8}}\.tmp")
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry)
        path = os.path.join(folder, entry)
        if m and os.path.isdir(path) and not os.path.islink(path) and not fileio.pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def write_folder(dest, files, force=False):
    """Write files ({name: text, bytes or a function returning them}) as the folder dest.

    A new or empty dest: the files go to a temporary folder beside it, which is renamed into place.
    A dest holding anything: refused unless force; with force the files go to a temporary folder
    inside dest and each replaces its namesake, and every other entry is left as it was.
    Returns the names of the entries of dest that this export did not write."""
    dest = os.path.abspath(os.path.expanduser(str(dest)))
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise UserError(f"--dest={dest} is a file, not a folder; choose another --dest")
    existing = sorted(os.listdir(dest)) if os.path.isdir(dest) else []
    if existing and not force:
        shown = ', '.join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else '')
        raise UserError(f"--dest={dest} is not empty ({shown}); choose a new folder, or pass --force to replace "
                        f"only the files export writes ({', '.join(files)}) and keep the rest")
    clash = [n for n in files if os.path.isdir(os.path.join(dest, n))]
    if clash:
        raise UserError(f"{os.path.join(dest, clash[0])} is a folder where export writes a file; move it or choose "
                        f"another --dest")
    if not existing:
        _parent(dest)
    elif not os.access(dest, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into {dest}: it is not writable; choose another --dest")
    entries = {name: _as_writer(content) for name, content in files.items()}
    remove_stale_folders(os.path.dirname(dest), os.path.basename(dest))
    if existing:
        remove_stale_folders(dest, 'export')  # fileio.replace_files' temporary folder inside dest
    try:
        if existing:
            fileio.replace_files(dest, entries)
        else:
            fileio.write_folder(dest, entries)
    except OSError as e:
        raise UserError(f"cannot write {dest} ({_reason(e)}); nothing was replaced")
    return [n for n in existing if n not in files]


def write_file(dest, writer, force=False):
    """Write one file through writer(path) to a temporary file beside dest, renamed over it at the end.
    An existing dest is refused unless force; a folder is always refused."""
    dest = os.path.abspath(os.path.expanduser(str(dest)))
    if os.path.isdir(dest):
        raise UserError(f"--dest={dest} is a folder; give the file to write, e.g. --dest={os.path.join(dest, 'model.gguf')}")
    if os.path.lexists(dest) and not force:
        raise UserError(f"--dest={dest} exists; choose another name, or pass --force to replace it")
    _parent(dest)
    try:
        fileio.write_with(dest, writer)
    except OSError as e:
        raise UserError(f"cannot write {dest} ({_reason(e)}); nothing was replaced")
