"""plot.py: loss curves from metrics.jsonl, one run or several, with and without health."""

import json
import math
import os

import pytest

import plot
from conftest import assert_one_line_error, run_script

pytest.importorskip('matplotlib')


def write_run(folder, lr, n_evals=6, health=False, torn=True):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'metrics.jsonl'), 'w') as f:
        for i in range(n_evals):
            step = 50 * i
            r = dict(iter=step, tokens=step * 768, train_loss=4.2 * math.exp(-lr * step), val_loss=4.3 * math.exp(-lr * step),
                     lr=lr * min(1.0, (step + 1) / 100), elapsed=float(i))
            if health:
                r['health'] = {f'act_rms/{name}': 0.5 + j + i for j, name in enumerate(['emb', 'h.0', 'h.1'])}
                if i:
                    r['health'].update({f'{k}/{name}': 0.01 * (j + 1) * i for k in ('grad_norm', 'update_ratio')
                                        for j, name in enumerate(['wte', 'wpe', 'h.0', 'h.1', 'ln_f'])})
            f.write(json.dumps(r) + '\n')
        if torn:
            f.write('{"iter": 300, "tokens": 23')  # a write cut short by a crash
    return str(folder)


def png_size(path):
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == b'\x89PNG\r\n\x1a\n'
    return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')


def test_read_metrics_skips_torn_lines_and_lets_later_records_replace_earlier_steps(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    lines = [{'iter': 0, 'val_loss': 4.0}, {'iter': 10, 'val_loss': 3.0}, {'iter': 20, 'val_loss': 2.5},
             {'iter': 10, 'val_loss': 2.9}, {'iter': 20, 'val_loss': 2.4}]
    path.write_text('\n'.join(json.dumps(r) for r in lines[:3]) + '\nnot json\n[1, 2]\n{"no_iter": 1}\n' +
                    '\n'.join(json.dumps(r) for r in lines[3:]) + '\n{"iter": 30, "val_')
    got = plot.read_metrics(str(path))
    assert [(r['iter'], r['val_loss']) for r in got] == [(0, 4.0), (10, 2.9), (20, 2.4)]


def test_one_run_and_health_make_pngs(tmp_path):
    a = write_run(tmp_path / 'lr-1e-3', 1e-3)
    b = write_run(tmp_path / 'lr-3e-3', 3e-3, health=True)
    one, health = tmp_path / 'sub' / 'one.png', tmp_path / 'health.png'
    plot.main([a, f'--out={one}'])
    plot.main([a, b, f'--out={health}', '--health=True'])
    for path in (one, health):
        assert os.path.getsize(path) > 5_000
    w, h = png_size(one)
    hw, hh = png_size(health)
    assert hh > 1.5 * h  # the health rows are drawn beneath the loss curves
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]


def test_cli_overlays_several_runs_and_refuses_a_folder_without_metrics(tmp_path):
    runs = [write_run(tmp_path / f'lr-{lr:g}', lr) for lr in (1e-3, 3e-3, 1e-2)]
    r = run_script('plot.py', *runs, f'--out={tmp_path / "sweep.png"}', '--log=True', timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'lr-0.001, lr-0.003, lr-0.01' in r.stdout
    assert png_size(tmp_path / 'sweep.png')[0] > 500 and os.path.getsize(tmp_path / 'sweep.png') > 5_000
    empty = tmp_path / 'empty'
    empty.mkdir()
    r = run_script('plot.py', runs[0], str(empty), f'--out={tmp_path / "x.png"}', timeout=120)
    assert_one_line_error(r, 'no metrics.jsonl', str(empty))
    assert not (tmp_path / 'x.png').exists()
    r = run_script('plot.py', runs[0], '--health=True', f'--out={tmp_path / "x.png"}', timeout=120)
    assert_one_line_error(r, 'log_health')


def test_bpb_overlays_runs_and_refuses_runs_without_it(tmp_path, monkeypatch):
    runs = [write_run(tmp_path / name, lr, torn=False) for name, lr in (('char', 1e-3), ('gpt2', 3e-3))]
    for run, tokens_per_byte in zip(runs, (1.0, 0.3)):
        path = os.path.join(run, 'metrics.jsonl')
        records = [json.loads(l) for l in open(path)]
        with open(path, 'w') as f:
            for r in records:
                r.update(val_bpb=r['val_loss'] * tokens_per_byte / math.log(2),
                         train_bpb=r['train_loss'] * tokens_per_byte / math.log(2))
                f.write(json.dumps(r) + '\n')
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, 'close', figures.append)  # keep the figure to read its lines back
    plot.main([*runs, f'--out={tmp_path / "bpb.png"}', '--metric=bpb'])
    assert os.path.getsize(tmp_path / 'bpb.png') > 5_000
    drawn = [[round(v, 9) for v in line.get_ydata()] for line in figures[0].axes[0].lines]
    for run in runs:
        records = plot.read_metrics(os.path.join(run, 'metrics.jsonl'))
        for key in ('val_bpb', 'train_bpb'):
            assert [round(r[key], 9) for r in records] in drawn
    assert 'bits per byte' in figures[0].axes[0].get_title()
    old = write_run(tmp_path / 'old', 1e-3)
    with pytest.raises(SystemExit) as e:
        plot.main([runs[0], old, '--metric=bpb'])
    assert e.value.code == 2


