"""eval.py's HellaSwag note: a run that skipped examples (characters outside its vocabulary) says how many, even when
none was cut to its window (one example of two holds "@", which Shakespeare's characters do not); and
--hellaswag_limit=N scores the first N examples, N counted here by hand."""

import json

from conftest import run_inprocess


def test_skipped_examples_are_noted_when_none_was_cut(tiny_run, tmp_path):
    examples = [{'ctx': 'He', 'endings': [' ran.', ' sat.', ' ate.', ' hid.'], 'label': 0},  # 7 characters: fits
                {'ctx': 'He@', 'endings': [' ran.', ' sat.', ' ate.', ' hid.'], 'label': 1}]
    path = tmp_path / 'hs.jsonl'
    path.write_text(''.join(json.dumps(e) + '\n' for e in examples), encoding='utf-8')
    code, out, err = run_inprocess('eval.py', f'--out_dir={tiny_run}', '--tasks=hellaswag', f'--hellaswag_file={path}',
                                   '--device=cpu')
    assert code == 0, err
    assert '1 examples skipped (characters outside its vocabulary), 0 cut on the left to its block_size' in out, out


def test_hellaswag_limit_scores_exactly_that_many_examples(tiny_run, tmp_path):
    ending = [' ran.', ' sat.', ' ate.', ' hid.']
    path = tmp_path / 'hs.jsonl'
    path.write_text(''.join(json.dumps({'ctx': c, 'endings': ending, 'label': 0}) + '\n' for c in ('He', 'She', 'It')),
                    encoding='utf-8')
    for limit, n in ((2, 2), (0, 3)):  # 0: all of them
        code, out, err = run_inprocess('eval.py', f'--out_dir={tiny_run}', '--tasks=hellaswag', f'--hellaswag_file={path}',
                                       f'--hellaswag_limit={limit}', '--json=True', '--device=cpu')
        assert code == 0, err
        assert json.loads(out)['runs'][0]['hellaswag']['n'] == n
