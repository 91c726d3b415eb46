"""A fifth fuzz pass, over the surfaces fuzzed less: plan.py, plot.py, bench.py, resuming and sampling from damaged
checkpoints. Each test is a user mistake or a damaged file that ended in a crash, a traceback, a hang, a replaced file
or a misleading line instead of one error line; scripts run in this interpreter, but for
what could crash it or hang."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from conftest import ONE_THREAD, REPO, assert_one_line_error, make_char_dataset, run_inprocess, run_script

PLAN = ['--minutes=0.4', '--progress=False']  # the smallest budget plan.py takes: it measures for a few seconds


def run_here(script, *args, env=None, timeout=None):
    """run_inprocess, answered as run_script's result: no new interpreter (each costs seconds of torch's import).
    env and timeout are run_script's, unused here."""
    code, out, err = run_inprocess(script, *args)
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def damaged_copy(run, dst, change):
    """A copy of the run folder whose ckpt.pt went through change(state)."""
    import torch
    folder = copy_run(run, dst)
    for name in ('ckpt.pt', 'best.pt'):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            state = torch.load(path, weights_only=True)
            change(state)
            torch.save(state, path)
    return folder


def resume(folder, *extra, timeout=60, fresh=False):
    """--init_from=resume of folder; fresh: in a new interpreter (what it tests could crash this one)."""
    run = run_script if fresh else run_here
    return run('train.py', '--init_from=resume', f'--out_dir={folder}', '--max_iters=3', '--eval_interval=2',
               '--eval_iters=1', '--device=cpu', '--compile=False', *extra, env=ONE_THREAD, timeout=timeout)


# ----- resuming a damaged checkpoint -----

def _tiny_moment(state):
    state['optimizer']['state'][0]['exp_avg'] = __import__('torch').zeros(1)


def _swapped_moments(state):
    s = state['optimizer']['state']
    s[0], s[2] = s[2], s[0]  # the moments of another weight, of another shape


@pytest.mark.parametrize('change', [_tiny_moment, _swapped_moments], ids=['tiny', 'swapped'])
def test_resume_refuses_optimizer_moments_of_the_wrong_shape(change, tiny_run, tmp_path):
    # optimizer moments whose shapes are not their weights' (a damaged checkpoint, or one of ours flagged as nanoGPT's
    # so its moments were reordered) were loaded as they were: torch's fused AdamW then read past them and the process
    # died of a segmentation fault (exit -11/139) at the first step, with no message at all
    folder = damaged_copy(tiny_run, tmp_path / 'run', change)
    r = resume(folder, fresh=True)
    assert r.returncode >= 0, f"killed by signal {-r.returncode} (a crash in torch, no message): {r.stdout[-300:]}"
    assert_one_line_error(r, 'optimizer')


def test_resume_names_a_damaged_fsdp_field(tiny_run, tmp_path):
    # 'fsdp': [1] (not the {'world_size', 'slot'} an FSDP run saves) was a TypeError traceback in init.resume_model
    folder = damaged_copy(tiny_run, tmp_path / 'run', lambda s: s.update(fsdp=[1]))
    assert_one_line_error(resume(folder), 'damaged')


def test_resume_names_a_short_rng_per_rank(tiny_run, tmp_path):
    # 'rng_per_rank': [] (fewer states than ranks, world_size saying 1) was an IndexError traceback in init.restore_rng
    folder = damaged_copy(tiny_run, tmp_path / 'run', lambda s: s.update(rng_per_rank=[]))
    assert_one_line_error(resume(folder), 'damaged')


def test_resume_refuses_a_weight_of_integers_and_sample_says_the_same(tiny_run, tmp_path):
    # load_state_dict casts an integer tensor into the float weight: the run trained on from a model of ones
    import torch

    def to_ints(state):
        state['model']['transformer.wte.weight'] = torch.ones(state['model']['transformer.wte.weight'].shape,
                                                              dtype=torch.int64)
    folder = damaged_copy(tiny_run, tmp_path / 'run', to_ints)
    assert_one_line_error(resume(folder), 'transformer.wte.weight holds torch.int64 values')
    r = run_here('sample.py', f'--out_dir={folder}', '--device=cpu', '--max_new_tokens=2', '--num_samples=1')
    assert_one_line_error(r, 'transformer.wte.weight holds torch.int64 values')


