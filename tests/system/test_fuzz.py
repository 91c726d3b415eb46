"""Malformed input never ends in a traceback: hundreds of seeded random argument lists through the
configurator, impossible values through train.py's startup (in this interpreter, so each costs
milliseconds), and a sample of real script startups in fresh interpreters, for every script there is."""

import ast
import glob
import os
import random
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import REPO, make_char_dataset, run_script

import configurator
from configurator import ConfigError
from conftest import ONE_THREAD, assert_one_error_line, run_inprocess

SEED = 1234
BAD_VALUES = {
    int: ['abc', '1.5', '[1, 2]', 'True', 'None', '', "'7'", '1e400', '{}', '(3,)'],
    float: ['abc', '[1]', 'None', 'True', "'0.1'", '(1, 2)', '{1: 2}', 'nan_'],
    bool: ['maybe', '2', '[]', 'None', '0.5', 'yes please', "'tru'", '-1'],
    tuple: ['1', 'abc', '{}'],
    list: ['1', 'abc', '{}'],
}
TINY = ['--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16', '--batch_size=2',
        '--gradient_accumulation_steps=1', '--eval_iters=1', '--max_iters=0', '--device=cpu', '--compile=False']


def help_defaults(script):
    """A script's config keys and defaults, read from its --help."""
    code, out, err = run_inprocess(script, '--help')
    assert code == 0, err
    defaults = {}
    for key, text in re.findall(r'^  --(\w+)=(.*)$', out, re.M):
        try:
            defaults[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            pass
    assert len(defaults) > 5, out
    return defaults


def mutate(key, rng):
    """A near miss of a key: a typo, a case change, a lookalike letter, a space or a newline."""
    i = rng.randrange(len(key))
    options = [key[:i] + key[i + 1:], key[:i] + key[i] + key[i:], key + '_x', key.upper(), '-' + key,
               key[:i] + key[i + 1:i + 2] + key[i:i + 1] + key[i + 2:], key.replace('e', '\u0435', 1),
               key[:i] + ' ' + key[i:], key[:i] + '\n' + key[i:], 'x' + key]
    return rng.choice(options)


def valid_arg(key, default, rng):
    """--key=text for a value the key accepts, and the value it must parse to."""
    kind = type(default)
    if kind is bool:
        text = rng.choice(['True', 'false', '1', '0', 'yes', 'no'])
        return f'--{key}={text}', text.lower() in ('true', '1', 'yes')
    if kind is int:
        v = rng.randint(1, 1000)
        return f'--{key}={v}', v
    if kind is float:
        v = rng.choice([0.5, 1e-3, 2.0, 3])
        return f'--{key}={v}', float(v)
    if kind is str:
        v = rng.choice(['abc', 'x y', 'a=b', '123', 'ünïcode'])
        return f'--{key}={v}', v
    return None


def config_files(folder):
    """Config files that are wrong in each way a config file can be."""
    files = {}
    for name, body, fragment in [
        ('syntax.py', 'n_layer = = 3\n', 'failed: SyntaxError'),
        ('raises.py', 'n_layer = 1 / 0\n', 'failed: ZeroDivisionError'),
        ('unknown.py', 'n_layers = 3\n', "unknown config key 'n_layers'"),
        ('wrongtype.py', "seed = 'three'\n", "config key 'seed' expects an integer"),
        ('imports.py', 'import no_such_module_here\n', 'failed: ModuleNotFoundError'),
    ]:
        path = os.path.join(folder, name)
        with open(path, 'w') as f:
            f.write(body)
        files[path] = fragment
    files[os.path.join(folder, 'missing', 'nope.py')] = 'not found'
    return files


def malformed_cases(defaults, rng, files, n):
    """n argument lists, each with one mistake among valid arguments: (argv, fragment of the error)."""
    keys = sorted(defaults)
    typed = [k for k in keys if type(defaults[k]) in BAD_VALUES]
    needs_value = [k for k in keys if not isinstance(defaults[k], bool)]
    cases = []
    while len(cases) < n:
        kind = rng.choice(['unknown', 'type', 'type', 'novalue', 'file', 'degenerate'])
        if kind == 'unknown':
            key = mutate(rng.choice(keys), rng)
            if key in defaults:
                continue
            bad, fragment = f'--{key}=1', 'unknown config key'
        elif kind == 'type':
            key = rng.choice(typed)
            value = rng.choice(BAD_VALUES[type(defaults[key])])
            bad, fragment = f'--{key}={value}', f"config key '{key}' expects"
        elif kind == 'novalue':
            key = rng.choice(needs_value)
            bad, fragment = f'--{key}', 'needs a value'
        elif kind == 'file':
            bad, fragment = rng.choice(sorted(files.items()))
        else:
            bad, fragment = rng.choice([('--', 'unknown config key'), ('--=1', 'unknown config key'),
                                        ('--=', 'unknown config key'), ('-x', 'not found'),
                                        ('--\u00e9=1', 'unknown config key'), ('nope.py', 'not found')])
        good = [a for a in (valid_arg(k, defaults[k], rng) for k in rng.sample(keys, rng.randint(0, 3))) if a]
        argv = [a for a, _ in good]
        argv.insert(rng.randint(0, len(argv)), bad)
        cases.append((argv, fragment))
    return cases


@pytest.fixture(scope='module')
def defaults():
    scripts = ['train.py'] + (['sample.py'] if os.path.exists(os.path.join(REPO, 'sample.py')) else [])
    return {s: help_defaults(s) for s in scripts}


def test_configurator_fuzz(defaults, tmp_path):
    rng = random.Random(SEED)
    files = config_files(str(tmp_path))
    n_bad = n_good = 0
    for script, keys in defaults.items():
        for argv, fragment in malformed_cases(keys, rng, files, 150):
            with pytest.raises(ConfigError) as e:
                configurator.parse(argv, keys)
            assert fragment in str(e.value), (argv, str(e.value))
            n_bad += 1
        # and lists of valid arguments parse to the values they spell
        for _ in range(30):
            args = [valid_arg(k, keys[k], rng) for k in rng.sample(sorted(keys), 4)]
            args = [a for a in args if a]
            explicit = set()
            config = configurator.parse([a for a, _ in args], keys, explicit=explicit)
            for arg, value in args:
                key = arg[2:].split('=', 1)[0]
                assert config[key] == value and type(config[key]) is type(keys[key]) and key in explicit, arg
            n_good += 1
    assert n_bad >= 200 and n_good >= 30


# ----- impossible values through train.py's startup -----

def impossible_train_cases(data, small_vocab_data, tmp):
    not_a_folder = os.path.join(tmp, 'a_file')
    open(not_a_folder, 'w').close()
    return [
        (['--n_embd=30', '--n_head=4'], 'not divisible'),
        (['--block_size=100000'], 'block_size'),
        (['--batch_size=0'], 'batch_size must be positive'),
        (['--learning_rate=-1e-3'], 'learning_rate must not be negative'),
        (['--optimizer=muon', '--muon_lr=1e308'], 'muon_lr must be at most 3.4e38'),  # was torch's overflow traceback
        (['--gradient_accumulation_steps=1000000000000', '--max_iters=1'], 'out of memory on cpu'),  # the CPU allocator's RuntimeError
        (['--rope_base=-1', '--pos_encoding=rope'], 'rope_base must be positive'),
        (['--peak_tflops=-1'], 'peak_tflops must not be negative'),
        (['--gradient_accumulation_steps=0'], 'gradient_accumulation_steps'),
        (['--eval_interval=0'], 'eval_interval'),
        (['--max_iters=-5'], 'max_iters'),
        (['--dropout=1.5'], 'dropout'),
        (['--n_layer=0'], 'n_layer'),
        (['--norm=batchnorm'], 'norm'),
        (['--mlp=moe'], 'mlp'),
        (['--pos_encoding=alibi'], 'pos_encoding'),
        (['--pos_encoding=rope', '--n_embd=18', '--n_head=2'], 'rope'),
        (['--logit_softcap=-1'], 'logit_softcap'),
        (['--beta1=1.5'], 'beta1'),
        (['--beta2=-0.1'], 'beta2'),
        (['--compile=maybe'], 'compile'),
        (['--optimizer=sgd'], 'optimizer'),
        (['--device=tpu'], 'device'),
        (['--device=cuda:7'], 'device'),
        (['--dtype=float8'], 'dtype'),
        (['--dtype=float16'], 'float16'),
        (['--init_from=garbage'], 'init_from'),
        (['--init_from=resume'], 'no checkpoint'),
        (['--init_from=hf:/no/such/folder'], '/no/such/folder'),
        (['--fsdp=True'], 'torchrun'),
        (['--vocab_size=10'], 'vocab_size'),
        (['--dataset=/no/such/dataset'], 'not found'),
        (['--dataset=no_such_dataset_name'], 'not found'),
        ([f'--dataset={small_vocab_data}', '--vocab_size=20'], 'vocab_size'),
        ([f'--out_dir={not_a_folder}'], 'out_dir'),
        (['--n_layer=two'], "expects an integer"),
        (['--learning_rate=fast'], "expects a number"),
        (['--max_bad_steps=-1'], 'max_bad_steps'),
        (['--early_stop_patience=-2'], 'early_stop_patience'),
        (['--grad_clip=-1'], 'grad_clip'),
        (['--weight_decay=-0.1'], 'weight_decay'),
    ]


@pytest.fixture(scope='module')
def small_vocab_data(tmp_path_factory):
    return make_char_dataset(str(tmp_path_factory.mktemp('small')), n_chars=20_000)


def test_impossible_values_in_train(char_data, small_vocab_data, tmp_path):
    out = str(tmp_path / 'out')
    for args, fragment in impossible_train_cases(char_data, small_vocab_data, str(tmp_path)):
        base = [f'--dataset={char_data}', f'--out_dir={out}', *TINY]
        code, _, err = run_inprocess('train.py', *base, *args)
        assert_one_error_line(code, err, fragment, args)


def test_random_values_in_train_never_crash(defaults, char_data, tmp_path):
    """Zero, negative and nonsense values for every key: a run either starts (and, with max_iters=0, ends)
    or stops with one error line; never a traceback."""
    rng = random.Random(SEED + 1)
    keys = defaults['train.py']
    # keys whose odd values reach the network, the whole disk or a long run are covered above instead
    skip = {'out_dir', 'init_from', 'wandb_log', 'wandb_project', 'wandb_run_name', 'dataset', 'max_iters',
            'eval_only', 'max_seconds'}
    values = {int: [0, -1, -7], float: [0.0, -1.0, -0.5, 1e-12], str: ['', 'zzz', 'auto ', 'CPU'],
              bool: [True, False]}
    out = str(tmp_path / 'out')
    failed = started = 0
    for _ in range(60):
        args = []
        for key in rng.sample(sorted(k for k in keys if k not in skip and type(keys[k]) in values), 2):
            args.append(f'--{key}={rng.choice(values[type(keys[key])])}')
        code, _, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={out}', *TINY, *args)
        if code == 0:
            started += 1
            assert 'Traceback' not in err, (args, err)
        else:
            failed += 1
            assert_one_error_line(code, err, what=args)
    assert failed > 10 and started > 3


# ----- real startups: the exit path, for every script -----

def _scripts():
    top = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, '*.py')))
    configured = [s for s in top if s != 'configurator.py' and 'configure(' in open(os.path.join(REPO, s)).read()]
    argparsed = [s for s in top if 'argparse' in open(os.path.join(REPO, s)).read()]
    prepares = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'data', '*prepare.py')) +
                      glob.glob(os.path.join(REPO, 'data', '*', 'prepare.py')))
    return configured, argparsed + prepares


