"""A Llama folder whose config.json leaves tie_word_embeddings out (transformers writes only what differs from
LlamaConfig's defaults, and untied is Llama's default) loads untied, with transformers' logits; and the exported
custom model's loss is transformers' causal one, position t scored on token t + 1."""

import json

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip('transformers')

from core.interop import hf  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402


def test_a_llama_config_without_tie_word_embeddings_is_untied_as_transformers_reads_it(tmp_path):
    cfg = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=1, max_position_embeddings=16,
                                   vocab_size=37, intermediate_size=85, rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    ref = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        ref.lm_head.weight.normal_(0, 0.5)  # a head unlike the embedding, so tying them shows in the logits
    ref.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / 'config.json').read_text())
    saved.pop('tie_word_embeddings', None)
    (tmp_path / 'config.json').write_text(json.dumps(saved))
    assert transformers.AutoConfig.from_pretrained(tmp_path).tie_word_embeddings is False
    ours = hf.from_pretrained(f'hf:{tmp_path}').eval()
    assert not ours.config.tie_embeddings and ours.lm_head.weight is not ours.transformer.wte.weight
    idx = torch.randint(0, 37, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours.head(ours.hidden_states(idx)), ref(idx).logits, atol=1e-4, rtol=0)


def test_the_custom_modeling_files_loss_scores_each_position_on_the_next_token_but_labels_of_minus_100(tmp_path):
    torch.manual_seed(0)
    ours = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=29, qk_norm=True)).eval()
    kind, _, _ = hf.save_hf_folder(ours, tmp_path / 'm', None)
    assert kind == 'custom'
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'm', trust_remote_code=True).eval()
    idx = torch.randint(0, 29, (2, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = theirs(idx, labels=idx)
        # the causal LM loss written out: logits at t against the token at t + 1, the last position unscored
        want = F.cross_entropy(out.logits[:, :-1].reshape(-1, 29), idx[:, 1:].reshape(-1))
        _, our_loss = ours(idx[:, :-1], idx[:, 1:])  # and our own training loss over the same pairs
    torch.testing.assert_close(out.loss, want)
    torch.testing.assert_close(out.loss, our_loss, atol=1e-5, rtol=0)
    # labels of -100, transformers' convention for prompt and padding tokens, are left out of the average
    labels = idx.clone()
    labels[0, :4] = -100  # a prompt not to be learned
    labels[1, 6:] = -100  # padding at the end
    with torch.no_grad():
        loss = theirs(idx, labels=labels).loss
    pairs = [(0, t) for t in range(3, 7)] + [(1, t) for t in range(0, 5)]  # where labels[t + 1] is a token
    want = torch.stack([F.cross_entropy(out.logits[b, t], idx[b, t + 1]) for b, t in pairs]).mean()
    torch.testing.assert_close(loss, want)


def test_a_gpt2_folder_with_one_zero_bias_keeps_its_other_biases(tmp_path):
    # export.py writes a model without biases as all-zero biases, and reading them back gives bias=False; a model in
    # which only some biases happen to be zero (here the final norm's) still has the others
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=16, vocab_size=41)
    torch.manual_seed(0)
    ref = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.add_(torch.randn(p.shape) * 0.05)
        ref.transformer.ln_f.bias.zero_()
    ref.save_pretrained(tmp_path)
    ours = hf.from_pretrained(f'hf:{tmp_path}').eval()
    assert ours.config.bias
    idx = torch.randint(0, 41, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours.head(ours.hidden_states(idx)), ref(idx).logits, atol=1e-4, rtol=0)
