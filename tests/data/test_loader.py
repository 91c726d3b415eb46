import json
import math
import os
import re

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import TINY, assert_one_line_error, run_script
from core.errors import UserError
from core.data.loader import Dataset


def write_dataset(folder, train, val, vocab_size, dtype='uint16'):
    os.makedirs(folder, exist_ok=True)
    np.asarray(train, dtype=dtype).tofile(os.path.join(folder, 'train.bin'))
    np.asarray(val, dtype=dtype).tofile(os.path.join(folder, 'val.bin'))
    tok = {'kind': 'char', 'chars': [chr(33 + i) for i in range(vocab_size)], 'special_tokens': {}} \
        if vocab_size < 100 else {'kind': 'gpt2'}
    meta = {'vocab_size': vocab_size, 'dtype': dtype, 'splits': {'train': len(train), 'val': len(val)},
            'tokenizer': tok}
    with open(os.path.join(folder, 'meta.json'), 'w') as f:
        json.dump(meta, f)
    return folder


def test_exact_batches_predict_every_token_once(tmp_path):
    val = np.arange(50) % 13
    ds = Dataset(write_dataset(str(tmp_path / 'd'), np.arange(100) % 13, val, 13))
    xs, ys = [], []
    for x, y in ds.exact_batches('val', batch_size=3, block_size=8):
        assert x.shape[1] == 8
        xs.append(x)
        ys.append(y)
    x, y = torch.cat(xs), torch.cat(ys)
    kept = y != -1
    assert kept.sum() == 49  # every token but the first is a target exactly once
    assert torch.equal(y[kept], torch.from_numpy(val[1:]).long())
    assert torch.equal(x[kept], torch.from_numpy(val[:-1]).long())
    # two ranks split the batches without overlap
    parts = [sum(int((yy != -1).sum()) for _, yy in ds.exact_batches('val', 3, 8, rank=r, world_size=2)) for r in (0, 1)]
    assert sum(parts) == 49 and min(parts) > 0


def test_uint32_tokens_read_back(tmp_path):
    ids = np.array([0, 65535, 65536, 70000, 99999] * 20)
    ds = Dataset(write_dataset(str(tmp_path / 'd'), ids, ids, 100_000, dtype='uint32'))
    x, y = ds.get_batch('train', 2, 4, None, starts=torch.tensor([0, 2]))
    assert x.tolist() == [[0, 65535, 65536, 70000], [65536, 70000, 99999, 0]]
    assert y[0].tolist() == [65535, 65536, 70000, 99999]


def test_uint32_tokens_under_a_uint16_meta_without_split_sizes_are_refused(tmp_path):
    # with the sizes in meta.json the file's length gives the mismatch away (tests/system/test_safety.py); without
    # them, ids 1..19 stored as uint32 read as uint16 are 1, 0, 2, 0, ...: all below the vocabulary, so only the
    # zeros in every second place tell
    ids = np.arange(100) % 19 + 1
    folder = write_dataset(str(tmp_path / 'd'), ids, ids, 20, dtype='uint32')
    meta = json.load(open(os.path.join(folder, 'meta.json')))
    del meta['splits']
    json.dump(dict(meta, dtype='uint16'), open(os.path.join(folder, 'meta.json'), 'w'))
    with pytest.raises(UserError, match=r'train.bin looks like uint32 tokens \(every second uint16 is 0\) but '
                                        r'meta.json says its dtype is uint16'):
        Dataset(folder).split('train')
    # the same ids written as uint16 (the token 0 in every second place is no sign: it is not in every one)
    uint16 = np.stack([ids, np.where(np.arange(100) % 7, 0, 3)], 1).reshape(-1)
    np.asarray(uint16, dtype='uint16').tofile(os.path.join(folder, 'train.bin'))
    assert Dataset(folder).split('train').tolist() == uint16.tolist()


def test_token_ids_beyond_the_model_vocab_stop(tmp_path):
    ds = Dataset(write_dataset(str(tmp_path / 'd'), np.arange(100) % 20, np.arange(30) % 20, 20))
    with pytest.raises(UserError, match='token id 19 but the model.s vocab_size is 10'):
        ds.check_fits(10, 8)
    with pytest.raises(UserError, match='block_size=64 is not smaller than the val split'):
        ds.check_fits(20, 64)


