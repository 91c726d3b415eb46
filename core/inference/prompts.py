"""Prompts read from a file, for sample.py (--start=FILE:path) and eval.py (--prompts=path)."""

import os

from core.errors import UserError

MAX_BYTES = 64 << 20  # far past any context window: a larger file is a wrong path, read whole into memory


def read_prompt_file(path):
    """The text of a prompt file, a UTF-8 byte-order mark dropped (an editor's, not the user's text); a missing
    path, a folder, a pipe or device, a file past MAX_BYTES or one that is not UTF-8 text ends in one line."""
    if os.path.isdir(path):
        raise UserError(f"prompt file '{path}' is a folder, not a text file; give the file itself")
    if not os.path.exists(path):
        raise UserError(f"prompt file '{path}' not found")
    if not os.path.isfile(path):  # a pipe would wait for a writer, /dev/zero never ends
        raise UserError(f"prompt file '{path}' is not a regular file but a pipe, terminal or device; save the "
                        f"prompts to a file and give that")
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        raise UserError(f"prompt file '{path}' is {size / 2**20:,.0f} MiB, past the "
                        f"{MAX_BYTES >> 20} MiB a prompt file may hold; is it the right file?")
    try:
        with open(path, encoding='utf-8-sig') as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"prompt file '{path}' is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8")
    except OSError as e:
        raise UserError(f"cannot read prompt file '{path}': {e.strerror or e}")


def prompts_in(path):
    """The prompts of a file that holds several, separated by blank lines."""
    text = read_prompt_file(path)
    prompts = [p.strip('\n') for p in text.replace('\r\n', '\n').split('\n\n') if p.strip()]
    if not prompts:
        raise UserError(f"prompt file '{path}' holds no prompts (they are separated by blank lines)")
    return prompts
