"""core/inference/hugepages.py with the kernel stood in for: the THP switch file, madvise's answers and
/proc/self/maps are given by the test, so each expectation is worked out by hand on any machine."""

import io
import sys

import pytest

from core.inference import hugepages

HUGE = 2 << 20  # 2 MiB


class FakeLibc:
    """madvise that records its calls and answers `answer` (0: done, -1: refused)."""

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def madvise(self, start, length, advice):
        self.calls.append((start, length, advice))
        return self.answer


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason="huge pages are asked for on Linux only")
@pytest.mark.parametrize('switch, usable', [('always [madvise] never', True), ('[always] madvise never', True),
                                            ('always madvise [never]', False)])
def test_huge_pages_are_asked_for_unless_the_switch_selects_never(tmp_path, monkeypatch, switch, usable):
    # the file always lists every choice; the one in brackets is the setting
    enabled = tmp_path / 'enabled'
    enabled.write_text(switch + '\n')
    monkeypatch.setattr(hugepages, 'ENABLED', str(enabled))
    assert (hugepages._libc() is not None) == usable


def test_a_refused_madvise_counts_no_bytes_asked(monkeypatch):
    libc = FakeLibc(-1)
    monkeypatch.setattr(hugepages, '_libc', lambda: libc)
    assert hugepages.advise([(4 * HUGE, 3 * HUGE)]) == 0
    assert libc.calls == [(4 * HUGE, 3 * HUGE, hugepages.MADV_HUGEPAGE)]  # and no collapse after a refusal


def test_an_accepted_madvise_counts_the_whole_pages_inside_the_range(monkeypatch):
    libc = FakeLibc(0)
    monkeypatch.setattr(hugepages, '_libc', lambda: libc)
    # [HUGE + 1, 5 * HUGE + 10): the whole pages inside start at 2 * HUGE and end at 5 * HUGE, 3 pages
    assert hugepages.advise([(HUGE + 1, 4 * HUGE + 9)]) == 3 * HUGE
    assert libc.calls == [(2 * HUGE, 3 * HUGE, hugepages.MADV_HUGEPAGE), (2 * HUGE, 3 * HUGE, hugepages.MADV_COLLAPSE)]


def test_only_private_writable_mappings_without_a_file_are_anonymous(monkeypatch):
    maps = ('7f0000000000-7f0000800000 rw-p 00000000 00:00 0 \n'                       # anonymous: kept
            '7f1000000000-7f1000400000 rw-p 00000000 08:01 1234   /data/train.bin\n'  # a file: left out
            '7f2000000000-7f2000200000 r--p 00000000 00:00 0 \n'                       # read-only: left out
            '7f3000000000-7f3000200000 rw-s 00000000 00:05 77     /dev/shm/x\n')      # shared: left out
    monkeypatch.setattr(hugepages, 'open', lambda path, *a, **k: io.StringIO(maps), raising=False)
    assert hugepages.anonymous_mappings() == {0x7f0000000000: 0x7f0000800000}


def test_a_mapping_that_grew_since_counts_as_new(monkeypatch):
    a, b = 0x7f0000000000, 0x7f4000000000
    now = {a: a + 16 * HUGE, b: b + 8 * HUGE}
    monkeypatch.setattr(hugepages, '_libc', lambda: FakeLibc(0))
    monkeypatch.setattr(hugepages, 'anonymous_mappings', lambda: dict(now))
    # a grew from 8 to 16 pages (the heap extended for the weights); b is as it was
    assert hugepages.new_since({a: a + 8 * HUGE, b: b + 8 * HUGE}) == [(a, 16 * HUGE)]
