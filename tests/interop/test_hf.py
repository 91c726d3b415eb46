"""GPT-2 weights in and out: our model against transformers' GPT2LMHeadModel on the same weights."""

import contextlib
import io
import json
import os
import runpy
import sys
import time

import pytest
import torch

from core.training import checkpoint
from core.interop import hf
from core.data import tokenizer
from conftest import REPO, TINY, assert_one_line_error, run_script
from core.errors import UserError
from model import GPT, GPTConfig

transformers = pytest.importorskip('transformers')


def randomize(module, seed=0):
    # default inits leave biases at 0 and norm gains at 1, which would hide a misplaced one
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def our_logits(model, idx):
    model.eval()
    with torch.no_grad():
        return model.head(model.hidden_states(idx))


def hf_logits(model, idx):
    model.eval()
    with torch.no_grad():
        return model(idx).logits


def tiny_hf(vocab_size=101, n_positions=24, tie=True):
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=vocab_size, n_positions=n_positions,
                                  bos_token_id=0, eos_token_id=0, tie_word_embeddings=tie)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    randomize(model)
    return model


@pytest.mark.parametrize('tie', [True, False])
def test_hf_folder_loads_with_the_same_logits(tmp_path, tie):
    ref = tiny_hf(tie=tie)
    ref.save_pretrained(tmp_path)
    assert (tmp_path / 'model.safetensors').exists()
    ours = hf.from_pretrained(f'hf:{tmp_path}', dropout=0.1)
    assert ours.config.block_size == 24 and ours.config.vocab_size == 101 and ours.config.dropout == 0.1
    assert ours.config.tie_embeddings == tie
    assert (ours.lm_head.weight is ours.transformer.wte.weight) == tie  # one tensor, as GPT builds it
    idx = torch.randint(0, 101, (2, 24))
    torch.testing.assert_close(our_logits(ours, idx), hf_logits(ref, idx), atol=1e-5, rtol=0)


def test_hf_folder_with_pickled_weights_and_hub_names(tmp_path):
    # the hub's own files name tensors without 'transformer.' and keep the attention-mask buffers
    ref = tiny_hf()
    ref.config.save_pretrained(tmp_path)
    state = {k[len('transformer.'):]: v for k, v in ref.state_dict().items() if k.startswith('transformer.')}
    for i in range(2):
        state[f'h.{i}.attn.bias'] = torch.ones(1, 1, 24, 24).tril()
    torch.save(state, tmp_path / 'pytorch_model.bin')
    ours = hf.from_pretrained(f'hf:{tmp_path}')
    idx = torch.randint(0, 101, (3, 11))
    torch.testing.assert_close(our_logits(ours, idx), hf_logits(ref, idx), atol=1e-5, rtol=0)


def test_bad_hf_folders_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match='no config.json'):
        hf.from_pretrained(f'hf:{tmp_path}')
    tiny_hf().config.save_pretrained(tmp_path)
    with pytest.raises(UserError, match='no model.safetensors'):
        hf.from_pretrained(f'hf:{tmp_path}')
    cfg = json.loads((tmp_path / 'config.json').read_text())
    cfg['activation_function'] = 'relu'
    (tmp_path / 'config.json').write_text(json.dumps(cfg))
    with pytest.raises(UserError, match='activation_function'):
        hf.hf_gpt2_to_config(cfg)


def test_a_string_where_a_number_belongs_names_the_field(tmp_path):
    # each was "'<=' not supported between instances of 'str' and 'int'" (or a bare TypeError)
    tiny_hf().save_pretrained(tmp_path / 'gpt2')
    exported = tmp_path / 'custom'
    hf.save_hf_folder(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11, qk_norm=True)),
                      exported)
    llama = dict(model_type='llama', hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                 max_position_embeddings=16, vocab_size=11, intermediate_size=85)
    (tmp_path / 'llama').mkdir()
    torch.save({}, tmp_path / 'llama' / 'pytorch_model.bin')
    (tmp_path / 'llama' / 'config.json').write_text(json.dumps(llama))
    configs = {f: json.loads((f / 'config.json').read_text()) for f in (tmp_path / 'gpt2', exported, tmp_path / 'llama')}
    for folder, key, value in ((tmp_path / 'gpt2', 'n_layer', '2'), (tmp_path / 'gpt2', 'layer_norm_epsilon', '1e-5'),
                               (exported, 'n_layer', '1'), (exported, 'rope_base', 'big'),
                               (tmp_path / 'llama', 'hidden_size', '32')):
        (folder / 'config.json').write_text(json.dumps({**configs[folder], key: value}))
        with pytest.raises(UserError) as e:
            hf.from_pretrained(f'hf:{folder}')
        assert key in str(e.value) and 'not supported' not in str(e.value), str(e.value)
    # a checkpoint's model_args go through the same check
    state = {'model': {}, 'model_args': dict(n_layer='2', n_head=2, n_embd=16, block_size=8, vocab_size=11)}
    with pytest.raises(UserError, match="n_layer must be an integer, got '2'"):
        checkpoint.build_model(state, 'ckpt.pt')


