"""sample.py on the engine: one batched generation, padded vocabulary ids never sampled, and the
bad inputs that used to end in a traceback (each now one line)."""

import os
import sys

import pytest
import torch

from conftest import REPO, assert_one_line_error
from conftest import run_inprocess


def save_run(folder, tokenizer_state=None, **cfg):
    """A tiny char model whose embedding is padded to 128 rows, with the head pulled towards the
    padding rows so a sampler that does not mask them picks them at once."""
    from core.training import checkpoint
    from core.data import tokenizer
    from model import GPT, GPTConfig
    with open(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt'), encoding='utf-8') as f:
        tok = tokenizer.char(f.read()[:20000])
    config = GPTConfig(**dict(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=128, **cfg))
    torch.manual_seed(0)
    model = GPT(config)
    with torch.no_grad():
        model.lm_head.weight[tok.vocab_size:] *= 50
    os.makedirs(folder, exist_ok=True)
    checkpoint.save({'model': model.state_dict(), 'model_args': config.to_dict(), 'iter_num': 0,
                     'best_val_loss': 1.0, 'tokenizer': tokenizer_state or tok.state()},
                    os.path.join(folder, 'ckpt.pt'))
    return model, tok


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('sample_run'))
    model, tok = save_run(folder)
    return folder, model, tok


def sample(*args):
    return run_inprocess('sample.py', '--device=cpu', *args)


def test_samples_are_one_batch_and_never_padding(run_dir):
    folder, model, tok = run_dir
    # unmasked, greedy decoding from this model picks a padding row at once
    assert model.generate(torch.tensor([tok.encode('ROMEO:')]), 1, temperature=0)[0, -1] >= tok.vocab_size
    for extra in (['--temperature=1.5', '--top_k=0'], ['--temperature=1e-45'], ['--top_p=1e-300'], ['--temperature=0']):
        code, out, err = sample(f'--out_dir={folder}', '--start=ROMEO:', '--num_samples=3', '--max_new_tokens=40', *extra)
        assert code == 0, err
        texts = out.split('---------------\n')[:3]
        assert len(texts) == 3 and all(t.startswith('ROMEO:') and len(t) == len('ROMEO:') + 40 + 1 for t in texts), out
    # the greedy batch: every row is the single-sequence greedy continuation
    expected = tok.decode(model.generate(torch.tensor([tok.encode('ROMEO:')]), 40, temperature=0,
                                         n_vocab=tok.vocab_size)[0].tolist())
    assert texts == [expected + '\n'] * 3


def test_bad_inputs_are_one_line(run_dir, tmp_path):
    folder, _, _ = run_dir
    latin1, binary = tmp_path / 'latin1.txt', tmp_path / 'blob.bin'
    latin1.write_bytes('café au lait'.encode('latin-1'))
    binary.write_bytes(bytes(range(256)) * 4)
    bad_tok = tmp_path / 'bad_tok'
    save_run(str(bad_tok), tokenizer_state={'kind': 'char', 'chars': ['b', 'a']})
    cases = [
        ([f'--start=FILE:{latin1}'], 'not UTF-8'),
        ([f'--start=FILE:{binary}'], 'not UTF-8'),
        (['--dataset=no_such_dataset_here'], 'no_such_dataset_here'),
        (['--top_k=-5'], 'top_k'),
        (['--dtype=float16'], 'not supported on CPU'),
        ([f'--out_dir={bad_tok}'], 'tokenizer'),
    ]
    for args, fragment in cases:
        code, out, err = sample(f'--out_dir={folder}', '--max_new_tokens=3', *args)
        line = assert_one_line_error(type('R', (), dict(returncode=code, stdout=out, stderr=err)), fragment)
        assert 'training' not in line
    # the chat with stdin closed
    saved = sys.stdin
    sys.stdin = None
    try:
        code, out, err = sample(f'--out_dir={folder}', '--interactive=True')
    finally:
        sys.stdin = saved
    assert_one_line_error(type('R', (), dict(returncode=code, stdout=out, stderr=err)), 'stdin')