def test_interrupted_dataset_is_refused(tmp_path):
    folder = write_dataset(str(tmp_path / 'd'), np.arange(100) % 20, np.arange(30) % 20, 20)
    with open(os.path.join(folder, 'train.bin'), 'r+b') as f:
        f.truncate(40)
    with pytest.raises(UserError, match='interrupted'):
        Dataset(folder).split('train')
    os.remove(os.path.join(folder, 'meta.json'))
    with pytest.raises(UserError, match='incomplete'):
        Dataset(folder)


def test_a_split_the_dataset_was_prepared_without_is_not_sent_back_to_prepare(tmp_path):
    # eval.py --split=test on a train/val dataset said "run: python data/.../prepare.py", which makes no test split
    folder = write_dataset(str(tmp_path / 'd'), np.arange(100) % 20, np.arange(30) % 20, 20)
    with pytest.raises(UserError, match=r'no test split: it was prepared with train and val only') as e:
        Dataset(folder).split('test')
    assert 'prepare.py makes one' in str(e.value) and 'run:' not in str(e.value)
    os.remove(os.path.join(folder, 'val.bin'))  # a split prepare made and someone removed: prepare makes it again
    with pytest.raises(UserError, match=r'no val split .*run: ') as e:
        Dataset(folder).split('val')


@pytest.mark.parametrize('size', ['100', 100.0, -1, True])
def test_a_split_size_that_is_no_count_is_named_as_such(tmp_path, size):
    # a string equal to the file's count read "holds 100 tokens but meta.json says 100: the prepare was interrupted"
    folder = write_dataset(str(tmp_path / 'd'), np.arange(100) % 20, np.arange(30) % 20, 20)
    meta = json.load(open(os.path.join(folder, 'meta.json')))
    meta['splits']['train'] = size
    with open(os.path.join(folder, 'meta.json'), 'w') as f:
        json.dump(meta, f)
    with pytest.raises(UserError, match=f"gives the train split's size as {re.escape(repr(size))}, not a count"):
        Dataset(folder).split('train')
    assert len(Dataset(folder).split('val')) == 30


def test_train_eval_full_equals_hand_computed_loss(char_data, tmp_path):
    """eval_full through train.py against the mean loss computed here window by window."""
    rng = np.random.default_rng(0)
    folder = write_dataset(str(tmp_path / 'd'), rng.integers(0, 20, 400), rng.integers(0, 20, 45), 20)
    out = str(tmp_path / 'run')
    common = [f'--dataset={folder}', f'--out_dir={out}', *TINY, '--block_size=8', '--batch_size=3',
              '--eval_interval=5']
    r = run_script('train.py', *common, '--max_iters=5', '--eval_iters=2')
    assert r.returncode == 0, r.stderr
    r = run_script('train.py', *common, '--init_from=resume', '--eval_only=True', '--eval_full=True')
    assert r.returncode == 0, r.stderr
    val_loss = float(re.search(r'val loss (\d+\.\d+)', r.stdout).group(1))
    ppl = float(re.search(r'val perplexity (\d+\.\d+) \(exact over 44 tokens\)', r.stdout).group(1))

    from model import GPT, GPTConfig
    ckpt = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(ckpt['model'])
    model.eval()
    val = torch.from_numpy(np.fromfile(os.path.join(folder, 'val.bin'), dtype=np.uint16).astype(np.int64))
    losses = []
    with torch.no_grad():
        for s in range(0, 44, 8):  # windows of 8 inputs; the last has 4
            x, y = val[s:min(s + 8, 44)], val[s + 1:min(s + 9, 45)]
            logits = model.head(model.hidden_states(x[None]))[0]
            losses += F.cross_entropy(logits, y, reduction='none').tolist()
    expected = sum(losses) / len(losses)
    assert len(losses) == 44
    assert val_loss == pytest.approx(expected, abs=1e-4)
    assert ppl == pytest.approx(math.exp(expected), rel=1e-3)


def test_missing_split_names_the_prepare(tmp_path):
    r = run_script('train.py', f'--dataset={tmp_path / "nothing"}', f'--out_dir={tmp_path}')
    assert_one_line_error(r, 'not found', 'prepare')


