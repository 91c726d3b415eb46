"""A fourth fuzz pass: user input that ended in a traceback, or lost a user's file or work, instead of one error line:
checkpoint fields saved as None, plan.py's trial plot, config files that exit, eval's markdown over a checkpoint and
the import graph's --out."""

import os

import pytest

from conftest import FUZZ_TINY, assert_one_error_line, run_inprocess

SAMPLE = ['--device=cpu', '--max_new_tokens=2', '--num_samples=1']


@pytest.mark.parametrize('field', ['iter_num', 'best_val_loss'])
def test_a_checkpoint_field_saved_as_none_is_read_as_absent(field, tiny_run, tmp_path):
    # check_fields let None through as "absent", but the readers' .get(key, default) returned None: a TypeError in
    # sample.py's 'best val loss {:.4f}' and in train.py's resume (iter_num - 1, val_loss < best_val_loss)
    import torch
    state = torch.load(os.path.join(tiny_run, 'ckpt.pt'), weights_only=True)
    state[field] = None
    torch.save(state, tmp_path / 'ckpt.pt')
    code, _, err = run_inprocess('sample.py', f'--out_dir={tmp_path}', *SAMPLE)
    assert code == 0 and 'Traceback' not in err, err[-3000:]
    code, _, err = run_inprocess('train.py', f'--out_dir={tmp_path}', '--init_from=resume', *FUZZ_TINY, '--max_iters=3')
    assert_one_error_line(code, err, f'has no {field}', field)


@pytest.mark.parametrize('case', ['a folder', 'a file plan.py did not write'])
def test_plan_checks_its_trial_plot_before_measuring(case, char_data, tmp_path):
    # --plot=True draws the trials into <out>.png, which was never checked: a folder of that name was an
    # IsADirectoryError after the whole search, and no config written; a file of that name was replaced unasked
    png = tmp_path / 'plan.png'
    if case == 'a folder':
        png.mkdir()
        fragment = 'is a folder'
    else:
        png.write_bytes(b'my own picture')
        fragment = 'exists'
    code, _, err = run_inprocess('plan.py', f'--dataset={char_data}', '--device=cpu', '--minutes=3',
                                 '--search_share=0.25', '--trial_overhead=0.5', '--plot=True',
                                 f'--out={tmp_path / "plan.py"}')
    assert_one_error_line(code, err, fragment, case)
    assert png.is_dir() if case == 'a folder' else png.read_bytes() == b'my own picture'


def test_plan_trial_plot_is_written_whole(tmp_path):
    # the plot went straight to its path with savefig: a kill mid-write left half a png; now the one atomic writer
    from core.training import search
    trial = search.Trial(1, search.ARMS[0], 10.0)
    trial.curve = [(0.0, 4.0), (1.0, 3.0)]
    seen = []
    real = search.fileio.write_with
    search.fileio.write_with = lambda path, writer: (seen.append(path), real(path, writer))
    try:
        search.plot_trials([trial], str(tmp_path / 'p.png'))
    finally:
        search.fileio.write_with = real
    assert seen == [str(tmp_path / 'p.png')] and (tmp_path / 'p.png').read_bytes()[:4] == b'\x89PNG'


@pytest.mark.parametrize('body, fragment', [('exit()\n', 'called exit()'), ('import sys\nsys.exit("bye")\n', "exit('bye')"),
                                            ('raise GeneratorExit\n', 'failed: GeneratorExit')])
def test_a_config_file_that_exits_is_one_line(body, fragment, tmp_path):
    # exit() in a config file ended sample.py at once with exit code 0 and nothing printed; sys.exit('bye') with code 1;
    # a BaseException that is not an Exception (GeneratorExit) was a traceback
    (tmp_path / 'cfg.py').write_text(body)
    code, _, err = run_inprocess('sample.py', str(tmp_path / 'cfg.py'), '--device=cpu')
    assert_one_error_line(code, err, fragment, body)


@pytest.mark.parametrize('name', ['best.pt', 'ckpt_00000002.pt', 'weights.pt'])
def test_eval_markdown_never_replaces_a_checkpoint(name, tiny_run, tmp_path):
    # --markdown=<run>/best.pt --overwrite=True (a tab completion one letter short) wrote the report over the weights
    # it had just evaluated; export.py already refuses a checkpoint as its --dest, --force or not
    import shutil
    run = tmp_path / 'run'
    shutil.copytree(tiny_run, run)
    shutil.copy(run / 'ckpt.pt', run / name)
    before = (run / name).read_bytes()
    code, _, err = run_inprocess('eval.py', f'--out_dir={run}', '--device=cpu', f'--markdown={run / name}',
                                 '--overwrite=True', '--batch_size=4')
    assert_one_error_line(code, err, 'is a checkpoint', name)
    assert (run / name).read_bytes() == before


GRAPH_BEGIN = '<!-- import graph: begin (python studies/import_graph.py --out=docs/architecture.md) -->'
GRAPH_END = '<!-- import graph: end -->'


