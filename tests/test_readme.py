"""The README's and the guides' commands, read from their code blocks.

Every script, config file, --key and folder a command names must exist, or be made by an earlier command of
the same block (a run folder by train.py, a dataset by a prepare script, a folder by export.py) or by the
quickstart, which every page assumes was run first. The results log is left out: its commands are records of
their commit and may name files of their day. Values in
capitals (RUN, FILE, DIR), under path/to/ or absolute are placeholders for the reader's own. A command followed
by a `# error:` line is a mistake on purpose and must stay one. The quickstart's commands run, cut down to
seconds, in a scratch folder."""

import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, assert_one_line_error, run_script

DOCS = ['README.md'] + sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'docs', '*.md'))
                              if not p.endswith('results.md'))
SHELL = ('', 'bash', 'sh', 'shell', 'console')
PYTHONS = ('python', 'python3', '.venv/bin/python')
PLACEHOLDER = re.compile(r'[A-Z][A-Z0-9_]*(,[A-Z][A-Z0-9_]*)*')
QUICKSTART_MARK = '<!-- the quickstart, by hand -->'


def code_blocks(text):
    """(language, first line number, body) of every fenced block."""
    blocks, lang, start, body = [], None, 0, []
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith('```'):
            if lang is None:
                lang, start, body = line[3:].strip(), n + 1, []
            else:
                blocks.append((lang, start, '\n'.join(body)))
                lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def commands(body):
    """[(argv, expects_error)] for each command of a shell block: continued lines joined, comments dropped,
    `a && b` and `a; b` split."""
    lines = body.replace('\\\n', ' ').splitlines()
    found = []
    for i, line in enumerate(lines):
        line = line.strip()
        if line.startswith('$ '):
            line = line[2:]
        if not line or line.startswith('#'):
            continue
        expects_error = i + 1 < len(lines) and lines[i + 1].strip().startswith(('# error:', 'error:'))
        lex = shlex.shlex(line, posix=True, punctuation_chars=';&|')
        lex.whitespace_split, lex.commenters = True, '#'
        argv = []
        for token in list(lex) + [';']:
            if token in (';', '&&', '||', '&', '|'):
                if argv:
                    found.append((argv, expects_error))
                argv = []
            else:
                argv.append(token)
    return found


def placeholder(value):
    return bool(PLACEHOLDER.fullmatch(value)) or 'path/to' in value or value.startswith(('/', '~'))


_keys = {}

# one interpreter reads every script's --help (torch imported once): a fresh process each would cost minutes
HELP_ALL = """
import contextlib, io, json, os, runpy, sys
out = {}
for script in sys.argv[1:]:
    buf = io.StringIO()
    sys.argv = [script, '--help']
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            runpy.run_path(script, run_name='__main__')
        except SystemExit:
            pass
        except Exception as e:
            print(f'failed: {e!r}')
    out[script] = buf.getvalue()
print(json.dumps(out))
"""


