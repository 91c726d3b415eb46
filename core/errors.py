"""User mistakes end in one clear line and a non-zero exit, never a traceback."""

import re
import sys


def one_line(message):
    """A message as a single line, even when it quotes a user's value or an exception's text with newlines."""
    return re.sub(r'\s*[\r\n]+\s*', ' ', str(message)).strip()


class UserError(Exception):
    """A mistake the user can fix; the message says how."""


def fail(message, code=2):
    print(f"error: {one_line(message)}", file=sys.stderr)
    sys.exit(code)


def _at_top_level():
    # the interpreter calls the hook once the program has unwound, with no Python frame left above it;
    # a test that runs a script in its own process calls it from Python and keeps running
    try:
        sys._getframe(2)
    except ValueError:
        return True
    return False


def exit_now(code):
    """Exit with code from inside an excepthook, where sys.exit does nothing (Python would exit with 1):
    the atexit handlers (locks, loggers) still run, then the process ends."""
    import atexit
    import os
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    atexit._run_exitfuncs()
    os._exit(code)


def install_excepthook():
    """Print a UserError escaping a script as one line; anything else keeps its traceback."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, UserError):
            print(f"error: {one_line(value)}", file=sys.stderr)
            if _at_top_level():
                exit_now(2)
        elif isinstance(value, KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
        else:
            previous(kind, value, tb)

    sys.excepthook = hook
