"""A sixth fuzz pass, over plan.py's datasets, plot.py's metrics, damaged checkpoints, config files, eval.py's flags and
the server's request bodies. Each test is an input that ended in a traceback, a hang, or output that was silently
wrong, where one error line (or an HTTP 400) belongs; scripts run in this interpreter."""

import json
import os

import pytest

from conftest import assert_one_error_line, make_char_dataset, run_inprocess

SAMPLE = ['--device=cpu', '--max_new_tokens=2', '--num_samples=1']


def damaged_checkpoint(run, folder, change):
    """folder/ckpt.pt: the run's checkpoint after change(state)."""
    import torch
    state = torch.load(os.path.join(run, 'ckpt.pt'), weights_only=True)
    change(state)
    os.makedirs(folder, exist_ok=True)
    torch.save(state, os.path.join(folder, 'ckpt.pt'))
    return str(folder)


# ----- a dataset's tokenizer state of the wrong shape -----

@pytest.fixture(scope='module')
def small_data(tmp_path_factory):
    """A character dataset far too small for a plan: plan.py reads its tokenizer, then stops on its size."""
    return make_char_dataset(str(tmp_path_factory.mktemp('sixth') / 'small'), n_chars=3000)


# each of these was a TypeError, AttributeError or ValueError out of tokenizer.from_state, which only the checks it
# makes itself (a kind it knows, chars a list) turned into an error line
DAMAGED_STATES = {
    'special tokens a list': lambda s: s.update(special_tokens=[1]),  # AttributeError: no .values()
    'special token ids of two types': lambda s: s.update(special_tokens={'<|a|>': 58, '<|b|>': 'x'}),  # sorted()
    'gpt2 added tokens of two types': lambda s: (s.clear(), s.update(kind='gpt2', added_tokens={'x': 50257, 'y': 's'})),
    'bpe json a number': lambda s: (s.clear(), s.update(kind='bpe', json=123)),  # AttributeError: no .read()
    'bpe file a number': lambda s: (s.clear(), s.update(kind='bpe', file=123)),  # os.path.join's TypeError
    'bpe vocab a list': lambda s: (s.clear(), s.update(kind='bpe', json=json.dumps(
        {'model': {'type': 'BPE', 'vocab': []}, 'pre_tokenizer': {'type': 'Split', 'pattern': {'Regex': 'x'}}}))),
    'bpe split pattern tiktoken cannot compile': lambda s: (s.clear(), s.update(kind='bpe', json=json.dumps(
        {'model': {'type': 'BPE', 'vocab': {'a': 0}}, 'pre_tokenizer': {'type': 'Split', 'pattern': {'Regex': '('}}}))),
}


@pytest.mark.parametrize('case', sorted(DAMAGED_STATES))
def test_a_dataset_whose_tokenizer_state_is_damaged_is_named_in_one_line(case, small_data, tmp_path):
    import shutil
    folder = str(tmp_path / 'data')
    shutil.copytree(small_data, folder)
    with open(os.path.join(folder, 'meta.json')) as f:
        meta = json.load(f)
    DAMAGED_STATES[case](meta['tokenizer'])
    with open(os.path.join(folder, 'meta.json'), 'w') as f:
        json.dump(meta, f)
    code, _, err = run_inprocess('plan.py', '--minutes=1', f'--dataset={folder}', f'--out={tmp_path / "plan.py"}',
                                 '--device=cpu', '--progress=False')
    assert_one_error_line(code, err, 'tokenizer', case)
    assert not os.path.exists(tmp_path / 'plan.py')


@pytest.mark.parametrize('name', ['plan.py', 'train.py', os.path.join('core', 'errors.py')])
def test_plan_never_replaces_the_repositorys_own_code(name, small_data):
    # --out=plan.py, typed in the repository's folder, names plan.py itself: 'plan.py exists; pass --overwrite=True',
    # and with it the search's end replaced the script (or train.py, or a module of core/) with a config
    from conftest import REPO
    path = os.path.join(REPO, name)
    with open(path, 'rb') as f:
        before = f.read()
    code, _, err = run_inprocess('plan.py', '--minutes=1', f'--dataset={small_data}', f'--out={path}',
                                 '--overwrite=True', '--device=cpu', '--progress=False')
    assert_one_error_line(code, err, "which a plan never replaces", name)
    with open(path, 'rb') as f:
        assert f.read() == before