def script_keys(script, *more):
    """The --keys a script's --help names (the configurator's list, argparse's usage, plot.py's docstring)."""
    todo = [s for s in (script, *more) if s not in _keys and os.path.isfile(os.path.join(REPO, s))]
    if todo:
        r = subprocess.run([sys.executable, '-c', HELP_ALL, *todo], capture_output=True, text=True, timeout=600,
                           cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
        assert r.returncode == 0, r.stderr
        for s, text in json.loads(r.stdout.splitlines()[-1]).items():
            _keys[s] = set(re.findall(r'--([A-Za-z_][A-Za-z0-9_]*)', text.replace('[--key=value ...]', '')))
    return _keys[script]


def config_value(config_file, key):
    with open(os.path.join(REPO, config_file)) as f:
        m = re.search(rf"^{key} = '([^']*)'", f.read(), re.M)
    return m.group(1) if m else None


def check_block(where, body, made=(), collect=None):
    """The problems in one shell block, as 'where: what' lines; made: folders that exist before it;
    collect, a set, gathers what the block makes."""
    problems, made = [], set(made) if collect is None else collect

    def exists(path):
        path = path.rstrip('/')
        return placeholder(path) or os.path.exists(os.path.join(REPO, path)) or \
            any(path == m or path.startswith(m + '/') for m in made)

    try:
        found = commands(body)
    except ValueError as e:  # an unclosed quote
        return [f"{where}: cannot read the block as shell commands: {e}"]
    for argv, expects_error in found:
        while argv and re.fullmatch(r'[A-Z_]+=\S*', argv[0]):  # OMP_NUM_THREADS=1 python ...
            argv = argv[1:]
        if not argv:
            continue
        if argv[0] == 'bash' and len(argv) > 1:
            if not os.path.isfile(os.path.join(REPO, argv[1])):
                problems.append(f"{where}: {argv[1]} does not exist")
            continue
        if argv[0] == 'torchrun':  # torchrun's own options, then the script and its arguments
            argv = ['python'] + argv[next((i for i, a in enumerate(argv) if a.endswith('.py')), 0):]
        if argv[0] not in PYTHONS or len(argv) < 2 or argv[1].startswith('-'):
            continue  # curl, llama-cli, python -m pytest, python -c ...
        script, args = argv[1], argv[2:]
        if not os.path.isfile(os.path.join(REPO, script)):
            problems.append(f"{where}: {script} does not exist")
            continue
        opts, positional = {}, []
        for a in args:
            if a.startswith('--'):
                key, _, value = a[2:].partition('=')
                opts[key] = value
            else:
                positional.append(a)
        if not expects_error:
            unknown = sorted(set(opts) - script_keys(script))
            if unknown:
                problems.append(f"{where}: {script} has no key {', '.join('--' + k for k in unknown)}")
        configs = [p for p in positional if p.endswith('.py')]
        for c in configs:
            if not os.path.isfile(os.path.join(REPO, c)) and c not in made:
                problems.append(f"{where}: config file {c} does not exist")
        name = os.path.basename(script)
        reads = []
        if name in ('sample.py', 'eval.py', 'serve.py', 'export.py') and opts.get('out_dir'):
            reads += opts['out_dir'].split(',')
        if name == 'plot.py':
            reads += [p for p in positional if not p.endswith('.py')]
        init = opts.get('init_from', '')
        if init and init not in ('scratch', 'resume') and not init.startswith('gpt2'):
            reads.append(init[3:] if init.startswith('hf:') else init)
        if name in ('train.py', 'eval.py') and opts.get('dataset') and not placeholder(opts['dataset']):
            if not exists('data/' + opts['dataset']):
                problems.append(f"{where}: no earlier command prepares dataset {opts['dataset']!r}")
        for path in reads:
            if not exists(path):
                problems.append(f"{where}: {script} reads {path}, which nothing earlier in the block makes")
        # what this command makes, for the commands after it
        if name == 'train.py' and not expects_error:
            out = opts.get('out_dir') or next((config_value(c, 'out_dir') for c in reversed(configs)
                                               if os.path.isfile(os.path.join(REPO, c)) and config_value(c, 'out_dir')), 'out')
            made.add(out)
        if name == 'export.py':
            made.add(opts.get('dest') or os.path.join(opts.get('out_dir', 'out'), 'hf'))
        if name == 'plan.py':  # the config file it writes
            minutes = float(opts.get('minutes') or 10)
            made.add(opts.get('out') or f"config/plan_{os.path.basename(opts.get('dataset') or 'shakespeare_char')}_{minutes:g}m.py")
        if name == 'prepare.py':
            folder = os.path.basename(os.path.dirname(script))
            made.add('data/' + (opts.get('name') or (folder + '_bpe' if opts.get('tokenizer') == 'bpe' else folder)))
        for key in ('out', 'markdown', 'dest'):
            if opts.get(key):
                made.add(opts[key])
    return problems


def doc_blocks():
    for doc in DOCS:
        with open(os.path.join(REPO, doc), encoding='utf-8') as f:
            for lang, line, body in code_blocks(f.read()):
                yield doc, lang, line, body


def quickstart_block():
    with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    assert QUICKSTART_MARK in text
    return code_blocks(text[text.index(QUICKSTART_MARK):])[0][2]


def made_by(body):
    """The folders a block's commands make (what check_block adds up)."""
    made = set()
    check_block('', body + '\n', made=made, collect=made)
    return made


def test_every_command_in_the_readme_and_docs_names_what_exists():
    # the README is followed after the quickstart, so the folders the quickstart makes exist for all of it
    named = {m for _, lang, _, body in doc_blocks() if lang in SHELL
             for m in re.findall(r'(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.py)\b', body) if not m.startswith('config/')}
    script_keys(*sorted(named))  # every script's --help in one process
    after_quickstart = made_by(quickstart_block())
    problems = []
    for doc, lang, line, body in doc_blocks():
        if lang in SHELL:
            problems += check_block(f"{doc}:{line}", body, made=after_quickstart)
        elif lang == 'python':
            try:
                compile(body, f"{doc}:{line}", 'exec')
            except SyntaxError as e:
                problems.append(f"{doc}:{line}: python snippet does not compile: {e}")
    assert not problems, '\n'.join(problems)


def test_the_check_catches_a_wrong_key_a_missing_config_and_a_folder_never_made():
    # the rules above must fail on what they are for, or a passing run means nothing
    assert check_block('x', 'python train.py config/train_shakespeare_char_cpu.py --lerning_rate=1e-3')
    assert check_block('x', 'python train.py config/nope.py')
    assert check_block('x', 'python sample.py --out_dir=out-never-trained')
    assert check_block('x', 'python nope.py')
    assert check_block('x', 'python sample.py --out_dir=out-x\npython train.py config/train_shakespeare_char_cpu.py '
                            '--out_dir=out-x')  # made only later
    assert not check_block('x', 'python train.py config/train_shakespeare_char_cpu.py\n'
                                'python sample.py --out_dir=out-shakespeare-char-cpu --num_samples=2')
    assert not check_block('x', 'python train.py config/train_shakespeare_char_cpu.py --lerning_rate=1e-3\n'
                                '# error: unknown config key')
    assert not check_block('x', 'python eval.py --out_dir=RUN,path/to/run --tasks=val')


def test_every_core_module_has_a_line_in_the_readme_file_tree():
    with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
        tree = next(body for lang, _, body in code_blocks(f.read()) if 'core/' in body and 'engine.py' in body)
    missing = [os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'core', '**', '*.py'), recursive=True)
               if not p.endswith('__init__.py') and not re.search(rf'^\s+{re.escape(os.path.basename(p))}\s', tree, re.M)]
    assert not missing, f"add a line for each to the README's file tree: {missing}"


