"""configurator.py at its edges: a bare --flag, 64-bit integer limits, a config file saved with a byte order mark."""

import pytest

from configurator import ConfigError, parse

DEFAULTS = {'compile': True, 'wandb_log': False, 'seed': 1337, 'learning_rate': 6e-4, 'out_dir': 'out'}


def test_a_bare_flag_turns_a_boolean_on_whatever_its_default():
    assert parse(['--wandb_log'], DEFAULTS)['wandb_log'] is True
    assert parse(['--compile'], DEFAULTS)['compile'] is True  # already on: stays on, never flipped off
    assert parse(['--compile=False', '--compile'], DEFAULTS)['compile'] is True


def test_integers_must_fit_in_64_bits():
    top = 2 ** 63 - 1
    assert parse([f'--seed={top}'], DEFAULTS)['seed'] == top
    assert parse([f'--seed={-2 ** 63}'], DEFAULTS)['seed'] == -2 ** 63
    for bad in (2 ** 63, -2 ** 63 - 1):
        with pytest.raises(ConfigError, match='fits in 64 bits'):
            parse([f'--seed={bad}'], DEFAULTS)


def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / 'bom.py'
    path.write_bytes('\ufeffseed = 7\nlearning_rate = 1e-3\n'.encode('utf-8'))  # as Windows Notepad saves it
    cfg = parse([str(path)], DEFAULTS)
    assert cfg['seed'] == 7 and cfg['learning_rate'] == 1e-3
