"""plan.py's search scores a trial by the val loss its train.py run reaches at its end, not by the evaluation at step
0 (the untrained model's, about ln(vocab) for every candidate alike, which would rank the learning rates by noise)."""

import json
import os

from core.training import search


def test_a_trial_is_scored_by_its_final_val_loss(char_data, tmp_path):
    trial = search.Trial(1, search.ARMS[0], 6.0)
    keys = dict(search.arm_keys(trial.arm, 2, 64, search.SEARCH_WIDTH), seed=1337, threads=1)
    search.run_trial(trial, keys, char_data, 'cpu', 'float32', str(tmp_path))
    assert trial.error is None and trial.val_loss is not None
    with open(os.path.join(tmp_path, 'trial01', 'metrics.jsonl')) as f:
        evals = [r for r in map(json.loads, f) if 'val_loss' in r]
    assert evals[0]['iter'] == 0 and evals[-1]['iter'] > 0
    assert trial.val_loss == evals[-1]['val_loss'] != evals[0]['val_loss']