def test_script_startups(defaults, char_data, small_vocab_data, tmp_path):
    rng = random.Random(SEED + 2)
    files = config_files(str(tmp_path))
    configured, argparsed = _scripts()
    runs = []  # (script, args, fragment, argparse style)
    for script in configured:
        runs.append((script, ['--no_such_key_zz=1'], 'no_such_key_zz', False))
    for script in argparsed:
        runs.append((script, ['--no_such_flag_zz=1'], 'error:', True))
    base = [f'--dataset={char_data}', f'--out_dir={tmp_path / "out"}', *TINY]
    for argv, fragment in malformed_cases(defaults['train.py'], rng, files, 2):
        runs.append(('train.py', base + argv, fragment, False))
    for args, fragment in rng.sample(impossible_train_cases(char_data, small_vocab_data, str(tmp_path)), 2):
        runs.append(('train.py', base + args, fragment, False))
    if 'sample.py' in defaults:
        for argv, fragment in malformed_cases(defaults['sample.py'], rng, files, 1):
            runs.append(('sample.py', argv, fragment, False))
        runs += [('sample.py', ['--temperature=-1'], 'temperature', False),
                 ('sample.py', [f'--out_dir={tmp_path / "empty"}'], 'no checkpoint', False)]
    if os.path.exists(os.path.join(REPO, 'bench.py')):
        runs += [('bench.py', ['--n_embd=30', '--n_head=4', '--device=cpu'], 'not divisible', False),
                 ('bench.py', ['--dtype=float8', '--device=cpu'], 'float8', False),
                 ('bench.py', ['--n_layer=x', '--device=cpu'], 'n_layer', False)]
    if os.path.exists(os.path.join(REPO, 'data', 'prepare.py')):
        text = tmp_path / 'text.txt'
        text.write_text('a few words of text for a dataset\n' * 20)
        runs += [('data/prepare.py', ['--input=/no/such/file.txt', f'--out_dir={tmp_path / "p"}'], '/no/such/file.txt',
                  False),
                 ('data/prepare.py', [f'--input={text}', '--val_fraction=2', f'--out_dir={tmp_path / "p"}'],
                  'val_fraction', False)]
    os.makedirs(tmp_path / 'empty')

    def run(item):
        script, args, _, _ = item
        return run_script(script, *args, env=ONE_THREAD, timeout=600)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, runs))
    assert len(runs) >= 20
    for (script, args, fragment, _), r in zip(runs, results):
        what = (script, args, r.stderr)
        assert r.returncode == 2 and 'Traceback' not in r.stderr, what
        errors = [l for l in r.stderr.splitlines() if l.startswith('error: ')]
        assert len(r.stderr.strip().splitlines()) == 1, what  # argparse's usage block included: one line
        assert len(errors) == 1 and fragment.strip() in errors[0], what


