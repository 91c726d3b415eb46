"""Turn any text into token files for train.py: one prepare for a file or a folder of .txt files.

    python data/prepare.py --input=notes.txt --name=notes                     # gpt2 ids -> data/notes/
    python data/prepare.py --input=stories/ --name=stories --tokenizer=bpe --vocab_size=8000 --doc_sep=blank

The work is done by core/data/prepare.py; `python data/prepare.py --help` lists the options.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root, for the core package

if __name__ == "__main__":
    from core.data.prepare import main  # a module import, so tokenizer worker processes can import what they run

    main()
