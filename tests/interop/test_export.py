"""export.py for every architecture: transformers loads what it writes (HF folders and GGUF) and computes
our logits; the tokenizers load with AutoTokenizer; a destination holding anything is never clobbered."""

import json
import os

import pytest
import torch

from core.training import checkpoint
from core.interop import hf
from core.data import tokenizer
from conftest import REPO, SWITCHES, assert_one_line_error, run_script, switch_id
from core.errors import UserError
from model import GPT, GPTConfig
from test_hf import export_in_process, our_logits, randomize

transformers = pytest.importorskip('transformers')

LLAMA = dict(norm='rmsnorm', pos_encoding='rope', mlp='swiglu', bias=False)
# the conftest list has no Llama-shaped model (its modern combination adds QK-norm and a soft cap)
# a rope base other than the default must reach transformers too (its config key moved between versions)
EXPORTED = SWITCHES + [LLAMA, dict(LLAMA, tie_embeddings=False), dict(LLAMA, bias=True), dict(LLAMA, rope_base=500.0)]
KIND = {switch_id(LLAMA): 'llama', switch_id(dict(LLAMA, tie_embeddings=False)): 'llama',
        switch_id(dict(LLAMA, bias=True)): 'llama', switch_id(dict(LLAMA, rope_base=500.0)): 'llama', 'gpt2': 'gpt2', 'tie_embeddings=False': 'gpt2', 'bias=False': 'gpt2'}
TEXT = open(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt'), encoding='utf-8').read()[:20000]


def tiny(vocab_size=67, n_embd=32, **switches):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=n_embd, block_size=16, vocab_size=vocab_size, **switches))
    randomize(model)
    return model.eval()


def their_logits(model, idx):
    with torch.no_grad():
        return model.eval()(idx).logits


@pytest.mark.parametrize('switches', EXPORTED, ids=switch_id)
def test_every_switch_combination_exports_with_our_logits(tmp_path, switches):
    ours = tiny(**switches)
    kind, files, _ = hf.save_hf_folder(ours, tmp_path / 'm', None)
    assert kind == KIND.get(switch_id(switches), 'custom')
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'm', trust_remote_code=(kind == 'custom'))
    assert type(theirs).__name__ == {'gpt2': 'GPT2LMHeadModel', 'llama': 'LlamaForCausalLM',
                                     'custom': 'NanoGPTForCausalLM'}[kind]
    idx = torch.randint(0, 67, (2, 16))
    torch.testing.assert_close(their_logits(theirs, idx), our_logits(ours, idx), atol=1e-4, rtol=0)
    # and hf:<folder> reads it back into our model
    back = hf.from_pretrained(f'hf:{tmp_path / "m"}')
    assert {k: v for k, v in back.config.to_dict().items() if k != 'dropout'} == \
        {k: v for k, v in ours.config.to_dict().items() if k != 'dropout'}
    torch.testing.assert_close(our_logits(back, idx), our_logits(ours, idx), atol=0, rtol=0)


def test_exports_know_every_switch_of_gptconfig():
    # a switch added to GPTConfig must be carried by the exports (hf.py, hf_modeling.py) before it can go out
    from core.interop import hf_modeling
    from model import CONFIG_KEYS
    assert set(CONFIG_KEYS) == set(hf.EXPORTED_KEYS) == set(hf_modeling.DEFAULTS)
    assert hf_modeling.DEFAULTS == GPTConfig().to_dict()


