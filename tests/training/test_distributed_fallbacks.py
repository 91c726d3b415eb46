"""core/training/distributed.py without torchrun's agent: the batch a split that cannot work suggests, and who says a
mistake when the agent's store cannot be reached (rank 0 alone, as Reports' docstring has it)."""

import pytest

from core.errors import UserError
from core.training import distributed


def test_a_split_that_cannot_work_suggests_a_batch_of_at_least_one_per_process():
    # batch_size=1 over 4 processes rounds to 0 per process: the nearest multiple that works is 4
    with pytest.raises(UserError, match=r'use --batch_size=4 \(a multiple of 4\) or --gradient_accumulation_steps=12'):
        distributed.share_batch(3, 1, 4)


@pytest.mark.parametrize('rank, says', [('0', True), ('1', False), ('3', False)])
def test_without_the_agents_store_rank_0_alone_says_a_mistake(rank, says, monkeypatch):
    # no TORCHELASTIC_USE_AGENT_STORE: no store; the count a rank gets back decides whether it prints (1: it does)
    monkeypatch.delenv('TORCHELASTIC_USE_AGENT_STORE', raising=False)
    monkeypatch.setenv('RANK', rank)
    reports = distributed.Reports()
    assert reports.store is None
    assert (reports.add(1) == 1) == says
    assert reports.add(0) == 0  # a rank whose collective broke, with no mistake of its own, reports none
    reports.said()
    reports.wait_said(seconds=0.1)  # without a store, nothing to wait for
