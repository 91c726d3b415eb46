"""Sizes and FLOP counts in words, for every message and table: bytes in binary units (KiB, MiB, GiB), the
units memory and most tools report in, so a plan, a disk check and `free -h` can be compared at a glance."""

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def format_bytes(n):
    if n is None:
        return 'unknown'
    for unit, size in (('GiB', GiB), ('MiB', MiB), ('KiB', KiB)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}" if unit == 'GiB' else f"{n / size:.1f} {unit}"
    return f"{n} B"


def format_flops(n):
    for unit, size in (('EFLOP', 1e18), ('PFLOP', 1e15), ('TFLOP', 1e12), ('GFLOP', 1e9), ('MFLOP', 1e6),
                       ('kFLOP', 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.3g} FLOP"