# ----- damaged checkpoints -----

def test_a_checkpoint_whose_n_layer_is_huge_is_refused_at_once(tiny_run, tmp_path):
    # model_args n_layer=10**20 passed GPTConfig's checks (a positive int, no tensor too big): the shapes were
    # compared on a model built on the meta device, one block at a time, and sample.py looped there for ever
    import signal

    def too_long(signum, frame):  # a regression ends this test, not the whole run
        raise TimeoutError('still building the model after 30 s')
    folder = damaged_checkpoint(tiny_run, tmp_path / 'run', lambda s: s['model_args'].update(n_layer=10 ** 20))
    previous = signal.signal(signal.SIGALRM, too_long)
    try:
        for script, args in (('sample.py', SAMPLE), ('eval.py', ['--device=cpu']),
                             ('export.py', [f'--dest={tmp_path / "hf"}'])):
            signal.alarm(30)
            code, _, err = run_inprocess(script, f'--out_dir={folder}', *args)
            signal.alarm(0)
            assert_one_error_line(code, err, 'n_layer=100,000,000,000,000,000,000', script)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_an_integer_softcap_beyond_64_bits_samples_as_the_float_it_stands_for(tiny_run, tmp_path):
    # logit_softcap=10**20, an int, passed GPTConfig's checks and reached torch in the forward pass: 'OverflowError:
    # int too big to convert' from sample.py and eval.py. As a float it is a softcap too wide to bend anything
    folder = damaged_checkpoint(tiny_run, tmp_path / 'run', lambda s: s['model_args'].update(logit_softcap=10 ** 20))
    code, _, err = run_inprocess('sample.py', f'--out_dir={folder}', *SAMPLE)
    assert code == 0 and 'Traceback' not in err, err[-3000:]
    from model import GPTConfig
    assert GPTConfig(logit_softcap=10 ** 20).logit_softcap == 1e20
    with pytest.raises(ValueError, match='logit_softcap must be a finite number'):
        GPTConfig(logit_softcap=10 ** 400)  # past a float's range: refused by name, not an OverflowError


def test_a_sparse_weight_is_named_not_a_load_state_dict_traceback(tiny_run, tmp_path):
    # a sparse tensor is floating point, so check_floats let it through, and load_state_dict raised 'copy_() between
    # dense and sparse Tensors is not implemented'
    def sparse(state):
        state['model']['transformer.wte.weight'] = state['model']['transformer.wte.weight'].to_sparse()
    folder = damaged_checkpoint(tiny_run, tmp_path / 'run', sparse)
    code, _, err = run_inprocess('sample.py', f'--out_dir={folder}', *SAMPLE)
    assert_one_error_line(code, err, 'transformer.wte.weight is a sparse_coo tensor')


# ----- plot.py -----

@pytest.mark.parametrize('records', [
    # a learning rate of 1e308 beside ordinary ones: matplotlib's tick formatter took log10 of an infinite range
    [{'iter': 1, 'val_loss': 2.0, 'lr': 1e308}, {'iter': 2, 'val_loss': 1.5, 'lr': 1e-3}],
    # losses from -1e308 to 1e308: 'arange: cannot compute length' in matplotlib's tick locator
    [{'iter': 1, 'val_loss': 1e308, 'train_loss': -1e308}, {'iter': 2, 'val_loss': -1e308, 'train_loss': 1e308}],
], ids=['a rate near the largest float', 'losses spanning every float'])
def test_plot_leaves_out_values_near_the_largest_float(records, tmp_path):
    with open(tmp_path / 'metrics.jsonl', 'w') as f:
        f.write(''.join(json.dumps(r) + '\n' for r in records))
    code, out, err = run_inprocess('plot.py', str(tmp_path), f'--out={tmp_path / "loss.png"}')
    assert code == 0 and 'Traceback' not in err, err[-3000:]
    assert os.path.getsize(tmp_path / 'loss.png') > 0


# ----- config files -----

@pytest.mark.parametrize('body', ['num_samples = lambda: 5\n', 'def num_samples():\n    return 5\n',
                                  'import os as num_samples\n', 'class num_samples:\n    pass\n'])
