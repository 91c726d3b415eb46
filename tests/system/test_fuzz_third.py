"""A third fuzz pass: user mistakes that ended in a traceback, a crash or a hang instead of one error line, in data
preparation, export, sample.py's chat, the configurator and serve.py's chat requests."""

import os

import pytest

from conftest import FUZZ_TINY, ONE_THREAD, assert_one_error_line, run_inprocess, run_script


def test_prepare_refuses_a_bpe_vocab_beyond_any_model(tmp_path):
    # --vocab_size=10000000000 (a typo of zeros): the trainer sized a table by it and the process aborted in Rust
    # ("memory allocation of 566935683088 bytes failed", exit 134); a fresh interpreter, so a crash fails the test
    text = tmp_path / 'notes.txt'
    text.write_text('the quick brown fox jumps over the lazy dog\n' * 50)
    r = run_script('data/prepare.py', f'--input={text}', f'--out_dir={tmp_path / "out"}', '--tokenizer=bpe',
                   '--vocab_size=10000000000', '--progress=False', env=dict(ONE_THREAD, RAYON_NUM_THREADS='1'),
                   timeout=60)
    assert_one_error_line(r.returncode, r.stderr, 'vocab_size must be at most')
    assert not os.path.exists(tmp_path / 'out')


@pytest.mark.parametrize('fmt', ['text', 'chat'])
def test_prepare_names_a_jsonl_line_nested_too_deeply(fmt, tmp_path):
    # a line of '[' nested 100,000 deep was json's RecursionError, a traceback, instead of the line's number
    good = ('{"text": "hello there"}' if fmt == 'text' else
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}')
    (tmp_path / 'in.jsonl').write_text(f'{good}\n{good}\n' + '[' * 100_000 + '\n')
    code, _, err = run_inprocess('data/prepare.py', f'--input={tmp_path / "in.jsonl"}', f'--format={fmt}',
                                 f'--out_dir={tmp_path / "out"}', '--progress=False')
    assert_one_error_line(code, err, 'in.jsonl:3: not JSON', fmt)


TINY = FUZZ_TINY
SAMPLE = ['--device=cpu', '--max_new_tokens=2', '--num_samples=1']


@pytest.fixture(scope='module')
def hf_folder(tiny_run, tmp_path_factory):
    dest = str(tmp_path_factory.mktemp('hf') / 'model')
    code, _, err = run_inprocess('export.py', f'--out_dir={tiny_run}', f'--dest={dest}')
    assert code == 0, err
    return dest


DEEP = '[' * 100_000  # JSON nested beyond json's recursion limit: RecursionError, a traceback, in every reader


