"""One GGUF file for llama.cpp, ollama and transformers (gguf_file=), written with the `gguf` package.

GGUF names its architectures after llama.cpp's, so only models shaped like one of them can go:
GPT-2's architecture as 'gpt2' (llama.cpp's gpt2 has the tanh GELU only, so a model trained with
the exact erf GELU is exported with a note of the logit difference this costs), and RMSNorm +
rotary + SwiGLU without biases as 'llama'. The tokenizer travels as metadata (a
byte-level BPE: its tokens, merges and special ids), padded with unused tokens up to the
embedding's row count, which readers take as the vocabulary size.

Types: float32; float16 (2-D weights in f16, norms and biases in f32, as llama.cpp's converter
does); q8_0 (2-D weights in blocks of 32 int8 values with one f16 scale; a matrix whose rows are
not a multiple of 32 stays f16).
"""

import json

import numpy as np

from core.interop import hf
from core.errors import UserError
from core.interop.export_dest import export_file

def gguf_arch(config):
    """'gpt2' or 'llama' for a model GGUF can hold; UserError naming the switches otherwise."""
    cfg = hf.config_dict(config)
    hf.export_kind(cfg)  # refuses a switch the exports do not know
    gpt2 = hf.switch_blockers(cfg, hf.GPT2_SWITCHES)
    if not gpt2:
        return 'gpt2'
    llama = hf.switch_blockers(cfg, hf.LLAMA_SWITCHES) + (['bias=True'] if cfg.get('bias') else [])
    if not llama:
        return 'llama'
    nearest, bad = min((('gpt2', gpt2), ('llama', llama)), key=lambda kv: len(kv[1]))
    raise UserError(f"GGUF holds GPT-2- and Llama-shaped models only; this one is not {nearest}-shaped "
                    f"({', '.join(bad)}); export it as a Hugging Face folder instead (--format=hf)")


def gelu_gap(model, n_tokens=64):
    """The largest logit difference, on random tokens, between the model as trained (erf GELU) and as
    llama.cpp's gpt2 computes it (tanh GELU): what a GGUF of an erf model gives up."""
    import copy
    import torch
    tanh = copy.deepcopy(model).eval()
    for block in tanh.transformer.h:
        block.mlp.approximate = 'tanh'
    idx = torch.randint(0, model.config.vocab_size, (1, min(n_tokens, model.config.block_size)),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model.eval().head(model.hidden_states(idx))
        b = tanh.head(tanh.hidden_states(idx))
    return (a - b).abs().max().item()


def _permute_rope(w, n_head):
    # llama.cpp rotates interleaved pairs (2i, 2i+1) of each head; ours and HF's rotate (i, i + head_dim/2)
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model, arch):
    """{GGUF tensor name: float32 numpy array} in GGUF's standard names."""
    cfg = model.config
    if arch == 'gpt2':
        # HF's GPT-2 layout (zero biases added when the model has none, since llama.cpp's gpt2 needs them),
        # with the Conv1D matrices back to (out, in) as GGUF stores every matrix
        sd = {k: (v.t() if k.endswith(hf.TRANSPOSED) else v) for k, v in hf.state_dict_to_hf_gpt2(model).items()}
        names = {'transformer.wte.weight': 'token_embd.weight', 'transformer.wpe.weight': 'position_embd.weight',
                 'transformer.ln_f.weight': 'output_norm.weight', 'transformer.ln_f.bias': 'output_norm.bias',
                 'lm_head.weight': 'output.weight'}
        parts = {'ln_1': 'attn_norm', 'attn.c_attn': 'attn_qkv', 'attn.c_proj': 'attn_output', 'ln_2': 'ffn_norm',
                 'mlp.c_fc': 'ffn_up', 'mlp.c_proj': 'ffn_down'}
        for i in range(cfg.n_layer):
            for ours, theirs in parts.items():
                for s in ('weight', 'bias'):
                    names[f'transformer.h.{i}.{ours}.{s}'] = f'blk.{i}.{theirs}.{s}'
    else:
        sd = hf.state_dict_to_hf_llama(model)
        names = {'model.embed_tokens.weight': 'token_embd.weight', 'model.norm.weight': 'output_norm.weight',
                 'lm_head.weight': 'output.weight'}
        parts = {'input_layernorm': 'attn_norm', 'self_attn.q_proj': 'attn_q', 'self_attn.k_proj': 'attn_k',
                 'self_attn.v_proj': 'attn_v', 'self_attn.o_proj': 'attn_output',
                 'post_attention_layernorm': 'ffn_norm', 'mlp.gate_proj': 'ffn_gate', 'mlp.up_proj': 'ffn_up',
                 'mlp.down_proj': 'ffn_down'}
        for i in range(cfg.n_layer):
            for ours, theirs in parts.items():
                names[f'model.layers.{i}.{ours}.weight'] = f'blk.{i}.{theirs}.weight'
    out = {}
    for key, value in sd.items():
        if key not in names:
            raise UserError(f"internal: no GGUF name for {key}")
        w = value.float().numpy()
        if arch == 'llama' and names[key].endswith(('attn_q.weight', 'attn_k.weight')):
            w = _permute_rope(w, cfg.n_head)
        out[names[key]] = np.ascontiguousarray(w)
    return out


