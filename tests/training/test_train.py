import json
import math
import os
import re

import pytest
import torch

from conftest import TINY, assert_one_line_error, run_script

EVAL_LINE = re.compile(r'^step (\d+): train loss (\d+\.\d{4}), val loss (\d+\.\d{4}), val bpb (\d+\.\d{4})$', re.M)


@pytest.fixture(scope='module')
def trained(char_data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('run'))
    r = run_script('train.py', f'--dataset={char_data}', f'--out_dir={out}', *TINY, '--max_iters=30',
                   '--eval_interval=10', '--lr_decay_iters=30')
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_eval_lines_and_start_report(trained):
    out, stdout = trained
    steps = [int(m.group(1)) for m in EVAL_LINE.finditer(stdout)]
    assert steps == [0, 10, 20, 30]
    for key in ('parameters:', 'tokens per iteration: 128', 'tokens planned: 3,840', 'tokens per parameter'):
        assert key in stdout
    log = [l for l in stdout.splitlines() if l.startswith('iter ')]
    assert len(log) == 30 and all(k in log[-1] for k in ('loss', 'ms/iter', 'tok/s', 'mfu'))
    # the first speed window holds the warm-up (and compilation, where on): no MFU from it
    assert 'mfu n/a' in log[0] and re.search(r'mfu \d+\.\d%', log[1]) and re.search(r'mfu \d+\.\d%', log[-1])
    first_val, last_val = float(EVAL_LINE.findall(stdout)[0][2]), float(EVAL_LINE.findall(stdout)[-1][2])
    assert last_val < first_val


def test_metrics_jsonl(trained):
    out, stdout = trained
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        records = [r for r in map(json.loads, f) if 'val_loss' in r]
    assert [r['iter'] for r in records] == [0, 10, 20, 30]
    assert set(records[0]) >= {'iter', 'tokens', 'train_loss', 'val_loss', 'lr', 'elapsed'}
    assert records[-1]['tokens'] == 30 * 128
    printed = [float(v) for _, _, v, _ in EVAL_LINE.findall(stdout)]
    assert [round(r['val_loss'], 4) for r in records] == pytest.approx(printed, abs=1e-4)
    # every character of this ascii text is one byte, so bits per byte is the loss in bits
    for r in records:
        for split in ('train', 'val'):
            assert r[f'{split}_bpb'] == pytest.approx(r[f'{split}_loss'] / math.log(2), rel=1e-9)
    printed_bpb = [float(v) for *_, v in EVAL_LINE.findall(stdout)]
    assert [round(r['val_bpb'], 4) for r in records] == pytest.approx(printed_bpb, abs=1e-4)


def test_checkpoints_are_weights_only_and_plain(trained):
    out, _ = trained
    for name in ('ckpt.pt', 'best.pt'):
        ckpt = torch.load(os.path.join(out, name), weights_only=True)
        assert not any(k.startswith('_orig_mod.') for k in ckpt['model'])
        assert ckpt['model_args']['n_layer'] == 2
    assert torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)['iter_num'] == 30
    assert not [f for f in os.listdir(out) if f.endswith('.tmp')]


def test_resume_continues_from_the_checkpoint(trained, char_data, tmp_path):
    out, _ = trained
    import shutil
    run = str(tmp_path / 'run')
    shutil.copytree(out, run)
    r = run_script('train.py', f'--dataset={char_data}', f'--out_dir={run}', *TINY, '--max_iters=40',
                   '--eval_interval=10', '--lr_decay_iters=30', '--init_from=resume', '--learning_rate=1e-3')
    assert r.returncode == 0, r.stderr
    assert 'resumed from' in r.stdout and 'at iteration 30' in r.stdout
    assert 'learning_rate 0.003 -> 0.001' in r.stdout
    steps = [int(m.group(1)) for m in EVAL_LINE.finditer(r.stdout)]
    assert steps == [30, 40]
    with open(os.path.join(run, 'metrics.jsonl')) as f:
        assert [r['iter'] for r in map(json.loads, f) if 'val_loss' in r] == [0, 10, 20, 30, 40]


def test_resume_with_other_architecture_is_refused(trained, char_data, tmp_path):
    out, _ = trained
    r = run_script('train.py', f'--dataset={char_data}', f'--out_dir={out}', *TINY, '--n_layer=3',
                   '--init_from=resume', '--max_iters=31')
    assert_one_line_error(r, 'architecture differs', 'n_layer')


def test_sample_greedy_matches_the_model(trained):
    out, _ = trained
    args = [f'--out_dir={out}', '--start=ROMEO:', '--num_samples=1', '--max_new_tokens=40', '--temperature=0',
            '--device=cpu']
    a, b = run_script('sample.py', *args), run_script('sample.py', *args)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith('ROMEO:')
    # the same continuation computed here from the checkpoint
    from core.data import tokenizer
    from model import GPT, GPTConfig
    ckpt = torch.load(os.path.join(out, 'best.pt'), weights_only=True)
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(ckpt['model'])
    model.eval()
    tok = tokenizer.from_state(ckpt['tokenizer'])
    y = model.generate(torch.tensor([tok.encode('ROMEO:')]), 40, temperature=0)
    assert a.stdout.split('\n---------------')[0] == tok.decode(y[0].tolist())