def test_sample_refuses_a_checkpoint_from_another_dataset(char_data, small_vocab_data, tmp_path):
    if not os.path.exists(os.path.join(REPO, 'sample.py')):
        pytest.skip('no sample.py yet')
    out = str(tmp_path)
    code, _, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={out}', *TINY, '--max_iters=1',
                                 '--eval_interval=1')
    assert code == 0, err
    r = run_script('sample.py', f'--out_dir={out}', f'--dataset={small_vocab_data}', '--device=cpu',
                   '--max_new_tokens=2', env=ONE_THREAD)
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    [line] = [l for l in r.stderr.splitlines() if l.startswith('error: ')]
    assert 'another tokenizer' in line


# ----- output paths and inputs found wrong by hand (each once printed a traceback) -----

def _bad_paths(tmp):
    a_file = os.path.join(tmp, 'a_file')
    open(a_file, 'w').close()
    folder = os.path.join(tmp, 'folder')
    os.makedirs(folder, exist_ok=True)
    return a_file, folder


@pytest.mark.parametrize('case', ['markdown_under_a_file', 'markdown_is_a_folder', 'markdown_deep_under_a_file'])
def test_eval_markdown_path_checked_before_loading(case, tmp_path):
    a_file, folder = _bad_paths(str(tmp_path))
    markdown, fragment = {'markdown_under_a_file': (os.path.join(a_file, 'x.md'), 'is a file'),
                          'markdown_is_a_folder': (folder, 'is a folder'),
                          'markdown_deep_under_a_file': (os.path.join(a_file, 'y', 'z.md'), 'is a file')}[case]
    # an out_dir without a checkpoint: the markdown mistake must be reported first, before any load
    code, _, err = run_inprocess('eval.py', f'--out_dir={tmp_path / "no_run"}', f'--markdown={markdown}',
                                 '--device=cpu')
    assert_one_error_line(code, err, fragment, case)


