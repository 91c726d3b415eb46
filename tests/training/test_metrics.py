"""core/training/metrics.py: metrics.jsonl appends, and a failure said once."""

import json

from core.training.metrics import MetricsLog


def test_appends_records_and_warns_once_when_it_cannot(tmp_path, capsys):
    log = MetricsLog(str(tmp_path))
    log.append({'iter': 0, 'val_loss': 4.0})
    log.append({'iter': 10, 'val_loss': 3.5})
    with open(tmp_path / 'metrics.jsonl') as f:
        assert [json.loads(line) for line in f] == [{'iter': 0, 'val_loss': 4.0}, {'iter': 10, 'val_loss': 3.5}]
    gone = MetricsLog(str(tmp_path / 'no' / 'such' / 'folder'))
    gone.append({'iter': 1})
    gone.append({'iter': 2})
    err = capsys.readouterr().err
    assert err.count('warning: cannot append to') == 1 and gone.failed == [1, 2]