def test_an_exported_folder_brings_its_own_tokenizer(tmp_path):
    # a trained bpe's export has tokenizer.json; sample.py --init_from=hf: uses it (it used GPT-2's and
    # reported a vocabulary mismatch); a folder without tokenizer files is one line asking for --dataset
    from core.interop import hf
    from core.data import tokenizer
    from model import GPT, GPTConfig
    with open(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt'), encoding='utf-8') as f:
        tok = tokenizer.train_bpe(f.read()[:20000], 300)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=320, gelu='tanh'))
    hf.save_hf_folder(model, str(tmp_path / 'bpe'), tok.state())
    code, out, err = sample(f'--init_from=hf:{tmp_path / "bpe"}', '--start=ROMEO:', '--num_samples=1',
                            '--max_new_tokens=10', '--temperature=0')
    assert code == 0, err
    ids = tok.encode('ROMEO:')
    expected = model.generate(torch.tensor([ids]), 10, temperature=0, n_vocab=tok.vocab_size)[0].tolist()
    assert out.split('\n---------------')[0] == tok.decode(expected)
    hf.save_hf_folder(model, str(tmp_path / 'none'), None)
    code, out, err = sample(f'--init_from=hf:{tmp_path / "none"}', '--num_samples=1', '--max_new_tokens=2')
    assert_one_line_error(type('R', (), dict(returncode=code, stdout=out, stderr=err)), '--dataset')


def test_sampling_options_against_greedy(run_dir, tmp_path):
    # top_k=1, a tiny top_p, a prompt from a file and the uncached path all give the greedy continuation
    # of the model (computed here), token for token
    folder, model, tok = run_dir
    prompt = tmp_path / 'prompt.txt'
    prompt.write_text('ROMEO:', encoding='utf-8')
    greedy = tok.decode(model.generate(torch.tensor([tok.encode('ROMEO:')]), 30, temperature=0,
                                       n_vocab=tok.vocab_size)[0].tolist())
    for extra in (['--temperature=0'], ['--temperature=1.0', '--top_k=1'], ['--temperature=1.0', '--top_p=1e-9'],
                  ['--temperature=0', f'--start=FILE:{prompt}'], ['--temperature=0', '--use_cache=False']):
        code, out, err = sample(f'--out_dir={folder}', '--start=ROMEO:', '--num_samples=2', '--max_new_tokens=30',
                                *extra)
        assert code == 0, err
        assert out.split('---------------\n')[:2] == [greedy + '\n'] * 2, extra
    # sampled (top_k=5 at temperature 1): two samples of one seeded batch differ, and the same seed repeats them
    runs = [sample(f'--out_dir={folder}', '--start=ROMEO:', '--num_samples=2', '--max_new_tokens=30',
                   '--temperature=1.0', '--top_k=5', '--seed=3')[1] for _ in range(2)]
    texts = runs[0].split('---------------\n')[:2]
    assert runs[0] == runs[1] and texts[0] != texts[1]


def test_a_temperature_beyond_float32_is_one_line_in_the_script_and_in_the_chat(run_dir, monkeypatch):
    import io
    folder, _, _ = run_dir
    for value in ('1e300', '3.5e38'):
        code, out, err = sample(f'--out_dir={folder}', '--max_new_tokens=3', f'--temperature={value}')
        assert_one_line_error(type('R', (), dict(returncode=code, stdout=out, stderr=err)), 'temperature')
    monkeypatch.setattr(sys, 'stdin', io.StringIO('/temp 1e300\n/temp 0\nROMEO:\n/quit\n'))
    code, out, err = sample(f'--out_dir={folder}', '--interactive=True', '--max_new_tokens=5')
    assert code == 0 and 'Traceback' not in err, err
    assert '(usage: /temp 0.7, a number from 0 to' in out and '(temperature 0)' in out


