"""Every file we write lands whole or not at all: it is written to a temporary file beside its target
(same folder, so the rename is atomic), flushed to disk, renamed over the target, and the folder is
flushed so the rename itself survives a power cut. A crash at any instant leaves the old file or the
new one, never half of one. Checkpoints, datasets, exports, plots and traces all go through here."""

import json
import os
import re
import shutil
import sys
import tempfile


def fsync_dir(folder):
    """Make a rename in folder durable (best effort: Windows cannot open a folder to flush it)."""
    try:
        fd = os.open(folder or '.', os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path):
    with open(path, 'rb+') as f:
        os.fsync(f.fileno())


def _umask():
    """The process's umask: read from /proc where it can be, since setting it to read it races with threads."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ordinary_mode(path):
    """Give a file or folder that mkstemp/mkdtemp made private (0600/0700) the mode an ordinary open or
    mkdir would have given it under the user's umask, so files we write are as shareable as any other."""
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~_umask())


def temp_path(path):
    """A hidden name beside path carrying our pid, for a writer that opens the file itself; a later
    write can tell a dead process's leftovers from a live one's file."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}.tmp")


def commit(tmp, path):
    """Flush tmp to disk, rename it over path, flush the folder."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def pid_alive(pid):
    if pid == os.getpid():
        return True
    if sys.platform == 'win32':  # os.kill(pid, 0) there would send Ctrl-C to the process
        try:
            import psutil
            return psutil.pid_exists(pid)
        except ImportError:
            return True  # cannot tell: keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


TEMP_NAME = re.compile(r"\.(.+)\.(\d+)(?:\.[^.]+)?\.tmp")


