"""core/training/checkpoint.py at its edges: which file a checkpoint path with a step names, what a resume from an
earlier checkpoint keeps of ckpt.pt, which dataset's tokenizer a checkpoint without one takes, and the counts its
messages quote."""

import os

import pytest

from conftest import write_dataset
from core.data import tokenizer
from core.errors import UserError
from core.training import checkpoint


def tiny_ckpt(iter_num):
    return {'model': {}, 'model_args': {'n_layer': 1}, 'iter_num': iter_num}


def test_a_step_asked_of_a_checkpoint_file_is_refused_not_ignored(tmp_path):
    # --out_dir=<run>/ckpt.pt --ckpt=500 would otherwise read ckpt.pt, whatever step it holds
    path = str(tmp_path / 'ckpt.pt')
    checkpoint.save(tiny_ckpt(900), path)
    assert checkpoint.resolve(path) == path and checkpoint.resolve(path, 'latest') == path
    with pytest.raises(UserError, match=r'--ckpt=500 picks a step in a run folder'):
        checkpoint.resolve(path, 500)


def test_a_resume_from_best_at_the_latest_step_leaves_ckpt_pt_where_it_is(tmp_path):
    # best.pt and ckpt.pt saved at the same eval: ckpt.pt holds nothing later, so it is neither moved nor copied
    out = str(tmp_path)
    for name in ('ckpt.pt', 'best.pt'):
        checkpoint.save(tiny_ckpt(300), os.path.join(out, name))
    assert checkpoint.keep_later_latest(out, os.path.join(out, 'best.pt'), 300) is None
    assert sorted(os.listdir(out)) == ['best.pt', 'ckpt.pt']
    # one iteration later than the resume: kept under its step's name
    assert checkpoint.keep_later_latest(out, os.path.join(out, 'best.pt'), 299) == \
        (300, os.path.join(out, 'ckpt_00000300.pt'))
    assert sorted(os.listdir(out)) == ['best.pt', 'ckpt_00000300.pt']


def test_a_dataset_given_outranks_the_one_a_checkpoint_names(tmp_path):
    # a checkpoint without a tokenizer (an old one of ours) names dataset a; --dataset=b is what the user asked for
    a = write_dataset(str(tmp_path / 'a'), tokenizer.char('abc'), 'abcabc' * 20)
    b = write_dataset(str(tmp_path / 'b'), tokenizer.char('xyz'), 'xyzxyz' * 20)
    ckpt = {'model': {}, 'model_args': {}, 'dataset': a}
    state, where = checkpoint.tokenizer_state(ckpt, 'ckpt.pt', dataset=b)
    assert state['chars'] == ['x', 'y', 'z'] and where == f"dataset '{b}'"
    state, where = checkpoint.tokenizer_state(ckpt, 'ckpt.pt')
    assert state['chars'] == ['a', 'b', 'c'] and where == f"dataset '{a}'"


def test_a_tokenizer_mismatch_says_which_side_has_which_symbols(tmp_path):
    # the checkpoint's 'a b c' + one special (4 symbols) against the dataset's 'a b d' (3)
    ckpt = {'tokenizer': tokenizer.char('abc', special_tokens=['<|end|>']).state()}
    data = tokenizer.char('abd').state()
    with pytest.raises(UserError) as e:
        checkpoint.check_tokenizer(ckpt, 'run/ckpt.pt', data, 'mydata')
    msg = str(e.value)
    assert "(char, 4 symbols, from the checkpoint)" in msg and "'mydata's (char, 3 symbols)" in msg
    assert "only the checkpoint's has 'c'" in msg and "only the dataset's has 'd'" in msg


def test_a_checkpoint_lacking_many_weights_counts_the_ones_not_named(tmp_path):
    # 5 weights removed: the message names the first 3 and counts the other 2
    from model import GPT, GPTConfig
    args = dict(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=16)
    sd = GPT(GPTConfig(**args)).state_dict()
    dropped = sorted(sd)[:5]
    ckpt = {'model': {k: v for k, v in sd.items() if k not in dropped}, 'model_args': args}
    with pytest.raises(UserError, match=r'lacks \S+, \S+, \S+ and 2 more; it is damaged'):
        checkpoint.build_model(ckpt, 'x.pt')


def test_a_weight_with_a_single_nan_is_refused_naming_it():
    # a run that diverged late leaves some NaN entries among finite ones, not a whole tensor of them
    import torch
    from model import GPT, GPTConfig
    args = dict(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=16)
    sd = GPT(GPTConfig(**args)).state_dict()
    sd['transformer.h.0.mlp.c_fc.weight'][3, 5] = float('nan')
    with pytest.raises(UserError, match=r'its weight transformer.h.0.mlp.c_fc.weight holds NaN or infinite values'):
        checkpoint.build_model({'model': sd, 'model_args': args}, 'x.pt')
    sd['transformer.h.0.mlp.c_fc.weight'][3, 5] = float('inf')
    with pytest.raises(UserError, match=r'c_fc.weight holds NaN or infinite values'):
        checkpoint.build_model({'model': sd, 'model_args': args}, 'x.pt')
    assert torch.isfinite(sd['transformer.wte.weight']).all()


@pytest.mark.parametrize('dtype', ['bool', 'int64', 'uint8'])
def test_a_weight_of_bools_or_integers_is_refused_not_cast(dtype):
    # load_state_dict copies an integer tensor into a float weight as its values (True -> 1.0): a damaged file
    # would load as a model of ones and zeros
    import torch
    from model import GPT, GPTConfig
    args = dict(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=16)
    sd = GPT(GPTConfig(**args)).state_dict()
    name = 'transformer.h.0.attn.c_attn.weight'
    sd[name] = torch.ones(sd[name].shape, dtype=getattr(torch, dtype))
    with pytest.raises(UserError, match=rf'its weight {name} holds torch.{dtype} values, not floating point'):
        checkpoint.build_model({'model': sd, 'model_args': args}, 'x.pt')
    sd[name] = sd[name].half()  # a run saved in float16 loads
    model = checkpoint.build_model({'model': sd, 'model_args': args}, 'x.pt')
    assert model.transformer.h[0].attn.c_attn.weight.sum() == 8 * 24


def test_lora_adapters_of_integers_are_refused_not_cast(tmp_path):
    import torch
    from model import GPT, GPTConfig
    from core.training import lora
    args = dict(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=16)
    base = str(tmp_path / 'base.pt')
    checkpoint.save({'model': GPT(GPTConfig(**args)).state_dict(), 'model_args': args}, base)
    model = GPT(GPTConfig(**args))
    lora.add(model, 2, 4.0, 'attn')
    adapters = {k: v.detach().clone() for k, v in lora.adapter_state(model).items()}
    spec = {'base': base, 'rank': 2, 'alpha': 4.0, 'targets': 'attn'}
    checkpoint.build_model({'model': adapters, 'model_args': args, 'lora': spec}, 'run.pt')  # as saved: loads
    name = sorted(adapters)[0]
    adapters[name] = adapters[name].to(torch.int32)
    with pytest.raises(UserError, match=rf'its weight {name} holds torch.int32 values'):
        checkpoint.build_model({'model': adapters, 'model_args': args, 'lora': spec}, 'run.pt')
