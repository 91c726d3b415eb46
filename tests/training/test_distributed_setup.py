"""core/training/distributed.py in one process: the batch shares of torchrun's processes and the collectives'
identity without a process group (the multi-process runs are in tests/system/test_distributed.py)."""

import pytest

from core.errors import UserError
from core.training import distributed


@pytest.mark.parametrize('accum, batch, world, expected', [
    (8, 12, 1, (8, 12, 1)), (8, 12, 4, (2, 12, 1)),  # the micro-steps divide: each process takes a share of them
    (1, 12, 4, (1, 3, 4)), (3, 'auto', 2, (3, 'auto', 2))])  # they do not: each micro-batch is split
def test_share_batch_keeps_the_global_batch(accum, batch, world, expected):
    said = []
    got = distributed.share_batch(accum, batch, world, said.append)
    assert got == expected
    a, b, split = got
    if b != 'auto':
        assert a * b * world == accum * batch  # sequences per optimizer step, over all processes
    assert bool(said) == (split > 1)


def test_share_batch_that_cannot_split_names_what_would():
    with pytest.raises(UserError, match=r'use --batch_size=4 \(a multiple of 4\) or --gradient_accumulation_steps=12'):
        distributed.share_batch(3, 5, 4)


def test_collectives_without_a_process_group():
    assert distributed.all_reduce([1.5, 2.0], 'cpu', 'max') == [1.5, 2.0]
    distributed.finish(clean=True)  # nothing to tear down
