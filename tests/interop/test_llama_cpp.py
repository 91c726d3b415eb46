"""Every GGUF export.py writes, run by llama.cpp itself (llama-cpp-python): it loads, tokenizes text to our
ids, computes our logits, and greedy-decodes our tokens; generation past block_size ends without an abort.

Skipped when llama-cpp-python is not installed: python3 -m pip install llama-cpp-python==0.3.36
(it builds llama.cpp from source, about 8 minutes on 2 cores)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from core.data import tokenizer
from core.interop import gguf as gguf_export
from model import GPT, GPTConfig
from test_hf import our_logits, randomize

llama_cpp = pytest.importorskip('llama_cpp', reason='llama.cpp is not installed: '
                                'python3 -m pip install llama-cpp-python==0.3.36')
pytest.importorskip('gguf')

TEXT = open(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt'), encoding='utf-8').read()[:20000]
# characters of one, two, three and four bytes, so the char vocabulary needs its merges
EXTRA = ' naïve café — 日本語 🙂 '
SHAPES = {'gpt2': dict(gelu='tanh'), 'llama': dict(norm='rmsnorm', pos_encoding='rope', mlp='swiglu', bias=False,
                                                   rope_base=5000.0)}
BLOCK = 64  # prompt and greedy tokens fit in it; not a multiple of 256, so a gpt2 file pads its positions


@pytest.fixture(scope='module')
def tokenizers():
    return {'char': tokenizer.char(TEXT + EXTRA, special_tokens=(tokenizer.EOT,)),
            'bpe': tokenizer.train_bpe([TEXT + EXTRA], 320),
            'gpt2': tokenizer.gpt2()}


def tiny(tok, shape, block_size=BLOCK):
    torch.manual_seed(0)
    rows = -(-tok.vocab_size // 64) * 64  # padded as train.py pads, so the file has spare rows
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=block_size, vocab_size=rows, **SHAPES[shape]))
    randomize(model)
    with torch.no_grad():  # a wider spread of logits, so a near-tie cannot flip a greedy step by rounding
        model.lm_head.weight.mul_(4)
    return model.eval()


def load(path, **kw):
    return llama_cpp.Llama(str(path), n_threads=1, verbose=False, logits_all=True, **kw)


def their_logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)])


def sample_text(kind):
    return TEXT[3000:3200] + EXTRA + (tokenizer.EOT + 'Exeunt' if kind == 'char' else '')


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('kind', ['char', 'bpe', 'gpt2'])
def test_llama_cpp_runs_every_gguf_with_our_ids_and_logits(tmp_path, tokenizers, kind, shape):
    tok = tokenizers[kind]
    model = tiny(tok, shape)
    text = sample_text(kind)
    ids = tok.encode(text)
    prompt = ids[:12]
    with torch.no_grad():
        ours_all = our_logits(model, torch.tensor([ids[:BLOCK]]))[0].numpy()
        greedy = model.generate(torch.tensor([prompt]), 50, temperature=0)[0, len(prompt):].tolist()
    # f16 and quantized weights move the logits (spread about +-10 here) by their rounding: bounds a few
    # times what each costs; the gpt2 shape adds llama.cpp's f16 GELU table, the llama shape is f32 throughout
    bound = {'float32': 5e-3 if shape == 'gpt2' else 5e-5, 'float16': 0.02, 'q8_0': 0.4, 'q4_0': 4.0}
    for dtype in gguf_export.DTYPES:
        path = tmp_path / f'{dtype}.gguf'
        gguf_export.save_gguf(model, path, tok.state(), dtype)
        llm = load(path, n_ctx=BLOCK, type_k=0, type_v=0)  # an f32 KV cache: llama.cpp's default is f16
        assert llm.n_vocab() == model.config.vocab_size and llm.token_eos() == tok.eot_token
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids, dtype
        assert llm.detokenize(ids, special=True).decode() == text
        theirs = their_logits(llm, ids[:BLOCK])
        diff = np.abs(theirs - ours_all).max()
        assert diff < bound[dtype], (dtype, diff)
        if dtype == 'float32':
            assert (theirs.argmax(-1) == ours_all.argmax(-1)).all()
            llm.reset()
            llm.eval(prompt)
            out = []
            for _ in range(50):
                out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
                llm.eval([out[-1]])
            assert out == greedy
        del llm


PAST_BLOCK = """
import sys, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=1, verbose=False)
n = llm.n_ctx()
llm.eval([1] * 8)
while llm.n_tokens < n:
    llm.eval([1])
