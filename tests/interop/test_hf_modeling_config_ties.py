"""The exported modeling file's NanoGPTConfig built in Python (not read from a config.json, which always states
tie_word_embeddings): tie_embeddings=False gives transformers an untied head, so a model built from it has a head
of its own."""

import pytest

pytest.importorskip('transformers')

from core.interop import hf_modeling  # noqa: E402


@pytest.mark.parametrize('tied', [True, False])
def test_tie_embeddings_decides_whether_transformers_ties_the_head(tied):
    cfg = hf_modeling.NanoGPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=29, tie_embeddings=tied)
    assert cfg.tie_word_embeddings is tied
    model = hf_modeling.NanoGPTForCausalLM(cfg)
    assert (model.lm_head.weight is model.transformer.wte.weight) is tied
