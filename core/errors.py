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


def install_excepthook():
    """Print a UserError escaping a script as one line; anything else keeps its traceback."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, UserError):
            print(f"error: {one_line(value)}", file=sys.stderr)
        elif isinstance(value, KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
        else:
            previous(kind, value, tb)

    sys.excepthook = hook