@pytest.mark.parametrize('key', ['learning_rate', 'embed_lr'])
def test_resume_names_a_non_finite_rate_in_the_saved_config(key, tiny_run, tmp_path):
    # a saved config with learning_rate NaN passed settings.check_config (NaN < 0 is False) and ended in 'its state does
    # not fit this model (loaded state dict has a different number of parameter groups)', which names the wrong thing
    folder = damaged_copy(tiny_run, tmp_path / 'run', lambda s: s['config'].update({key: float('nan')}))
    assert_one_line_error(resume(folder), key)


@pytest.mark.parametrize('rank', [0, 4])
def test_resume_refuses_a_lora_rank_the_run_does_not_train_with(rank, tiny_run, tmp_path):
    # --lora_rank=4 on resuming a run that trains every weight was logged as 'changed lora_rank 0 -> 4' and ignored:
    # the run went on training every weight
    import torch
    folder = copy_run(tiny_run, tmp_path / 'run')
    if rank == 0:  # the other way: a LoRA run (adapters of rank 2) resumed with --lora_rank=0
        state = torch.load(os.path.join(folder, 'ckpt.pt'), weights_only=True)
        state['lora'] = {'base': tiny_run, 'rank': 2, 'alpha': 4.0, 'targets': 'attn'}
        torch.save(state, os.path.join(folder, 'ckpt.pt'))
    r = resume(folder, f'--lora_rank={rank}')
    assert_one_line_error(r, 'every weight' if rank else 'adapters of rank 2', '--init_from=')


# ----- model_args that are not finite -----

@pytest.mark.parametrize('key, value', [('attn_scale', float('inf')), ('attn_scale', float('nan')),
                                        ('logit_softcap', float('inf'))])
def test_checkpoint_model_args_that_are_not_finite(key, value, tiny_run, tmp_path):
    # GPTConfig checks attn_scale >= 0 and logit_softcap >= 0, which inf and NaN pass: sample.py ended in torch's
    # 'probability tensor contains either inf, nan or element < 0' traceback (model.py sample), eval.py printed a nan
    # loss with exit code 0
    folder = damaged_copy(tiny_run, tmp_path / 'run', lambda s: s['model_args'].update({key: value}))
    r = run_here('sample.py', f'--out_dir={folder}', '--device=cpu', '--max_new_tokens=2', '--num_samples=1')
    assert_one_line_error(r, key)
    r = run_here('eval.py', f'--out_dir={folder}', '--device=cpu')
    assert_one_line_error(r, key)


# ----- plan.py -----

@pytest.fixture(scope='module')
def plan_data(tmp_path_factory):
    """A character dataset big enough for plan.py's smallest shape (the test_plan.py one)."""
    return make_char_dataset(str(tmp_path_factory.mktemp('plan') / 'shakespeare_char'))


def edited_dataset(plan_data, dst, **meta):
    folder = copy_run(plan_data, dst)
    with open(os.path.join(folder, 'meta.json')) as f:
        m = json.load(f)
    m.update(meta)
    with open(os.path.join(folder, 'meta.json'), 'w') as f:
        json.dump(m, f)
    return folder


def test_plan_checks_a_vocabulary_too_big_to_build(plan_data, tmp_path):
    # meta.json's vocab_size 2**32 passes the loader's check (a uint32 file's range); plan.py built its first
    # measuring model at once and died in the CPU allocator ('you tried to allocate 2199023255552 bytes'), a traceback
    # from core/training/search.py measure_throughput; train.py checks the build first
    data = edited_dataset(plan_data, tmp_path / 'data', vocab_size=2 ** 32)
    r = run_here('plan.py', *PLAN, f'--dataset={data}', f'--out={tmp_path / "plan.py"}')
    assert_one_line_error(r)
    assert not (tmp_path / 'plan.py').exists()