def remove_stale_temps(folder, name=None):
    """Delete the temporary files and folders that writers killed mid-write left in folder: of the target name (a
    file name, or a compiled pattern of them), or of any target."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        m = TEMP_NAME.fullmatch(entry)
        target = m and m.group(1)
        mine = name is None or (target == name if isinstance(name, str) else bool(m and name.fullmatch(target)))
        if m and mine and not pid_alive(int(m.group(2))):
            path = os.path.join(folder, entry)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)  # a staging folder (write_folder, stage) of a killed writer
                else:
                    os.remove(path)
            except OSError:
                pass


def unwritable(path, folder=False):
    """Why nothing can be written at path, in words, or None: a file's path is a folder, a folder's path is a file,
    or a folder above it is a file, or the folder it would be written in refuses a new entry. Checked before a long
    job, so its output is not lost at the end."""
    if folder and os.path.exists(path) and not os.path.isdir(path):
        return f"{path} is a file, not a folder"
    if not folder and os.path.isdir(path):
        return f"{path} is a folder, not a file"
    # where the first new entry goes: an existing folder itself, else the nearest folder above the path that exists
    parent = os.path.abspath(path) if folder and os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{parent} is a file, not a folder"
    try:  # the system's own answer: permissions, a read-only disk, or a folder nobody may add to (/proc), root or not
        os.rmdir(tempfile.mkdtemp(prefix='.write-check-', dir=parent))
    except OSError as e:
        return f"nothing can be written in {parent} ({e.strerror})"
    return None


def owned(path):
    """What path is when it is a file a run or a dataset keeps ('a checkpoint', "a run's metrics", "a dataset's
    meta.json" ...) or the repository's own code, else '': an export, a report, a plot or a plan never replaces such
    a file, --force or not. A link is what it links to: a write goes through it."""
    from core.paths import REPO
    given, path = path, os.path.realpath(path)
    name = os.path.basename(path)
    if name.endswith('.pt'):
        return 'a checkpoint'
    # the scripts at the checkout's root and the package (`--out=plan.py` typed there names plan.py itself), or what
    # a .py name there links to
    repo = os.path.realpath(REPO)
    if (name.endswith('.py') or given.endswith('.py')) and \
            (os.path.dirname(path) == repo or path.startswith(os.path.join(repo, 'core') + os.sep)):
        return f"the repository's own {os.path.relpath(path, repo)}"
    if name in ('metrics.jsonl', 'run.lock'):
        return f"a run's {name}"
    if (name == 'meta.json' or name.endswith('.bin')) and \
            os.path.isfile(os.path.join(os.path.dirname(path), 'meta.json')):
        return f"a dataset's {name}"
    return ''


def starts_with(path, mark):
    """Whether the file at path begins with mark (a script's header on what it writes); OSError when unreadable."""
    with open(path, 'rb') as f:
        return f.read(len(mark.encode())) == mark.encode()


def check_folder(key, path):
    """Stop in one line when --key=path cannot be a folder to write into (a file, or under one), before a long job
    finds it at its first makedirs with a traceback."""
    problem = unwritable(path, folder=True)
    if problem:
        from core.errors import UserError
        raise UserError(f"--{key}={path}: {problem}; choose another folder")


def write_with(path, writer):
    """Produce path through writer(tmp_path), e.g. torch.save, fig.savefig, a profiler's trace export or
    safetensors' save_file, then commit it. A failure leaves path as it was and no temporary file. A link is
    followed (the file it names is replaced, the link kept); a device or a pipe (/dev/null, /dev/stdout) is
    written into, never replaced by a file."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        writer(path)
        return
    folder, name = os.path.split(os.path.realpath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        ordinary_mode(tmp)
        writer(tmp)
        commit(tmp, os.path.join(folder, name))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    remove_stale_temps(folder, name)  # what killed writers of this file left behind


def write_bytes(path, data):
    def write(tmp):
        with open(tmp, 'wb') as f:
            f.write(data)
    write_with(path, write)


def write_text(path, text):
    write_bytes(path, text.encode('utf-8'))


class NotUtf8(ValueError):
    """JSON bytes in another encoding than UTF-8: a fault of the file's encoding, not of its JSON."""


def read_json(text_or_file):
    """json.loads (or json.load of an open file) for what a person may have edited or damaged: JSON nested too
    deeply for json's recursion ('[' 100,000 times) is a ValueError like any other malformed JSON, which every
    reader already turns into its one line, instead of a RecursionError's traceback."""
    text = text_or_file if isinstance(text_or_file, (str, bytes, bytearray)) else text_or_file.read()
    if isinstance(text, (bytes, bytearray)):  # JSON files are UTF-8: json.loads would guess UTF-16 or 32 from a BOM
        if text.startswith((b'\xff\xfe', b'\xfe\xff')):
            raise NotUtf8("UTF-16 text (it starts with UTF-16's byte order mark); convert the file to UTF-8, "
                          "e.g. iconv -f utf-16 -t utf-8 IN > OUT")
        try:
            text = text.decode('utf-8-sig')
        except UnicodeDecodeError as e:
            raise NotUtf8(f"not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def write_json(path, obj, indent=1):
    write_text(path, json.dumps(obj, indent=indent) + '\n')


def _write_entry(path, content):
    """content: bytes, text, or a writer(path) that produces the file."""
    if callable(content):
        content(path)
    else:
        with open(path, 'wb') as f:
            f.write(content.encode('utf-8') if isinstance(content, str) else content)
    fsync_file(path)


def write_folder(dest, files):
    """Create the folder dest holding files ({name: bytes, text or writer(path)}): they are written into a
    temporary folder beside it, which is renamed into place. dest must not exist, or be empty."""
    dest = os.path.abspath(dest)
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    remove_stale_temps(parent, os.path.basename(dest))  # a killed export's half folder
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.{os.getpid()}.", suffix='.tmp', dir=parent)
    try:
        ordinary_mode(tmp)
        for name, content in files.items():
            _write_entry(os.path.join(tmp, name), content)
        fsync_dir(tmp)
        if os.path.isdir(dest):
            os.rmdir(dest)  # empty; a rename replaces an empty folder on Linux but not everywhere
        os.rename(tmp, dest)
        tmp = None
        fsync_dir(parent)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def replace_files(folder, files):
    """Write files into the existing folder, each replacing its namesake, and leave every other entry
    alone: all are written into a temporary folder inside it first, then renamed one by one."""
    remove_stale_temps(folder, 'export')
    tmp = tempfile.mkdtemp(prefix=f".export.{os.getpid()}.", suffix='.tmp', dir=folder)
    try:
        for name, content in files.items():
            _write_entry(os.path.join(tmp, name), content)
        for name in files:
            os.replace(os.path.join(tmp, name), os.path.join(folder, name))
        fsync_dir(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- replacing several files in a folder as one ---------------------------------------------------
# The new files are written into a staging folder inside the target folder. When all are complete the
# staging folder is renamed to COMMITTING: that rename is the moment the new set wins. The files are then
# moved into place, those named `last` at the end; whoever finds COMMITTING later (a reader, the next
# writer) finishes those moves first, so a kill at any instant leaves the old set whole or the new one.

COMMITTING = '.committing'


def stage(folder):
    """A new empty staging folder inside folder (made if needed) for files that commit_stage moves in."""
    os.makedirs(folder, exist_ok=True)
    finish_commit(folder)
    remove_stale_temps(folder, 'staged')
    tmp = tempfile.mkdtemp(prefix=f".staged.{os.getpid()}.", suffix='.tmp', dir=folder)
    ordinary_mode(tmp)
    return tmp


def commit_stage(staging, last=()):
    """Make every file of staging durable, then replace their namesakes in its folder as one change."""
    folder = os.path.dirname(os.path.abspath(staging))
    for name in os.listdir(staging):
        fsync_file(os.path.join(staging, name))
    fsync_dir(staging)
    finish_commit(folder, last)  # an earlier writer's commit that a kill interrupted goes in first
    os.rename(staging, os.path.join(folder, COMMITTING))
    fsync_dir(folder)
    finish_commit(folder, last)


def finish_commit(folder, last=()):
    """Move the files of a committed stage into folder, the names in last at the end; nothing to do when
    no commit is pending. Safe to run from several processes at once: each file is moved exactly once."""
    committing = os.path.join(folder, COMMITTING)
    try:
        names = os.listdir(committing)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in sorted(names, key=lambda n: (n in last, last.index(n) if n in last else 0, n)):
        try:
            os.replace(os.path.join(committing, name), os.path.join(folder, name))
        except FileNotFoundError:
            pass  # another process moved it
    fsync_dir(folder)
    try:
        os.rmdir(committing)
    except OSError:
        pass
