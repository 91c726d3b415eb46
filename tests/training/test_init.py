"""core/training/init.py: the model by init_from, the one architecture check, the random state a run starts from."""

import pytest
import torch

from core.data.loader import Dataset
from core.errors import UserError
from core.training import init
from model import GPT


def test_architecture_check_names_each_key_the_user_set_differently():
    saved = {'n_layer': 2, 'n_head': 2, 'block_size': 64, 'mlp': 'gelu'}
    config = {'n_layer': 3, 'n_head': 2, 'block_size': 32, 'mlp': 'swiglu'}
    with pytest.raises(UserError) as e:
        init.check_architecture(saved, config, {'n_layer', 'block_size', 'n_head'}, 'cannot resume x.pt')
    assert str(e.value).startswith('cannot resume x.pt: the architecture differs from the config: ')
    assert 'n_layer (checkpoint 2, config 3)' in str(e.value) and 'block_size (checkpoint 64, config 32)' in str(e.value)
    assert 'mlp' not in str(e.value)  # not set by the user: the checkpoint's is taken
    init.check_architecture(saved, config, {'block_size'}, 'init_from=x', ignore=('block_size',))  # a crop is fine


def config_for(data_dir, **overrides):
    from tests.training.test_settings import defaults
    c = {**defaults(), 'dataset': data_dir, 'n_layer': 1, 'n_head': 2, 'n_embd': 16, 'block_size': 16,
         'device': 'cpu'}
    c.update(overrides)
    return c


def test_scratch_takes_the_data_vocab_and_refuses_what_cannot_be_built(char_data):
    data = Dataset(char_data)
    c = config_for(char_data)
    model, model_args, start = init.init_model(c, set(), data, data.fingerprint(), None, 'cpu', 'float32', 1, 0)
    assert isinstance(model, GPT) and model_args['vocab_size'] == data.vocab_size == model.config.vocab_size
    assert (start.iter_num, start.best_val_loss, start.resumed_at, start.lora) == (0, float('inf'), -1, None)
    with pytest.raises(UserError, match='n_embd'):
        init.init_model({**c, 'n_embd': 15}, set(), data, data.fingerprint(), None, 'cpu', 'float32', 1, 0)


def test_finetune_from_a_checkpoint_crops_and_checks_the_architecture(char_data, tmp_path):
    data = Dataset(char_data)
    model, model_args, _ = init.init_model(config_for(char_data), set(), data, data.fingerprint(), None, 'cpu',
                                           'float32', 1, 0)
    torch.save({'model': model.state_dict(), 'model_args': model_args, 'iter_num': 7}, tmp_path / 'ckpt.pt')
    said = []
    c = config_for(char_data, init_from=str(tmp_path), block_size=8, n_layer=5)
    tuned, args, _ = init.init_model(c, {'block_size'}, data, data.fingerprint(), None, 'cpu', 'float32', 1, 0,
                                     log=said.append)
    assert args['block_size'] == 8 and args['n_layer'] == 1  # the checkpoint's architecture, cropped
    assert torch.equal(tuned.transformer.wte.weight, model.transformer.wte.weight)
    assert 'iteration 7 of its run' in said[0]
    with pytest.raises(UserError, match=r'init_from=.*the architecture differs.*n_layer \(checkpoint 1, config 5\)'):
        init.init_model(c, {'n_layer'}, data, data.fingerprint(), None, 'cpu', 'float32', 1, 0)


def test_restore_rng_fresh_is_per_rank_and_resumed_is_the_saved_state():
    gen = torch.Generator()
    init.restore_rng(None, None, 10, 1, 2, 0, gen)
    a = torch.rand(3)
    torch.manual_seed(11)  # seed + rank
    assert torch.equal(a, torch.rand(3))
    from core.training import checkpoint
    torch.manual_seed(3)
    saved = {'rng': checkpoint.rng_state(), 'data_rng': torch.Generator().manual_seed(4).get_state(), 'world_size': 1}
    expected = torch.rand(3)
    said = []
    init.restore_rng(saved, 'x.pt', 10, 0, 1, 5, gen, said.append)
    assert torch.equal(torch.rand(3), expected) and torch.equal(gen.get_state(), saved['data_rng'])
    assert said == ['resumed from x.pt at iteration 5']
