"""The one prompt reader: sample.py's --start=FILE:path and eval.py's --prompts=path read a text file here,
so a missing file, a folder, a device and text that is not UTF-8 each get the same true one-line error."""

import os

from core.errors import UserError


def read_prompt_file(path):
    """The text of the prompt file at path (a UTF-8 byte order mark dropped), or UserError saying what it is."""
    if os.path.isdir(path):
        raise UserError(f"prompt file '{path}' is a folder, not a text file; give the file itself")
    if not os.path.exists(path):
        raise UserError(f"prompt file '{path}' not found")
    try:
        with open(path, encoding='utf-8-sig') as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"prompt file '{path}' is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    except OSError as e:
        raise UserError(f"cannot read prompt file '{path}': {e.strerror or e}") from None
