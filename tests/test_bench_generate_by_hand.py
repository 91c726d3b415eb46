"""core/bench/generate.py by hand: the bytes a decode step reads (every weight once, one row of the position table,
keys and values of each attended slot in every layer), written out from the config's shapes; and the exact-window
comparison, which a generation runs once its 1-token prompt and new tokens pass block_size."""

import pytest
import torch

from core.bench import generate
from model import GPT, GPTConfig


def test_a_decode_step_reads_every_weight_once_and_keys_and_values_of_each_slot():
    L, C, V, T = 2, 16, 40, 8
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=L, n_head=2, n_embd=C, block_size=T, vocab_size=V))  # tied head, learned positions
    # GPT-2's parameters from the shapes: the tied table (V x C, the head reads it whole), per layer two
    # LayerNorms, qkv, the projection and the two MLP matrices (weights and biases), the last LayerNorm
    per_layer = 2 * 2 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C)
    weights = V * C + L * per_layer + 2 * C
    for rows, attended in ((1, 5), (3, 8)):
        position_rows = rows * C  # one row of wpe per sequence, not the whole table
        kv = L * 2 * rows * attended * C  # a key and a value of C numbers per layer and slot
        assert generate.bytes_per_step(model, rows, attended) == 4 * (weights + position_rows + kv)


@pytest.mark.parametrize('tokens, past', [(7, False), (8, True)])
def test_the_exact_window_is_timed_once_prompt_and_new_tokens_pass_block_size(tokens, past):
    # block_size 8: a 1-token prompt and 7 new tokens fill the window exactly; the 8th new token is past it
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=40)
    figures, same = generate.run_sample(cfg, 'cpu', tokens, 1, 0, compile=False, say=lambda line: None)
    assert ('exact_window_tokens_per_sec' in figures) is past
    assert same and figures['identical']