def write_timed_run(folder):
    """A run as train.py writes it now: a start record with a time budget, a record per log line, evals."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'metrics.jsonl'), 'w') as f:
        f.write(json.dumps({'kind': 'start', 'iter': 0, 'commit': None, 'dirty': None,
                            'config': {'max_seconds': 60.0}}) + '\n')
        for step in range(0, 41):
            if step % 20 == 0:
                f.write(json.dumps(dict(iter=step, tokens=step * 100, train_loss=4.0 - step / 20,
                                        val_loss=4.1 - step / 20, lr=1e-3, elapsed=step * 1.5)) + '\n')
            if step < 40:
                f.write(json.dumps(dict(kind='train', iter=step + 1, tokens=(step + 1) * 100,
                                        train_loss=4.0 - (step + 1) / 25, lr=1e-3 * (40 - step) / 40,
                                        elapsed=(step + 1) * 1.5)) + '\n')
    return str(folder)


def test_train_loss_and_learning_rate_come_from_every_log_line_and_a_timed_run_gets_a_time_axis(tmp_path,
                                                                                                  monkeypatch):
    run = write_timed_run(tmp_path / 'timed')
    got = plot.read_run(os.path.join(run, 'metrics.jsonl'))
    assert got['budget'] == 60.0 and len(got['lines']) == 40 and [r['iter'] for r in got['evals']] == [0, 20, 40]
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, 'close', figures.append)
    plot.main([run, f'--out={tmp_path / "timed.png"}'])
    axes = figures[0].axes
    assert [ax.get_title() for ax in axes[:3]] == ['loss vs step', 'loss vs tokens', 'loss vs seconds']
    train, val = axes[0].lines[:2]
    assert list(train.get_xdata()) == list(range(1, 41))  # the dashed curve has every log line
    assert list(val.get_xdata()) == [0, 20, 40]
    assert list(axes[2].lines[0].get_xdata()) == [1.5 * i for i in range(1, 41)]  # seconds
    lr_axes = [ax for ax in axes if ax.get_ylabel() == 'learning rate'][0]
    assert [round(v, 9) for v in lr_axes.lines[0].get_ydata()] == [round(1e-3 * (40 - s) / 40, 9) for s in range(40)]
    figures.clear()
    plot.main([write_run(tmp_path / 'untimed', 1e-3), f'--out={tmp_path / "untimed.png"}'])
    assert 'loss vs seconds' not in [ax.get_title() for ax in figures[0].axes]


def test_a_start_record_drops_what_came_after_its_step(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    rows = [dict(iter=0, val_loss=4.0), dict(kind='train', iter=1, train_loss=3.9), dict(iter=10, val_loss=3.0),
            dict(kind='train', iter=11, train_loss=2.9), dict(kind='start', iter=10, config={}),
            dict(kind='train', iter=11, train_loss=2.8)]
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    got = plot.read_run(str(path))
    assert [r['val_loss'] for r in got['evals']] == [4.0, 3.0]  # the eval at the resumed step stays
    assert [r['train_loss'] for r in got['lines']] == [3.9, 2.8]


@pytest.mark.parametrize('name', ['mine.png', 'mine.pdf', 'mine.svg', 'mine.jpg'])
def test_out_replaces_only_a_plot_it_wrote(tmp_path, name):
    run = write_run(tmp_path / 'run', 1e-3)
    theirs = tmp_path / name
    theirs.write_bytes(b'a file of the user\n')
    r = run_script('plot.py', run, f'--out={theirs}', timeout=120)
    assert_one_line_error(r, f'--out={theirs} exists', '--overwrite=True')
    assert theirs.read_bytes() == b'a file of the user\n'
    r = run_script('plot.py', run, f'--out={theirs}', '--overwrite=True', timeout=120)
    assert r.returncode == 0, r.stderr
    written = theirs.read_bytes()
    plot.main([run, f'--out={theirs}'])  # our own plot: a re-run replaces it without asking
    assert theirs.read_bytes() != b'a file of the user\n' and written


def test_a_run_named_twice_is_drawn_once_under_its_own_name(tmp_path):
    run = write_run(tmp_path / 'lr-a', 1e-3)
    other = write_run(tmp_path / 'lr-b', 3e-3)
    again = [run + '/', os.path.join(run, 'metrics.jsonl')]  # the same run, as a folder and as its file
    r = run_script('plot.py', run, other, *again, f'--out={tmp_path / "twice.png"}', timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].endswith('(2 runs: lr-a, lr-b)'), r.stdout
