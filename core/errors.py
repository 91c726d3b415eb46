"""User mistakes end in one line on stderr, `error: ...`, and exit code 2; tracebacks are for our bugs.

UserError is the one type for a mistake the user can fix; ConfigError (configurator.py), TokenizerError
(core/data/tokenizer.py), PrepareError (core/data/prepare.py) and ChatError (core/data/chat.py) subclass it to say where
it came from. fail() is the one place that prints the line and exits; the excepthook every script installs
and argparse's errors go through it."""

import argparse
import re
import sys

EXIT_CODE = 2  # what argparse uses for a bad command line, and so every user mistake


LONGEST_WORD = 200  # characters without a space that a message shows whole


def one_line(message):
    """A message as a single line, even when it quotes a user's value or an exception's text with newlines; a
    value of more than LONGEST_WORD characters without a space (a pasted file, a number with a key held down) is
    shown by its two ends and its length."""
    text = re.sub(r'\s*[\r\n]+\s*', ' ', str(message)).strip()
    return re.sub(r'\S{%d,}' % (LONGEST_WORD + 1),
                  lambda m: f"{m.group()[:80]}...({len(m.group()):,} characters)...{m.group()[-40:]}", text)


class UserError(Exception):
    """A mistake the user can fix; the message says how."""


def fail(message):
    """Print `error: message` as one line on stderr and exit with EXIT_CODE."""
    # one write, which another process's output on the same stream cannot split (print makes two under python -u)
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    sys.exit(EXIT_CODE)


def install_excepthook():
    """A UserError escaping a script ends as fail() does; Ctrl-C as one word; anything else keeps its traceback."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, UserError):
            fail(value)  # its SystemExit, raised inside the hook, sets the exit code
        elif isinstance(value, KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        else:
            previous(kind, value, tb)

    sys.excepthook = hook


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a mistake reported as one line (the usage it would print first is what --help shows)."""

    def error(self, message):
        fail(f"{message} (see {self.prog} --help)")
