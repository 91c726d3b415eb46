"""log_health's gradient norms are those of the step just before each evaluation (core/training/tracking.py's
docstring): their per-layer norms combine to the total gradient norm train.py logs to wandb for that same step
(clip_grad_norm_'s figure, before clipping), in the offline run's history."""

import glob
import json
import math

import pytest

from conftest import TINY, run_script
from test_wandb import wandb_records


def test_health_grad_norms_are_the_step_before_each_eval(char_data, tmp_path):
    pytest.importorskip('wandb')
    out = tmp_path / 'out'
    env = {'WANDB_DIR': str(tmp_path / 'wb'), 'HOME': str(tmp_path / 'home'), 'NETRC': str(tmp_path / 'no-netrc'),
           'WANDB_API_KEY': '', 'WANDB_MODE': 'offline'}
    r = run_script('train.py', f'--dataset={char_data}', f'--out_dir={out}', '--max_iters=9', '--eval_interval=3',
                   '--wandb_log=True', '--wandb_project=test', '--log_health=True', *TINY, env=env, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    (wandb_file,) = glob.glob(str(tmp_path / 'wb' / 'wandb' / 'offline-run-*' / 'run-*.wandb'))
    history = {}
    for rec in wandb_records(wandb_file):
        if rec.WhichOneof('record_type') == 'history':
            items = {'/'.join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item}
            history.setdefault(items['_step'], {}).update(items)
    evals = [m for m in map(json.loads, open(out / 'metrics.jsonl')) if 'val_loss' in m and m['iter'] > 0]
    assert [m['iter'] for m in evals] == [3, 6, 9]
    for m in evals:
        per_layer = [v for k, v in m['health'].items() if k.startswith('grad_norm/')]
        # 'iter n' (log_interval=1) logs the gradient norm of step n - 1, the step before the eval at n
        assert math.sqrt(sum(v * v for v in per_layer)) == pytest.approx(history[m['iter']]['grad_norm'], rel=1e-4)
