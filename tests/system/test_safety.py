"""Nothing a user owns is lost or silently mixed: run folders, datasets, full disks, bad numbers, signals."""

import os
import re

import pytest

from configurator import ConfigError, parse
from conftest import assert_one_line_error, run_script
from conftest import run_inprocess


def assert_one_error(code, err, fragment):
    assert code != 0 and 'Traceback' not in err, err
    [line] = err.strip().splitlines()
    assert line.startswith('error: ') and fragment in line, line


# ----- numbers no run can use -----

@pytest.mark.parametrize('argv,fragment', [
    (['--learning_rate=inf'], 'finite'),
    (['--learning_rate=-inf'], 'finite'),
    (['--learning_rate=1e400'], 'finite'),
    (['--learning_rate=10**400'], 'expects a number'),
    (['--seed=10**23'], 'expects an integer'),
    (['--seed=1e23'], '64 bits'),
    (['--seed=-9223372036854775809'], '64 bits'),
])
def test_configurator_refuses_numbers_no_run_can_use(argv, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse(argv, dict(learning_rate=6e-4, seed=1337))


def test_config_file_nan_and_huge_int_are_refused(tmp_path):
    path = tmp_path / 'c.py'
    for text, fragment in (("learning_rate = float('nan')\n", 'finite number, got nan'),
                           ("learning_rate = 10**400\n", 'finite number'),
                           ("seed = 10**23\n", '64 bits')):
        path.write_text(text)
        with pytest.raises(ConfigError, match=fragment):
            parse([str(path)], dict(learning_rate=6e-4, seed=1337))
    # the largest seed torch takes still passes
    assert parse(['--seed=9223372036854775807'], dict(seed=1))['seed'] == 2 ** 63 - 1


# ----- a run folder belongs to one run -----

HOLD = ("import sys, time; sys.path.insert(0, {repo!r}); from core.training import runs; runs.RunLock({out!r}).acquire(); "
        "print('held', flush=True); time.sleep(60)")


def _holder(out):
    import subprocess
    import sys
    from conftest import REPO
    p = subprocess.Popen([sys.executable, '-c', HOLD.format(repo=REPO, out=str(out))], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'held'
    return p


def test_run_lock_names_its_holder_and_a_killed_holder_is_taken_over(tmp_path):
    import signal
    from core.training import runs
    from core.errors import UserError
    p = _holder(tmp_path)
    try:
        with pytest.raises(UserError, match=rf"in use by another run: pid {p.pid} on "):
            runs.RunLock(str(tmp_path)).acquire()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert os.path.exists(tmp_path / 'run.lock')  # kill -9 leaves the file behind: a stale lock
    lock = runs.RunLock(str(tmp_path)).acquire()
    assert f'"pid": {os.getpid()}' in (tmp_path / 'run.lock').read_text()
    lock.release()
    assert not os.path.exists(tmp_path / 'run.lock')
    lock.release()  # twice is harmless


def test_a_run_lock_that_cannot_be_written_is_one_line_and_leaves_no_lock_file(tmp_path, monkeypatch):
    from core.training import runs
    from core.errors import UserError
    write = os.write

    def disk_full(fd, data):
        if data.startswith(b'{"pid"'):
            raise OSError(28, 'No space left on device')
        return write(fd, data)
    monkeypatch.setattr(os, 'write', disk_full)
    with pytest.raises(UserError, match=r"cannot write the run lock .*run.lock \(No space left on device\); free some"):
        runs.RunLock(str(tmp_path)).acquire()
    monkeypatch.undo()
    assert not os.path.exists(tmp_path / 'run.lock')
    runs.RunLock(str(tmp_path)).acquire().release()  # and nothing of it is held


def test_a_run_lock_on_a_really_full_disk(small_disk):
    from core.training import runs
    from core.errors import UserError
    with open(small_disk / 'filler', 'wb', buffering=0) as f:  # fill the disk to its last byte
        try:
            while True:
                f.write(bytes(4096))
        except OSError:
            pass
    with pytest.raises(UserError, match='No space left on device'):
        runs.RunLock(str(small_disk / 'run')).acquire()
    assert os.listdir(small_disk / 'run') == []


def test_claim_refuses_a_fresh_start_over_a_checkpoint_and_overwrite_moves_it_aside(tmp_path):
    from core.training import runs
    from core.errors import UserError
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'ckpt.pt').write_bytes(b'old weights')
    (out / 'metrics.jsonl').write_text('{"iter": 150}\n')
    with pytest.raises(UserError, match=r"already holds a run \(ckpt.pt\).*--init_from=resume.*--overwrite=True"):
        runs.claim(str(out), 'scratch', overwrite=False)
    assert not os.path.exists(out / 'run.lock')  # the refusal released the lock
    lock, moved = runs.claim(str(out), 'resume', overwrite=False)  # a resume keeps its folder
    assert moved is None
    lock.release()
    lock, moved = runs.claim(str(out), 'gpt2', overwrite=True)
    assert sorted(os.listdir(moved)) == ['ckpt.pt', 'metrics.jsonl']
    assert (tmp_path / os.path.basename(moved) / 'ckpt.pt').read_bytes() == b'old weights'
    assert os.listdir(out) == ['run.lock']
    lock.release()
    (out / 'best.pt').write_bytes(b'newer')
    lock, moved2 = runs.claim(str(out), 'scratch', overwrite=True)  # a second move never lands on the first
    assert moved2 != moved and os.listdir(moved2) == ['best.pt'] and os.listdir(moved) != []
    lock.release()


# ----- plots: the format the name says, one line when the place is wrong -----

def _plot(tmp_path, out, capsys):
    import json
    import plot
    run = tmp_path / 'run'
    run.mkdir(exist_ok=True)
    (run / 'metrics.jsonl').write_text(''.join(json.dumps(dict(iter=i, tokens=i, train_loss=3 - i / 9, val_loss=3 - i / 10,
                                                                  lr=1e-3)) + '\n' for i in range(4)))
    try:
        plot.main([str(run), f'--out={out}'])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_plot_writes_the_format_its_extension_names(tmp_path, capsys):
    pytest.importorskip('matplotlib')
    code, err = _plot(tmp_path, tmp_path / 'loss.jpg', capsys)
    assert code == 0, err
    assert (tmp_path / 'loss.jpg').read_bytes()[:3] == b'\xff\xd8\xff'  # a JPEG, not PNG bytes
    code, err = _plot(tmp_path, tmp_path / 'loss.svg', capsys)
    assert code == 0 and b'<svg' in (tmp_path / 'loss.svg').read_bytes()[:2000]


@pytest.mark.parametrize('where,fragment', [('folder', 'is a folder'), ('gif', "'.gif'"),
                                            ('under_a_file', 'cannot write')])
def test_plot_refuses_places_it_cannot_write(tmp_path, capsys, where, fragment):
    pytest.importorskip('matplotlib')
    (tmp_path / 'a_file').write_text('x')
    out = {'folder': tmp_path, 'gif': tmp_path / 'loss.gif', 'under_a_file': tmp_path / 'a_file' / 'loss.png'}[where]
    code, err = _plot(tmp_path, out, capsys)
    assert code == 2 and 'Traceback' not in err, err
    [line] = err.strip().splitlines()
    assert line.startswith('error: ') and fragment in line, line
    assert not os.path.exists(tmp_path / 'loss.gif')


# ----- bench: bad modes and impossible sizes stop before anything is allocated -----

@pytest.mark.parametrize('args,fragment', [
    (['--compile_mode=bogus'], "unknown compile_mode 'bogus'"),
    (['--n_embd=65536'], 'weights alone need'),
    (['--sample=True', '--n_embd=65536', '--n_head=8'], 'weights alone need'),
    (['--sample=True', '--n_embd=100', '--n_head=3'], 'not divisible'),
])
def test_bench_bad_values_are_one_line(args, fragment):
    code, _, err = run_inprocess('bench.py', '--device=cpu', *args)
    assert_one_error(code, err, fragment)


# ----- datasets: an identity, whole files, full disks -----

SHAKESPEARE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'data', 'shakespeare_char',
                           'input.txt')


