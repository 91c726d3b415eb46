"""core/hardware.py figures checked by hand: the --threads limit and the measured CPU peak's FLOP count."""

import pytest
import torch

from core import hardware
from core.errors import UserError


def test_threads_up_to_four_per_cpu_are_accepted(monkeypatch):
    monkeypatch.setattr(hardware.os, 'cpu_count', lambda: 2)
    for ok in (0, 1, 8):
        assert hardware.check_threads(ok) == ok
    for bad in (9, -1):
        with pytest.raises(UserError, match='from 1 to 8'):
            hardware.check_threads(bad)


def test_cpu_peak_counts_two_flops_per_multiply_add(monkeypatch):
    # a clock that moves 10 ms at every reading: every timed n x n matmul then takes exactly 10 ms
    ticks = iter(range(10 ** 6))
    monkeypatch.setattr(hardware.time, 'perf_counter', lambda: next(ticks) * 0.01)
    n = 8
    flops = hardware.measure_cpu_peak_flops(n=n, seconds=0.05, dtype=torch.float32, again=True)
    assert flops == pytest.approx(2 * n ** 3 / 0.01)  # n^3 multiply-adds of 2 FLOPs each, in 10 ms
    hardware._cpu_peak_cache.clear()  # leave no fake figure for other tests
