"""DDP and FSDP2 through torchrun on CPU (gloo): two processes give the losses of one process with the
same global batch, and a run stopped and resumed under each goes on as the uninterrupted one."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from conftest import REPO

from core.training import checkpoint
from model import GPT, GPTConfig
from conftest import ITER_LINE, run_inprocess

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

# two micro-steps per optimizer step in all: one process does both, two processes one each;
# 3 eval batches do not split evenly over 2 ranks, so FSDP's padding forwards are exercised too
ARGS = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
        '--gradient_accumulation_steps=2', '--dropout=0', '--eval_iters=3', '--eval_interval=2',
        '--log_interval=1', '--warmup_iters=2', '--lr_decay_iters=6', '--learning_rate=3e-3',
        '--device=cpu', '--compile=False', '--dtype=float32']
# fp32 even where the CPU has bf16: these tests compare the sharding, not bf16's rounding (FSDP keeps bf16 copies of
# the weights where autocast casts per op, so the two would differ by more than the tolerance for that reason alone)
HALF, FULL = 4, 6


def torchrun(*args):
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                           os.path.join(REPO, 'train.py'), *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=600)


def evals(out_dir):
    with open(os.path.join(out_dir, 'metrics.jsonl')) as f:
        return [(r['iter'], r['train_loss'], r['val_loss']) for r in map(json.loads, f) if 'val_loss' in r]


def step_losses(stdout):
    return {int(i): float(loss) for i, loss in ITER_LINE.findall(stdout)}


@pytest.fixture(scope='module')
def one_process(char_data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('one_process'))
    code, stdout, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={out}', *ARGS,
                                      f'--max_iters={FULL}')
    assert code == 0, err
    return out, stdout


def check_stop_and_resume(one_process, char_data, out, *extra, between=None):
    """Train HALF iterations on two processes, resume to FULL, and compare with one process."""
    ref_dir, ref_out = one_process
    args = [f'--dataset={char_data}', f'--out_dir={out}', *ARGS, *extra]
    first = torchrun(*args, f'--max_iters={HALF}')
    assert first.returncode == 0, first.stdout + first.stderr
    assert 'tokens per iteration: 256 (2 processes x 1 micro-steps x 4 x 32)' in first.stdout
    if between:
        between(out)
    second = torchrun(*args, f'--max_iters={FULL}', '--init_from=resume')
    assert second.returncode == 0, second.stdout + second.stderr
    assert f'resumed from {out}/ckpt.pt at iteration {HALF}' in second.stdout
    # every eval to float tolerance; every step's printed loss to its 4 printed decimals
    got, want = evals(out), evals(ref_dir)
    assert [r[0] for r in got] == [r[0] for r in want] == [0, 2, 4, 6]
    for g, w in zip(got, want):
        assert g[1:] == pytest.approx(w[1:], rel=1e-5, abs=1e-6), (g, w)
    steps = {**step_losses(first.stdout), **step_losses(second.stdout)}
    want_steps = step_losses(ref_out)
    assert sorted(steps) == sorted(want_steps) == list(range(1, FULL + 1))
    for i in steps:
        assert steps[i] == pytest.approx(want_steps[i], abs=2e-4), i
    # the final weights, as sample.py reads them: ckpt.pt is a plain full checkpoint either way
    ckpt, ref = checkpoint.load(os.path.join(out, 'ckpt.pt')), checkpoint.load(os.path.join(ref_dir, 'ckpt.pt'))
    assert ckpt['iter_num'] == FULL and ckpt['model'].keys() == ref['model'].keys()
    for k in ref['model']:
        assert torch.allclose(ckpt['model'][k], ref['model'][k], rtol=1e-4, atol=1e-6), k
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(ckpt['model'])
    return ckpt


def ranks_differ(ckpt):
    """Each rank kept its own random state (its dropout masks), not rank 0's."""
    states = [s['torch'] for s in ckpt['rng_per_rank']]
    return len(states) == 2 and not torch.equal(states[0], states[1])


def test_ddp_matches_one_process_and_resumes(one_process, char_data, tmp_path):
    ckpt = check_stop_and_resume(one_process, char_data, str(tmp_path))
    assert ckpt['world_size'] == 2 and 'fsdp' not in ckpt
    # saved after the resume: seeded per rank, and each rank's own state restored
    assert ranks_differ(ckpt)