def copy_folder(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return str(dst)


@pytest.mark.parametrize('name', ['config.json', 'tokenizer.json'])
def test_hf_folder_with_json_nested_too_deeply(name, hf_folder, tmp_path):
    folder = copy_folder(hf_folder, tmp_path / 'model')
    with open(os.path.join(folder, name), 'w') as f:
        f.write(DEEP)
    code, _, err = run_inprocess('sample.py', f'--init_from=hf:{folder}', *SAMPLE)
    assert_one_error_line(code, err, 'nested too deeply', name)


def test_dataset_meta_json_nested_too_deeply(char_data, tmp_path):
    data = copy_folder(char_data, tmp_path / 'data')
    with open(os.path.join(data, 'meta.json'), 'w') as f:
        f.write(DEEP)
    code, _, err = run_inprocess('train.py', f'--dataset={data}', f'--out_dir={tmp_path / "out"}', *TINY,
                                 '--max_iters=1')
    assert_one_error_line(code, err, 'nested too deeply')


def test_hellaswag_line_nested_too_deeply(tiny_run, tmp_path):
    (tmp_path / 'hs.jsonl').write_text(DEEP + '\n')
    code, _, err = run_inprocess('eval.py', f'--out_dir={tiny_run}', '--device=cpu', '--tasks=hellaswag',
                                 f'--hellaswag_file={tmp_path / "hs.jsonl"}')
    assert_one_error_line(code, err, 'line 1 is not JSON')


@pytest.mark.parametrize('n_embd,fragment', [(2 ** 20, 'its model_args imply'), (10 ** 12, 'more than a tensor can hold')])
def test_checkpoint_model_args_far_beyond_its_weights(n_embd, fragment, tiny_run, tmp_path):
    # a damaged n_embd in model_args: the model was built in memory before its shapes were compared with the saved
    # weights, the CPU allocator's RuntimeError (13 TB) or torch's 'Storage size calculation overflowed'
    import torch
    state = torch.load(os.path.join(tiny_run, 'ckpt.pt'), weights_only=True)
    state['model_args']['n_embd'] = n_embd
    torch.save(state, tmp_path / 'ckpt.pt')
    code, _, err = run_inprocess('sample.py', f'--out_dir={tmp_path}', *SAMPLE)
    assert_one_error_line(code, err, fragment, n_embd)


def test_hf_config_too_big_for_a_tensor(hf_folder, tmp_path):
    # config.json's n_embd=10**12: 'Storage size calculation overflowed' building the model on the meta device
    import json
    folder = copy_folder(hf_folder, tmp_path / 'model')
    with open(os.path.join(folder, 'config.json')) as f:
        config = json.load(f)
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        json.dump({**config, 'n_embd': 10 ** 12}, f)
    code, _, err = run_inprocess('sample.py', f'--init_from=hf:{folder}', *SAMPLE)
    assert_one_error_line(code, err, 'more than a tensor can hold')


def test_export_refuses_a_dataset_tokenizer_bigger_than_the_model(tiny_run, tmp_path):
    # a checkpoint without a tokenizer (nanoGPT's, or an old one) and --dataset naming another dataset: the hf
    # folder was written with a 200-symbol tokenizer for a 62-row model, and failed only when used
    import torch
    from conftest import write_dataset
    from core.data import tokenizer
    text = ''.join(map(chr, range(0x100, 0x1c8))) * 20
    other = write_dataset(str(tmp_path / 'other'), tokenizer.char(text), text)
    state = torch.load(os.path.join(tiny_run, 'ckpt.pt'), weights_only=True)
    state.pop('tokenizer')
    torch.save(state, tmp_path / 'ckpt.pt')
    code, _, err = run_inprocess('export.py', f'--out_dir={tmp_path / "ckpt.pt"}', f'--dataset={other}',
                                 f'--dest={tmp_path / "hf"}')
    assert_one_error_line(code, err, 'tokens but the model only')
    assert not os.path.exists(tmp_path / 'hf')


@pytest.mark.parametrize('args, fragment', [(['--max_docs=0'], 'must be 1 or more'),
                                            (['--max_docs=5', '--input=INPUT'], 'with --input')])
def test_openwebtext_max_docs_is_checked_not_ignored(args, fragment, tmp_path):
    # 0 and negative counts were ignored, and so was any count with --input, which prepared every document
    (tmp_path / 'a.txt').write_text('some text\n\nmore text\n')
    args = [a.replace('INPUT', str(tmp_path / 'a.txt')) for a in args]
    r = run_script('data/openwebtext/prepare.py', *args, f'--out_dir={tmp_path / "out"}', env=ONE_THREAD)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    assert r.stderr.strip().startswith('error: ') and fragment in r.stderr and not (tmp_path / 'out').exists()


def test_a_lora_run_whose_base_moved_says_it_is_the_base(tiny_run, tmp_path):
    # it said "no checkpoint in <base>", as if the run itself were missing
    import torch
    state = torch.load(os.path.join(tiny_run, 'ckpt.pt'), weights_only=True)
    state['lora'] = {'base': str(tmp_path / 'moved_base'), 'rank': 2, 'alpha': 4.0, 'targets': 'attn'}
    torch.save(state, tmp_path / 'ckpt.pt')
    code, _, err = run_inprocess('sample.py', f'--out_dir={tmp_path / "ckpt.pt"}', *SAMPLE)
    assert code == 2 and 'Traceback' not in err, err
    assert err.strip().splitlines()[-1].startswith('error: ') and 'LoRA adapters for the base' in err, err


def test_a_lora_run_whose_targets_are_damaged_says_the_checkpoint_is(tiny_run, tmp_path):
    # it said "lora_targets='mlps': use attn, mlp or attn,mlp", as if the user had passed --lora_targets
    import torch
    state = torch.load(os.path.join(tiny_run, 'ckpt.pt'), weights_only=True)
    state['lora'] = {'base': tiny_run, 'rank': 2, 'alpha': 4.0, 'targets': 'mlps'}
    torch.save(state, tmp_path / 'ckpt.pt')
    code, _, err = run_inprocess('sample.py', f'--out_dir={tmp_path / "ckpt.pt"}', *SAMPLE)
    assert code == 2 and 'Traceback' not in err, err
    assert err.strip().splitlines()[-1].startswith('error: ') and 'is damaged' in err and 'mlps' in err, err


def test_a_resume_whose_best_val_loss_is_nan_writes_best_pt_again(tiny_run, char_data, tmp_path):
    # nanoGPT keeps a diverged eval's NaN as its best; no loss is below NaN, so best.pt was never written again
    import torch
    state = torch.load(os.path.join(tiny_run, 'ckpt.pt'), weights_only=True)
    state['best_val_loss'] = float('nan')
    torch.save(state, tmp_path / 'ckpt.pt')
    code, out, err = run_inprocess('train.py', f'--out_dir={tmp_path}', '--init_from=resume', '--device=cpu',
                                   '--compile=False', f'--max_iters={state["iter_num"] + 1}', '--eval_interval=1',
                                   '--eval_iters=1', f'--dataset={char_data}')
    assert code == 0, err
    assert (tmp_path / 'best.pt').exists() and 'no loss a run can beat' in out + err
    assert torch.load(tmp_path / 'best.pt', weights_only=True)['best_val_loss'] < 100


@pytest.mark.parametrize('name', ['ckpt.pt', 'best.pt', 'metrics.jsonl', 'data/train.bin', 'data/meta.json'])
def test_export_and_eval_never_replace_a_runs_or_a_datasets_files(name, tiny_run, char_data, tmp_path):
    # --format=gguf --dest=<run>/ckpt.pt --force=True wrote the GGUF over the weights it was read from; a run's
    # metrics and a dataset's tokens and meta.json were replaced by an export with --force, or a report with
    # --overwrite=True, and the dataset no longer loaded
    import shutil
    run = tmp_path / 'run'
    shutil.copytree(tiny_run, run)
    shutil.copytree(char_data, run / 'data')
    if not (run / name).exists():
        shutil.copy(run / 'ckpt.pt', run / name)
    before = (run / name).read_bytes()
    code, _, err = run_inprocess('export.py', f'--out_dir={run}', '--format=gguf', f'--dest={run / name}', '--force=True')
    assert_one_error_line(code, err, 'which an export never replaces')
    code, _, err = run_inprocess('eval.py', f'--out_dir={run}', '--device=cpu', f'--markdown={run / name}',
                                 '--overwrite=True')
    assert_one_error_line(code, err, 'which a report never replaces')
    assert (run / name).read_bytes() == before


@pytest.mark.parametrize('args', [['--num_samples=1000000000000'], ['--num_samples=1000000000', '--use_cache=False'],
                                  ['--num_samples=1000', '--max_new_tokens=100000000000000']])
def test_sample_refuses_samples_beyond_memory(args, tiny_run):
    # every sample is held until the end: --num_samples=100000000 (a typo of zeros) grew until the system killed the
    # process, with no message; without the cache, one batch of them was the CPU allocator's RuntimeError
    code, _, err = run_inprocess('sample.py', f'--out_dir={tiny_run}', '--device=cpu', '--max_new_tokens=3', *args)
    assert code == 2 and 'Traceback' not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'ask for fewer samples' in last, err


@pytest.mark.parametrize('script', ['serve.py', 'bench.py'])
def test_rows_generated_together_beyond_memory(script, tiny_run):
    # serve.py --max_batch and bench.py --sample_batch of 10**12 (a typo of zeros): the KV cache for every row was the
    # CPU allocator's RuntimeError in model.new_caches; a count just under what the system reserves, a silent kill
    args = {'serve.py': [f'--out_dir={tiny_run}', '--device=cpu', '--port=0', '--host=127.0.0.1',
                         '--max_batch=1000000000000'],
            'bench.py': ['--device=cpu', '--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16',
                         '--vocab_size=64', '--compile=False', '--sample=True', '--sample_tokens=4',
                         '--sample_batch=1000000000000']}[script]
    code, _, err = run_inprocess(script, *args)
    assert code == 2 and 'Traceback' not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'ask for fewer rows' in last, err


def test_prepare_bpe_over_a_huge_line_of_one_pattern(tmp_path):
    # one line of 'ab' repeated (a separator, a padding run, a base-pair run): the bpe trainer's time grows with the
    # square of such a word, 30 s for these 40,000 characters and hours for a few hundred thousand; no error, a hang
    (tmp_path / 'line.txt').write_text('ab' * 20_000 + '\n' + 'the end of it\n' * 20)
    r = run_script('data/prepare.py', f'--input={tmp_path / "line.txt"}', f'--out_dir={tmp_path / "out"}',
                   '--tokenizer=bpe', '--vocab_size=300', '--progress=False',
                   env=dict(ONE_THREAD, RAYON_NUM_THREADS='1'), timeout=20)
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.exists(tmp_path / 'out' / 'meta.json')


@pytest.mark.parametrize('name', ['fifo.txt', 'fifo.jsonl'])
def test_prepare_refuses_a_pipe_inside_its_input_folder(name, tmp_path):
    # a fifo named like a text file in --input's folder: prepare opened it and waited forever for a writer
    folder = tmp_path / 'texts'
    folder.mkdir()
    (folder / 'a.txt').write_text('hello there, one document\n' * 20)
    os.mkfifo(folder / name)
    r = run_script('data/prepare.py', f'--input={folder}', f'--out_dir={tmp_path / "out"}', '--tokenizer=char',
                   '--progress=False', env=ONE_THREAD, timeout=20)
    assert_one_error_line(r.returncode, r.stderr, 'not a regular file', name)


@pytest.mark.parametrize('case', ['a folder', 'an exception whose message raises'])
def test_config_file_odd_ones(case, tmp_path):
    # a folder named like a config file was 'not found' although it is there; a config file raising an exception of
    # its own whose __str__ raises was a traceback from inside the configurator's report of it
    if case == 'a folder':
        path, fragment = tmp_path / 'tiny.py', 'is a folder'
        path.mkdir()
    else:
        path, fragment = tmp_path / 'odd.py', 'failed: E: (its message cannot be shown)'
        path.write_text('class E(Exception):\n    def __str__(self):\n        raise ValueError\n\n\nraise E()\n')
    code, _, err = run_inprocess('sample.py', str(path), '--device=cpu')
    assert_one_error_line(code, err, fragment, case)