@pytest.mark.parametrize('old,new', [('config/speedrun2_shakespeare_char_cpu.py', 'config/speedrun_shakespeare_char_cpu.py'),
                                     ('config/classic_shakespeare_char_cpu.py', 'config/train_shakespeare_char_cpu.py')])
def test_an_old_config_path_names_its_new_file(old, new):
    assert os.path.isfile(os.path.join(REPO, new)) and not os.path.exists(os.path.join(REPO, old))
    assert_one_line_error(run_script('train.py', old, '--device=cpu'), old, new)


# what each script of the quickstart gets on top of its README arguments, so the whole flow takes seconds
CUT_DOWN = {
    'prepare.py': ['--out_dir={tmp}/shakespeare_char'],
    'train.py': ['--dataset={tmp}/shakespeare_char', '--max_seconds=2', '--compile=False', '--batch_size=4',
                 '--eval_full=False', '--eval_iters=2', '--eval_interval=20', '--device=cpu'],
    'sample.py': ['--max_new_tokens=20', '--device=cpu'],
    'eval.py': ['--dataset={tmp}/shakespeare_char', '--device=cpu'],
    'export.py': [],
    'plot.py': [],
}


def test_the_quickstart_by_hand_runs_cut_down(tmp_path):
    body = quickstart_block()
    cmds = [argv for argv, _ in commands(body)]
    assert [os.path.basename(a[1]) for a in cmds] == list(CUT_DOWN)
    # quickstart.sh trains the same recipe into the same folder as the README says
    train = cmds[1]
    with open(os.path.join(REPO, 'quickstart.sh')) as f:
        script = f.read()
    assert train[2] in script and config_value(train[2], 'out_dir') in script and '--overwrite=True' in script
    for argv in cmds:
        extra = [a.format(tmp=tmp_path) for a in CUT_DOWN[os.path.basename(argv[1])]]
        args = [os.path.join(REPO, a) if a.startswith('config/') else a for a in argv[2:]]  # run from tmp_path
        r = run_script(argv[1], *args, *extra, cwd=str(tmp_path), timeout=600)
        assert r.returncode == 0, f"{' '.join(argv)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    out = config_value(train[2], 'out_dir')
    assert os.path.isfile(tmp_path / 'my-model' / 'config.json') and os.path.isfile(tmp_path / out / 'loss.png')
