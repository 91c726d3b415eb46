"""Where an export lands: a new folder or file appears whole or not at all, and a destination that
already holds something is refused unless force, in which case only the files export writes are
replaced. An export never deletes or moves anything it did not write. The writing itself is
core/fileio.py's; this module decides what may be written and says why not in one line."""

import os

from core import fileio
from core.errors import UserError


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


def export_folder(dest, files, force=False):
    """Write files ({name: text, bytes or a writer(path)}) as the folder dest, through
    fileio.write_folder (the one folder writer) after the checks an export owes its user.

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
    try:
        if existing:
            fileio.replace_files(dest, files)
        else:
            fileio.write_folder(dest, files)
    except OSError as e:
        raise UserError(f"cannot write {dest} ({_reason(e)}); nothing was replaced")
    return [n for n in existing if n not in files]


def export_file(dest, writer, force=False):
    """Write one file through writer(path) to a temporary file beside dest, renamed over it at the end.
    An existing dest is refused unless force; a folder is always refused."""
    named_a_folder = str(dest).endswith(('/', os.sep))  # models/ means a folder, which abspath would make a file
    dest = os.path.abspath(os.path.expanduser(str(dest)))
    if os.path.isdir(dest) or named_a_folder:
        raise UserError(f"--dest={dest} is a folder; give the file to write, e.g. --dest={os.path.join(dest, 'model.gguf')}")
    if os.path.lexists(dest) and not force:
        raise UserError(f"--dest={dest} exists; choose another name, or pass --force to replace it")
    _parent(dest)
    try:
        fileio.write_with(dest, writer)
    except OSError as e:
        raise UserError(f"cannot write {dest} ({_reason(e)}); nothing was replaced")