@pytest.mark.parametrize('switches', [dict(qk_norm=True), SWITCHES[-1]], ids=switch_id)
def test_the_modeling_file_handles_left_padded_batches(tmp_path, switches):
    # batched generation pads short prompts on the left: their rows must give the unpadded logits
    ours = tiny(**switches)
    hf.save_hf_folder(ours, tmp_path / 'm', None)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'm', trust_remote_code=True).eval()
    short, full = torch.randint(0, 67, (1, 11)), torch.randint(0, 67, (1, 16))
    batch = torch.cat([torch.cat([torch.zeros(1, 5, dtype=torch.long), short], 1), full])
    mask = torch.ones_like(batch)
    mask[0, :5] = 0
    with torch.no_grad():
        logits = theirs(batch, attention_mask=mask).logits
    torch.testing.assert_close(logits[0, 5:], our_logits(ours, short)[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(logits[1], our_logits(ours, full)[0], atol=1e-4, rtol=0)
    out = theirs.generate(batch, attention_mask=mask, max_new_tokens=3, do_sample=False)
    alone = theirs.generate(short, max_new_tokens=3, do_sample=False)
    assert out[0, 5:].tolist() == alone[0].tolist()


def test_the_modeling_file_needs_nothing_from_this_repo(tmp_path):
    # the folder is copied as is: a modeling file importing only torch and transformers cannot reach the repo
    import ast
    hf.save_hf_folder(tiny(**SWITCHES[-1]), tmp_path / 'm', None)
    tree = ast.parse((tmp_path / 'm' / 'modeling_nanogpt.py').read_text())
    imported = {alias.name.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {'torch', 'transformers'}
    assert all(node.level == 0 for node in ast.walk(tree) if isinstance(node, ast.ImportFrom))


@pytest.mark.parametrize('kind', ['char', 'char+eot', 'bpe'])
def test_tokenizers_load_with_autotokenizer_and_give_our_ids(tmp_path, kind):
    tok = {'char': lambda: tokenizer.char(TEXT), 'char+eot': lambda: tokenizer.char(TEXT, special_tokens=(tokenizer.EOT,)),
           'bpe': lambda: tokenizer.train_bpe([TEXT], 300)}[kind]()
    hf.save_hf_folder(tiny(vocab_size=320, **LLAMA), tmp_path / 'm', tok.state())
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / 'm')
    sample = TEXT[5000:7000] + (tokenizer.EOT + 'Exeunt' if tok.eot_token is not None else '')
    ids = tok.encode(sample)
    assert theirs(sample)['input_ids'] == ids
    assert theirs.decode(ids) == sample
    assert theirs.eos_token_id == tok.eot_token
    assert hf.folder_tokenizer(tmp_path / 'm').state() == tok.state()  # what sample.py --init_from=hf: uses


def test_gpt2_bpe_with_added_chat_tokens_goes_out_whole(tmp_path):
    # tokens added after GPT-2's 50257 (chat turns) must stay special tokens with their ids
    tok = tokenizer.gpt2(('<|user|>', '<|assistant|>'))
    hf.save_hf_folder(tiny(vocab_size=50304, gelu='tanh', bias=False), tmp_path / 'm', tok.state())
    text = "<|user|>Hello world! It's<|endoftext|>   naïve café<|assistant|>日本語\n\n"
    ids = tok.encode(text)
    assert ids[0] == 50257 and 50258 in ids
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / 'm')
    assert theirs(text)['input_ids'] == ids and theirs.decode(ids) == text
    assert hf.folder_tokenizer(tmp_path / 'm').state() == tok.state()


@pytest.mark.parametrize('switches', [dict(bias=False, gelu='tanh'), dict(LLAMA, tie_embeddings=False)], ids=switch_id)
def test_gguf_is_read_back_by_transformers_with_our_logits(tmp_path, switches):
    pytest.importorskip('gguf')
    pytest.importorskip('accelerate')  # transformers needs it for gguf_file=
    from core.interop import gguf as gguf_export
    ours = tiny(vocab_size=128, n_embd=64, **switches)  # q8_0 blocks are 32 values: rows of 64
    tok = tokenizer.char(TEXT)
    idx = torch.randint(0, tok.vocab_size, (2, 16))
    for dtype, tol in (('float32', 1e-4), ('q8_0', 0.05)):
        arch, note = gguf_export.save_gguf(ours, tmp_path / f'{dtype}.gguf', tok.state(), dtype)
        assert note is None
        theirs = load_gguf(tmp_path, f'{dtype}.gguf', arch)
        assert type(theirs).__name__ == ('GPT2LMHeadModel' if arch == 'gpt2' else 'LlamaForCausalLM')
        # q8_0: one int8 per weight with an f16 scale per 32; the logits (about +-2 here) move by < 0.05
        torch.testing.assert_close(their_logits(theirs, idx), our_logits(ours, idx), atol=tol, rtol=0)
    # the tokenizer travels as metadata, and transformers rebuilds it with our ids
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file='float32.gguf')
    assert theirs(TEXT[3000:4000])['input_ids'] == tok.encode(TEXT[3000:4000])


def load_gguf(folder, name, arch):
    # transformers' GGUF reader maps gpt2.context_length (the position table's rows) to n_ctx, which GPT2Config ignores
    import gguf
    extra = {}
    if arch == 'gpt2':
        extra['n_positions'] = int(gguf.GGUFReader(os.path.join(folder, name)).fields['gpt2.context_length'].parts[-1][0])
    return transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, **extra)


def test_gguf_of_an_erf_model_states_what_it_gives_up(tmp_path):
    # llama.cpp's gpt2 has only the tanh GELU: the note's bound must hold for what transformers computes
    pytest.importorskip('gguf')
    pytest.importorskip('accelerate')
    from core.interop import gguf as gguf_export
    ours = tiny(vocab_size=128, n_embd=64, gelu='erf')
    arch, note = gguf_export.save_gguf(ours, tmp_path / 'm.gguf', tokenizer.char(TEXT).state())
    gap = float(note.split('up to ')[1].split(' ')[0])
    idx = torch.randint(0, 65, (1, 16), generator=torch.Generator().manual_seed(0))
    diff = (their_logits(load_gguf(tmp_path, 'm.gguf', arch), idx) - our_logits(ours, idx)).abs().max().item()
    assert 0 < diff <= gap * 1.5 + 1e-5, (diff, gap)