def test_sample_finds_the_latest_run(trained, tmp_path):
    out, _ = trained
    import shutil
    for name, age in (('older', 100), ('newer', 0)):
        shutil.copytree(out, tmp_path / name)
        for f in ('ckpt.pt', 'best.pt'):
            t = os.path.getmtime(tmp_path / name / f) - age
            os.utime(tmp_path / name / f, (t, t))
    r = run_script('sample.py', '--num_samples=1', '--max_new_tokens=5', '--device=cpu', cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert 'using ./newer' in r.stderr


def test_sample_rejects_characters_outside_the_vocab(trained):
    out, _ = trained
    r = run_script('sample.py', f'--out_dir={out}', '--start=héllo ☃', '--device=cpu')
    assert_one_line_error(r, 'é', '☃')


def test_sample_missing_checkpoint(tmp_path):
    assert_one_line_error(run_script('sample.py', f'--out_dir={tmp_path}'), 'no checkpoint')


def test_bad_checkpoint_file(tmp_path):
    (tmp_path / 'ckpt.pt').write_bytes(b'not a checkpoint at all')
    assert_one_line_error(run_script('sample.py', f'--out_dir={tmp_path}', '--ckpt=latest'), str(tmp_path / 'ckpt.pt'))


def test_chat_loop(trained):
    out, _ = trained
    r = run_script('sample.py', f'--out_dir={out}', '--interactive=True', '--max_new_tokens=20', '--temperature=0',
                   '--device=cpu', input='ROMEO:\n/temp 0.5\n/reset\nJULIET:\n/quit\nnever read\n')
    assert r.returncode == 0, r.stderr
    assert r.stdout.count('bot> ') == 2
    assert '(temperature 0.5)' in r.stdout and '(history cleared)' in r.stdout
    replies = [l for l in r.stdout.split('bot> ')[1:]]
    assert all(reply.strip() for reply in replies)
    # Ctrl-D ends the loop too
    r = run_script('sample.py', f'--out_dir={out}', '--interactive=True', '--max_new_tokens=5', '--device=cpu', input='')
    assert r.returncode == 0, r.stderr


def test_runs_record_their_code(trained):
    import subprocess
    from conftest import REPO
    out, _ = trained
    head = subprocess.run(['git', '-C', REPO, 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip()
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        first = json.loads(f.readline())
    assert first['kind'] == 'start' and first['iter'] == 0 and first['config']['max_iters'] == 30
    assert first['commit'] == (head or None) and isinstance(first['dirty'], bool) == bool(head)
    for name in ('ckpt.pt', 'best.pt'):
        code = torch.load(os.path.join(out, name), weights_only=True)['code']
        assert code == {'commit': first['commit'], 'dirty': first['dirty']}


def test_every_log_line_is_a_metrics_record(trained):
    out, stdout = trained
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        lines = [r for r in map(json.loads, f) if r.get('kind') == 'train']
    printed = re.findall(r'^iter (\d+): loss (\S+), lr (\S+),', stdout, re.M)
    assert [r['iter'] for r in lines] == [int(i) for i, _, _ in printed] == list(range(1, 31))
    for r, (_, loss, lr) in zip(lines, printed):
        assert f"{r['train_loss']:.4f}" == loss and f"{r['lr']:.2e}" == lr and r['tokens'] == r['iter'] * 128
    elapsed = [r['elapsed'] for r in lines]
    assert elapsed == sorted(elapsed) and 0 < elapsed[-1] < 300


def test_threads_are_chosen_by_timing_unless_the_user_chose(char_data, tmp_path):
    import subprocess
    import sys
    from conftest import REPO
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    outs = []
    for extra in ([], ['--threads=1']):
        r = subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), f'--dataset={char_data}',
                            f'--out_dir={tmp_path / str(len(outs))}', *TINY, '--max_iters=2', *extra],
                           capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    chosen = re.findall(r'^threads: (\d+) \(\d+ ms a step at 1 thread, \d+ ms at (\d+): ', outs[0], re.M)
    from core.hardware import available_cores
    if available_cores() > 1:  # under taskset to one core there is nothing to choose, so nothing is timed
        assert len(chosen) == 1 and chosen[0][0] in ('1', chosen[0][1])
    else:
        assert not chosen
    assert 'threads:' not in outs[1]


@pytest.mark.parametrize('args, fragments', [
    (['--max_bad_steps=0'], ['max_bad_steps=0', 'give 1 or more']),  # a config mistake (2), not divergence (3)
    (['--ckpt=123'], ["ckpt='123'", '--init_from=resume']),
    (['--ckpt=best', '--init_from=gpt2'], ["ckpt='best'", "init_from='gpt2'"]),
    (['--min_lr=1e-3', '--learning_rate=3e-4'], ['min_lr=0.001 is above learning_rate=0.0003', '--min_lr=3e-05',
                                                 '--decay_lr=False'])])
def test_config_mistakes_that_used_to_train(char_data, tmp_path, args, fragments):
    from conftest import run_inprocess
    code, out, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={tmp_path}', *TINY,
                                   '--max_iters=2', *args)
    assert_one_line_error(subprocess_result(code, out, err), *fragments)
    assert not os.listdir(tmp_path)  # refused before the run folder was claimed


def test_min_lr_above_the_rate_is_fine_without_decay(char_data, tmp_path):
    from conftest import run_inprocess
    code, out, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={tmp_path}', *TINY,
                                   '--max_iters=1', '--min_lr=1e-2', '--decay_lr=False')
    assert code == 0, err


def subprocess_result(code, out, err):
    import types
    return types.SimpleNamespace(returncode=code, stdout=out, stderr=err)
