"""A GGUF file as its reader sees it (the gguf package's GGUFReader): the tokenizer's tokens and merges, each
tensor's type after quantization, the rope base and context length; and stale temporary files of a killed
export are cleaned by the next one, never anything else."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.data import tokenizer
from core.interop import export_dest
from core.interop import gguf as gguf_export
from model import GPT, GPTConfig
from test_hf import randomize

gguf = pytest.importorskip('gguf')

LLAMA = dict(norm='rmsnorm', pos_encoding='rope', mlp='swiglu', bias=False)


def tiny(vocab_size=128, **switches):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=64, block_size=16, vocab_size=vocab_size, **switches))
    randomize(model)
    return model.eval()


def field(reader, key):
    f = reader.fields[key]
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode('utf-8') for i in f.data]
        return [f.parts[i][0].item() for i in f.data]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[-1]).decode('utf-8')
    return f.parts[-1][0].item()


def test_char_vocabulary_goes_with_merges_that_join_each_characters_bytes(tmp_path):
    tok = tokenizer.char('ab é日', special_tokens=(tokenizer.EOT,))  # ' ', 'a', 'b', 'é', '日', then EOT
    gguf_export.save_gguf(tiny(**LLAMA), tmp_path / 'm.gguf', tok.state())
    r = gguf.GGUFReader(tmp_path / 'm.gguf')
    assert field(r, 'tokenizer.ggml.model') == 'gpt2'
    tokens, types = field(r, 'tokenizer.ggml.tokens'), field(r, 'tokenizer.ggml.token_type')
    # GPT-2's byte alphabet, worked out by hand: ' ' is 'Ġ'; é is C3 A9 -> 'Ã©'; 日 is E6 97 A5 -> 'æĹ¥'
    assert tokens[:6] == ['Ġ', 'a', 'b', 'Ã©', 'æĹ¥', tokenizer.EOT]
    assert field(r, 'tokenizer.ggml.merges') == ['Ã ©', 'æ Ĺ', 'æĹ ¥']
    assert types[5] == gguf.TokenType.CONTROL and field(r, 'tokenizer.ggml.eos_token_id') == 5
    # the pieces the merges join sit in spare rows, unused, so transformers can rebuild the merges
    assert set(tokens[6:12]) == {'Ã', '©', 'æ', 'Ĺ', 'æĹ', '¥'} and tokens[12] == '[PAD12]' and len(tokens) == 128
    assert set(types[:5]) == {gguf.TokenType.NORMAL} and set(types[6:]) == {gguf.TokenType.UNUSED}


def test_ascii_char_vocabulary_still_has_a_merge_and_no_spare_rows_are_needed(tmp_path):
    tok = tokenizer.char('hello world')
    gguf_export.save_gguf(tiny(vocab_size=tok.vocab_size, **LLAMA), tmp_path / 'm.gguf', tok.state())
    r = gguf.GGUFReader(tmp_path / 'm.gguf')
    assert field(r, 'tokenizer.ggml.merges') == ['ø ù']  # bytes F8 F9, which UTF-8 never contains
    assert field(r, 'tokenizer.ggml.tokens') == ['Ġ', 'd', 'e', 'h', 'l', 'o', 'r', 'w']


def test_without_an_endoftext_the_end_of_text_is_a_padding_row(tmp_path):
    # llama.cpp's default end of text for a 'gpt2' vocabulary is id 11, a real character here
    tok = tokenizer.char('To be, or not to be: that is the question.')
    _, note = gguf_export.save_gguf(tiny(**LLAMA), tmp_path / 'pad.gguf', tok.state())
    r = gguf.GGUFReader(tmp_path / 'pad.gguf')
    eos, tokens = field(r, 'tokenizer.ggml.eos_token_id'), field(r, 'tokenizer.ggml.tokens')
    assert eos >= tok.vocab_size and tokens[eos] == f'[PAD{eos}]' and field(r, 'tokenizer.ggml.bos_token_id') == eos
    assert note is None
    # no spare row at all: said at export, with what to do
    full = tokenizer.char(''.join(chr(c) for c in range(0x20, 0x7f)) + 'øù')
    _, note = gguf_export.save_gguf(tiny(vocab_size=full.vocab_size, **LLAMA), tmp_path / 'full.gguf', full.state())
    assert 'id 11' in note and '--ignore-eos' in note
    assert 'tokenizer.ggml.eos_token_id' not in gguf.GGUFReader(tmp_path / 'full.gguf').fields


def test_transformers_rebuilds_a_non_ascii_char_tokenizer_from_the_gguf(tmp_path):
    transformers = pytest.importorskip('transformers')
    text = 'To be, or not to be: naïve café — 日本語 🙂\n'
    tok = tokenizer.char(text * 3, special_tokens=(tokenizer.EOT,))
    gguf_export.save_gguf(tiny(**LLAMA), tmp_path / 'm.gguf', tok.state())
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file='m.gguf')
    sample = text + tokenizer.EOT + text
    assert theirs(sample)['input_ids'] == tok.encode(sample)
    assert theirs.decode(tok.encode(sample)) == sample


# 2-D weights whose rows are a multiple of 32 values are quantized; the others stay f16; 1-D ones stay f32
EXPECTED = {'float32': ('F32', 'F32'), 'float16': ('F16', 'F16'), 'q8_0': ('Q8_0', 'F16'), 'q4_0': ('Q4_0', 'F16')}


@pytest.mark.parametrize('switches', [dict(gelu='tanh'), LLAMA], ids=['gpt2', 'llama'])
@pytest.mark.parametrize('dtype', gguf_export.DTYPES)
def test_tensor_types_are_what_the_dtype_says(tmp_path, dtype, switches):
    model = tiny(**switches)
    gguf_export.save_gguf(model, tmp_path / 'm.gguf', tokenizer.char('abc').state(), dtype)
    r = gguf.GGUFReader(tmp_path / 'm.gguf')
    blocked, other = EXPECTED[dtype]
    for t in r.tensors:
        shape = [int(n) for n in t.shape]  # GGUF's order: the row length first
        want = 'F32' if len(shape) == 1 else blocked if shape[0] % 32 == 0 else other
        assert t.tensor_type.name == want, (t.name, shape, t.tensor_type.name)
    assert field(r, 'general.file_type') == {'float32': 0, 'float16': 1, 'q8_0': 7, 'q4_0': 2}[dtype]
    if dtype in ('q8_0', 'q4_0'):
        # the quantized matrices hold our weights to their rounding: dequantized, each is near ours
        ours = gguf_export.gguf_tensors(model, 'gpt2' if 'gelu' in switches else 'llama')
        for t in r.tensors:
            if t.tensor_type.name == blocked:
                back = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ours[t.name].shape)
                scale = np.abs(ours[t.name]).max()
                assert np.abs(back - ours[t.name]).max() <= scale * (1 / 127 if dtype == 'q8_0' else 1 / 7), t.name


def test_rope_base_and_context_length_reach_the_file(tmp_path):
    gguf_export.save_gguf(tiny(**dict(LLAMA, rope_base=500000.0)), tmp_path / 'm.gguf', tokenizer.char('abc').state())
    r = gguf.GGUFReader(tmp_path / 'm.gguf')
    assert field(r, 'llama.rope.freq_base') == 500000.0
    assert field(r, 'llama.context_length') == 16 and field(r, 'llama.rope.dimension_count') == 32


KILLED = """
import os, sys
from core.interop import export_dest
def writer(path):
    with open(path, 'wb') as f:
        f.write(b'half')
    os._exit(9)