@pytest.mark.parametrize('case', ['missing', 'a folder', 'not utf-8', 'markers reversed'])
def test_import_graph_out_odd_files(case, tmp_path):
    # --out=a missing file, a folder or a non-UTF-8 file was a traceback; an end marker above the begin marker had
    # the text between them written twice into the user's document (and any write was not atomic)
    out = tmp_path / 'arch.md'
    before = None
    if case == 'a folder':
        out.mkdir()
    elif case == 'not utf-8':
        out.write_bytes(b'caf\xe9\n')
    elif case == 'markers reversed':
        out.write_text(f'intro\n{GRAPH_END}\nmiddle text\n{GRAPH_BEGIN}\nend\n')
    if out.is_file():
        before = out.read_bytes()
    code, _, err = run_inprocess('studies/import_graph.py', f'--out={out}')
    assert_one_error_line(code, err, 'arch.md', case)
    if before is not None:
        assert out.read_bytes() == before


@pytest.mark.parametrize('args, results, fragment', [
    (['--widths=64,abc'], None, '--widths'),  # ValueError from int()
    (['--learning_rates='], None, '--learning_rates'),  # ValueError from float('')
    (['--widths=64,-256'], None, '--widths'),  # was a grid of failed runs reported as nan
    (['--parametrisations=mup,SP'], None, '--parametrisations'),  # was run as the standard parametrisation silently
    ([], '{"mup 64 0.01": 3.1', 'cannot read'),  # a results.json cut short: JSONDecodeError at start
    ([], '[1, 2]', 'not this study'),  # TypeError at the first lookup
])
def test_mup_transfer_refuses_odd_lists_and_a_damaged_results_file(args, results, fragment, tmp_path):
    if results is not None:
        (tmp_path / 'results.json').write_text(results)
    code, _, err = run_inprocess('studies/mup_transfer.py', f'--out_dir={tmp_path}', '--dataset=/no/such/data', *args)
    assert_one_error_line(code, err, fragment, args or results)
    if results is not None:
        assert (tmp_path / 'results.json').read_text() == results


@pytest.mark.parametrize('budgets', ['', '-1', '1,nan', '1,,2'])
def test_plan_vs_recipes_budgets_must_be_positive_minutes(budgets, tmp_path):
    # an empty list printed an empty table with exit code 0; -1 and nan ran plan.py into its own error and reported nan
    code, _, err = run_inprocess('studies/plan_vs_recipes.py', f'--out_dir={tmp_path}', f'--budgets={budgets}',
                                 '--dataset=/no/such/data', '--recipes=')
    assert_one_error_line(code, err, 'budgets must be minutes', budgets)


def test_a_run_lock_that_is_a_link_never_touches_the_file_it_names(char_data, tmp_path):
    # out_dir/run.lock a symlink (a run folder copied with cp -as while it ran): the lock's pid and command were
    # written into the file the link named, which was then unlinked; the user's notes were gone
    notes = tmp_path / 'notes.txt'
    notes.write_text('my notes\n')
    out = tmp_path / 'out'
    out.mkdir()
    os.symlink(notes, out / 'run.lock')
    code, _, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={out}', *FUZZ_TINY, '--max_iters=1')
    assert_one_error_line(code, err, 'is a link')
    assert notes.read_text() == 'my notes\n'


@pytest.mark.parametrize('content', ['{"pid": "x", "host": "HOST"}', '[1, 2]', '{"pid": true, "host": "HOST"}'])
def test_a_hand_edited_run_lock_without_flock(content, tmp_path, monkeypatch):
    # where flock is missing (NFS without a lock daemon: ENOLCK) the file's pid decides: a pid that is not a number
    # was a ValueError from int(), a lock file holding a list an AttributeError; such a file names no holder and is
    # taken over, as an unreadable one is
    import errno
    import fcntl
    import socket
    from core.training import runs

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, 'No locks available')
    monkeypatch.setattr(fcntl, 'flock', no_flock)
    (tmp_path / 'run.lock').write_text(content.replace('HOST', socket.gethostname()))
    lock = runs.RunLock(str(tmp_path)).acquire()
    try:
        assert str(os.getpid()) in (tmp_path / 'run.lock').read_text()
    finally:
        lock.release()
    assert not (tmp_path / 'run.lock').exists()
    assert 'unreadable' in runs._describe([1, 2]) and '?' in runs._describe({'pid': 5, 'started': 'x'})


def test_the_latest_run_skips_a_dangling_checkpoint_link(tiny_run, tmp_path, monkeypatch):
    # with no --out_dir, sample.py looks for the newest run under the current folder: a ckpt.pt that is a link to
    # a file that is gone (a checkpoint on a disk not mounted) was a FileNotFoundError from getmtime
    import shutil
    shutil.copytree(tiny_run, tmp_path / 'good')
    (tmp_path / 'gone').mkdir()
    os.symlink(tmp_path / 'elsewhere' / 'ckpt.pt', tmp_path / 'gone' / 'ckpt.pt')
    monkeypatch.chdir(tmp_path)
    code, _, err = run_inprocess('sample.py', *SAMPLE)
    assert code == 0 and 'Traceback' not in err, err[-3000:]
    assert 'good' in err