def test_a_config_key_bound_to_a_function_or_module_is_refused_not_ignored(body, tmp_path):
    # the modules, functions and classes a config file made were all dropped as the file's own helpers, so a key set
    # to one kept its default without a word
    (tmp_path / 'odd.py').write_text(body)
    code, _, err = run_inprocess('sample.py', str(tmp_path / 'odd.py'), '--device=cpu')
    assert_one_error_line(code, err, "config key 'num_samples' expects an integer", body)


def test_a_config_value_whose_repr_raises_is_still_one_line(tmp_path):
    # the type error's message formatted the value with repr(), and a class of the file's own could raise there: a
    # ValueError traceback from inside the configurator
    (tmp_path / 'odd.py').write_text('class W:\n    def __repr__(self):\n        raise ValueError\n\n\n'
                                     'num_samples = W()\n')
    code, _, err = run_inprocess('sample.py', str(tmp_path / 'odd.py'), '--device=cpu')
    assert_one_error_line(code, err, 'a W object')


# ----- eval.py -----

def test_eval_refuses_a_negative_top_k_as_sample_does(tiny_run, tmp_path):
    # sample.py refuses --top_k=-1; eval.py took it as 'keep every token' and sampled its completions without a word
    (tmp_path / 'prompts.txt').write_text('hello\n')
    code, _, err = run_inprocess('eval.py', f'--out_dir={tiny_run}', '--device=cpu', '--tasks=',
                                 f'--prompts={tmp_path / "prompts.txt"}', '--temperature=0.8', '--top_k=-1')
    assert_one_error_line(code, err, 'top_k must be an integer >= 0')


def test_eval_json_is_json_when_no_hellaswag_example_could_be_scored(tiny_run, tmp_path):
    # every example holds characters the char vocabulary lacks: acc is NaN, and --json=True printed a bare NaN, which
    # is no JSON (jq and JSON.parse refuse it); it is null now, beside n = 0 and the count skipped
    example = {'ctx': 'ααα', 'endings': ['a', 'b', 'c', 'd'], 'label': 0}
    (tmp_path / 'hs.jsonl').write_text(json.dumps(example) + '\n')
    code, out, err = run_inprocess('eval.py', f'--out_dir={tiny_run}', '--device=cpu', '--tasks=hellaswag',
                                   f'--hellaswag_file={tmp_path / "hs.jsonl"}', '--json=True')
    assert code == 0, err[-3000:]

    def refuse(constant):
        raise ValueError(f'{constant} is not JSON')
    report = json.loads(out, parse_constant=refuse)
    hs = report['runs'][0]['hellaswag']
    assert hs['acc'] is None and hs['acc_norm'] is None and hs['n'] == 0 and hs['skipped'] == 1


# ----- the server -----

def test_a_request_holding_half_a_surrogate_pair_gets_a_400(tmp_path):
    # JSON may escape a lone surrogate ("\ud800"), which the gpt2 tokenizer encoded; with echo the reply held it, and
    # the response's UTF-8 encoding failed: a 500 'internal error: UnicodeEncodeError'
    pytest.importorskip('fastapi')
    import torch
    from fastapi.testclient import TestClient
    from core.data import tokenizer
    from core.inference.engine import Batch, Engine
    from core.inference.server import make_app
    from model import GPT, GPTConfig
    tok = tokenizer.gpt2()
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=tok.vocab_size)).eval()
    engine = Engine(Batch(model, 2, 'cpu', n_vocab=tok.vocab_size, generator=torch.Generator().manual_seed(0)))
    try:
        with TestClient(make_app(engine, tok, 'tiny', 32, log=lambda line: None), raise_server_exceptions=False) as c:
            for path, body in (('/v1/completions', '{"prompt": "hello\\ud800", "max_tokens": 1, "echo": true}'),
                               ('/v1/chat/completions', '{"messages": [{"role": "user", "content": "\\udc80"}], '
                                                        '"max_tokens": 1}')):
                r = c.post(path, content=body.encode(), headers={'content-type': 'application/json'})
                assert r.status_code == 400, (path, r.text)
                assert 'surrogate' in r.json()['error']['message']
            # a whole character escaped as its surrogate pair is text, and served
            r = c.post('/v1/completions', content=b'{"prompt": "hi \\ud83d\\ude00", "max_tokens": 1, "echo": true}',
                       headers={'content-type': 'application/json'})
            assert r.status_code == 200 and r.json()['choices'][0]['text'].startswith('hi \U0001F600'), r.text
    finally:
        engine.stop()
