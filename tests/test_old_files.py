"""Files written by the code before the package move (commit 55231b2) still load and compute the same:
a run's checkpoint and an export folder of the kind that brings its own modeling file. The expected
logits were computed by that older code, not by this one."""

import json
import os
import shutil

import pytest
import torch

from conftest import REPO, run_script
from core.interop import hf
from core.training import checkpoint

FIXTURE = os.path.join(REPO, 'tests', 'fixtures', 'before_the_move')


@pytest.fixture(scope='module')
def expected():
    with open(os.path.join(FIXTURE, 'expected.json')) as f:
        return json.load(f)


def logits_of(model, ids):
    model.eval()
    with torch.no_grad():
        return model.head(model.hidden_states(torch.tensor([ids])))[0]


def test_an_old_checkpoint_loads_with_the_logits_it_had(expected):
    model, state = checkpoint.load_model(os.path.join(FIXTURE, 'ckpt.pt'))
    got = logits_of(model, expected['input_ids'])
    assert torch.allclose(got, torch.tensor(expected['logits']), atol=1e-5)
    ids = torch.tensor([expected['input_ids'][:4]])
    assert model.generate(ids, 20, temperature=0)[0].tolist() == expected['greedy_from_4']


def test_an_old_run_folder_still_samples(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    shutil.copy(os.path.join(FIXTURE, 'ckpt.pt'), run / 'ckpt.pt')
    r = run_script('sample.py', f'--out_dir={run}', '--start=ROMEO:', '--num_samples=1', '--max_new_tokens=5',
                   '--device=cpu', '--compile=False')
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('ROMEO:')


def test_an_old_export_folder_loads_in_our_code_and_in_transformers(expected, tmp_path):
    folder = str(tmp_path / 'hf')
    shutil.copytree(os.path.join(FIXTURE, 'hf'), folder)
    ours = hf.from_pretrained(f'hf:{folder}')
    assert torch.allclose(logits_of(ours, expected['input_ids']), torch.tensor(expected['logits']), atol=1e-5)
    transformers = pytest.importorskip('transformers')
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    with torch.no_grad():
        out = theirs(torch.tensor([expected['input_ids']])).logits[0]
    assert torch.allclose(out, torch.tensor(expected['logits']), atol=1e-4)
