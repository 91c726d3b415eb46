"""Weights and caches on 2 MiB pages (core/inference/hugepages.py), checked with the kernel's own accounting:
/proc/self/smaps says how much of each mapping huge pages back."""

import os
import platform

import pytest
import torch

from core.inference import hugepages
from core.inference.engine import Batch
from model import GPT, GPTConfig


def kernel_collapses():
    """Linux with transparent huge pages on request and MADV_COLLAPSE (6.1 and later)."""
    try:
        major, minor = (int(x) for x in platform.release().split('.')[:2])
    except ValueError:
        return False
    return hugepages._libc() is not None and (major, minor) >= (6, 1)


needs_collapse = pytest.mark.skipif(not kernel_collapses(), reason="no transparent huge pages on request here")


def huge_bytes_at(address, length=1):
    """AnonHugePages of the mappings overlapping [address, address + length), in bytes (smaps; asking for huge
    pages splits a mapping where the asked range begins and ends)."""
    total, inside = 0, False
    with open('/proc/self/smaps') as f:
        for line in f:
            head = line.split()[0]
            if '-' in head and not head.endswith(':'):
                start, end = (int(x, 16) for x in head.split('-'))
                inside = start < address + length and address < end
            elif inside and head == 'AnonHugePages:':
                total += int(line.split()[1]) * 1024
    return total


@needs_collapse
def test_advised_tensors_are_backed_by_huge_pages():
    t = torch.ones(6 << 20)  # 24 MiB, every page touched
    with open(hugepages.ENABLED) as f:
        if '[madvise]' in f.read():  # huge pages on request only: a fresh allocation has none
            assert huge_bytes_at(t.data_ptr(), t.numel() * 4) == 0
    asked = hugepages.advise(hugepages.tensor_ranges([t, t[5:], t.view(2, -1)]))  # one storage, counted once
    assert 0 < asked <= t.numel() * 4 and asked % hugepages.HUGE == 0
    assert huge_bytes_at(t.data_ptr(), t.numel() * 4) >= asked
    assert torch.equal(t, torch.ones(6 << 20))  # the values are the same after the move


@needs_collapse
def test_a_batch_puts_the_models_weights_on_huge_pages():
    # a model whose embedding (8192 x 256 fp32, 8 MiB) spans whole 2 MiB pages
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=256, block_size=64, vocab_size=8192)).eval()
    wte = model.transformer.wte.weight
    Batch(model, 1, 'cpu')
    assert huge_bytes_at(wte.data_ptr(), wte.numel() * 4) >= 4 << 20


def test_new_mappings_are_found():
    before = hugepages.anonymous_mappings()
    t = torch.ones(16 << 20)  # 64 MiB: an allocation this large gets its own mapping
    found = hugepages.new_since(before)
    if hugepages._libc() is None:
        assert found == []
        return
    assert any(start <= t.data_ptr() < start + length for start, length in found)
    assert all(length >= 4 * hugepages.HUGE for _, length in found)


def test_nothing_is_asked_where_pages_cannot_be_huge(monkeypatch):
    monkeypatch.setattr(hugepages, 'ENABLED', os.devnull + '/nowhere')  # no such switch: not Linux's THP
    assert hugepages.advise([(0, 1 << 30)]) == 0 and hugepages.new_since({}) == []
