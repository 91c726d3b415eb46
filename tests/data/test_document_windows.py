"""Document-aware window starts: every document's start, plus every block_size tokens inside a document that one
window cannot hold; a document exactly one window long adds no second window (which would start on the next
document's first token and draw that document twice as often)."""

import json
import os

import numpy as np

from core.data.loader import Dataset

EOT = 9


def write_dataset(folder, train):
    os.makedirs(folder, exist_ok=True)
    np.asarray(train, dtype=np.uint16).tofile(os.path.join(folder, 'train.bin'))
    np.arange(20, dtype=np.uint16).tofile(os.path.join(folder, 'val.bin'))
    chars = [chr(97 + i) for i in range(9)]
    meta = {'vocab_size': 32, 'dtype': 'uint16', 'splits': {'train': len(train), 'val': 20}, 'eot_token': EOT,
            'tokenizer': {'kind': 'char', 'chars': chars, 'special_tokens': {'<|endoftext|>': EOT}}}
    with open(os.path.join(folder, 'meta.json'), 'w') as f:
        json.dump(meta, f)
    return folder


def doc(length):
    return [EOT] + [1] * (length - 1)  # a document: its <|endoftext|> and then its text


def test_windows_start_at_documents_and_every_block_inside_longer_ones(tmp_path):
    # documents of 4, 4, 5 and 9 tokens (eot included) at 0, 4, 8 and 13, then 5 tokens of a last one at 22
    train = doc(4) + doc(4) + doc(5) + doc(9) + doc(5)
    ds = Dataset(write_dataset(str(tmp_path / 'd'), train))
    starts = ds.document_starts('train', block_size=4).tolist()
    # by hand: 0 and 4 (each exactly a window), 8 and 12 (5 tokens: its last one starts another window),
    # 13, 17 and 21 (9 tokens), 22 (whole window after it); 26 has no whole window after it (27 tokens in all)
    assert starts == [0, 4, 8, 12, 13, 17, 21, 22]
