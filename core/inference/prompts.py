"""Prompts read from a file, for sample.py (--start=FILE:path) and eval.py (--prompts=path)."""

import os

from core.errors import UserError


def read_prompt_file(path):
    """The text of a prompt file, a UTF-8 byte-order mark dropped (an editor's, not the user's text); a missing
    path, a folder or a file that is not UTF-8 text ends in one line."""
    if os.path.isdir(path):
        raise UserError(f"prompt file '{path}' is a folder, not a text file; give the file itself")
    if not os.path.exists(path):
        raise UserError(f"prompt file '{path}' not found")
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
