"""Checkpoints from elsewhere: fine-tuning from a checkpoint (init_from=<.pt or run folder>), and runs
written by karpathy/nanoGPT, sampled, fine-tuned from and resumed.

The nanoGPT run is built here from nanoGPT's documented layout: its model.py module structure (so the
tensor names and the optimizer's parameter order are its own), its checkpoint keys (model with
torch.compile's '_orig_mod.' prefix, optimizer, model_args, iter_num, best_val_loss as a tensor, config
with the run's globals) and its data/<dataset>/meta.pkl vocabulary."""

import json
import math
import os
import pickle
import shutil

import pytest
import torch
import torch.nn as nn
from torch.nn import functional as F

from core.training import checkpoint
from core.interop import nanogpt_files as nanogpt
from core.data import tokenizer
from conftest import TINY, make_char_dataset, run_script
from core.errors import UserError
from conftest import run_inprocess


class NanoLayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class NanoAttention(nn.Module):
    def __init__(self, C, nh, bias):
        super().__init__()
        self.c_attn, self.c_proj, self.nh = nn.Linear(C, 3 * C, bias=bias), nn.Linear(C, C, bias=bias), nh

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = (t.view(B, T, self.nh, C // self.nh).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # the explicit path, not the fused kernel
        att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).tril().logical_not(), float('-inf')).softmax(-1)
        return self.c_proj((att @ v).transpose(1, 2).contiguous().view(B, T, C))


class NanoBlock(nn.Module):
    def __init__(self, C, nh, bias):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = NanoLayerNorm(C, bias), NanoAttention(C, nh, bias), NanoLayerNorm(C, bias)
        self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(C, 4 * C, bias=bias), c_proj=nn.Linear(4 * C, C, bias=bias)))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp.c_proj(nn.GELU()(self.mlp.c_fc(self.ln_2(x))))  # nanoGPT's exact erf GELU


class NanoGPT(nn.Module):
    """nanoGPT's model.py, reduced to what fixes names, order and function: wte, wpe, drop, h, ln_f, tied head."""

    def __init__(self, n_layer, n_head, n_embd, block_size, bias, vocab_size):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd), wpe=nn.Embedding(block_size, n_embd), drop=nn.Dropout(0.0),
            h=nn.ModuleList([NanoBlock(n_embd, n_head, bias) for _ in range(n_layer)]),
            ln_f=NanoLayerNorm(n_embd, bias)))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx):
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(idx.size(1)))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))

    def configure_optimizers(self):
        # nanoGPT's rule: every >= 2-D parameter decays, the others not, each in named_parameters order
        params = dict(self.named_parameters())
        return torch.optim.AdamW([{'params': [p for p in params.values() if p.dim() >= 2], 'weight_decay': 0.1},
                                  {'params': [p for p in params.values() if p.dim() < 2], 'weight_decay': 0.0}],
                                 lr=1e-3, betas=(0.9, 0.99))


