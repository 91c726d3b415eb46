"""plot.py: what a reader of the image sees, read back from the figure (plt.close kept) or from the file's
first bytes; each expectation is written out by hand from the records the test writes."""

import json
import os

import pytest

import plot

pytest.importorskip('matplotlib')


def write(folder, records):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'metrics.jsonl'), 'w') as f:
        f.write(''.join(json.dumps(r) + '\n' for r in records))
    return str(folder)


def evals(steps, **extra):
    return [dict(iter=s, tokens=100 * s, train_loss=4.0 - s / 100, val_loss=4.1 - s / 100, lr=1e-3, **extra)
            for s in steps]


@pytest.fixture
def figures(monkeypatch):
    import matplotlib.pyplot as plt
    kept = []
    monkeypatch.setattr(plt, 'close', kept.append)  # keep the figure to read its axes back
    return kept


def test_a_record_for_an_earlier_step_drops_the_later_ones_even_without_a_start_record(tmp_path):
    # an older metrics.jsonl (no start records): a resume from the checkpoint at 10 rewrote 10 and 20, and a
    # record at 10 must take 20's place, not sit after it (the curve would run back in x)
    path = write(tmp_path / 'run', [dict(iter=0, val_loss=4.0), dict(iter=10, val_loss=3.0), dict(iter=20, val_loss=2.0),
                                    dict(iter=10, val_loss=3.1)])
    got = plot.read_metrics(os.path.join(path, 'metrics.jsonl'))
    assert [(r['iter'], r['val_loss']) for r in got] == [(0, 4.0), (10, 3.1)]


def test_a_timed_run_beside_an_untimed_one_still_gets_the_seconds_axis(tmp_path, figures):
    timed = write(tmp_path / 'timed', [{'kind': 'start', 'iter': 0, 'config': {'max_seconds': 60.0}}] +
                  evals([0, 10, 20], elapsed=1.0))
    untimed = write(tmp_path / 'untimed', evals([0, 10, 20]))
    plot.main([timed, untimed, f'--out={tmp_path / "both.png"}'])
    titles = [ax.get_title() for ax in figures[0].axes]
    assert 'loss vs seconds' in titles, titles


def test_bits_per_byte_draws_the_train_curve_from_the_evals_when_the_run_has_log_lines(tmp_path, figures):
    # log lines carry train_loss but no bpb; the evals carry both bpb figures
    records = [dict(kind='train', iter=s, tokens=100 * s, train_loss=4.0, lr=1e-3) for s in (1, 2, 3)]
    records += [dict(r, train_bpb=t, val_bpb=v) for r, t, v in zip(evals([0, 10, 20]), (2.0, 1.5, 1.25), (2.5, 2.0, 1.75))]
    run = write(tmp_path / 'run', records)
    plot.main([run, f'--out={tmp_path / "bpb.png"}', '--metric=bpb'])
    train, val = figures[0].axes[0].lines[:2]
    assert list(train.get_xdata()) == [0, 10, 20]  # the dashed train bpb, one point per eval
    assert list(train.get_ydata()) == [2.0, 1.5, 1.25] and list(val.get_ydata()) == [2.5, 2.0, 1.75]


def test_bits_per_byte_accepts_a_run_whose_first_evals_came_before_bpb_was_logged(tmp_path, figures):
    run = write(tmp_path / 'run', evals([0, 10]) + evals([20, 30], val_bpb=1.5))
    plot.main([run, f'--out={tmp_path / "bpb.png"}', '--metric=bpb'])
    val = figures[0].axes[0].lines[1]
    assert list(val.get_xdata()) == [20, 30]


@pytest.mark.parametrize('name, head', [('loss.jpeg', b'\xff\xd8\xff'), ('LOSS.PNG', b'\x89PNG\r\n\x1a\n'),
                                        ('Loss.Pdf', b'%PDF')])
def test_the_image_format_is_read_from_any_spelling_of_the_extension(tmp_path, name, head):
    run = write(tmp_path / 'run', evals([0, 10, 20]))
    out = tmp_path / name
    plot.main([run, f'--out={out}'])
    assert out.read_bytes()[:len(head)] == head  # the file's own magic bytes, not its name


def test_a_run_given_as_a_folder_and_again_through_dot_is_drawn_once(tmp_path, capsys):
    run = write(tmp_path / 'lr-a', evals([0, 10, 20]))
    again = os.path.join(str(tmp_path), '.', 'lr-a')  # the same folder spelt another way
    plot.main([run, again, f'--out={tmp_path / "once.png"}'])
    assert capsys.readouterr().out.splitlines()[-1].endswith('(1 run: lr-a)')


def test_health_colours_run_from_the_first_block_to_the_last_across_the_colour_map():
    # the map is read from 0.05 (first block) to 0.05 + 0.85 = 0.9 (last block), evenly: 4 blocks step by 0.85 / 3
    def cmap(x):
        return x
    assert [round(plot.layer_color(f'h.{i}', 4, cmap), 9) for i in range(4)] == \
        [0.05, round(0.05 + 0.85 / 3, 9), round(0.05 + 0.85 * 2 / 3, 9), 0.9]


def test_two_runs_whose_folders_share_a_name_are_told_apart_by_their_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert plot.run_names(['sweep-a/out', 'sweep-b/out/']) == ['sweep-a/out', 'sweep-b/out']
    assert plot.run_names(['sweep-a/out', 'sweep-b/other']) == ['out', 'other']
