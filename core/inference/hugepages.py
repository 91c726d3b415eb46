"""Weights on 2 MiB pages, so that a decode step streaming them costs fewer TLB misses.

Generating one row reads every weight once per token. With 4 KiB pages a 120 MB model is 30,000 pages a token,
far more than the TLB holds, and on one core the page walks cost a fifth of the step: the 30M-parameter fp32
model made 110 tok/s on 4 KiB pages and 145 on 2 MiB ones (docs/results.md, 2026-12-06). Linux gives an
anonymous mapping huge pages when asked (madvise MADV_HUGEPAGE, for pages touched later) and, from 6.1, turns
the pages already there into huge ones (MADV_COLLAPSE). Both are hints: a system without them (another OS,
transparent huge pages off, an older kernel) keeps its pages, and nothing else changes.
"""

import ctypes
import os
import sys

HUGE = 2 << 20
MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25
ENABLED = '/sys/kernel/mm/transparent_hugepage/enabled'


def _libc():
    if not sys.platform.startswith('linux'):
        return None
    try:
        with open(ENABLED) as f:
            if '[never]' in f.read():
                return None
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


def advise(ranges):
    """Ask for huge pages over the whole 2 MiB pages inside each (start address, length); returns the bytes asked
    for. The pages already there are collapsed into huge ones where the kernel can (6.1 and later)."""
    libc, asked = _libc(), 0
    if libc is None:
        return 0
    for start, length in ranges:
        first, end = -(-start // HUGE) * HUGE, (start + length) // HUGE * HUGE
        if end <= first:
            continue
        if libc.madvise(first, end - first, MADV_HUGEPAGE) == 0:
            libc.madvise(first, end - first, MADV_COLLAPSE)  # fails harmlessly where unsupported
            asked += end - first
    return asked


def tensor_ranges(tensors):
    """(address, bytes) of each distinct CPU storage among tensors."""
    seen = {}
    for t in tensors:
        if t.device.type == 'cpu' and t.numel():
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return list(seen.items())


def anonymous_mappings():
    """{start: end} of this process's private, writable mappings backed by no file (where allocations live)."""
    found = {}
    try:
        with open('/proc/self/maps') as f:
            for line in f:
                parts = line.split()
                if len(parts) == 5 and parts[1].startswith('rw') and parts[1].endswith('p'):
                    start, end = (int(x, 16) for x in parts[0].split('-'))
                    found[start] = end
    except OSError:
        pass
    return found


def new_since(before, least=HUGE * 4):
    """The anonymous mappings of at least `least` bytes that are new or have grown since `before`
    (anonymous_mappings() taken earlier): what a step's build or load allocated, its weights among it."""
    if _libc() is None:
        return []
    return [(start, end - start) for start, end in anonymous_mappings().items()
            if end - start >= least and before.get(start) != end]
