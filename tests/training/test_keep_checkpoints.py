"""keep_checkpoints: step checkpoints beside ckpt.pt and best.pt, pruned only after a newer one is complete."""

import glob
import os
import random
import signal
import time

import numpy as np
import torch

from core.training import checkpoint


def _train_forever(out_dir, first, keep):
    # saves as train.py does at every checkpoint_interval; numpy builds the payload (torch ops in a forked
    # child may hit a thread pool that did not survive the fork)
    step = first
    while True:
        w = torch.from_numpy(np.full(500_000, step, dtype=np.float32))  # 2 MB
        checkpoint.save_run({'model': {'w': w}, 'model_args': {'step': step}}, out_dir, step, best=step % 3 == 0,
                            keep=keep)
        step += 1


def test_kill9_during_step_saves_keeps_between_one_and_n_plus_one(tmp_path):
    out, keep = str(tmp_path), 3
    rng = random.Random(0)
    last, kills, mid_write, full = -1, 0, 0, 0
    start = time.monotonic()
    hang_guard = start + 240  # a busy machine lands fewer kills inside a write: two of each can take half a minute
    while (time.monotonic() < start + 5 or kills < 10 or mid_write < 2 or full < 2) and time.monotonic() < hang_guard:
        pid = os.fork()
        if pid == 0:
            try:
                _train_forever(out, last + 1, keep)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
        mid_write += bool(glob.glob(os.path.join(out, '.ckpt_*.pt.*.tmp')))
        steps = checkpoint.steps(out)
        if last >= 0 or steps:
            assert 1 <= len(steps) <= keep + 1, steps
        full += len(steps) == keep + 1  # killed after a new step was written and before the oldest went
        for step in steps:  # every step file left is whole and holds its own step
            ckpt = checkpoint.load(checkpoint.step_path(out, step))
            assert ckpt['model_args']['step'] == step and torch.all(ckpt['model']['w'] == step)
        if steps:
            assert steps == list(range(steps[0], steps[-1] + 1))  # the newest, none skipped
            assert checkpoint.load(os.path.join(out, 'ckpt.pt'))['model_args']['step'] >= steps[-1]
            last = steps[-1]
    assert last >= 0 and mid_write >= 1, (kills, mid_write, last)
    # the next complete save prunes back to keep and sweeps the killed writers' temporary files
    checkpoint.save_run({'model': {}, 'model_args': {}}, out, last + 1, keep=keep)
    assert checkpoint.steps(out) == list(range(last + 2 - keep, last + 2))
    assert not glob.glob(os.path.join(out, '*.tmp'), include_hidden=True)


def test_steps_after_the_current_one_are_left_alone(tmp_path):
    """A run resumed from step 20 of a run that went to 50 does not delete 30..50 as 'older'."""
    out = str(tmp_path)
    for step in (10, 20, 30, 40, 50):
        checkpoint.save_run({'model': {}, 'model_args': {}}, out, step, keep=10)
    for step in (21, 22, 23):
        checkpoint.save_run({'model': {}, 'model_args': {}}, out, step, keep=2)
    assert checkpoint.steps(out) == [22, 23, 30, 40, 50]


def test_train_keeps_the_last_n_step_checkpoints_and_resumes_from_one(char_data, tmp_path):
    from conftest import TINY, assert_one_line_error, run_script
    out = str(tmp_path / 'run')
    common = [f'--dataset={char_data}', f'--out_dir={out}', *TINY, '--lr_decay_iters=13', '--eval_interval=5',
              '--checkpoint_interval=3', '--keep_checkpoints=2']
    r = run_script('train.py', *common, '--max_iters=13')
    assert r.returncode == 0, r.stderr
    # saves at 3, 6, 9, 12 and the last iteration, 13; the two newest stay
    assert checkpoint.steps(out) == [12, 13]
    assert sorted(os.listdir(out)) == ['best.pt', 'ckpt.pt', 'ckpt_00000012.pt', 'ckpt_00000013.pt', 'metrics.jsonl']
    assert checkpoint.load(checkpoint.resolve(out, 12))['iter_num'] == 12
    assert checkpoint.load(os.path.join(out, 'ckpt.pt'))['iter_num'] == 13
    # best.pt comes from the evals (5, 10, 13), not from the interval saves
    assert checkpoint.load(os.path.join(out, 'best.pt'))['iter_num'] in (5, 10, 13)
    r = run_script('sample.py', f'--out_dir={out}', '--ckpt=12', '--num_samples=1', '--max_new_tokens=3', '--device=cpu')
    assert r.returncode == 0, r.stderr
    assert 'loaded ' + checkpoint.step_path(out, 12) in r.stderr

    r = run_script('train.py', *common, '--max_iters=14', '--init_from=resume', '--ckpt=12')
    assert r.returncode == 0, r.stderr
    assert 'ckpt_00000012.pt at iteration 12' in r.stdout
    assert checkpoint.steps(out) == [13, 14]
    r = run_script('train.py', *common, '--max_iters=20', '--init_from=resume', '--ckpt=5')
    assert r.returncode == 2
    assert_one_line_error(r, 'no checkpoint of step 5', 'steps saved there: 13, 14')


