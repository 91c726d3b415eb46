"""
Parameters and FLOPs of a GPT from its config alone, the figures MFU and the memory planner are based on.

    from core.training import accounting
    accounting.param_counts(GPTConfig())['total']          # 124M-shaped GPT-2, counted without building it
    accounting.flops_per_token(GPTConfig(), seq_len=1024)  # model FLOPs of one training step per token

train.py, bench.py and model.py's estimate_mfu all quote MFU through mfu() below, so every figure
counts the same FLOPs. Nothing here imports the model: a config is read by its fields only.
"""


def param_counts(config):
    """Parameters by component, from the config alone (GPT-2 XL can be counted without building it).
    A tied head shares wte's matrix, so it is counted there and lm_head is 0."""
    C, L, V, b = config.n_embd, config.n_layer, config.vocab_size, int(config.bias)
    H = config.mlp_hidden
    fc_out = 2 * H if config.mlp == 'swiglu' else H
    per_norm = {'none': 0, 'rmsnorm': C, 'layernorm': C * (1 + b)}[config.norm]
    counts = {
        'wte': V * C,
        'wpe': config.block_size * C if config.pos_encoding == 'learned' else 0,
        'qkv': L * (C * 3 * C + b * 3 * C),
        'attn_proj': L * (C * C + b * C),
        'mlp': L * (C * fc_out + b * fc_out + H * C + b * C),
        'norm': (2 * L + int(config.prenorm)) * per_norm,
        'lm_head': 0 if config.tie_embeddings else V * C,
        'value_embed': (V * C + 2 * L) if config.value_embed else 0,  # the table and each layer's two mixing weights
        'unet': L // 2 if config.unet else 0,  # one weight per skip
    }
    counts['total'] = sum(counts.values())
    return counts


def flops_per_token_breakdown(config, seq_len=None, training=True, activation_checkpointing=False, chunked_ce=False):
    """Matmul FLOPs per token (2 per multiply-add) by component, for a forward over seq_len tokens
    with targets (every position goes through lm_head) or, with training, a whole step.

    Only matrix products count, as in MFU by convention and in torch.utils.flop_counter: norms,
    activations, softmax, rope and the embedding lookups are left out (a few percent of the work).
    Attention counts the full T x T square, as the counter and the PaLM appendix do; a causal kernel
    skips about half of it. The backward of every product costs twice its forward (the gradient of
    the input and of the weight), so a step is 3x the forward. activation_checkpointing and chunked_ce
    add the forward they recompute (blocks, lm_head): hardware FLOPs, not model FLOPs, so MFU leaves them out.
    Flash attention's backward also recomputes the scores; that is left out the same way."""
    C, L, V = config.n_embd, config.n_layer, config.vocab_size
    T = config.block_size if seq_len is None else seq_len
    H = config.mlp_hidden
    fc_out = 2 * H if config.mlp == 'swiglu' else H
    forward = {
        'qkv': L * 2 * C * 3 * C,
        'attn_scores': L * 2 * T * C,  # q . k against T keys, all heads together
        'attn_values': L * 2 * T * C,  # the weights times T values
        'attn_proj': L * 2 * C * C,
        'mlp': L * 2 * (C * fc_out + H * C),
        'lm_head': 2 * C * V,
    }
    if not training:
        out = dict(forward)
    else:
        out = {k: 3 * v for k, v in forward.items()}
        if activation_checkpointing:
            for k in ('qkv', 'attn_scores', 'attn_values', 'attn_proj', 'mlp'):
                out[k] += forward[k]
            if config.prenorm and config.dropout == 0:
                # the recompute stops once it has what the backward saved: a pre-norm block's
                # last projection feeds only the residual sum, so it is not run again
                out['mlp'] -= L * 2 * H * C
        if chunked_ce:
            out['lm_head'] += forward['lm_head']
    out['total'] = sum(out.values())
    return out


def flops_per_token(config, seq_len=None):
    """Model FLOPs of one training step (forward + backward) per token, the figure MFU is based on."""
    return flops_per_token_breakdown(config, seq_len)['total']


def mfu(config, tokens_per_sec, peak_flops, seq_len=None):
    """Model FLOPs utilization: achieved training FLOP/s over the device's peak FLOP/s."""
    return flops_per_token(config, seq_len) * tokens_per_sec / peak_flops
