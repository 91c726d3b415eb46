"""core/units.py: sizes in binary units and FLOP counts, at the edges of each unit."""

from core.units import format_bytes, format_flops


def test_bytes_change_unit_exactly_at_each_power_of_1024():
    assert format_bytes(None) == 'unknown'
    assert format_bytes(1023) == '1023 B'
    assert format_bytes(1024) == '1.0 KiB'
    assert format_bytes(1024 ** 2 - 1) == '1024.0 KiB'  # 1048575 / 1024 = 1023.999 KiB, shown to one place
    assert format_bytes(1024 ** 2) == '1.0 MiB'
    assert format_bytes(1024 ** 3) == '1.00 GiB'
    assert format_bytes(80 * 1024 ** 3) == '80.00 GiB'
    assert format_bytes(-3 * 1024 ** 2) == '-3.0 MiB'  # a shortfall reads in the same units


def test_flops_in_decimal_units():
    assert format_flops(999) == '999 FLOP'
    assert format_flops(1e3) == '1 kFLOP'
    assert format_flops(6 * 124e6 * 1024) == '762 GFLOP'  # 6 N per token, GPT-2 small, one 1024-token sequence
    assert format_flops(3.14e21) == '3.14e+03 EFLOP'