def test_resume_on_another_world_size_with_dropout(char_data, tmp_path):
    # one process saves; two resume it: the data order goes on, and the ranks draw different dropout masks
    # from fresh per-rank seeds instead of each taking the one saved state
    out = str(tmp_path)
    args = [f'--dataset={char_data}', f'--out_dir={out}', *ARGS, '--dropout=0.1']
    code, _, err = run_inprocess('train.py', *args, f'--max_iters={HALF}')
    assert code == 0, err
    r = torchrun(*args, f'--max_iters={FULL}', '--init_from=resume')
    assert r.returncode == 0, r.stdout + r.stderr
    assert '1 process(es) saved this run and 2 resume it' in r.stdout
    ckpt = checkpoint.load(os.path.join(out, 'ckpt.pt'))
    assert ckpt['iter_num'] == FULL and ranks_differ(ckpt)
    assert sorted(step_losses(r.stdout)) == list(range(HALF + 1, FULL + 1))


def test_fsdp_matches_one_process_and_resumes(one_process, char_data, tmp_path):
    out = str(tmp_path)

    def crash_in_next_save(out):
        # a later save that died half way: the free slot holds a garbage shard, the named slot is whole
        free = 1 - checkpoint.load(os.path.join(out, 'ckpt.pt'))['fsdp']['slot']
        with open(checkpoint.shard_path(out, 1, 2, free), 'wb') as f:
            f.write(b'half a shard')

    ckpt = check_stop_and_resume(one_process, char_data, out, '--fsdp=True', between=crash_in_next_save)
    assert ckpt['fsdp']['world_size'] == 2 and 'optimizer' not in ckpt
    # each rank's shards: half of every sharded tensor, and its optimizer moments
    slot = ckpt['fsdp']['slot']
    shards = [checkpoint.load(checkpoint.shard_path(out, r, 2, slot)) for r in range(2)]
    for k, full in ckpt['model'].items():
        assert torch.equal(torch.cat([s['model'][k] for s in shards]), full), k
    assert all(s['iter_num'] == FULL and s['optimizer']['state'] for s in shards)
    # a sharded checkpoint resumes only as FSDP on as many processes, and says so in one line
    code, _, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={out}', *ARGS,
                                 '--init_from=resume', f'--max_iters={FULL + 1}')
    assert code == 2 and err.strip().splitlines() == [
        f"error: {out}/ckpt.pt was written by an FSDP run on 2 processes; resume it with --fsdp=True under "
        f"torchrun --nproc_per_node=2 (sample.py reads it as is)"]


@pytest.mark.parametrize('extra, message', [
    (['--fsdp=True'], 'fsdp=True shards the model over several processes; launch with torchrun'),
    (['--fsdp=True', '--optimizer=muon'], "optimizer='muon' does not work with fsdp=True"),
])
def test_fsdp_misuse_is_one_line(char_data, tmp_path, extra, message):
    code, _, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={tmp_path}', *ARGS,
                                 '--max_iters=1', *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith('error: ' + message), err



def test_fewer_micro_steps_than_processes_split_the_micro_batch(char_data, tmp_path):
    # the README's torchrun line has gradient_accumulation_steps=1: each rank takes half of each micro-batch,
    # so two processes still train on one process's global batch (8 sequences) and give its losses
    args = [f'--dataset={char_data}', *ARGS, '--gradient_accumulation_steps=1', '--batch_size=8', '--max_iters=3',
            '--eval_interval=3']
    code, ref, err = run_inprocess('train.py', *args, f'--out_dir={tmp_path / "one"}')
    assert code == 0, err
    r = torchrun(*args, f'--out_dir={tmp_path / "two"}')
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'each takes 1/2 of every micro-batch' in r.stdout
    assert 'tokens per iteration: 256 (2 processes x 1 micro-steps x 4 x 32)' in r.stdout
    got, want = step_losses(r.stdout), step_losses(ref)
    assert sorted(got) == sorted(want) == [1, 2, 3]
    for i in got:
        assert got[i] == pytest.approx(want[i], abs=2e-4), i
    # a micro-batch that does not split: one line naming a value that does
    r = torchrun(*args[:-2], '--batch_size=5', '--max_iters=1', f'--out_dir={tmp_path / "bad"}')
    errors = [l for l in r.stderr.splitlines() if l.startswith('error:')]
    # (torchrun itself then reports the failed worker with its own traceback; the ranks print just the line)
    assert r.returncode != 0 and errors, r.stderr
    assert '--batch_size=4' in errors[0] and '--gradient_accumulation_steps=2' in errors[0], errors
