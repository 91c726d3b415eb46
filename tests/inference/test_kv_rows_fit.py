"""engine.check_rows_fit refuses a batch whose KV cache does not fit: it must count both the keys and the values that
model.new_caches really allocates (the reference: the bytes of those tensors)."""

import pytest
import torch

from core.errors import UserError
from core.inference import engine
from core.training import planner
from model import GPT, GPTConfig


def test_rows_whose_allocated_cache_exceeds_the_budget_are_refused(monkeypatch):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=65, n_layer=2, n_head=2, n_embd=64))
    rows = 8
    allocated = sum(c.k.nbytes + c.v.nbytes for c in model.new_caches(rows, 'cpu', torch.float32))
    monkeypatch.setattr(planner, 'device_budget', lambda device: int(0.9 * allocated))
    with pytest.raises(UserError, match='KV cache'):
        engine.check_rows_fit(model.config, rows, 'cpu', torch.float32)
    monkeypatch.setattr(planner, 'device_budget', lambda device: 2 * allocated)
    engine.check_rows_fit(model.config, rows, 'cpu', torch.float32)  # room to spare: no error