print(n, llm.n_tokens)
"""


@pytest.mark.parametrize('shape', SHAPES)
def test_generation_past_block_size_does_not_abort_llama_cpp(tmp_path, tokenizers, shape):
    # llama.cpp rounds its context up to 256 positions; a gpt2 position table of block_size rows made it
    # abort the whole process (GGML_ASSERT in get_rows) once generation passed block_size, so run it apart
    model = tiny(tokenizers['char'], shape, block_size=40)
    path = tmp_path / 'm.gguf'
    gguf_export.save_gguf(model, path, tokenizers['char'].state(), 'float32')
    for n_ctx in (0, 40):  # the file's own context length, and block_size asked for explicitly
        r = subprocess.run([sys.executable, '-c', PAST_BLOCK, str(path), str(n_ctx)], capture_output=True,
                           text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS='1'))
        assert r.returncode == 0, r.stderr[-2000:]
        n, done = map(int, r.stdout.split())
        assert n >= 256 and done == n  # it ran through every position of the context it allocated


def test_gguf_tells_llama_cpp_the_context_its_positions_cover(tmp_path, tokenizers):
    import gguf
    for shape, context in (('gpt2', 256), ('llama', 40)):
        model = tiny(tokenizers['char'], shape, block_size=40)
        gguf_export.save_gguf(model, tmp_path / f'{shape}.gguf', tokenizers['char'].state(), 'float32')
        reader = gguf.GGUFReader(tmp_path / f'{shape}.gguf')
        assert int(reader.fields[f'{shape}.context_length'].parts[-1][0]) == context
        if shape == 'gpt2':
            table = next(t for t in reader.tensors if t.name == 'position_embd.weight')
            rows = np.array(table.data).reshape(context, 64)
            wpe = model.transformer.wpe.weight.detach().numpy()
            np.testing.assert_array_equal(rows[:40], wpe)
            np.testing.assert_array_equal(rows[40:], np.repeat(wpe[-1:], context - 40, axis=0))


VARIANTS = {'gpt2 without biases, untied': dict(gelu='tanh', bias=False, tie_embeddings=False),
            'llama untied': dict(SHAPES['llama'], tie_embeddings=False),
            'gpt2 with the erf GELU': dict(gelu='erf'),
            'llama with muP': dict(SHAPES['llama'], mup=True, mup_base_width=32),  # folded into the weights
            'gpt2 with muP': dict(gelu='tanh', mup=True, mup_base_width=32)}


@pytest.mark.parametrize('name', VARIANTS)
def test_the_other_switches_gguf_takes_run_too(tmp_path, tokenizers, name):
    # every switch combination gguf_arch accepts must run in llama.cpp, with our logits (the erf model within
    # the bound its export note states, plus llama.cpp's own rounding)
    tok = tokenizers['bpe']
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=BLOCK, vocab_size=384, **VARIANTS[name]))
    randomize(model)
    model.eval()
    _, note = gguf_export.save_gguf(model, tmp_path / 'm.gguf', tok.state())
    ids = tok.encode(sample_text('bpe'))[:BLOCK]
    with torch.no_grad():
        ours = our_logits(model, torch.tensor([ids]))[0].numpy()
    theirs = their_logits(load(tmp_path / 'm.gguf', n_ctx=BLOCK, type_k=0, type_v=0), ids)
    bound = 5e-3 + (float(note.split('up to ')[1].split(' ')[0]) * 1.5 if note else 0)
    assert np.abs(theirs - ours).max() < bound


def test_export_script_writes_what_llama_cpp_runs(tmp_path):
    # the whole way a user goes: a run's checkpoint, export.py --format=gguf, llama.cpp
    from conftest import run_inprocess
    from core.training import checkpoint
    tok = tokenizer.char(TEXT)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=BLOCK, vocab_size=tok.vocab_size + 3))
    os.makedirs(tmp_path / 'run')
    checkpoint.save({'model': model.state_dict(), 'model_args': model.config.to_dict(), 'iter_num': 3, 'config': {},
                     'tokenizer': tok.state()}, str(tmp_path / 'run' / 'ckpt.pt'))
    code, out, err = run_inprocess('export.py', f'--out_dir={tmp_path / "run"}', '--format=gguf', '--dtype=q8_0')
    assert code == 0, err
    assert 'f16 KV cache' in out or 'KV cache in f16' in out
    llm = load(tmp_path / 'run' / 'model-q8_0.gguf', n_ctx=0)
    text = TEXT[5000:5400]
    assert llm.tokenize(text.encode(), add_bos=False) == tok.encode(text)
    assert llm.token_eos() >= tok.vocab_size  # a padding row: no character of the text ends it
    done = llm.create_completion(text[:20], max_tokens=20, temperature=0.8)
    assert set(done['choices'][0]['text']) <= set(tok.chars)
