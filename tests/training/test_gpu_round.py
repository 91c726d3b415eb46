"""studies/gpu_round.py, the one script a lent GPU runs, in its dry run: every step on the CPU with tiny shapes,
each figure in the JSON and markdown files, and the FLOP formula against torch's counter."""

import json
import os

from conftest import assert_one_line_error, run_script


def test_dry_run_runs_every_step_and_writes_one_report(tmp_path):
    r = run_script('studies/gpu_round.py', '--dry_run', f'--out_dir={tmp_path}', '--budget_s=100000', timeout=1500,
                   env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / 'gpu_round.json').read_text())
    steps = report['steps']
    assert list(steps) == ['cuda_tests', 'flops', 'bench', 'bench_chunked', 'fp8_speed', 'planner', 'fp8_loss']
    failed = {k: v for k, v in steps.items() if not v['ok']}
    assert not failed, failed
    assert report['info']['dry_run'] and report['info']['date'] and report['info']['device'].startswith('CPU')
    assert 'skipped' in steps['cuda_tests']['summary']  # no GPU here: the CUDA tests skip themselves
    # the model's own formula, which MFU counts, agrees exactly with torch's counter on the tiny model
    assert steps['flops']['ratio'] == 1.0, steps['flops']
    assert steps['bench']['tokens_per_sec'] > 0 and steps['bench']['planned_memory_bytes'] > 0
    for name in ('fp8_speed', 'fp8_loss'):
        bf16, fp8 = steps[name]['bf16'], steps[name]['fp8']
        assert bf16['ok'] and bf16['tokens_per_sec'] > 0
        assert fp8.get('skipped') == 'torchao is not installed' or (fp8['ok'] and fp8['converted_layers'] == 8), fp8
    assert steps['fp8_loss']['bf16']['steps'] == 5 and steps['fp8_loss']['bf16']['val_loss'] > 0
    for label in ('eager', 'compiled'):
        rows = steps['planner'][label]['rows']
        assert [row['config'] for row in rows] == ['tiny'] and rows[0]['measured'] > 0
    md = (tmp_path / 'gpu_round.md').read_text()
    assert report['info']['date'] in md and 'dry run' in md and '## planner: ok' in md


def test_without_a_gpu_or_with_an_unknown_step_it_stops_in_one_line(tmp_path):
    import torch
    if not torch.cuda.is_available():
        r = run_script('studies/gpu_round.py', f'--out_dir={tmp_path}')
        assert_one_line_error(r, 'no', '--dry_run')
    r = run_script('studies/gpu_round.py', '--dry_run', '--only=bench,mfu', f'--out_dir={tmp_path}')
    assert_one_line_error(r, "'mfu'", 'cuda_tests')
    assert not os.listdir(tmp_path)


def test_no_step_starts_past_the_budget_and_each_is_recorded(tmp_path):
    r = run_script('studies/gpu_round.py', '--dry_run', '--budget_s=0', '--only=flops,planner', f'--out_dir={tmp_path}')
    assert r.returncode == 0, r.stderr[-3000:]
    steps = json.loads((tmp_path / 'gpu_round.json').read_text())['steps']
    assert list(steps) == ['flops', 'planner']
    assert all(not s['ok'] and '--only=' in s['skipped'] for s in steps.values()), steps
