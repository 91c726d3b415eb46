"""plan.py's refusals and the config it writes, checked against what they should be rather than against the code:
the keys it carries over from the speedrun recipe's own config file, the names of its files and folders, and the
temporary folder of its trials. Every plan here fakes the measuring and the search (no trial trains)."""

import os
import string

import pytest

from conftest import REPO, assert_one_error_line, make_char_dataset, run_inprocess, write_dataset
from core.training import search


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_char_dataset(str(tmp_path_factory.mktemp('plan_hunt_data')), 200_000)


def fake_search(monkeypatch, measured=None):
    """Every shape at 60k tokens/s and a search that ran one trial of the recipe's rates x2 at 16 rows."""
    def measure(shape, vocab_size, *a, **k):
        if measured is not None:
            measured.append(vocab_size)
        return 60_000.0
    monkeypatch.setattr(search, 'measure_throughput', measure)

    def halving(arms, first_seconds, share, started, run, overhead, trials):
        trials.append(search.Trial(1, (2.0, 16), 10))
        trials[-1].val_loss = 1.9
        return trials, (2.0, 16)
    monkeypatch.setattr(search, 'successive_halving', halving)


def plan(*args):
    code, out, err = run_inprocess('plan.py', '--minutes=20', *args)
    assert code == 0 and 'Traceback' not in err, err
    return out


def read_config(path):
    cfg = {}
    exec(open(path).read(), cfg)
    return cfg


@pytest.mark.parametrize('key, value, words', [
    ('search_share', '0.3', 'search_share must be between 0 and 0.25'),
    ('trial_overhead', '-1', 'trial_overhead must be 0'),
])
def test_a_search_share_over_a_quarter_or_a_negative_trial_overhead_is_refused(tmp_path, data, monkeypatch, key, value,
                                                                                words):
    fake_search(monkeypatch)  # were it taken, no trial trains
    code, out, err = run_inprocess('plan.py', '--minutes=20', f'--dataset={data}', f'--out={tmp_path / "p.py"}',
                                   f'--{key}={value}')
    assert_one_error_line(code, err, words)
    assert not (tmp_path / 'p.py').exists()


def test_the_config_carries_the_speedrun_recipes_settings_and_names_its_own_run_folder(tmp_path, data, monkeypatch):
    fake_search(monkeypatch)
    dest = tmp_path / 'p.py'
    plan(f'--dataset={data}', f'--out={dest}', '--threads=1')
    cfg = read_config(dest)
    # the recipe, read from its own config file rather than from search.RECIPE
    recipe = read_config(os.path.join(REPO, 'config', 'speedrun_shakespeare_char_cpu.py'))
    for key in ('beta1', 'beta2', 'weight_decay', 'muon_momentum', 'muon_ns', 'warmup_iters', 'warmdown_frac',
                'min_lr', 'grad_clip', 'optimizer', 'norm', 'pos_encoding', 'mlp', 'qk_norm', 'tie_embeddings',
                'logit_softcap', 'attn_scale', 'block_size'):
        assert cfg[key] == recipe[key], key
    # the run folder is named by the dataset's folder name, not its path (which would put the run inside it)
    assert cfg['out_dir'] == f"out-plan-{os.path.basename(data)}-20m"
    # the val split of 200,000 characters' 10% is 20,000 tokens, far under 2M: scored whole
    assert cfg['eval_full'] is True
    assert cfg['threads'] == 1  # as the plan was told


def test_overwrite_replaces_an_existing_plan_and_the_plot_goes_beside_it_as_png(tmp_path, data, monkeypatch):
    fake_search(monkeypatch)
    plotted = []
    monkeypatch.setattr(search, 'plot_trials', lambda trials, path: plotted.append(path))
    dest = tmp_path / 'p.py'
    dest.write_text('# mine\n')
    plan(f'--dataset={data}', f'--out={dest}', '--overwrite=True', '--plot=True')
    assert dest.read_text().startswith('# Written by plan.py')
    assert plotted == [str(tmp_path / 'p.png')]


def test_an_existing_plot_beside_the_config_is_kept_without_overwrite(tmp_path, data, monkeypatch):
    fake_search(monkeypatch)
    (tmp_path / 'p.png').write_bytes(b'mine')
    code, out, err = run_inprocess('plan.py', '--minutes=20', f'--dataset={data}', f'--out={tmp_path / "p.py"}',
                                   '--plot=True')
    assert_one_error_line(code, err, 'p.png exists')
    assert (tmp_path / 'p.png').read_bytes() == b'mine' and not (tmp_path / 'p.py').exists()


def test_the_trials_temporary_folder_is_removed(tmp_path, data, monkeypatch):
    import tempfile
    made = []
    real = tempfile.mkdtemp

    def mkdtemp(*a, **k):
        path = real(*a, dir=tmp_path, **{n: v for n, v in k.items() if n != 'dir'})
        if k.get('prefix') == 'plan-':  # not the write checks' probes
            made.append(path)
        return path
    monkeypatch.setattr(tempfile, 'mkdtemp', mkdtemp)
    fake_search(monkeypatch)
    plan(f'--dataset={data}', f'--out={tmp_path / "p.py"}')
    assert len(made) == 1 and not os.path.exists(made[0])


def test_without_out_the_plan_is_config_plan_dataset_minutes_m_py(tmp_path, data, monkeypatch):
    # the file the docstring names: config/plan_<dataset folder>_<minutes>m.py, minutes without a trailing .0
    import core.paths
    monkeypatch.setattr(core.paths, 'REPO', str(tmp_path))
    (tmp_path / 'config').mkdir()
    fake_search(monkeypatch)
    out = plan(f'--dataset={data}')
    name = f'plan_{os.path.basename(data)}_20m.py'
    assert os.listdir(tmp_path / 'config') == [name], out
    assert f'# python train.py config/{name}\n' in (tmp_path / 'config' / name).read_text()


def test_a_vocabulary_over_256_is_measured_padded_to_64_as_train_py_pads_it(tmp_path, monkeypatch):
    # the 62 characters of Shakespeare's first 200,000 plus 250 others: 312 ids, which train.py pads to 320 (5 x 64)
    from core.data import tokenizer
    with open(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt'), encoding='utf-8') as f:
        text = f.read()[:200_000]
    extra = ''.join(chr(0x100 + i) for i in range(250))
    text = text[:1000] + extra + text[1000:]
    tok = tokenizer.char(text)
    assert tok.vocab_size == len(set(text)) == 312 and not set(extra) & set(string.printable)
    data = write_dataset(str(tmp_path / 'wide'), tok, text)
    measured = []
    fake_search(monkeypatch, measured)
    plan(f'--dataset={data}', f'--out={tmp_path / "p.py"}')
    assert measured and set(measured) == {320}