@pytest.mark.parametrize('meta', [{'tokenizer': {'kind': 'zzz'}}, {'vocab_size': 10}], ids=['tokenizer', 'vocab'])
def test_plan_refuses_a_dataset_train_py_refuses(meta, plan_data, tmp_path):
    # an unknown tokenizer, or token ids beyond meta.json's vocab_size: train.py stops at once, but plan.py measured,
    # searched and wrote a config (exit code 0) that train.py then refused; the search's share of the budget was lost
    data = edited_dataset(plan_data, tmp_path / 'data', **meta)
    r = run_here('plan.py', *PLAN, f'--dataset={data}', f'--out={tmp_path / "plan.py"}')
    assert_one_line_error(r)
    assert not (tmp_path / 'plan.py').exists()


@pytest.mark.parametrize('name', ['ckpt.pt', 'metrics.jsonl'])
def test_plan_never_replaces_a_run_file(name, plan_data, tiny_run, tmp_path):
    # --out=<run>/ckpt.pt --overwrite=True replaced the run's checkpoint with a config file; a plan is a .py file,
    # and no file a run or a dataset keeps is one (fileio.owned)
    run = copy_run(tiny_run, tmp_path / 'run')
    target = os.path.join(run, name)
    with open(target, 'rb') as f:
        before = f.read()
    r = run_here('plan.py', *PLAN, f'--dataset={plan_data}', f'--out={target}', '--overwrite=True')
    with open(target, 'rb') as f:
        assert f.read() == before, f"{name} was replaced: {r.stdout[-300:]}"
    assert_one_line_error(r, name)


@pytest.mark.parametrize('name', ['plan.pt', 'plan.png', 'plan'])
def test_plan_writes_its_config_under_a_py_name_only(name, plan_data, tmp_path):
    # --out=plan.pt wrote the config's Python under a checkpoint's name
    r = run_here('plan.py', *PLAN, f'--dataset={plan_data}', f'--out={tmp_path / name}')
    assert_one_line_error(r, '.py name')
    assert os.listdir(tmp_path) == []


def test_plan_sigterm_leaves_no_scratch_folder(plan_data, tmp_path):
    # SIGTERM (a scheduler's stop, `kill`) during the search ended plan.py with -15 and left its temporary folder
    # (/tmp/plan-*, a trial's checkpoint in it) behind; Ctrl-C removes it and says so
    scratch = tmp_path / 'tmp'
    scratch.mkdir()
    p = subprocess.Popen([sys.executable, os.path.join(REPO, 'plan.py'), '--minutes=15', f'--dataset={plan_data}',
                          f'--out={tmp_path / "plan.py"}', '--progress=False'], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ, TMPDIR=str(scratch), **ONE_THREAD))
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not any(scratch.glob('plan-*/trial01/*')):
            time.sleep(0.2)
        assert any(scratch.glob('plan-*/trial01/*')), 'no trial started'
        time.sleep(1)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert 'Traceback' not in err, err[-2000:]
    assert not list(scratch.glob('plan-*')), f"left behind: {list(scratch.glob('plan-*'))}, exit {p.returncode}"
    assert not (tmp_path / 'plan.py').exists()


# ----- plot.py -----

def metrics_run(folder, *records):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'metrics.jsonl'), 'w') as f:
        f.write(''.join(r if isinstance(r, str) else json.dumps(r) + '\n' for r in records))
    return str(folder)


BIG = '1' + '0' * 400  # an integer JSON reads whole, beyond a float's range
EVAL = {'iter': 10, 'tokens': 100, 'train_loss': 2.0, 'val_loss': 2.1, 'lr': 1e-3, 'elapsed': 1.0, 'val_bpb': 3.0}


@pytest.mark.parametrize('field, args', [('tokens', []), ('lr', []), ('val_bpb', ['--metric=bpb']),
                                         ('health', ['--health=True'])])
