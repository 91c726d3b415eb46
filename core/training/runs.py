"""A run folder belongs to one run: an exclusive lock on out_dir, and moving an old run aside.

    lock = runs.RunLock(out_dir).acquire()   # UserError naming the holder when another run has it
    ...
    lock.release()                           # also done at exit; a killed process's lock is taken over

The lock is out_dir/run.lock holding the holder's pid, host and command. The exclusion itself is
an flock on that file, which the kernel drops when the holder dies (kill -9 included), so a file
left behind by a dead run is stale by construction and simply taken over. Where flock is not
supported (some network file systems) the pid in the file decides, on the same host only.
"""

import atexit
import errno
import json
import os
import socket
import sys
import time

from core import fileio
from core.errors import UserError

LOCK_NAME = 'run.lock'
CHECKPOINT_NAMES = ('ckpt.pt', 'best.pt', 'merged.pt')
_held = {}  # real path of a lock file -> the RunLock of this process that holds it


def _describe(info):
    if not info or not isinstance(info, dict):
        return "another process (its lock file is unreadable)"
    started = info.get('started', 0)
    when = time.strftime('%Y-%m-%d %H:%M', time.localtime(started)) if isinstance(started, (int, float)) else '?'
    return f"pid {info.get('pid')} on {info.get('host')} (started {when}: {info.get('command', '?')})"


class RunLock:

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, LOCK_NAME)
        self.fd = None

    def _read(self):
        try:
            with open(self.path) as f:
                return fileio.read_json(f)
        except (OSError, ValueError):
            return None

    def _busy(self, info):
        return UserError(f"{self.out_dir} is in use by another run: {_describe(info)}; wait for it to finish, stop it, "
                         f"or choose another --out_dir")

    def acquire(self):
        """Take the lock or raise UserError naming its holder. Re-taking a lock this process already
        holds (a script run twice in one interpreter) succeeds."""
        key = os.path.realpath(self.path)
        if key in _held:
            _held.pop(key).release()
        try:
            os.makedirs(self.out_dir, exist_ok=True)
        except OSError as e:
            if os.path.isfile(self.out_dir):  # a checkpoint given for its run folder, say
                raise UserError(f"out_dir '{self.out_dir}' is a file, not a run folder; give a folder, such as "
                                f"--out_dir={os.path.dirname(os.path.abspath(self.out_dir))}") from None
            raise UserError(f"cannot create out_dir '{self.out_dir}' ({e.strerror or e})")
        for _ in range(10):
            try:
                fd = self._open()
            except OSError as e:
                raise UserError(f"cannot write in out_dir '{self.out_dir}' ({e.strerror or e})")
            try:
                try:
                    import fcntl
                except ImportError:  # Windows: no flock, the pid in the file decides
                    raise OSError(errno.ENOSYS, 'no flock on this system')
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._busy(self._read())
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise UserError(f"cannot lock {self.path} ({e.strerror or e})")
                fd = self._acquire_by_pid()
            # a holder that released between our open and our flock may have unlinked the file: ours
            # would then be a lock on nothing, so start over with the file now at the path
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise UserError(f"cannot lock {self.path}: it keeps changing; is another run starting there?")
        self.fd = fd
        info = dict(pid=os.getpid(), host=socket.gethostname(), started=time.time(),
                    command=' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])[:300])
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(info) + '\n').encode())
        except OSError as e:
            self.release()  # an empty lock file would name no holder: it goes
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            raise UserError(f"cannot write the run lock {self.path} ({e.strerror or e})"
                            + ("; free some space or choose an --out_dir on another disk" if full else "")) from None
        _held[key] = self
        atexit.register(self.release)
        return self

    def _open(self):
        # never through a link: the lock is written into and then deleted, which would empty the file a link names
        if os.path.islink(self.path):
            raise UserError(f"{self.path} is a link, not a lock file a run wrote; remove the link (the file it names "
                            f"is left alone)")
        return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_NOFOLLOW', 0), 0o644)

    def _acquire_by_pid(self):
        # no flock here: the file's pid decides; a dead pid on this host is a stale lock, and so is a file that
        # names no pid (as an unreadable one is)
        info = self._read()
        pid = info.get('pid') if isinstance(info, dict) else None
        if isinstance(pid, int) and not isinstance(pid, bool) and pid != os.getpid():
            if info.get('host') != socket.gethostname() or fileio.pid_alive(pid):
                raise self._busy(info)
        return self._open()

    def release(self):
        """Remove the lock file and drop the lock; safe to call more than once."""
        if self.fd is None:
            return
        _held.pop(os.path.realpath(self.path), None)
        try:
            os.unlink(self.path)  # before the close, so no one locks the file we are deleting
        except OSError:
            pass
        try:
            os.close(self.fd)
        except OSError:
            pass
        self.fd = None


def holds_run(out_dir):
    """The checkpoint files in out_dir ([] when it holds none): what a fresh run there would replace."""
    if not os.path.isdir(out_dir):
        return []
    return sorted(n for n in os.listdir(out_dir)
                  if n in CHECKPOINT_NAMES or (n.startswith('ckpt_') and n.endswith('.pt')))


def move_aside(out_dir):
    """Move everything in out_dir but the lock into a new sibling folder (out_dir-prev-<date>, made unique)
    and return its path. Nothing is deleted; a crash part way leaves each file in one folder or the other."""
    base = os.path.normpath(out_dir) + time.strftime('-prev-%Y%m%d-%H%M%S')
    dest, n = base, 1
    while os.path.exists(dest):
        n += 1
        dest = f"{base}-{n}"
    try:
        os.makedirs(dest)
        for name in sorted(os.listdir(out_dir)):
            if name != LOCK_NAME:
                os.rename(os.path.join(out_dir, name), os.path.join(dest, name))
    except OSError as e:
        raise UserError(f"could not move the previous run in {out_dir} aside to {dest} ({e.strerror or e}); "
                        f"nothing was deleted, move it yourself or choose another --out_dir")
    return dest


def claim(out_dir, init_from, overwrite):
    """Lock out_dir for this run and make sure a fresh start replaces no checkpoint: with overwrite the old
    run moves aside, without it this stops. Returns (the lock, the folder the old run moved to or None)."""
    lock = RunLock(out_dir).acquire()
    found = holds_run(out_dir) if init_from != 'resume' else []
    moved = None
    if found:
        if not overwrite:
            lock.release()
            raise UserError(f"{out_dir} already holds a run ({', '.join(found)}); continue it with --init_from=resume, "
                            f"or pass --overwrite=True to move it aside (nothing is deleted), or choose another "
                            f"--out_dir")
        folder = os.path.realpath(out_dir)
        if os.path.exists(init_from) and os.path.commonpath([os.path.realpath(init_from), folder]) == folder:
            lock.release()
            raise UserError(f"--init_from={init_from} is in --out_dir={out_dir}, which --overwrite=True would move "
                            f"aside before reading it; fine-tune into another --out_dir, or continue the run there "
                            f"with --init_from=resume")
        moved = move_aside(out_dir)
    return lock, moved