def test_gpt2_offline_fails_fast_with_one_line(char_data, tmp_path):
    env = {'HF_HUB_OFFLINE': '1', 'HF_HOME': str(tmp_path / 'hf-home')}
    t0 = time.time()
    # a char dataset would be refused first (GPT-2's ids); allowed here, the download is what fails
    r = run_script('train.py', f'--dataset={char_data}', f'--out_dir={tmp_path}/out', '--init_from=gpt2',
                   '--max_iters=0', '--allow_dataset_change=True', *TINY, env=env, timeout=120)
    assert_one_line_error(r, 'openai-community/gpt2', 'hf:')
    assert time.time() - t0 < 60


def export_in_process(*args):
    # export.py is a script; running it here saves a fresh interpreter's torch import
    argv = sys.argv
    sys.argv = [os.path.join(REPO, 'export.py'), *args]
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            runpy.run_path(sys.argv[0], run_name='__main__')
    finally:
        sys.argv = argv
    return out.getvalue()


def save_tiny_checkpoint(out_dir, tok_state, iter_num=7, **kw):
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50304, bias=True, dropout=0.0)
    args.update(kw)
    torch.manual_seed(1)
    model = GPT(GPTConfig(**args))
    randomize(model, seed=1)
    os.makedirs(out_dir, exist_ok=True)
    ckpt = {'model': model.state_dict(), 'model_args': model.config.to_dict(), 'iter_num': iter_num,
            'tokenizer': tok_state, 'config': {}}
    checkpoint.save(ckpt, os.path.join(out_dir, 'ckpt.pt'))
    return model


def test_export_gpt2_checkpoint_round_trips_through_transformers(tmp_path):
    # a padded vocab (50304 rows for 50257 tokens) and no biases, the repo's defaults for GPT-2 data
    out = tmp_path / 'run'
    ours = save_tiny_checkpoint(out, {'kind': 'gpt2'}, bias=False)
    export_in_process(f'--out_dir={out}', '--to=hf_folder')
    folder = out / 'hf'
    assert {'config.json', 'model.safetensors', 'vocab.json', 'merges.txt'} <= set(os.listdir(folder))
    assert not [n for n in os.listdir(out) if n.endswith('.tmp')]
    theirs = transformers.GPT2LMHeadModel.from_pretrained(folder)
    assert theirs.config.vocab_size == 50304
    idx = torch.randint(0, 50304, (2, 16))
    torch.testing.assert_close(hf_logits(theirs, idx), our_logits(ours, idx), atol=1e-5, rtol=0)

    # the tokenizer files encode as our tiktoken-based GPT-2 tokenizer does
    text = "Hello world! It's 2024 — naïve café, 日本語, tabs\t\tand  spaces.\n\n<|endoftext|>The end"
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.gpt2().encode(text)
    assert hf_tok(text)['input_ids'] == ids
    assert hf_tok.decode(ids) == text
    assert hf_tok.eos_token_id == 50256


def test_export_prefers_best_and_keeps_untied_heads(tmp_path):
    out = tmp_path / 'run'
    save_tiny_checkpoint(out, {'kind': 'char', 'chars': list('abc'), 'special_tokens': {}}, vocab_size=3)
    best = save_tiny_checkpoint(tmp_path / 'other', None, vocab_size=3, tie_embeddings=False)
    os.replace(tmp_path / 'other' / 'ckpt.pt', out / 'best.pt')
    hf.save_hf_folder(GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=4, vocab_size=3)),
                      tmp_path / 'exported')  # an earlier export, to be replaced whole
    printed = export_in_process(f'--out_dir={out}', f'--dest={tmp_path / "exported"}', '--force=True')
    assert 'best.pt' in printed
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / 'exported')
    assert theirs.config.tie_word_embeddings is False
    idx = torch.randint(0, 3, (2, 16))
    torch.testing.assert_close(hf_logits(theirs, idx), our_logits(best, idx), atol=1e-5, rtol=0)


def test_a_trained_bpe_exports_as_tokenizer_json(tmp_path):
    text = open(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt'), encoding='utf-8').read()
    tok = tokenizer.train_bpe([text[:20000]], 300)
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=320))
    hf.save_hf_folder(model, tmp_path / 'bpe', tok.state())
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / 'bpe')
    sample = text[20000:24000] + '<|endoftext|>Exeunt'
    assert hf_tok(sample)['input_ids'] == tok.encode(sample)
    assert hf_tok.eos_token_id == tok.eot_token
    assert json.loads((tmp_path / 'bpe' / 'config.json').read_text())['eos_token_id'] == tok.eot_token


