"""export.py's short dtype names: --dtype=bf16 writes bfloat16 tensors and fp16 float16 ones, read back from the
safetensors header with the standard library (8 bytes of little-endian length, then JSON naming each tensor's dtype)."""

import json
import os
import struct

import pytest

from conftest import run_inprocess


def tensor_dtypes(folder):
    with open(os.path.join(folder, 'model.safetensors'), 'rb') as f:
        (n,) = struct.unpack('<Q', f.read(8))
        header = json.loads(f.read(n))
    return {v['dtype'] for k, v in header.items() if k != '__metadata__'}


@pytest.mark.parametrize('alias, stored', [('bf16', 'BF16'), ('fp16', 'F16'), ('f32', 'F32')])
def test_a_short_dtype_name_exports_that_dtype(tiny_run, tmp_path, alias, stored):
    dest = tmp_path / 'hf'
    code, out, err = run_inprocess('export.py', f'--out_dir={tiny_run}', f'--dest={dest}', f'--dtype={alias}')
    assert code == 0, err
    assert tensor_dtypes(dest) == {stored}
