"""core/interop/nanogpt_files.py by hand: a meta.pkl holding only 'stoi' (character -> id), a checkpoint of a
nanoGPT without flash attention (its causal mask saved as a 4-D 'attn.bias' buffer), and --dataset naming the data
folder over the dataset the checkpoint's config names. The expected values are written out here."""

import pickle

import torch

from core.interop import nanogpt_files as nanogpt


def write_meta(folder, chars):
    folder.mkdir(parents=True)
    (folder / 'meta.pkl').write_bytes(pickle.dumps({'vocab_size': len(chars), 'stoi': {c: i for i, c in enumerate(chars)}}))


def test_a_meta_pkl_with_only_stoi_gives_the_characters_in_id_order(tmp_path):
    path = tmp_path / 'meta.pkl'
    path.write_bytes(pickle.dumps({'vocab_size': 4, 'stoi': {'\n': 0, ' ': 1, 'a': 2, 'b': 3}}))
    assert nanogpt.read_meta_pkl(str(path)) == {'kind': 'char', 'chars': ['\n', ' ', 'a', 'b'], 'special_tokens': {}}


def test_convert_drops_the_causal_mask_buffers_and_keeps_every_weight():
    w = {'transformer.wte.weight': torch.zeros(5, 4), 'transformer.h.0.attn.c_attn.weight': torch.zeros(12, 4),
         'transformer.h.0.attn.c_attn.bias': torch.zeros(12), 'transformer.h.0.ln_1.bias': torch.zeros(4)}
    masks = {f'transformer.h.{i}.attn.bias': torch.ones(1, 1, 8, 8).tril() for i in range(2)}
    ckpt = {'model': {**w, **masks}, 'model_args': {'n_layer': 2, 'vocab_size': 5}, 'best_val_loss': torch.tensor(2.5)}
    out = nanogpt.convert(ckpt)
    assert sorted(out['model']) == sorted(w)
    assert out['model_args'] == {'n_layer': 2, 'vocab_size': 5, 'gelu': 'erf'}
    assert type(out['best_val_loss']) is float and out['best_val_loss'] == 2.5


def test_dataset_given_is_looked_up_before_the_one_the_checkpoint_names(tmp_path):
    run = tmp_path / 'nanoGPT' / 'out-x'
    run.mkdir(parents=True)
    write_meta(tmp_path / 'nanoGPT' / 'data' / 'trained_on', ['a', 'b'])
    write_meta(tmp_path / 'other', ['x', 'y', 'z'])
    ckpt = {'model_args': {'vocab_size': 3}, 'config': {'dataset': 'trained_on'}}
    state, where = nanogpt.tokenizer_state(ckpt, str(run / 'ckpt.pt'), dataset=str(tmp_path / 'other'))
    assert state['chars'] == ['x', 'y', 'z'] and str(tmp_path / 'other') in where
    state, _ = nanogpt.tokenizer_state(ckpt, str(run / 'ckpt.pt'))
    assert state['chars'] == ['a', 'b']