def test_export_defaults_to_the_newest_run(tmp_path):
    # as sample.py and serve.py do: no --out_dir means the run under this folder written last
    save_tiny_checkpoint(tmp_path / 'out-old', {'kind': 'gpt2'})
    save_tiny_checkpoint(tmp_path / 'out-new', {'kind': 'gpt2'})
    os.utime(tmp_path / 'out-old' / 'ckpt.pt', (1, 1))
    r = run_script('export.py', cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'out-new' in r.stdout and (tmp_path / 'out-new' / 'hf' / 'model.safetensors').exists()
    assert not (tmp_path / 'out-old' / 'hf').exists()
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert_one_line_error(run_script('export.py', cwd=empty, timeout=120), 'no checkpoint found')


def test_every_exported_tokenizer_loads_offline_with_stdin_closed(tmp_path):
    # as a user's script would: a fresh interpreter, no network, nothing to answer a prompt with
    text = "To be, or not to be: that is the question.\n" * 40
    toks = {'char': tokenizer.char(text), 'bpe': tokenizer.train_bpe([text], 300), 'gpt2': tokenizer.gpt2()}
    kinds = {'gpt2': {}, 'llama': dict(norm='rmsnorm', pos_encoding='rope', mlp='swiglu', bias=False),
             'custom': dict(qk_norm=True)}
    folders = []
    for arch, switches in kinds.items():
        for name, tok in toks.items():
            model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, **switches,
                                  vocab_size=50304 if name == 'gpt2' else 320))
            folder = tmp_path / f'{arch}-{name}'
            assert hf.save_hf_folder(model, folder, tok.state())[0] == arch
            folders.append((folder, tok.encode(text[:60])))
    script = ("import sys, time\nfrom transformers import AutoTokenizer\n"
              "for folder in sys.argv[1:]:\n    t0 = time.time()\n"
              "    ids = AutoTokenizer.from_pretrained(folder)(" + repr(text[:60]) + ")['input_ids']\n"
              "    print('\\nIDS', ids, round(time.time() - t0, 1), flush=True)\n")
    import subprocess
    for group in (folders[:6], folders[6:]):  # GPT-2 and Llama folders, then those with their own modeling file
        r = subprocess.run([sys.executable, '-c', script, *(str(f) for f, _ in group)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1'))
        assert r.returncode == 0, r.stderr
        lines = [l[4:] for l in r.stdout.splitlines() if l.startswith('IDS ')]
        assert len(lines) == len(group), r.stdout
        for (folder, ids), line in zip(group, lines):
            got, seconds = line.rsplit(' ', 1)
            assert json.loads(got) == ids, folder
            assert float(seconds) < 10, (folder, line)
        # GPT-2 and Llama folders need no remote code, so transformers asks nothing. A folder with its own
        # modeling file has its config there, and transformers 5 reads the config before the tokenizer: it
        # asks, and with stdin closed the answer is 'no' at once and the tokenizer loads all the same
        if group is folders[:6]:
            assert 'custom code' not in r.stdout + r.stderr


def tiny_llama(**kw):
    args = dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=16, vocab_size=53,
                intermediate_size=85, rms_norm_eps=1e-5, tie_word_embeddings=False)
    cfg = transformers.LlamaConfig(**{**args, **kw})
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    randomize(model)
    return model


def test_a_llama_folder_saved_by_transformers_loads_with_its_logits(tmp_path):
    ref = tiny_llama()
    ref.save_pretrained(tmp_path)
    ours = hf.from_pretrained(f'hf:{tmp_path}')
    assert (ours.config.norm, ours.config.pos_encoding, ours.config.mlp) == ('rmsnorm', 'rope', 'swiglu')
    idx = torch.randint(0, 53, (2, 16))
    torch.testing.assert_close(our_logits(ours, idx), hf_logits(ref, idx), atol=1e-4, rtol=0)


def test_a_grouped_query_llama_is_refused_not_misread(tmp_path):
    # two key/value heads for four query heads: the k and v matrices are half as tall, and ours has no such attention
    tiny_llama(num_key_value_heads=2).save_pretrained(tmp_path)
    with pytest.raises(UserError, match='grouped-query attention'):
        hf.from_pretrained(f'hf:{tmp_path}')


def test_a_gpt2_config_without_tie_word_embeddings_is_tied_as_transformers_reads_it(tmp_path):
    ref = tiny_hf(tie=True)
    ref.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / 'config.json').read_text())
    cfg.pop('tie_word_embeddings', None)
    (tmp_path / 'config.json').write_text(json.dumps(cfg))
    assert transformers.AutoConfig.from_pretrained(tmp_path).tie_word_embeddings is True
    ours = hf.from_pretrained(f'hf:{tmp_path}')
    assert ours.config.tie_embeddings and ours.lm_head.weight is ours.transformer.wte.weight


def test_an_export_refuses_a_tokenizer_with_one_id_more_than_the_model_has_rows(tmp_path):
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=64))
    fits = tokenizer.char(''.join(chr(40 + i) for i in range(64))).state()
    hf.save_hf_folder(model, tmp_path / 'fits', fits)
    one_more = tokenizer.char(''.join(chr(40 + i) for i in range(65))).state()
    with pytest.raises(UserError, match='65 tokens but the model only 64 rows'):
        hf.save_hf_folder(model, tmp_path / 'one_more', one_more)
