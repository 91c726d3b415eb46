"""tracking.py: wandb offline by default, and the network-health numbers of log_health=True."""

import glob
import json
import os

import pytest
import torch

from core.training import tracking
from conftest import TINY, run_script
from model import GPT, GPTConfig


def tiny_model(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**dict(block_size=16, vocab_size=50, n_layer=3, n_head=2, n_embd=16), **kw}))


def test_grad_norms_split_the_total_norm_by_layer():
    model = tiny_model(tie_embeddings=False)
    idx = torch.randint(0, 50, (4, 16))
    _, loss = model(idx, idx)
    loss.backward()
    got = tracking.grad_norms(model)
    assert set(got) == {f'grad_norm/{n}' for n in ('wte', 'wpe', 'h.0', 'h.1', 'h.2', 'ln_f', 'lm_head')}
    assert list(got)[:2] == ['grad_norm/wte', 'grad_norm/wpe']
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert sum(v ** 2 for v in got.values()) == pytest.approx(total.item() ** 2, rel=1e-5)
    block1 = [p.grad for n, p in model.named_parameters() if n.startswith('transformer.h.1.')]
    assert got['grad_norm/h.1'] == pytest.approx(torch.sqrt(sum(g.pow(2).sum() for g in block1)).item(), rel=1e-5)


def test_update_ratio_is_the_relative_change_of_each_layer():
    model = tiny_model()
    before = tracking.snapshot(model)
    with torch.no_grad():
        for p in model.transformer.h[1].parameters():
            p.mul_(1.1)  # every weight of block 1 grows by 10%: its ratio is exactly 0.1
    got = tracking.update_ratios(model, before)
    assert got['update_ratio/h.1'] == pytest.approx(0.1, rel=1e-5)
    assert got['update_ratio/h.0'] == 0.0 and got['update_ratio/wte'] == 0.0


def test_activation_rms_hooks_see_each_block_output():
    model = tiny_model(dropout=0.5)  # measured without dropout: in eval mode, the reference's too
    model.train()
    idx = torch.randint(0, 50, (2, 16))
    got = tracking.activation_rms(model, idx, torch.no_grad())
    assert model.training  # the mode is restored
    model.eval()
    with torch.no_grad():
        x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(16))
        expected = {'act_rms/emb': x.pow(2).mean().sqrt().item()}
        for i, block in enumerate(model.transformer.h):
            x = block(x)
            expected[f'act_rms/h.{i}'] = x.pow(2).mean().sqrt().item()
    assert list(got) == list(expected)
    for k in expected:
        assert got[k] == pytest.approx(expected[k], rel=1e-5)


def test_logged_in_reads_the_api_key_and_netrc(tmp_path, monkeypatch):
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    monkeypatch.delenv('WANDB_BASE_URL', raising=False)
    monkeypatch.setenv('NETRC', str(tmp_path / 'netrc'))
    assert not tracking.logged_in()
    (tmp_path / 'netrc').write_text('machine example.com login a password b\n')
    assert not tracking.logged_in()
    (tmp_path / 'netrc').write_text('machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n')
    assert tracking.logged_in()
    monkeypatch.setenv('NETRC', str(tmp_path / 'none'))
    monkeypatch.setenv('WANDB_API_KEY', 'k' * 40)
    assert tracking.logged_in()


def wandb_records(path):
    """The records of a .wandb file: a header, then leveldb-log chunks (32 KiB blocks, a 7-byte
    header per chunk: crc, length, type) each holding a protobuf Record, or a piece of one."""
    from wandb.proto import wandb_internal_pb2 as pb
    with open(path, 'rb') as f:
        data = f.read()
    assert data[:4] == b':W&B'
    pos, block, pending, records = 7, 32768, b'', []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], 'little'), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            r = pb.Record()
            r.ParseFromString(pending)
            records.append(r)
            pending = b''
    return records


def test_train_logs_to_an_offline_wandb_run_when_not_logged_in(char_data, tmp_path):
    pytest.importorskip('wandb')
    out = tmp_path / 'out'
    env = {'WANDB_DIR': str(tmp_path / 'wb'), 'HOME': str(tmp_path / 'home'), 'NETRC': str(tmp_path / 'no-netrc'),
           'WANDB_API_KEY': '', 'WANDB_MODE': '',
           'WANDB_BASE_URL': 'http://127.0.0.1:9'}  # should it try to go online, it fails here, locally
    r = run_script('train.py', f'--dataset={char_data}', f'--out_dir={out}', '--max_iters=4', '--eval_interval=2',
                   '--wandb_log=True', '--wandb_project=test', '--wandb_run_name=tiny', '--log_health=True', *TINY,
                   env=env, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert 'logging offline' in r.stdout and 'wandb sync ' in r.stdout
    (run_dir,) = glob.glob(str(tmp_path / 'wb' / 'wandb' / 'offline-run-*'))
    (wandb_file,) = glob.glob(os.path.join(run_dir, 'run-*.wandb'))
    assert f'wandb sync {run_dir}' in r.stdout

    ours = [r for r in map(json.loads, open(out / 'metrics.jsonl')) if 'val_loss' in r]
    assert [m['iter'] for m in ours] == [0, 2, 4]
    assert {'grad_norm/h.0', 'update_ratio/h.1', 'act_rms/h.1'} <= set(ours[1]['health'])

    history, config = {}, {}
    for rec in wandb_records(wandb_file):
        kind = rec.WhichOneof('record_type')
        if kind == 'history':
            items = {'/'.join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item}
            history.setdefault(items['_step'], {}).update(items)
        elif kind == 'run':
            config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
    for m in ours:
        logged = history[m['iter']]
        assert logged['val/loss'] == pytest.approx(m['val_loss'], rel=1e-9)
        assert logged['train/loss'] == pytest.approx(m['train_loss'], rel=1e-9)
        assert logged['val/bpb'] == pytest.approx(m['val_bpb'], rel=1e-9)
        assert logged['train/bpb'] == pytest.approx(m['train_bpb'], rel=1e-9)
        for k, v in m['health'].items():
            assert logged[f'health/{k}'] == pytest.approx(v, rel=1e-9)
    assert 'tokens_per_sec' in history[1] and 'mfu' in history[1]
    assert config['n_layer'] == 2 and config['log_health'] is True and config['dataset'] == str(char_data)