def nanogpt_run(root, data, name='shakespeare_char', iters=3):
    """A nanoGPT checkout: root/data/<name>/meta.pkl and root/out-<name>/ckpt.pt, trained a few steps."""
    tok = tokenizer.load(data)
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, bias=False, vocab_size=tok.vocab_size, dropout=0.0)
    torch.manual_seed(0)
    model = NanoGPT(**{k: v for k, v in args.items() if k != 'dropout'})
    with torch.no_grad():  # larger weights than the init, so the GELU's inputs reach where erf and tanh differ
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.3)
    opt = model.configure_optimizers()
    for _ in range(iters):
        idx = torch.randint(0, tok.vocab_size, (4, 33))
        F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    os.makedirs(os.path.join(root, 'data', name))
    for split in ('train', 'val'):  # nanoGPT's prepare.py writes uint16 ids, then meta.pkl last
        shutil.copy(os.path.join(data, f'{split}.bin'), os.path.join(root, 'data', name, f'{split}.bin'))
    with open(os.path.join(root, 'data', name, 'meta.pkl'), 'wb') as f:
        pickle.dump({'vocab_size': tok.vocab_size, 'itos': dict(enumerate(tok.chars)),
                     'stoi': {c: i for i, c in enumerate(tok.chars)}}, f)
    config = dict(out_dir=f'out-{name}', eval_interval=250, log_interval=10, eval_iters=200, eval_only=False,
                  always_save_checkpoint=False, init_from='scratch', wandb_log=False, wandb_project='shakespeare-char',
                  wandb_run_name='mini-gpt', dataset=name, gradient_accumulation_steps=1, batch_size=4, block_size=32,
                  n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False, learning_rate=1e-3, max_iters=iters,
                  weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0, decay_lr=True, warmup_iters=2,
                  lr_decay_iters=iters, min_lr=1e-4, backend='nccl', device='cpu', dtype='float32', compile=True)
    run = os.path.join(root, f'out-{name}')
    os.makedirs(run)
    torch.save({'model': {'_orig_mod.' + k: v for k, v in model.state_dict().items()}, 'optimizer': opt.state_dict(),
                'model_args': args, 'iter_num': iters, 'best_val_loss': torch.tensor(3.9), 'config': config},
               os.path.join(run, 'ckpt.pt'))
    return run, model.eval(), opt


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_char_dataset(str(tmp_path_factory.mktemp('chars') / 'shakespeare_char'), n_chars=60_000)


def test_nanogpt_checkpoint_reproduces_its_logits_and_optimizer(tmp_path, data):
    run, ref, ref_opt = nanogpt_run(tmp_path / 'nanoGPT', data)
    ours, state = checkpoint.load_model(os.path.join(run, 'ckpt.pt'))
    assert state['nanogpt'] and ours.config.gelu == 'erf' and state['best_val_loss'] == pytest.approx(3.9)
    idx = torch.randint(0, ours.config.vocab_size, (2, 32))
    with torch.no_grad():
        logits, _ = ours.eval()(idx, targets=idx)
        expected = ref(idx)
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
        for block in ours.transformer.h:  # the tanh GELU would not do: the test can tell them apart
            block.mlp.approximate = 'tanh'
        assert (ours(idx, targets=idx)[0] - expected).abs().max() > 1e-4
    # its AdamW moments land on the same parameters in ours, whose groups list them in another order
    opt = ours.configure_optimizers(0.1, 1e-3, (0.9, 0.99), 'cpu')
    opt.load_state_dict(nanogpt.optimizer_state(state['optimizer'], ours, opt))
    theirs = {n: ref_opt.state[p] for n, p in ref.named_parameters()}
    for n, p in ours.named_parameters():
        torch.testing.assert_close(opt.state[p]['exp_avg_sq'], theirs[n]['exp_avg_sq'], atol=0, rtol=0)
        torch.testing.assert_close(opt.state[p]['exp_avg'], theirs[n]['exp_avg'], atol=0, rtol=0)