def test_the_checks_hold_at_their_boundaries(tmp_path):
    # ids 0..19 need a vocabulary of 20: 19 is one too many for 19 rows
    ds = Dataset(write_dataset(str(tmp_path / 'd'), np.arange(100) % 20, np.arange(30) % 20, 20))
    ds.check_fits(20, 29)  # 30 val tokens hold one window of 29 inputs and their 29 targets
    with pytest.raises(UserError, match='token id 19 but the model.s vocab_size is 19'):
        ds.check_fits(19, 8)
    with pytest.raises(UserError, match='block_size=30 is not smaller than the val split'):
        ds.check_fits(20, 30)  # 30 tokens: 30 inputs would leave no target for the last


def test_ranks_read_disjoint_slices_of_one_global_batch(tmp_path):
    data = np.arange(500) % 97
    ds = Dataset(write_dataset(str(tmp_path / 'd'), data, data[:50], 97))
    accumulation, batch, T, world = 2, 3, 5, 2
    # the global batch by hand: one draw of world * accumulation * batch starts, rank r taking the r-th share
    starts = torch.randint(len(data) - T, (world * accumulation * batch,), generator=torch.Generator().manual_seed(7))
    rows = [data[s:s + T] for s in starts.tolist()]
    seen = []
    for rank in range(world):
        stream = ds.step_batches(torch.Generator().manual_seed(7), accumulation, batch, T, rank, world)
        micro = [x for x, _ in stream.next()]
        stream.close()
        assert len(micro) == accumulation and all(x.shape == (batch, T) for x in micro)
        seen += [row.tolist() for x in micro for row in x]
    assert seen == [r.tolist() for r in rows]


def test_a_saved_sampler_state_resumes_with_the_batch_that_comes_next(tmp_path):
    data = np.arange(500) % 97
    ds = Dataset(write_dataset(str(tmp_path / 'd'), data, data[:50], 97))
    stream = ds.step_batches(torch.Generator().manual_seed(3), 1, 4, 6)
    stream.next()  # one step taken (and the next one drawn ahead on the prefetch thread)
    saved = stream.state()
    expected = stream.next()[0][0]
    stream.close()
    resumed = ds.step_batches(torch.Generator(), 1, 4, 6)
    resumed.set_state(saved)
    assert torch.equal(resumed.next()[0][0], expected)
    resumed.close()


def test_a_loss_mask_hides_the_targets_it_marks(tmp_path):
    data = np.arange(40) % 13
    folder = write_dataset(str(tmp_path / 'd'), data, data, 13)
    mask = np.ones(40, dtype=np.uint8)
    mask[[5, 6, 20]] = 0  # the tokens at 5, 6 and 20 are not learned: as targets they are -1
    mask.tofile(os.path.join(folder, 'train.mask.bin'))
    with open(os.path.join(folder, 'meta.json')) as f:
        meta = json.load(f)
    with open(os.path.join(folder, 'meta.json'), 'w') as f:
        json.dump({**meta, 'loss_mask': True}, f)
    _, y = Dataset(folder).get_batch('train', 2, 8, None, starts=torch.tensor([0, 16]))
    # row 0 predicts tokens 1..8, row 1 tokens 17..24
    assert y[0].tolist() == [1, 2, 3, 4, -1, -1, 7, 8]
    assert y[1].tolist() == [4, 5, 6, -1, 8, 9, 10, 11]


def test_a_dataset_with_the_same_counts_but_other_tokens_is_a_change():
    from core.data.loader import dataset_change
    tok = {'kind': 'char', 'vocab_size': 20, 'sha256': 'a'}
    saved = {'tokenizer': tok, 'splits': {'train': {'tokens': 100, 'sha256': '1'}, 'val': {'tokens': 10, 'sha256': '2'}}}
    same = {'tokenizer': tok, 'splits': {'train': {'tokens': 100, 'sha256': '1'}, 'val': {'tokens': 10, 'sha256': '2'}}}
    other = {'tokenizer': tok, 'splits': {'train': {'tokens': 100, 'sha256': '9'}, 'val': {'tokens': 10, 'sha256': '2'}}}
    assert dataset_change(saved, same) is None
    assert 'train' in dataset_change(saved, other) and 'sha256' in dataset_change(saved, other)
