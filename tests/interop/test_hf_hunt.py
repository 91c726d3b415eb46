"""core/interop/hf.py reading configs and weights the way other writers leave them: GPT-2 files with the causal-mask
buffers older transformers saved, an n_inner written out, a Llama config in transformers 4's form; each compared
with the model the test built, or with the number the config states."""

import pytest
import torch

from core.errors import UserError
from core.interop import hf
from model import GPT, GPTConfig


def gpt2_config(**extra):
    return dict(model_type='gpt2', n_layer=1, n_head=2, n_embd=32, n_positions=16, vocab_size=40, **extra)


def test_the_mask_buffers_of_an_old_gpt2_file_are_skipped_and_every_weight_lands_in_place():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=40))
    state = hf.state_dict_to_hf_gpt2(model)
    state['h.0.attn.bias'] = torch.tril(torch.ones(1, 1, 16, 16))  # what transformers 2-4 saved beside the weights
    state['h.0.attn.masked_bias'] = torch.tensor(-1e4)
    ours = hf.hf_gpt2_to_state_dict(state, hf.hf_gpt2_to_config(gpt2_config()))
    want = model.state_dict()
    assert sorted(ours) == sorted(want)
    assert all(torch.equal(ours[k], want[k]) for k in want)


def test_a_gpt2_config_that_writes_out_n_inner_as_four_widths_is_read():
    assert hf.hf_gpt2_to_config(gpt2_config(n_inner=128)).n_embd == 32  # 4 x 32: GPT-2's own MLP
    with pytest.raises(UserError, match='n_inner=100'):
        hf.hf_gpt2_to_config(gpt2_config(n_inner=100))


def llama_config(**extra):
    return dict(model_type='llama', hidden_size=32, num_attention_heads=4, num_hidden_layers=1,
                max_position_embeddings=16, vocab_size=37, intermediate_size=GPTConfig(
                    n_embd=32, n_head=4, mlp='swiglu').mlp_hidden, rms_norm_eps=1e-5, **extra)


def test_a_llama_config_in_transformers_4s_form_keeps_its_rope_theta():
    # transformers 4 writes rope_theta at the top; 5 writes it inside rope_parameters
    assert hf.hf_llama_to_config(llama_config(rope_theta=500000.0)).rope_base == 500000.0
    assert hf.hf_llama_to_config(llama_config(rope_parameters={'rope_type': 'default', 'rope_theta': 2000.0}))\
        .rope_base == 2000.0
    assert hf.hf_llama_to_config(llama_config()).rope_base == 10000.0  # Llama's default when neither is written


def test_a_llama_with_biases_in_its_attention_but_not_its_mlp_is_refused():
    with pytest.raises(UserError, match='biases in the attention but not the MLP'):
        hf.hf_llama_to_config(llama_config(attention_bias=True, mlp_bias=False))


def read_json(path):
    import json
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def test_a_half_precision_export_says_float16_in_its_config_as_its_tensors_are(tmp_path):
    import json
    import struct
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=40))
    hf.save_hf_folder(model, str(tmp_path / 'out'), None, dtype=torch.float16)
    assert read_json(tmp_path / 'out' / 'config.json')['torch_dtype'] == 'float16'
    with open(tmp_path / 'out' / 'model.safetensors', 'rb') as f:  # safetensors: 8-byte length, then a JSON header
        header = json.loads(f.read(struct.unpack('<Q', f.read(8))[0]))
    assert {v['dtype'] for k, v in header.items() if k != '__metadata__'} == {'F16'}


def test_an_export_names_endoftext_as_the_end_of_a_sequence(tmp_path):
    from core.data import tokenizer
    tok = tokenizer.char('ab', special_tokens=[tokenizer.EOT])  # a=0, b=1, <|endoftext|>=2
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=3))
    hf.save_hf_folder(model, str(tmp_path / 'out'), tok.state())
    cfg = read_json(tmp_path / 'out' / 'config.json')
    assert cfg['eos_token_id'] == 2 and cfg['bos_token_id'] == 2


def test_a_gpt2_tokenizer_states_the_models_context_as_its_maximum_length(monkeypatch):
    import json
    monkeypatch.setattr(hf, 'gpt2_vocab_and_merges', lambda: ({}, []))  # the vocabulary itself is not looked at here
    files = hf.tokenizer_files({'kind': 'gpt2'}, 256)
    assert json.loads(files['tokenizer_config.json'])['model_max_length'] == 256


def test_a_llama_folder_with_its_own_rope_base_loads_with_the_logits_it_was_saved_with(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=40, norm='rmsnorm',
                          pos_encoding='rope', mlp='swiglu', rope_base=500.0)).eval()
    hf.save_hf_folder(model, str(tmp_path / 'out'), None)
    back = hf.from_pretrained(f'hf:{tmp_path / "out"}').eval()
    x = torch.randint(0, 40, (1, 16))
    with torch.no_grad():
        assert torch.allclose(back(x)[0], model(x)[0], atol=1e-5)


def test_a_folder_with_its_own_modeling_file_loads_with_the_dropout_asked_for_not_the_one_saved(tmp_path):
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=40, qk_norm=True, dropout=0.2))
    assert hf.save_hf_folder(model, str(tmp_path / 'out'), None)[0] == 'custom'
    assert hf.from_pretrained(f'hf:{tmp_path / "out"}').config.dropout == 0.0  # sampling and evaluation: none
    assert hf.from_pretrained(f'hf:{tmp_path / "out"}', dropout=0.1).config.dropout == 0.1  # fine-tuning's own