def test_nanogpt_run_samples_fine_tunes_and_resumes(tmp_path, data):
    run, _, _ = nanogpt_run(tmp_path / 'nanoGPT', data)
    original = open(os.path.join(run, 'ckpt.pt'), 'rb').read()
    # sample.py: the tokenizer from the checkout's meta.pkl
    r = run_script('sample.py', f'--out_dir={run}', '--num_samples=1', '--max_new_tokens=20', '--device=cpu',
                   '--start=ROMEO:', env={'OMP_NUM_THREADS': '1'}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'meta.pkl' in r.stderr and r.stdout.startswith('ROMEO:')
    # init_from: a fine-tune from its weights, at iteration 0 with a fresh optimizer
    code, out, err = run_inprocess('train.py', f'--init_from={run}', f'--dataset={data}', f'--out_dir={tmp_path / "ft"}',
                                   *TINY, '--max_iters=1', '--eval_interval=1')
    assert code == 0, err
    assert 'a fresh optimizer' in out and 'step 0:' in out
    assert checkpoint.load(str(tmp_path / 'ft' / 'ckpt.pt'))['iter_num'] == 1
    # resume on nanoGPT's own data folder: weights, optimizer and iteration from its file; random states fresh
    # (found from its config's dataset, as a plain --init_from=resume in the run folder would)
    nano_data = os.path.join(os.path.dirname(run), 'data', 'shakespeare_char')
    # nanoGPT's run had always_save_checkpoint=False, which a resume keeps unless it is restated
    code, out, err = run_inprocess('train.py', '--init_from=resume', f'--out_dir={run}', *TINY,
                                   '--max_iters=5', '--eval_interval=1', '--always_save_checkpoint=True')
    assert code == 0, err
    assert f'dataset {nano_data}' in out
    assert 'resumed a nanoGPT run' in out and 'at iteration 3' in out and 'random states start fresh' in out
    assert 'iter 4:' in out and 'iter 3:' not in out
    assert checkpoint.load(os.path.join(run, 'ckpt.pt'))['iter_num'] == 5
    assert open(os.path.join(run, 'ckpt.nanogpt.pt'), 'rb').read() == original  # nanoGPT's own file is kept


def test_meta_pkl_is_read_without_running_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / 'ran'), 'w'))

    good = tmp_path / 'good.pkl'
    good.write_bytes(pickle.dumps({'vocab_size': 3, 'itos': {0: '\n', 1: 'a', 2: 'b'}, 'stoi': {'\n': 0, 'a': 1, 'b': 2}}))
    assert nanogpt.read_meta_pkl(good) == {'kind': 'char', 'chars': ['\n', 'a', 'b'], 'special_tokens': {}}
    for name, obj in (('code', {'itos': Payload()}), ('set', {'itos': {0: 'a'}, 'extra': {1, 2}}),
                      ('numpy', {'itos': __import__('numpy').arange(3)})):
        bad = tmp_path / f'{name}.pkl'
        bad.write_bytes(pickle.dumps(obj, protocol=2))  # protocol 2 names set and numpy's classes as globals
        with pytest.raises(UserError, match='holds a Python object'):
            nanogpt.read_meta_pkl(bad)
    assert not (tmp_path / 'ran').exists()
    (tmp_path / 'list.pkl').write_bytes(pickle.dumps(['not', 'a', 'vocabulary']))
    with pytest.raises(UserError, match="no 'itos' or 'stoi'"):
        nanogpt.read_meta_pkl(tmp_path / 'list.pkl')


def test_init_from_a_checkpoint_starts_where_it_ended(tmp_path, data):
    # the source run's exact val loss is the fine-tune's first eval: same weights, same data, dropout off in eval
    full = ['--eval_full=True', '--eval_interval=2']
    code, out, err = run_inprocess('train.py', f'--dataset={data}', f'--out_dir={tmp_path / "src"}', *TINY, *full,
                                   '--max_iters=2')
    assert code == 0, err
    source = checkpoint.load(str(tmp_path / 'src' / 'best.pt'))
    code, out, err = run_inprocess('train.py', f'--dataset={data}', f'--out_dir={tmp_path / "ft"}', *TINY, *full,
                                   f'--init_from={tmp_path / "src"}', '--max_iters=2', '--dropout=0.1',
                                   '--learning_rate=1e-4')
    assert code == 0, err
    first = next(r for r in map(json.loads, open(tmp_path / 'ft' / 'metrics.jsonl')) if 'val_loss' in r)
    assert first['iter'] == 0 and first['val_loss'] == pytest.approx(source['best_val_loss'], abs=1e-6)
    ft = checkpoint.load(str(tmp_path / 'ft' / 'ckpt.pt'))
    assert ft['iter_num'] == 2 and ft['model_args']['dropout'] == 0.1 and ft['config']['learning_rate'] == 1e-4
    # block_size may be cropped
    code, out, err = run_inprocess('train.py', f'--dataset={data}', f'--out_dir={tmp_path / "crop"}', *TINY,
                                   f'--init_from={tmp_path / "src" / "best.pt"}', '--max_iters=1', '--block_size=16')
    assert code == 0, err
    assert checkpoint.load(str(tmp_path / 'crop' / 'ckpt.pt'))['model_args']['block_size'] == 16


