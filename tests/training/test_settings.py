"""core/training/settings.py: the config checks and what a resumed run takes from its checkpoint."""

import pytest
import torch

from core.errors import UserError
from core.training import settings


def defaults():
    """train.py's config keys at their defaults, read from its config block as the configurator sees them."""
    import os
    from model import CONFIG_DEFAULTS
    from conftest import REPO
    with open(os.path.join(REPO, 'train.py')) as f:
        src = f.read()
    namespace = {'CONFIG_DEFAULTS': CONFIG_DEFAULTS}
    exec(src[src.index('# I/O'):src.index('install_excepthook()')], namespace)
    return {k: v for k, v in namespace.items() if not k.startswith('_') and k != 'CONFIG_DEFAULTS'}


def test_the_defaults_pass_and_each_bad_value_is_named():
    c = defaults()
    settings.check_config(c)
    for key, value, fragment in [('batch_size', 0, 'batch_size must be positive'),
                                 ('min_lr', -1.0, 'min_lr must not be negative'),
                                 ('beta2', 1.0, 'beta2 must be in [0, 1)'),
                                 ('optimizer', 'sgd', "optimizer must be 'adamw' or 'muon'"),
                                 ('lr_schedule', 'time', 'set --max_seconds too'),
                                 ('init_from', '/nowhere/at/all.pt', "nothing exists at '/nowhere/at/all.pt'"),
                                 ('lora_rank', 4, 'LoRA adapts a pretrained model')]:
        with pytest.raises(UserError, match=fragment.replace('[', r'\[').replace(')', r'\)')):
            settings.check_config({**c, key: value})
    settings.check_config({**c, 'batch_size': 'auto'})


def test_resume_takes_the_keys_the_user_did_not_set(tmp_path):
    c = defaults()
    saved = {**c, 'learning_rate': 1e-2, 'n_layer': 3, 'device': 'cuda', 'batch_size': 'auto', 'dropout': 'oops'}
    torch.save({'model': {}, 'model_args': {'n_layer': 3}, 'config': saved}, tmp_path / 'ckpt.pt')
    config = {**c, 'init_from': 'resume', 'out_dir': str(tmp_path), 'learning_rate': 5e-3}
    extra = {'compile': (True, False), 'batch_size': ('auto',)}
    ckpt, path = settings.resume_config(config, c, extra, explicit={'init_from', 'out_dir', 'learning_rate'})
    assert path == str(tmp_path / 'ckpt.pt') and ckpt['config']['n_layer'] == 3
    assert config['learning_rate'] == 5e-3  # given now: kept
    assert config['n_layer'] == 3 and config['batch_size'] == 'auto'  # from the checkpoint (auto is allowed)
    assert config['device'] == c['device']  # this machine's key: never from the checkpoint
    assert config['dropout'] == c['dropout']  # a saved value of another type is ignored
    assert settings.resume_config(dict(c), c, extra, set()) == (None, None)


def test_min_lr_is_only_checked_when_the_rate_decays():
    c = defaults()
    with pytest.raises(UserError, match='min_lr=0.01 is above learning_rate=0.001'):
        settings.check_config({**c, 'learning_rate': 1e-3, 'min_lr': 1e-2, 'decay_lr': True})
    # a constant rate never reaches min_lr, so any min_lr is fine (nanoGPT's fine-tuning configs do this)
    settings.check_config({**c, 'learning_rate': 1e-3, 'min_lr': 1e-2, 'decay_lr': False})
    settings.check_config({**c, 'learning_rate': 1e-3, 'min_lr': 1e-3, 'decay_lr': True})  # equal: a flat end
    for zero in (0.0, -0.0):  # a tenth of 0 was offered as the fix ('--min_lr=-0' for -0.0)
        with pytest.raises(UserError, match=r'above learning_rate=0, .* give --min_lr=0 as well or --decay_lr=False'):
            settings.check_config({**c, 'learning_rate': zero, 'min_lr': 1e-4, 'decay_lr': True})


def test_a_resumed_run_keeps_this_machines_threads_and_memory_budget(tmp_path):
    c = defaults()
    assert c['threads'] == 0 and c['memory_budget_gb'] == 0  # chosen on the machine that runs
    # the checkpoint was written on a machine where these were set; this one has other cores and memory
    saved = {**c, 'threads': 3, 'memory_budget_gb': 7.5, 'learning_rate': 2e-3}
    torch.save({'model': {}, 'model_args': {}, 'config': saved}, tmp_path / 'ckpt.pt')
    config = {**c, 'init_from': 'resume', 'out_dir': str(tmp_path)}
    settings.resume_config(config, c, {}, explicit={'init_from', 'out_dir'})
    assert config['learning_rate'] == 2e-3  # a training key comes from the checkpoint
    assert config['threads'] == 0
    assert config['memory_budget_gb'] == 0


def test_warmdown_fraction_takes_both_ends():
    c = defaults()
    for frac in (0.0, 0.5, 1.0):  # 1: the whole run is warm-down
        settings.check_config({**c, 'warmdown_frac': frac})
    for frac in (-0.1, 1.5):
        with pytest.raises(UserError, match='warmdown_frac must be in'):
            settings.check_config({**c, 'warmdown_frac': frac})