def _text(tmp_path, n=20_000):
    path = tmp_path / 'text.txt'
    with open(SHAKESPEARE, encoding='utf-8') as f:
        path.write_text(f.read()[:n], encoding='utf-8')
    return str(path)


def test_prepare_records_a_fingerprint_that_matches_the_files(tmp_path):
    import hashlib
    import json
    from core.data import prepare
    from core.data import tokenizer
    out = str(tmp_path / 'd')
    prepare.prepare(_text(tmp_path), out, tokenizer='char', progress=False)
    with open(os.path.join(out, 'meta.json')) as f:
        meta = json.load(f)
    fp = meta['fingerprint']
    for split in ('train', 'val'):
        data = (tmp_path / 'd' / f'{split}.bin').read_bytes()
        assert fp['splits'][split] == {'tokens': len(data) // 2, 'sha256': hashlib.sha256(data).hexdigest()}
    state = json.dumps(meta['tokenizer'], sort_keys=True, ensure_ascii=False).encode()
    assert fp['tokenizer'] == {'kind': 'char', 'vocab_size': meta['vocab_size'],
                               'sha256': hashlib.sha256(state).hexdigest()}
    tokenizer.WRITTEN.clear()  # read back from the files, the same
    assert tokenizer.fingerprint(out, meta['tokenizer'], meta['splits']) == fp


def test_dataset_change_says_what_differs(tmp_path):
    from core.data import prepare
    from core.data.loader import Dataset, dataset_change
    text = _text(tmp_path)
    prepare.prepare(text, str(tmp_path / 'a'), tokenizer='char', progress=False)
    prepare.prepare(text, str(tmp_path / 'b'), tokenizer='char', progress=False, val_fraction=0.2)
    (tmp_path / 'short.txt').write_text('abcdefgh ' * 300)
    prepare.prepare(str(tmp_path / 'short.txt'), str(tmp_path / 'c'), tokenizer='char', progress=False)
    a, b, c = (Dataset(str(tmp_path / n)) for n in 'abc')
    assert dataset_change(a.fingerprint(), a.fingerprint()) is None
    assert 'the train split differs' in dataset_change(a.fingerprint(), b.fingerprint())
    change = dataset_change(a.fingerprint(), c.fingerprint())
    assert 'the tokenizer differs' in change and 'char with 9 ids' in change
    # same counts, other tokens: only the checksum tells
    data = bytearray((tmp_path / 'b' / 'val.bin').read_bytes())
    data[0], data[2] = data[2], data[0]
    (tmp_path / 'b' / 'val.bin').write_bytes(bytes(data))
    import json
    meta = json.loads((tmp_path / 'b' / 'meta.json').read_text())
    del meta['fingerprint']  # as a dataset prepared before fingerprints: computed from its files
    (tmp_path / 'b' / 'meta.json').write_text(json.dumps(meta))
    fresh = Dataset(str(tmp_path / 'b')).fingerprint()
    assert 'note' in fresh
    assert "val split's tokens differ" in dataset_change(b.fingerprint(), fresh)


def test_a_large_old_dataset_is_fingerprinted_by_counts_and_says_so(char_data, monkeypatch):
    from core.data import loader
    monkeypatch.setattr(loader, 'HASH_LIMIT', 0)
    fp = loader.Dataset(char_data).fingerprint()
    assert 'counts only' in fp['note'] and all('sha256' not in v for v in fp['splits'].values())
    full = dict(fp, splits={k: dict(v, sha256='x' * 64) for k, v in fp['splits'].items()})
    assert loader.dataset_change(full, fp) is None  # a checksum on one side only is not compared
    assert 'train split differs' in loader.dataset_change(
        dict(full, splits=dict(full['splits'], train=dict(full['splits']['train'], tokens=1))), fp)


def _dataset_with(tmp_path, meta, train_bytes):
    import json
    from core.data import tokenizer
    meta = {'tokenizer': tokenizer.char('ab').state(), **meta}  # each case damages one thing, not the tokenizer
    (tmp_path / 'meta.json').write_text(json.dumps(meta))
    (tmp_path / 'train.bin').write_bytes(train_bytes)
    (tmp_path / 'val.bin').write_bytes(bytes(200))
    return str(tmp_path)


@pytest.mark.parametrize('meta,train,fragment', [
    ({'vocab_size': 65, 'dtype': 'uint16'}, bytes(201), 'not a whole number of uint16 tokens'),
    ({'vocab_size': 1e30, 'dtype': 'uint32'}, bytes(200), 'vocab_size 1e+30'),
    ({'vocab_size': 65.5, 'dtype': 'uint16'}, bytes(200), 'vocab_size 65.5'),
    ({'vocab_size': 65, 'dtype': 'float64'}, bytes(200), 'not uint16 or uint32'),
], ids=['odd_size_no_splits', 'vocab_1e30', 'vocab_fraction', 'dtype_float'])
def test_damaged_meta_or_bins_are_one_line(tmp_path, meta, train, fragment):
    from core.errors import UserError
    from core.data.loader import Dataset
    with pytest.raises(UserError, match=re.escape(fragment)):
        Dataset(_dataset_with(tmp_path, meta, train)).check_fits(64, 8)


def _char_dataset(tmp_path):
    from core.data import prepare
    text = tmp_path / 'in.txt'
    text.write_text('to be or not to be, that is the question. ' * 300)
    prepare.prepare(str(text), str(tmp_path / 'd'), tokenizer='char', progress=False)
    return tmp_path / 'd'


def test_a_meta_json_that_prepare_did_not_write_is_refused_at_the_start(tmp_path):
    import json
    from core.errors import UserError
    from core.data.loader import Dataset
    d = _char_dataset(tmp_path)
    (d / 'meta.json').write_text(json.dumps({'vocab_size': 59}))
    with pytest.raises(UserError, match=r"meta.json has no dtype and no tokenizer \(it holds vocab_size\): it was not "
                                        r"written by prepare"):
        Dataset(str(d))


def test_wrong_dtype_a_folder_for_a_split_or_a_file_for_a_dataset_are_named_for_what_they_are(tmp_path):
    import json
    import shutil
    from core.errors import UserError
    from core.data.loader import Dataset
    from core.data import tokenizer
    d = _char_dataset(tmp_path)
    meta = json.loads((d / 'meta.json').read_text())
    (d / 'meta.json').write_text(json.dumps(dict(meta, dtype='uint32')))
    with pytest.raises(UserError, match=r"train.bin holds \d+ uint16 tokens but meta.json says its dtype is uint32"):
        Dataset(str(d)).check_fits(64, 8)
    (d / 'meta.json').write_text(json.dumps(meta))
    (d / 'val.bin').unlink()
    (d / 'val.bin').mkdir()
    with pytest.raises(UserError, match=r"val.bin is a folder, not a token file"):
        Dataset(str(d)).check_fits(64, 8)
    assert not tokenizer.is_complete(str(d))
    with pytest.raises(tokenizer.TokenizerError, match=r"val.bin is a folder"):
        tokenizer.read_meta(str(d))
    shutil.rmtree(d / 'val.bin')
    for name, hint in (('in.txt', 'python data/prepare.py --input='), ('notes.md', 'names a folder that prepare made')):
        f = tmp_path / name
        f.write_text('x')
        with pytest.raises(UserError, match=rf"--dataset={re.escape(str(f))} is a file .*, not a dataset folder; .*{hint}") as e:
            Dataset(str(f))
        assert '--out_dir' not in str(e.value) and 'not found' not in str(e.value)


def _prepare_main(capsys, *args):
    from core.data import prepare
    with pytest.raises(SystemExit) as e:
        prepare.main([*args, '--progress=False'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_empty_doc_sep_is_one_line(tmp_path, capsys):
    err = _prepare_main(capsys, f'--input={_text(tmp_path)}', f'--out_dir={tmp_path / "o"}', '--doc_sep=')
    assert err.startswith('error: --doc_sep is empty')


def test_tokenizer_workers_leave_ctrl_c_to_the_parent():
    import signal
    from core.data import prepare
    from core.data import tokenizer
    before = signal.getsignal(signal.SIGINT)
    from core.data import corpus
    for init in (lambda: prepare._init_worker(tokenizer.char('ab').state()),
                 lambda: corpus._init_worker(tokenizer.char('ab').state(), 'text', None)):
        try:
            init()
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        finally:
            signal.signal(signal.SIGINT, before)


@pytest.fixture
def small_disk(tmp_path):
    """A 600 KiB tmpfs (root only; skipped where mounting is not permitted)."""
    import subprocess
    disk = tmp_path / 'disk'
    disk.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=600k', 'tmpfs', str(disk)], capture_output=True).returncode:
        pytest.skip('cannot mount a tmpfs here')
    yield disk
    subprocess.run(['umount', '-l', str(disk)], capture_output=True)


def test_prepare_on_a_full_disk_is_one_line_and_leaves_no_partial_file(small_disk, capsys):
    from core.data.tokenizer import is_complete

    def run(*args):
        return _prepare_main(capsys, f'--input={SHAKESPEARE}', *args)
    # char ids take two bytes per character: the plan alone shows they cannot fit
    assert run(f'--out_dir={small_disk / "c"}', '--tokenizer=char').startswith(f'error: {small_disk / "c"} needs about 2.1 MiB')
    assert os.listdir(small_disk / 'c') == []
    # gpt2's count is known only while encoding: the write itself fails, cleanly (a memmap died of SIGBUS here)
    assert run(f'--out_dir={small_disk / "g"}').startswith('error: the disk is full while writing')
    assert not [n for n in os.listdir(small_disk / 'g') if n.endswith('.tmp')]
    assert not is_complete(str(small_disk / 'g'))
    # a killed prepare's temp file (its pid is gone) fills the disk: it is cleared before the space is counted
    for d in ('c', 'g'):
        for n in os.listdir(small_disk / d):
            os.remove(small_disk / d / n)
    (small_disk / 's').mkdir()
    (small_disk / 's' / '.train.bin.999999999.tmp').write_bytes(bytes(580_000))
    small = small_disk / 'small.txt'
    with open(SHAKESPEARE, encoding='utf-8') as f:
        small.write_text(f.read()[:20_000], encoding='utf-8')
    from core.data import prepare
    prepare.prepare(str(small), str(small_disk / 's'), tokenizer='char', progress=False)
    assert is_complete(str(small_disk / 's')) and not any(n.endswith('.tmp') for n in os.listdir(small_disk / 's'))


# ----- wandb without a network -----

def test_wandb_logged_in_without_a_network_fails_fast_in_one_line(monkeypatch, tmp_path):
    import time
    pytest.importorskip('wandb')
    from core.training import tracking
    from core.errors import UserError
    monkeypatch.setenv('WANDB_API_KEY', 'k' * 40)
    monkeypatch.delenv('WANDB_MODE', raising=False)
    monkeypatch.setenv('WANDB_BASE_URL', 'http://127.0.0.1:9')  # nothing listens there: as good as no network
    t0 = time.time()
    with pytest.raises(UserError, match=r'cannot reach http://127.0.0.1:9 .*WANDB_MODE=offline') as e:
        tracking.start_wandb('p', 'r', {'out_dir': str(tmp_path)})
    assert time.time() - t0 < 20
    # a lookup or connection that never answers is given up on after the probe's bound
    from core import network
    monkeypatch.setattr(network.socket, 'create_connection', lambda *a, **k: time.sleep(20) or open(os.devnull))
    t0 = time.time()
    assert network.unreachable('https://api.wandb.ai', timeout=0.5) == 'no answer within 0.5 s'
    assert time.time() - t0 < 15  # well before the connection would answer, however busy the machine


# ----- train.py: the run folder, the dataset's identity, full disks, divergence -----

from conftest import TINY  # noqa: E402


def _train(out, data, *args):
    return run_inprocess('train.py', f'--dataset={data}', f'--out_dir={out}', *TINY, '--eval_iters=1', *args)


def test_a_second_run_on_a_busy_folder_stops_naming_the_holder(char_data, tmp_path):
    import signal
    p = _holder(tmp_path)
    try:
        code, _, err = _train(tmp_path, char_data, '--max_iters=1')
        # an eval_only run writes nothing in the folder, so it may read it while the other run trains
        code_eval, _, err_eval = _train(tmp_path, char_data, '--eval_only=True')
        assert code_eval == 0, err_eval
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert_one_error(code, err, f'in use by another run: pid {p.pid}')
    assert not os.path.exists(tmp_path / 'ckpt.pt')


def test_a_fresh_run_never_replaces_a_checkpoint(char_data, tmp_path):
    code, _, err = _train(tmp_path, char_data, '--max_iters=2', '--eval_interval=2')
    assert code == 0, err
    first = (tmp_path / 'ckpt.pt').read_bytes()
    code, _, err = _train(tmp_path, char_data, '--max_iters=1')
    assert_one_error(code, err, '--overwrite=True')
    assert (tmp_path / 'ckpt.pt').read_bytes() == first
    code, out, err = _train(tmp_path, char_data, '--max_iters=1', '--eval_interval=1', '--overwrite=True')
    assert code == 0, err
    moved = re.search(r'moved the previous run in \S+ to (\S+)', out).group(1)
    assert open(os.path.join(moved, 'ckpt.pt'), 'rb').read() == first  # aside, byte for byte
    assert os.path.exists(os.path.join(moved, 'metrics.jsonl'))
    assert not os.path.exists(tmp_path / 'run.lock')  # released at the end


def test_resume_takes_unset_keys_from_the_checkpoint(char_data, tmp_path):
    # block_size 32 and the model shape come from the checkpoint, not train.py's defaults (1024, 12 layers)
    code, _, err = _train(tmp_path, char_data, '--max_iters=2', '--eval_interval=2')
    assert code == 0, err
    code, out, err = run_inprocess('train.py', f'--out_dir={tmp_path}', '--init_from=resume', '--max_iters=3',
                                   '--device=cpu', '--compile=False')
    assert code == 0, err
    assert 'larger than the model' not in err and 'resumed from' in out
    from core.training import checkpoint
    assert checkpoint.load(str(tmp_path / 'ckpt.pt'))['iter_num'] == 3


def test_resume_refuses_another_dataset_or_tokenizer(tmp_path):
    from core.data import prepare
    text = _text(tmp_path, 30_000)
    data = str(tmp_path / 'data')
    prepare.prepare(text, data, tokenizer='char', progress=False)
    out = tmp_path / 'out'
    code, _, err = _train(out, data, '--max_iters=2', '--eval_interval=2')
    assert code == 0, err
    # the same name prepared again from other text with a smaller vocabulary: ids that happen to fit
    (tmp_path / 'other.txt').write_text('to be or not to be, that is the question\n' * 300)
    prepare.prepare(str(tmp_path / 'other.txt'), data, tokenizer='char', progress=False, force=True)
    code, _, err = _train(out, data, '--init_from=resume', '--max_iters=3')
    assert_one_error(code, err, 'the tokenizer differs')
    assert '--allow_dataset_change=True' in err
    code, stdout, err = _train(out, data, '--init_from=resume', '--max_iters=3', '--allow_dataset_change=True')
    assert code == 0 and 'dataset changed' in stdout, err


def test_init_from_gpt2_refuses_a_char_dataset(char_data, tmp_path):
    code, _, err = _train(tmp_path, char_data, '--init_from=gpt2', '--max_iters=1')
    assert_one_error(code, err, "GPT-2's token ids")


@pytest.mark.parametrize('args,fragment', [(['--vocab_size=100000000000'], 'weights alone need'),
                                           (['--n_embd=65536', '--n_head=2'], 'weights alone need')])
def test_huge_models_stop_before_allocating(char_data, tmp_path, args, fragment):
    code, _, err = _train(tmp_path, char_data, '--max_iters=1', *args)
    assert_one_error(code, err, fragment)


def test_a_failing_metrics_append_still_saves(char_data, tmp_path):
    (tmp_path / 'metrics.jsonl').mkdir()  # an odd out_dir: appending raises IsADirectoryError
    code, _, err = _train(tmp_path, char_data, '--max_iters=2', '--eval_interval=1')
    assert code == 0, err
    assert err.count('warning: cannot append to') == 1 and 'Traceback' not in err
    from core.training import checkpoint
    assert checkpoint.load(str(tmp_path / 'ckpt.pt'))['iter_num'] == 2


def test_divergence_advice_fits_the_dtype_and_the_checkpoints(char_data, tmp_path, monkeypatch):
    from test_reliability import nan_loss_at
    nan_loss_at(monkeypatch, set(range(100)), micro_steps=1)
    code, _, err = _train(tmp_path, char_data, '--max_iters=10', '--max_bad_steps=2', '--dtype=float32')
    assert code == 3
    [line] = [l for l in err.splitlines() if l.startswith('error:')]
    assert 'diverged' in line and 'float32' not in line and 'no checkpoint was saved yet' in line
    assert 'untouched' not in line


def test_bench_trace_to_an_unwritable_place_is_one_line(tmp_path):
    (tmp_path / 'a_file').write_text('x')
    code, _, err = run_inprocess('bench.py', '--device=cpu', '--n_layer=1', '--n_head=2', '--n_embd=32',
                                 '--block_size=16', '--batch_size=2', '--iters=1', '--warmup_iters=1',
                                 '--shape_peak=False', '--profile=True', '--peak_tflops=1',
                                 f'--out_dir={tmp_path / "a_file" / "traces"}')
    assert_one_error(code, err, f'--out_dir={tmp_path / "a_file" / "traces"}')  # before the benchmark runs


def test_init_from_an_hf_folder_refuses_a_dataset_with_other_ids(char_data, tmp_path):
    from core.data import prepare
    run = tmp_path / 'run'
    code, _, err = _train(run, char_data, '--max_iters=1', '--eval_interval=1')
    assert code == 0, err
    code, _, err = run_inprocess('export.py', f'--out_dir={run}', '--to=hf_folder', f'--dest={tmp_path / "hf"}')
    assert code == 0, err
    # the same tokenizer, written by the export as a tokenizer.json: accepted
    code, _, err = _train(tmp_path / 'ft', char_data, f'--init_from=hf:{tmp_path / "hf"}', '--max_iters=1')
    assert code == 0, err
    (tmp_path / 'other.txt').write_text('to be or not to be, that is the question\n' * 300)
    prepare.prepare(str(tmp_path / 'other.txt'), str(tmp_path / 'other'), tokenizer='char', progress=False)
    code, _, err = _train(tmp_path / 'ft2', tmp_path / 'other', f'--init_from=hf:{tmp_path / "hf"}', '--max_iters=1')
    assert_one_error(code, err, 'holds a char tokenizer of')