def test_eval_markdown_never_replaces_a_file_it_did_not_write(tmp_path):
    notes = tmp_path / 'notes.md'
    notes.write_text('my own notes\n')
    code, _, err = run_inprocess('eval.py', f'--out_dir={tmp_path / "no_run"}', f'--markdown={notes}', '--device=cpu')
    assert_one_error_line(code, err, 'eval.py did not write it', 'markdown over a file of ours')
    assert notes.read_text() == 'my own notes\n'


def test_eval_prompts_not_utf8(tmp_path):
    prompts = tmp_path / 'prompts.txt'
    prompts.write_bytes(b'\xff\xfe\x00 not text')
    code, _, err = run_inprocess('eval.py', f'--out_dir={tmp_path / "no_run"}', f'--prompts={prompts}', '--tasks=',
                                 '--device=cpu')
    assert_one_error_line(code, err, 'UTF-8', 'prompts')


@pytest.mark.parametrize('args,fragment', [
    (['--compile=maybe'], 'compile must be'),  # was taken as a truthy string and compiled
    (['--optimizer=sgd'], 'optimizer must be'),  # was model.py's ValueError traceback
    (['--report=True', '--batch_size=-1'], 'batch_size'),  # was the preset's batch, silently
    (['--sample=True', '--sample_tokens=-5'], 'sample_tokens'),  # was a report of -5 new tokens
])
def test_bench_refuses_odd_values(args, fragment):
    code, _, err = run_inprocess('bench.py', '--device=cpu', *args)
    assert_one_error_line(code, err, fragment, args)


