"""core/training/distributed.py in one process: the batch shares of torchrun's processes and the collectives'
identity without a process group (the multi-process runs are in tests/system/test_distributed.py)."""

import os

import pytest

from core.errors import UserError
from core.training import distributed


@pytest.mark.parametrize('accum, batch, world, expected', [
    (8, 12, 1, (8, 12, 1)), (8, 12, 4, (2, 12, 1)),  # the micro-steps divide: each process takes a share of them
    (1, 12, 4, (1, 3, 4)), (3, 'auto', 2, (3, 'auto', 2))])  # they do not: each micro-batch is split
def test_share_batch_keeps_the_global_batch(accum, batch, world, expected):
    said = []
    got = distributed.share_batch(accum, batch, world, said.append)
    assert got == expected
    a, b, split = got
    if b != 'auto':
        assert a * b * world == accum * batch  # sequences per optimizer step, over all processes
    assert bool(said) == (split > 1)


def test_share_batch_that_cannot_split_names_what_would():
    with pytest.raises(UserError, match=r'use --batch_size=4 \(a multiple of 4\) or --gradient_accumulation_steps=12'):
        distributed.share_batch(3, 5, 4)


def test_collectives_without_a_process_group():
    assert distributed.all_reduce([1.5, 2.0], 'cpu', 'max') == [1.5, 2.0]
    distributed.finish(clean=True)  # nothing to tear down


TORCHRUN_ARGS = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
                 '--gradient_accumulation_steps=2', '--eval_iters=3', '--eval_interval=2', '--device=cpu',
                 '--compile=False', '--dtype=float32']


def torchrun(*args, script=None):
    import subprocess
    import sys
    from conftest import REPO
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                           script or os.path.join(REPO, 'train.py'), *args], capture_output=True, text=True,
                          cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1'), timeout=600)


def said_once(r, fragment):
    """Our line once on stderr, no traceback from our ranks, and torchrun's summary quoting it as the root cause."""
    ours = [line for line in r.stderr.splitlines() if line.startswith('error:')]
    assert len(ours) == 1 and fragment in ours[0], r.stderr
    assert 'train.py", line' not in r.stderr and 'core/' not in r.stderr, r.stderr
    root = r.stderr[r.stderr.index('Root Cause'):]
    assert f'traceback : {ours[0]}' in root and 'exitcode  : 2' in root, r.stderr
    return ours[0]


@pytest.mark.skipif(not __import__('torch').distributed.is_gloo_available(), reason="no gloo")
def test_under_torchrun_a_mistake_every_rank_finds_is_said_once(char_data, tmp_path):
    r = torchrun(f'--dataset={char_data}', f'--out_dir={tmp_path}', *TORCHRUN_ARGS, '--max_bad_steps=0')
    assert r.returncode == 1  # torchrun's own code for any failed child: it does not pass ours through
    said_once(r, 'max_bad_steps=0')
    r = torchrun(f'--dataset={tmp_path / "missing"}', f'--out_dir={tmp_path}', *TORCHRUN_ARGS)  # after set-up
    said_once(r, 'not found')


@pytest.mark.skipif(not __import__('torch').distributed.is_gloo_available(), reason="no gloo")
def test_under_torchrun_the_rank_that_says_the_mistake_is_not_stopped_before_it_has(char_data, tmp_path):
    # rank 0 counts the mistake first, then is slow to print it (a busy machine); rank 1, which stays quiet, must
    # not leave before it, or torchrun stops rank 0 with its line unsaid (or writes its own log into the line)
    from conftest import REPO
    script = tmp_path / 'slow_to_say.py'
    script.write_text(f"""import os, runpy, sys, time
rank = os.environ['RANK']
if rank == '1':
    time.sleep(4)  # so that rank 0 is first to count the mistake
else:
    class SlowToSay:
        def __getattr__(self, name):
            return getattr(sys.__stderr__, name)

        def write(self, text):
            if text.startswith('error:'):
                time.sleep(6)
            return sys.__stderr__.write(text)
    sys.stderr = SlowToSay()
sys.path.insert(0, {REPO!r})
sys.argv[0] = {os.path.join(REPO, 'train.py')!r}
runpy.run_path(sys.argv[0], run_name='__main__')
""")
    r = torchrun(f'--dataset={char_data}', f'--out_dir={tmp_path}', *TORCHRUN_ARGS, '--max_bad_steps=0',
                 script=str(script))
    said_once(r, 'max_bad_steps=0')


@pytest.mark.skipif(not __import__('torch').distributed.is_gloo_available(), reason="no gloo")
def test_under_torchrun_a_mistake_one_rank_finds_is_said_by_it(char_data, tmp_path):
    r = torchrun(f'--dataset={char_data}', f'--out_dir={tmp_path}', *TORCHRUN_ARGS, '--fsdp=True', '--max_iters=2')
    assert r.returncode == 0, r.stderr
    (shard,) = [n for n in os.listdir(tmp_path) if n.startswith('ckpt_shard1of2')]
    os.unlink(tmp_path / shard)
    r = torchrun(f'--dataset={char_data}', f'--out_dir={tmp_path}', *TORCHRUN_ARGS, '--fsdp=True', '--max_iters=4',
                 '--init_from=resume')
    said_once(r, shard)


@pytest.mark.parametrize('ddp', [False, True])
def test_a_process_of_many_exits_with_its_code_after_the_exit_handlers(tmp_path, ddp):
    # one of several processes ends without the C++ runtime's teardown (os._exit), so it must run Python's exit
    # handlers (the run lock's release is one) and flush what it printed itself, and keep its exit code
    import subprocess
    import sys
    from conftest import REPO
    mark = tmp_path / 'handler_ran'
    code = (f"import atexit, sys; sys.path.insert(0, {REPO!r}); from core.training import distributed; "
            f"atexit.register(lambda: open({str(mark)!r}, 'w').close()); print('said', end=''); "
            f"distributed.exit_process(3, {ddp})")
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONUNBUFFERED'}  # a pipe's buffer, as under torchrun
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 3 and r.stdout == 'said' and mark.exists(), (r.returncode, r.stdout, r.stderr)
