"""A WANDB_MODE that wandb does not know is named as such before any network probe."""

import pytest

from core.errors import UserError
from core.training import tracking


def test_an_unknown_wandb_mode_is_named(monkeypatch):
    monkeypatch.setenv('WANDB_MODE', 'bogus')
    monkeypatch.setattr(tracking.network, 'unreachable', lambda *a, **k: pytest.fail('probed the network'))
    with pytest.raises(UserError, match=r"^WANDB_MODE=bogus is not a wandb mode; use one of online, offline, disabled"):
        tracking.start_wandb('p', 'r', {})
