"""User mistakes end in one clear line and a non-zero exit, never a traceback."""

import sys


class UserError(Exception):
    """A mistake the user can fix; the message says how."""


def fail(message, code=2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def install_excepthook():
    """Print a UserError escaping a script as one line; anything else keeps its traceback."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, UserError):
            print(f"error: {value}", file=sys.stderr)
        elif isinstance(value, KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
        else:
            previous(kind, value, tb)

    sys.excepthook = hook
