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


def test_code_version_in_a_checkout_outside_one_and_without_git(tmp_path, monkeypatch):
    import subprocess
    from core.training.metrics import code_version
    repo = tmp_path / 'repo'
    repo.mkdir()
    git = lambda *a: subprocess.run(['git', '-C', str(repo), '-c', 'user.name=t', '-c', 'user.email=t@t', *a],
                                    check=True, capture_output=True)
    git('init', '-q')
    (repo / 'a.py').write_text('x = 1\n')
    git('add', 'a.py')
    git('commit', '-qm', 'one')
    head = subprocess.run(['git', '-C', str(repo), 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip()
    assert code_version(str(repo)) == {'commit': head, 'dirty': False}
    (repo / 'run.log').write_text('untracked files are runs and data, not code\n')
    assert code_version(str(repo)) == {'commit': head, 'dirty': False}
    (repo / 'a.py').write_text('x = 2\n')
    assert code_version(str(repo)) == {'commit': head, 'dirty': True}
    assert code_version(str(tmp_path / 'elsewhere')) == {'commit': None, 'dirty': None}
    monkeypatch.setenv('PATH', str(tmp_path / 'no-programs-here'))
    assert code_version(str(repo)) == {'commit': None, 'dirty': None}