@pytest.mark.parametrize('name, content', [('meta.json', '{"notes": "mine"}'), ('meta.json', 'not json'),
                                           ('train.bin', 'my own bytes'), ('tokenizer.json', '{}')])
def test_prepare_never_replaces_files_it_did_not_write(name, content, tmp_path):
    # --out_dir=a folder of the user's holding a meta.json or train.bin of their own: prepare replaced them silently
    text = tmp_path / 'notes.txt'
    text.write_text('the quick brown fox jumps over the lazy dog\n' * 50)
    out = tmp_path / 'mine'
    out.mkdir()
    (out / name).write_text(content)
    code, _, err = run_inprocess('data/prepare.py', f'--input={text}', f'--out_dir={out}', '--tokenizer=char',
                                 '--progress=False')
    assert_one_error_line(code, err, name, name)
    assert (out / name).read_text() == content
    code, _, err = run_inprocess('data/prepare.py', f'--input={text}', f'--out_dir={out}', '--tokenizer=char',
                                 '--progress=False', '--force=True')  # said outright, they go
    assert code == 0, err


def test_prepare_still_redoes_its_own_and_nanogpts_datasets(tmp_path):
    # the files of an earlier prepare, and of nanoGPT's (train.bin, val.bin beside meta.pkl), are a dataset's
    text = tmp_path / 'notes.txt'
    text.write_text('the quick brown fox jumps over the lazy dog\n' * 50)
    out = tmp_path / 'ds'
    for extra in ([], ['--tokenizer=char']):
        code, _, err = run_inprocess('data/prepare.py', f'--input={text}', f'--out_dir={out}', '--progress=False',
                                     *extra, *(['--force=True'] if extra else []))
        assert code == 0, err
    nano = tmp_path / 'nano'
    nano.mkdir()
    for n in ('train.bin', 'val.bin', 'meta.pkl'):
        (nano / n).write_bytes(b'\0\0')
    code, _, err = run_inprocess('data/prepare.py', f'--input={text}', f'--out_dir={nano}', '--progress=False',
                                 '--tokenizer=char')
    assert code == 0, err


@pytest.mark.parametrize('args, fragment', [(['--models=gpt2-4x128,zzz'], "'zzz'"), (['--precisions=fp32'], '--precisions'),
                                            (['--precisions='], '--precisions')])
def test_bench_generate_checks_its_llama_cpp_lists_first(args, fragment):
    # --against=llama.cpp --models=zzz was a bare 'error:' with exit code 1 after the models before it had run (or a
    # note that llama.cpp is missing, exit code 0); an unknown precision was skipped and printed an empty table
    code, _, err = run_inprocess('studies/bench_generate.py', '--against=llama.cpp', '--tokens=2', '--repeats=1', *args)
    assert_one_error_line(code, err, fragment, args)


@pytest.mark.parametrize('fmt, line', [
    ('text', '{"text": "an emoji cut in half \\ud83d here"}'),
    ('chat', '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\\ud800"}]}')])
def test_prepare_names_a_jsonl_line_with_half_a_surrogate_pair(fmt, line, tmp_path):
    # JSON's "\ud83d" (half of an emoji's UTF-16 pair, what a broken exporter leaves) became a character of the char
    # tokenizer, and hashing its vocabulary for the fingerprint was a UnicodeEncodeError traceback at the very end
    good = ('{"text": "hello there"}' if fmt == 'text' else
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}')
    (tmp_path / 'in.jsonl').write_text(f'{good}\n{good}\n{line}\n')
    args = [f'--input={tmp_path / "in.jsonl"}', f'--format={fmt}', '--tokenizer=char', '--progress=False']
    code, _, err = run_inprocess('data/prepare.py', *args, f'--out_dir={tmp_path / "out"}')
    assert_one_error_line(code, err, 'in.jsonl:3: holds', fmt)
    code, _, err = run_inprocess('data/prepare.py', *args, f'--out_dir={tmp_path / "skip"}', '--on_bad_line=skip')
    assert code == 0, err


@pytest.mark.parametrize('script, args', [
    ('studies/ablate.py', ['--quick=True']), ('studies/speedrun.py', ['--quick=True']),
    ('studies/doc_aware.py', ['--seconds=1', '--seeds=1']), ('studies/mup_transfer.py', []),
    ('studies/plan_vs_recipes.py', ['--budgets=1']), ('studies/gpu_round.py', ['--dry_run'])])
@pytest.mark.parametrize('where', ['a file', 'under a file'])
def test_studies_check_an_out_dir_that_is_a_file(script, args, where, tmp_path):
    # --out_dir=notes.txt was a NotADirectoryError (or FileExistsError) traceback from makedirs at the first run
    notes = tmp_path / 'notes.txt'
    notes.write_text('mine\n')
    out = notes if where == 'a file' else notes / 'runs'
    data = [] if script in ('studies/gpu_round.py', 'studies/doc_aware.py') else ['--dataset=/no/such/data']
    code, _, err = run_inprocess(script, f'--out_dir={out}', *data, *args)
    assert_one_error_line(code, err, 'is a file', (script, where))
    assert notes.read_text() == 'mine\n'