def test_a_mistyped_chat_command_is_not_sent_and_zero_new_tokens_are_none(run_dir, monkeypatch):
    import io
    folder, _, _ = run_dir
    monkeypatch.setattr(sys, 'stdin', io.StringIO('/tmep 0.5\n/quit\n'))
    code, out, err = sample(f'--out_dir={folder}', '--interactive=True', '--max_new_tokens=5')
    assert code == 0 and '(commands: /reset, /temp 0.7, /quit)' in out and 'bot>' not in out, out + err
    # the cached path sampled one token before it looked at the limit
    code, out, err = sample(f'--out_dir={folder}', '--start=ROMEO:', '--num_samples=2', '--max_new_tokens=0')
    assert code == 0 and out.split('---------------\n')[:2] == ['ROMEO:\n'] * 2, out


def test_one_sample_streams_and_ends_as_the_whole_text(run_dir):
    # a long single sample is printed as it is generated; what comes out is the whole decoded text
    folder, model, tok = run_dir
    code, out, err = sample(f'--out_dir={folder}', '--start=ROMEO:', '--num_samples=1', '--max_new_tokens=300',
                            '--temperature=0')
    assert code == 0, err
    expected = tok.decode(model.generate(torch.tensor([tok.encode('ROMEO:')]), 300, temperature=0,
                                         n_vocab=tok.vocab_size)[0].tolist())
    assert out == expected + '\n---------------\n', out[-200:]


@pytest.mark.parametrize('dtype', ['bfloat16', 'int8'])
def test_weights_in_16_and_8_bits_sample_what_they_should(run_dir, dtype):
    # the run's model in bf16 or int8 weights: greedy text equals the same conversion's engine output
    from core.inference import precision
    from core.inference.engine import Batch, Params, Sequence, run
    folder, model, tok = run_dir
    code, out, err = sample(f'--out_dir={folder}', '--start=ROMEO:', '--num_samples=1', '--max_new_tokens=20',
                            '--temperature=0', f'--dtype={dtype}')
    assert code == 0, err
    import copy
    low = precision.convert(copy.deepcopy(model).eval(), dtype)
    seq = Sequence(tok.encode('ROMEO:'), Params(max_tokens=20, temperature=0))
    with torch.no_grad():
        list(run(Batch(low, 1, 'cpu', n_vocab=tok.vocab_size), [seq]))
    assert out.split('\n---------------')[0] == tok.decode(tok.encode('ROMEO:') + seq.out)


def test_compile_true_runs_the_compiled_decode_step_and_says_so(run_dir):
    folder, model, tok = run_dir
    code, out, err = sample(f'--out_dir={folder}', '--start=ROMEO:', '--num_samples=2', '--max_new_tokens=40',
                            '--temperature=0', '--compile=True')
    assert code == 0, err
    assert 'decode: compiled (compile=True)' in err and 'compiled the decode step for 2 rows (greedy) in' in err, err
    expected = tok.decode(model.generate(torch.tensor([tok.encode('ROMEO:')]), 40, temperature=0,
                                         n_vocab=tok.vocab_size)[0].tolist())
    assert out.split('---------------\n')[:2] == [expected + '\n'] * 2
    # a short generation under compile=auto stays eager and says why, once
    code, out, err = sample(f'--out_dir={folder}', '--max_new_tokens=4')
    assert code == 0 and err.count('decode: eager (4 tokens') == 1, err


def test_sample_picks_its_threads_by_timing_unless_told(tmp_path):
    # with neither --threads nor OMP_NUM_THREADS, the faster of 1 and all cores is timed and named in one line
    import subprocess
    from conftest import REPO
    from test_serve import save_run
    save_run(str(tmp_path / 'run'))
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    args = [sys.executable, os.path.join(REPO, 'sample.py'), f'--out_dir={tmp_path / "run"}', '--num_samples=1',
            '--max_new_tokens=2', '--device=cpu', '--compile=False']
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    from core.hardware import available_cores
    if available_cores() > 1:  # the cores sample.py may use (a taskset to one core leaves nothing to choose)
        assert 'threads: ' in r.stderr and '--threads or OMP_NUM_THREADS chooses' in r.stderr, r.stderr
    r = subprocess.run(args + ['--threads=1'], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0 and 'threads: ' not in r.stderr, r.stderr
    r = subprocess.run(args + ['--threads=-1'], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 2 and r.stderr.count('error:') == 1 and 'threads must be' in r.stderr, r.stderr