def test_gguf_refuses_models_it_cannot_hold_in_one_line(tmp_path):
    from core.interop import gguf as gguf_export
    with pytest.raises(UserError, match=r"qk_norm=True.*--format=hf"):
        gguf_export.save_gguf(tiny(**dict(LLAMA, qk_norm=True)), tmp_path / 'm.gguf', {'kind': 'gpt2'})
    with pytest.raises(UserError, match=r"bias=True"):
        gguf_export.save_gguf(tiny(**dict(LLAMA, bias=True)), tmp_path / 'm.gguf', {'kind': 'gpt2'})
    assert os.listdir(tmp_path) == []


def save_run(folder, switches=None, tok=None):
    model = tiny(**(switches or {}))
    os.makedirs(folder, exist_ok=True)
    state = {'model': model.state_dict(), 'model_args': model.config.to_dict(), 'iter_num': 3, 'config': {},
             'tokenizer': (tok or tokenizer.char(TEXT)).state()}
    checkpoint.save(state, os.path.join(folder, 'ckpt.pt'))
    return model, state


def test_export_never_deletes_what_it_did_not_write(tmp_path):
    # the reported loss: --dest=. in a folder holding a thesis deleted everything there
    save_run(tmp_path / 'run', dict(qk_norm=True))
    home = tmp_path / 'home'
    (home / 'src').mkdir(parents=True)
    (home / 'src' / 'main.c').write_text('int main;')
    (home / 'thesis.tex').write_text('\\begin{document}')
    (home / 'config.json').write_text('{"mine": true}')
    before = sorted(os.listdir(home))
    r = run_script('export.py', f'--out_dir={tmp_path / "run"}', '--dest=.', cwd=home, timeout=120)
    assert_one_line_error(r, 'not empty', '--force')
    assert r.returncode == 2
    assert sorted(os.listdir(home)) == before and json.loads((home / 'config.json').read_text()) == {'mine': True}
    # --force replaces the files export writes and nothing else
    export_in_process(f'--out_dir={tmp_path / "run"}', f'--dest={home}', '--force=True')
    assert (home / 'thesis.tex').read_text() == '\\begin{document}' and (home / 'src' / 'main.c').exists()
    assert json.loads((home / 'config.json').read_text())['model_type'] == 'nanogpt'
    assert {'model.safetensors', 'modeling_nanogpt.py', 'tokenizer.json'} <= set(os.listdir(home))
    assert not [n for n in os.listdir(home) if n.endswith('.tmp')]


def test_export_bad_inputs_are_one_line_and_write_nothing(tmp_path):
    run = tmp_path / 'run'
    model, state = save_run(run)
    cases = [
        ([f'--out_dir={tmp_path / "nowhere"}'], 'does not exist'),
        ([f'--out_dir={tmp_path}'], 'no checkpoint in'),
        ([f'--out_dir={run}', '--format=onnx'], "--format='onnx'"),
        ([f'--out_dir={run}', '--format=gguf', '--dtype=q4_k'], "q4_k"),
        ([f'--out_dir={run}', f'--dest={run / "ckpt.pt" / "sub" / "m"}'], 'cannot create its folder'),
    ]
    for args, fragment in cases:
        with pytest.raises(UserError, match=fragment.replace('-', r'\-').replace('.', r'\.')):
            export_in_process(*args)
    # a corrupt file and one that lacks a weight: the message names the key
    (tmp_path / 'bad.pt').write_bytes(b'not a checkpoint at all' * 10)
    with pytest.raises(UserError, match='corrupted'):
        export_in_process(f'--out_dir={tmp_path / "bad.pt"}')
    del state['model']['transformer.h.1.mlp.c_fc.weight']
    checkpoint.save(state, tmp_path / 'lacking.pt')
    with pytest.raises(UserError, match=r'lacks transformer\.h\.1\.mlp\.c_fc\.weight'):
        export_in_process(f'--out_dir={tmp_path / "lacking.pt"}')
    # a gguf over an existing file needs --force
    (tmp_path / 'm.gguf').write_bytes(b'mine')
    with pytest.raises(UserError, match='exists.*--force'):
        export_in_process(f'--out_dir={run}', '--format=gguf', f'--dest={tmp_path / "m.gguf"}')
    assert (tmp_path / 'm.gguf').read_bytes() == b'mine'
    assert sorted(os.listdir(run)) == ['ckpt.pt']
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp') or n.startswith('.')]


@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='needs /proc, a place nobody can write, root included')
def test_export_to_an_unwritable_place_is_one_line(tmp_path):
    save_run(tmp_path / 'run')
    for fmt in ('hf', 'gguf'):
        with pytest.raises(UserError, match='/proc/self/my-model'):
            export_in_process(f'--out_dir={tmp_path / "run"}', f'--format={fmt}', '--dest=/proc/self/my-model')