@pytest.mark.parametrize('script,args,fragment', [
    ('studies/bench_generate.py', ['--n_head=3', '--n_embd=32'], 'not divisible'),
    ('studies/bench_generate.py', ['--tokens=-1'], '--tokens'),
    ('studies/bench_generate.py', ['--batch=0'], '--batch'),
    ('studies/bench_generate.py', ['--batch=a,b'], '--batch'),
    ('studies/bench_prepare.py', ['--size_mb=-1'], 'size_mb'),  # was prepare's error about an empty corpus, exit code 1
    ('studies/bench_prepare.py', ['--tokenizer=zzz'], 'tokenizer'),
    ('studies/bench_prepare.py', ['--workers=-1'], 'workers'),
    ('studies/bench_tokenizer.py', ['--vocab_size=-1'], 'vocab_size'),  # was exit code 1 after a first benchmark
    ('studies/bench_tokenizer.py', ['--wikitext_dir=/no/such/folder'], 'wikitext_dir'),  # was skipped silently
    ('studies/bench_serve.py', ['--clients=0'], '--clients'),  # was a report of nan latencies
    ('studies/bench_serve.py', ['--requests=-1'], '--requests'),
])
def test_studies_refuse_odd_values(script, args, fragment):
    code, _, err = run_inprocess(script, *args)
    assert_one_error_line(code, err, fragment, args)


@pytest.mark.parametrize('script,args,fragment', [
    ('studies/mutate.py', ['--timeout=-1'], 'timeout'),  # was '0 of 24 mutations caught', exit code 1
    ('studies/bench_memory.py', ['--steps=0'], 'steps'),  # was a table of configs trained 0 steps
    ('studies/doc_aware.py', ['--config=/no/such/config.py'], 'not found'),  # was found after preparing data
    ('studies/doc_aware.py', ['--seconds=-1'], 'seconds'),
    ('studies/speedrun.py', ['--speedrun_config=/no/such/config.py'], 'not found'),  # was after the classic run
    ('studies/speedrun.py', ['--target_loss=-1'], 'target_loss'),
])
def test_studies_check_before_running(script, args, fragment):
    code, _, err = run_inprocess(script, *args)
    assert_one_error_line(code, err, fragment, args)


def test_plot_skips_a_hand_edited_record(tmp_path):
    # an iteration of 1e400 parses as infinity, which int() refuses with OverflowError
    (tmp_path / 'metrics.jsonl').write_text('{"iter": 1e400, "train_loss": 1.0, "val_loss": 1.0}\n')
    code, _, err = run_inprocess('plot.py', str(tmp_path), f'--out={tmp_path / "loss.png"}')
    assert_one_error_line(code, err, 'no eval records', 'iter 1e400')
