"""core/training/distributed.py in one plain process (no torchrun): settings that need several processes are
refused in one line rather than run as something else."""

import pytest

from core.errors import UserError
from core.training import distributed


def test_fsdp_in_a_lone_process_is_refused_not_run_unsharded(monkeypatch):
    for name in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError, match='fsdp=True shards the model over several processes; launch with torchrun'):
        distributed.compute_init(device='cpu', dtype='float32', compile=False, fsdp=True)