def test_init_from_bad_inputs_are_one_line(tmp_path, data):
    other = make_char_dataset(str(tmp_path / 'fewer'), n_chars=3000)  # fewer distinct characters
    code, out, err = run_inprocess('train.py', f'--dataset={data}', f'--out_dir={tmp_path / "src"}', *TINY,
                                   '--max_iters=1')
    assert code == 0, err
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'hf-folder').mkdir()
    (tmp_path / 'hf-folder' / 'config.json').write_text('{"model_type": "gpt2"}')
    (tmp_path / 'junk.pt').write_bytes(b'\x80\x02junk' * 100)
    cases = [([f'--dataset={other}', f'--init_from={tmp_path / "src"}'], ['differs from dataset', 'only the checkpoint']),
             ([f'--dataset={data}', f'--init_from={tmp_path / "nowhere.pt"}'], ['nowhere.pt']),
             ([f'--dataset={data}', f'--init_from={tmp_path / "empty"}'], ['no checkpoint in']),
             ([f'--dataset={data}', f'--init_from={tmp_path / "hf-folder"}'], ['Hugging Face folder', 'hf:']),
             ([f'--dataset={data}', f'--init_from={tmp_path / "junk.pt"}'], ['junk.pt']),
             ([f'--dataset={data}', f'--init_from={tmp_path / "src"}', '--n_layer=3'], ['n_layer'])]
    for args, fragments in cases:
        code, out, err = run_inprocess('train.py', *TINY, *args, f'--out_dir={tmp_path / "ft"}', '--max_iters=1')
        assert code != 0 and 'Traceback' not in err, err
        lines = [l for l in err.splitlines() if l.startswith('error:')]
        assert len(lines) == 1 and all(f in lines[0] for f in fragments), (args, err)
    assert not (tmp_path / 'ft' / 'ckpt.pt').exists()
    # a nanoGPT run whose meta.pkl holds code: one line
    run, _, _ = nanogpt_run(tmp_path / 'nanoGPT', data)
    with open(tmp_path / 'nanoGPT' / 'data' / 'shakespeare_char' / 'meta.pkl', 'wb') as f:
        pickle.dump({'itos': os.system}, f)
    code, out, err = run_inprocess('sample.py', f'--out_dir={run}', '--device=cpu')
    assert code != 0 and err.strip().startswith('error:') and len(err.strip().splitlines()) == 1, err
    assert 'meta.pkl' in err and 'Python object' in err


def test_meta_pkl_characters_must_be_in_sorted_order(tmp_path):
    # nanoGPT's prepare.py numbers sorted(set(text)); ids of any other order would map to the wrong characters here
    path = tmp_path / 'meta.pkl'
    path.write_bytes(pickle.dumps({'vocab_size': 3, 'itos': {0: 'b', 1: 'a', 2: 'c'}}))
    with pytest.raises(UserError, match='not in sorted order'):
        nanogpt.read_meta_pkl(path)


def test_a_run_without_meta_pkl_gets_gpt2s_bpe_from_its_50257_ids_up(tmp_path):
    # nanoGPT's sample.py assumes GPT-2's encoding when the data folder has no meta.pkl: 50257 ids (50304 padded)
    path = str(tmp_path / 'out' / 'ckpt.pt')
    for vocab in (50257, 50304):
        state, where = nanogpt.tokenizer_state({'model_args': {'vocab_size': vocab}, 'config': {}}, path)
        assert state == {'kind': 'gpt2'} and 'GPT-2' in where
    with pytest.raises(UserError, match='50256-token vocabulary'):
        nanogpt.tokenizer_state({'model_args': {'vocab_size': 50256}, 'config': {}}, path)
