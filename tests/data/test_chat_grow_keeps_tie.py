"""core/data/chat.py's grow_vocab on a model whose head is its embedding (GPT-2's tie): the grown model still has
one matrix for both, so training moves them together and the parameter count grows by the new rows once."""

import torch

from core.data import chat
from core.data import tokenizer as tk
from model import GPT, GPTConfig


def test_a_tied_model_stays_tied_after_growing():
    tok = tk.with_specials(tk.gpt2(), tk.CHAT_TOKENS)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=50257, tie_embeddings=True))
    before = sum(p.numel() for p in model.parameters())
    assert chat.grow_vocab(model, tok)
    assert model.lm_head.weight is model.transformer.wte.weight
    # four new rows of 8, counted once (parameters() yields a shared tensor once)
    assert sum(p.numel() for p in model.parameters()) == before + 4 * 8
    # a step on the head moves the embedding too
    with torch.no_grad():
        model.lm_head.weight[50260].add_(1.0)
    assert torch.equal(model.transformer.wte.weight[50260], model.lm_head.weight[50260])
