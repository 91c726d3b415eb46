"""core/data/corpus.py's prepare_records refuses a val_fraction of 0 or 1 (or beyond) before it reads or writes
anything: at 1 every document would be val and train.bin empty, as a .txt prepare refuses too."""

import json
import os

import pytest

from core.data import corpus
from core.data.writer import PrepareError


@pytest.mark.parametrize('fraction', [0.0, 1.0, 1.5, -0.1])
def test_a_val_fraction_outside_0_to_1_is_refused_and_writes_nothing(tmp_path, fraction):
    src = tmp_path / 'c.jsonl'
    src.write_text(''.join(json.dumps({'text': f'document {i}'}) + '\n' for i in range(4)), encoding='utf-8')
    out = tmp_path / 'out'
    with pytest.raises(PrepareError, match='--val_fraction must be between 0 and 1'):
        corpus.prepare_records(str(src), str(out), val_fraction=fraction, progress=False)
    assert not os.path.exists(out)
