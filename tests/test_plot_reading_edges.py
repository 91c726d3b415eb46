"""plot.py's reading and legend thinning, checked by hand."""

import json

import plot


def test_thinning_a_legend_keeps_the_first_and_the_last_block():
    # 48 blocks shown as 5: evenly spaced by 47 / 4 = 11.75, rounded
    assert plot._thin(list(range(48)), 5) == [0, 12, 24, 35, 47]
    assert plot._thin(list(range(3)), 5) == [0, 1, 2]
    assert plot._thin(list(range(10)), 2) == [0, 9]


def test_a_time_budget_that_is_not_a_number_reads_as_none(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    records = [{'kind': 'start', 'iter': 0, 'config': {'max_seconds': 'an hour'}},
               {'iter': 0, 'train_loss': 4.0, 'val_loss': 4.1}]
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))
    run = plot.read_run(str(path))
    assert run['budget'] == 0.0 and [r['iter'] for r in run['evals']] == [0]
    records[0]['config']['max_seconds'] = 90.0
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))
    assert plot.read_run(str(path))['budget'] == 90.0