def test_a_killed_best_save_leaves_no_temporary_file_behind(tmp_path):
    """A kill while best.pt is written leaves its temporary file; the next save sweeps it even when
    that save writes no best.pt."""
    out = str(tmp_path)
    pid = os.fork()
    if pid == 0:
        try:
            while True:
                w = torch.from_numpy(np.zeros(2_000_000, dtype=np.float32))
                checkpoint.save_run({'model': {'w': w}, 'model_args': {}}, out, 1, best=True)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 30
    while not glob.glob(os.path.join(out, '.best.pt.*.tmp')) and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    if not glob.glob(os.path.join(out, '.best.pt.*.tmp')):
        import pytest
        pytest.skip("the kill did not land inside a best.pt write")
    checkpoint.save_run({'model': {}, 'model_args': {}}, out, 2)
    assert not glob.glob(os.path.join(out, '*.tmp'), include_hidden=True)


def test_resolve_picks_the_file_each_ckpt_names(tmp_path):
    import pytest
    from core.errors import UserError
    out = str(tmp_path)
    for step in (100, 300, 200):  # written out of order: the newest is the largest step, not the last written
        checkpoint.save_run({'model': {}, 'model_args': {}}, out, step, keep=5)
    os.remove(os.path.join(out, 'ckpt.pt'))
    assert checkpoint.resolve(out) == checkpoint.step_path(out, 300)  # only step files: the newest
    assert checkpoint.resolve(out, 200) == os.path.join(out, 'ckpt_00000200.pt')
    with pytest.raises(UserError, match='steps saved there: 100, 200, 300'):
        checkpoint.resolve(out, 250)
    checkpoint.save({'model': {}, 'model_args': {}}, os.path.join(out, 'ckpt.pt'))
    checkpoint.save({'model': {}, 'model_args': {}}, os.path.join(out, 'best.pt'))
    assert checkpoint.resolve(out) == os.path.join(out, 'best.pt')  # the default: best
    assert checkpoint.resolve(out, 'best') == os.path.join(out, 'best.pt')
    assert checkpoint.resolve(out, 'latest') == os.path.join(out, 'ckpt.pt')
    os.remove(os.path.join(out, 'best.pt'))
    assert checkpoint.resolve(out, 'best') == os.path.join(out, 'ckpt.pt')  # each falls back on the other


def test_rng_state_resumes_every_stream_where_it_was():
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    for _ in range(3):  # move each stream off its start
        torch.rand(5), np.random.rand(5), random.random()
    saved = checkpoint.rng_state()
    expected = (torch.rand(4).tolist(), np.random.rand(4).tolist(), [random.random() for _ in range(4)])
    np.random.seed(99)
    torch.manual_seed(99)
    random.seed(99)
    checkpoint.set_rng_state(saved)
    assert (torch.rand(4).tolist(), np.random.rand(4).tolist(), [random.random() for _ in range(4)]) == expected


def test_a_resume_from_best_keeps_the_later_ckpt_it_would_replace(char_data, tmp_path):
    # best.pt at iteration 5, ckpt.pt at 10 (a run past its best): resuming from best saved over ckpt.pt and
    # iterations 6-10 were gone
    import shutil
    from conftest import TINY, run_script
    out = tmp_path / 'run'
    common = [f'--dataset={char_data}', f'--out_dir={out}', *TINY, '--eval_interval=5']
    assert run_script('train.py', *common, '--max_iters=5').returncode == 0
    shutil.copy(out / 'best.pt', tmp_path / 'best5.pt')
    r = run_script('train.py', *common, '--max_iters=10', '--init_from=resume')
    assert r.returncode == 0, r.stderr
    shutil.copy(tmp_path / 'best5.pt', out / 'best.pt')
    later = (out / 'ckpt.pt').read_bytes()
    r = run_script('train.py', *common, '--max_iters=7', '--init_from=resume', '--ckpt=best')
    assert r.returncode == 0, r.stderr
    kept = out / 'ckpt_00000010.pt'
    assert f"ckpt.pt held iteration 10, past {out / 'best.pt'}'s 5" in r.stdout and str(kept) in r.stdout
    assert kept.read_bytes() == later and checkpoint.load(str(out / 'ckpt.pt'))['iter_num'] == 7
    # a resume from the latest itself, or from a ckpt.pt no later than the resumed one, moves nothing
    r = run_script('train.py', *common, '--max_iters=8', '--init_from=resume')
    assert r.returncode == 0 and 'is kept as' not in r.stdout, r.stderr
    assert checkpoint.steps(str(out)) == [10]