def tokenizer_metadata(tokenizer, vocab_rows):
    """(tokens, token types, merges, eot id) of a byte-level BPE for our tokenizer state, padded to vocab_rows."""
    import gguf
    from core.data import tokenizer as tokenizer_lib
    kind = hf.tokenizer_kind(tokenizer)
    if kind == 'gpt2':
        vocab, merges = hf.gpt2_vocab_and_merges()
        merges = [f"{a} {b}" for a, b in merges]
        specials = {hf.EOT: 50256, **(tokenizer.get('added_tokens') or {})}
        vocab.update(specials)
    elif kind == 'bpe':
        d = json.loads(tokenizer['json'])
        vocab = d['model']['vocab']
        merges = [m if isinstance(m, str) else ' '.join(m) for m in d['model']['merges']]
        specials = {t['content']: t['id'] for t in d.get('added_tokens', [])}
        vocab = {**vocab, **specials}
    elif kind == 'char':
        # each character as byte-level text; with no merges a multi-byte character decodes but never encodes
        specials = dict(tokenizer.get('special_tokens') or {})
        vocab = {''.join(tokenizer_lib.BYTE_TO_CHAR[b] for b in c.encode('utf-8')): i
                 for i, c in enumerate(tokenizer['chars'])}
        vocab.update(specials)
        merges = []
    else:
        raise UserError(f"no tokenizer to put in the GGUF (kind {kind!r}); pass --dataset=<its data folder>")
    n = max(vocab.values()) + 1
    if n > vocab_rows:
        raise UserError(f"the tokenizer has {n} tokens but the model only {vocab_rows} rows")
    tokens = [None] * vocab_rows
    for t, i in vocab.items():
        tokens[i] = t
    types = [gguf.TokenType.NORMAL] * vocab_rows
    for i in range(vocab_rows):
        if tokens[i] is None:
            tokens[i], types[i] = f'[PAD{i}]', gguf.TokenType.UNUSED
    for t, i in specials.items():
        types[i] = gguf.TokenType.CONTROL
    return tokens, [int(t) for t in types], merges, specials.get(hf.EOT)


def _add_tensor(writer, name, w, dtype):
    import gguf
    if w.ndim == 1 or dtype == 'float32':
        writer.add_tensor(name, w.astype(np.float32))
    elif dtype == 'q8_0' and w.shape[-1] % 32 == 0:
        q = gguf.quants.quantize(w.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, w.astype(np.float16))


def save_gguf(model, dest, tokenizer, dtype='float32', force=False):
    """Write model (and its tokenizer) as one GGUF file at dest; returns (the architecture written, a note
    on what the format cannot express, or None)."""
    try:
        import gguf
    except ImportError:
        raise UserError("--format=gguf needs the gguf package: pip install gguf")
    arch = gguf_arch(model.config)
    cfg = model.config
    tensors = gguf_tensors(model, arch)
    tokens, types, merges, eot = tokenizer_metadata(tokenizer, cfg.vocab_size)
    file_type = {'float32': gguf.LlamaFileType.ALL_F32, 'float16': gguf.LlamaFileType.MOSTLY_F16,
                 'q8_0': gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]

    def writer_to(path):
        w = gguf.GGUFWriter(path, arch)
        w.add_name('nanogpt-plus export')
        w.add_file_type(file_type)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_context_length(cfg.block_size)
        w.add_embedding_length(cfg.n_embd)
        w.add_block_count(cfg.n_layer)
        w.add_feed_forward_length(cfg.mlp_hidden)
        w.add_head_count(cfg.n_head)
        if arch == 'gpt2':
            w.add_layer_norm_eps(1e-5)
        else:
            w.add_head_count_kv(cfg.n_head)
            w.add_layer_norm_rms_eps(1e-5)
            w.add_rope_freq_base(cfg.rope_base)
            w.add_rope_dimension_count(cfg.n_embd // cfg.n_head)
            w.add_vocab_size(cfg.vocab_size)
        w.add_tokenizer_model('gpt2')
        w.add_tokenizer_pre('gpt-2')
        w.add_token_list(tokens)
        w.add_token_types(types)
        # a character vocabulary has no merges; readers then rebuild them from the scores (none come out)
        w.add_token_merges(merges) if merges else w.add_token_scores([0.0] * len(tokens))
        if eot is not None:
            w.add_bos_token_id(eot)
            w.add_eos_token_id(eot)
        for name, t in tensors.items():
            _add_tensor(w, name, t, dtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    export_file(dest, writer_to, force)
    note = None
    if arch == 'gpt2' and hf.gelu_kind(cfg) == 'erf':
        note = (f"llama.cpp's gpt2 (and transformers' GGUF reader) compute GPT-2's tanh GELU, this model was trained "
                f"with the exact erf one: its logits there differ from ours by up to {gelu_gap(model):.2g} "
                f"(measured on 64 random tokens); the Hugging Face folder (--format=hf) is exact")
    return arch, note