def test_plot_skips_an_integer_beyond_a_float(field, args, tmp_path):
    # a hand-edited or damaged metrics.jsonl with a 401-digit integer: plot.py's finite() called math.isfinite on it,
    # an OverflowError traceback ('int too large to convert to float') instead of skipping the point
    record = {**EVAL, 'health': {'grad_norm/h.0': 'BIG', 'grad_norm/h.1': 1.0}} if field == 'health' else \
        {**EVAL, field: 'BIG'}
    line = json.dumps(record).replace('"BIG"', BIG) + '\n'
    run = metrics_run(tmp_path / 'run', line, {**EVAL, 'iter': 20})
    r = run_here('plot.py', run, f'--out={tmp_path / "loss.png"}', *args)
    assert r.returncode in (0, 2) and 'Traceback' not in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize('layer', ['h.\u00b2', 'h.' + '9' * 5000], ids=['superscript', 'many-digits'])
def test_plot_health_with_a_layer_name_int_cannot_read(layer, tmp_path):
    # str.isdigit() is True for '²' and for 5,000 digits, which int() refuses: layer_rank (core/training/tracking.py)
    # and plot.layer_color raised ValueError, a traceback, on a damaged health record
    run = metrics_run(tmp_path / 'run', {**EVAL, 'health': {f'grad_norm/{layer}': 1.0, 'grad_norm/h.0': 2.0}})
    r = run_here('plot.py', run, f'--out={tmp_path / "loss.png"}', '--health=True')
    assert r.returncode in (0, 2) and 'Traceback' not in r.stderr, r.stderr[-2000:]


def test_plot_overwrite_never_replaces_a_run_file_through_a_link(tiny_run, tmp_path):
    # --out=loss.png, a link to a run's metrics.jsonl (or ckpt.pt), with --overwrite=True: the write followed the link
    # and the run's metrics.jsonl became a PNG; --overwrite is for images, not for the files a run keeps (fileio.owned)
    run = copy_run(tiny_run, tmp_path / 'run')
    metrics = os.path.join(run, 'metrics.jsonl')
    with open(metrics, 'rb') as f:
        before = f.read()
    os.symlink(metrics, tmp_path / 'loss.png')
    r = run_here('plot.py', run, f'--out={tmp_path / "loss.png"}', '--overwrite=True')
    with open(metrics, 'rb') as f:
        assert f.read() == before, 'the run\'s metrics.jsonl was replaced by the image'
    assert_one_line_error(r, 'metrics.jsonl')


# ----- bench.py -----

def test_bench_report_of_a_huge_layer_count_does_not_hang():
    # --n_layer=1000000000000 (zeros held down): --report=True walks the memory plan block by block
    # (planner.estimate_training_memory, a Python loop over range(n_layer)) and never ends, its memory growing;
    # train.py stops such a model in one line (planner.check_build)
    try:
        r = run_script('bench.py', '--report=True', '--n_layer=1000000000000', env=ONE_THREAD, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail('bench.py --report=True --n_layer=1000000000000 was still running after 20 s')
    assert r.returncode in (0, 2) and 'Traceback' not in r.stderr, r.stderr[-2000:]


def test_bench_report_refuses_a_negative_lora_rank():
    # bench.py checks lora_rank only when it builds a model: --report=True --lora_rank=-1 printed a memory plan with
    # 'LoRA rank -1', negative gradients and optimizer state (-12.0 KiB), exit code 0
    r = run_here('bench.py', '--report=True', '--lora_rank=-1')
    assert_one_line_error(r, 'lora_rank')


def test_bench_profile_checks_out_dir_before_timing(tmp_path):
    # --profile=True --out_dir=<a file>: the whole benchmark ran (warm-up, timed steps, the profile) before the trace
    # could not be written; an output path is checked before the work (fileio.check_folder), as plan.py does
    notes = tmp_path / 'notes.txt'
    notes.write_text('mine\n')
    r = run_here('bench.py', '--profile=True', f'--out_dir={notes}', '--iters=1', '--warmup_iters=1',
                 '--reference=False', '--shape_peak=False', '--n_layer=1', '--n_embd=32', '--n_head=2',
                 '--block_size=16', '--batch_size=2', '--compile=False')
    assert 'warm-up' not in r.stdout, 'the benchmark ran before --out_dir was checked: ' + r.stdout[-500:]
    assert_one_line_error(r, 'notes.txt')
    assert notes.read_text() == 'mine\n'