export_dest.export_file(sys.argv[1], writer)
"""
KILLED_FOLDER = """
import os, sys
from core.interop import export_dest
export_dest.export_folder(sys.argv[1], {'a.json': 'x', 'b.bin': lambda path: os._exit(9)}, force=len(sys.argv) > 2)
"""


def test_a_killed_export_leaves_temporaries_the_next_export_removes(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)

    def killed(script, *args):
        subprocess.run([sys.executable, '-c', script, *map(str, args)], env=env, timeout=60)

    killed(KILLED, tmp_path / 'm.gguf')
    killed(KILLED_FOLDER, tmp_path / 'hf')
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'keep.txt').write_text('keep')
    killed(KILLED_FOLDER, tmp_path / 'mine', 'force')
    left = sorted(os.listdir(tmp_path))
    assert [n for n in left if n.startswith('.m.gguf.')] and [n for n in left if n.startswith('.hf.')]
    assert [n for n in os.listdir(tmp_path / 'mine') if n.startswith('.export.')]
    # look-alikes that are not ours or whose writer lives: a live pid, a name without our random part, a file
    alive = f'.hf.{os.getpid()}.abcd1234.tmp'
    others = [alive, '.hf.1.tmp', '.hf.notapid.abcd1234.tmp', '.other.999999.abcd1234.tmp']
    for n in others:
        (tmp_path / n).mkdir()
    export_dest.export_file(tmp_path / 'm.gguf', lambda p: open(p, 'wb').write(b'whole'))
    export_dest.export_folder(tmp_path / 'hf', {'a.json': 'y'})
    export_dest.export_folder(tmp_path / 'mine', {'a.json': 'y'}, force=True)
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith('.')) == sorted(others)
    assert sorted(os.listdir(tmp_path / 'mine')) == ['a.json', 'keep.txt']
    assert (tmp_path / 'm.gguf').read_bytes() == b'whole' and (tmp_path / 'hf' / 'a.json').read_text() == 'y'


def test_gpt2_position_rows_past_block_size_repeat_the_last_trained_row(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=20, vocab_size=64, gelu='tanh')).eval()
    gguf_export.save_gguf(model, tmp_path / 'm.gguf', tokenizer.char('abc').state())
    r = gguf.GGUFReader(tmp_path / 'm.gguf')
    table = next(t for t in r.tensors if t.name == 'position_embd.weight')
    rows = np.asarray(table.data, dtype=np.float32).reshape(-1, 32)
    wpe = model.transformer.wpe.weight.detach().numpy()
    assert rows.shape == (256, 32)  # llama.cpp's context padding: 20 rounded up to 256
    assert field(r, 'gpt2.context_length') == 256
    np.testing.assert_array_equal(rows[:20], wpe)
    np.testing.assert_array_equal(rows[20:], np.repeat(wpe[19:20], 236, axis=0))


def test_merge_pieces_take_the_spare_rows_when_there_are_exactly_enough(tmp_path):
    tok = tokenizer.char('ab é日', special_tokens=(tokenizer.EOT,))  # ' ', 'a', 'b', 'é', '日', then EOT: 6 ids
    # the merges join é's bytes (Ã ©) and 日's (æ Ĺ, then æĹ ¥): six pieces, and 12 rows leave exactly six spare
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=12, norm='rmsnorm',
                          pos_encoding='rope', mlp='swiglu', bias=False)).eval()
    gguf_export.save_gguf(model, tmp_path / 'm.gguf', tok.state())
    tokens = field(gguf.GGUFReader(tmp_path / 'm.gguf'), 'tokenizer.ggml.tokens')
    assert tokens[:6] == ['Ġ', 'a', 'b', 'Ã©', 'æĹ¥', tokenizer.EOT]
    assert sorted(tokens[6:]) == sorted(['Ã', '©', 'æ', 'Ĺ', 'æĹ', '¥'])
