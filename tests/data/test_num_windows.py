"""Dataset.num_windows, which sizes the throwaway forwards that keep FSDP ranks in step during eval_full, counts the
windows exact_batches really yields: (tokens - 1) pairs in windows of block_size, the last one short."""

import json
import os

import numpy as np
import pytest

from core.data.loader import Dataset


def write_dataset(folder, n_val):
    os.makedirs(folder, exist_ok=True)
    np.arange(64, dtype=np.uint16).tofile(os.path.join(folder, 'train.bin'))
    (np.arange(n_val) % 7).astype(np.uint16).tofile(os.path.join(folder, 'val.bin'))
    meta = {'vocab_size': 64, 'dtype': 'uint16', 'splits': {'train': 64, 'val': n_val},
            'tokenizer': {'kind': 'char', 'chars': [chr(33 + i) for i in range(64)], 'special_tokens': {}}}
    with open(os.path.join(folder, 'meta.json'), 'w') as f:
        json.dump(meta, f)
    return folder


@pytest.mark.parametrize('n_val,block_size,want', [(50, 8, 7), (49, 8, 6), (17, 8, 2), (18, 8, 3), (9, 8, 1)])
def test_num_windows_is_the_windows_exact_batches_yields(tmp_path, n_val, block_size, want):
    # want by hand: ceil((n_val - 1) / block_size), e.g. 49 pairs in windows of 8 are 6 whole ones and 1 short
    ds = Dataset(write_dataset(str(tmp_path / 'd'), n_val))
    rows = sum(x.size(0) for x, _ in ds.exact_batches('val', batch_size=3, block_size=block_size))
    assert ds.num_windows('val', block_size) == rows == want
