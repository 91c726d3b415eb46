"""One GGUF file for llama.cpp, ollama and transformers (gguf_file=), written with the `gguf` package.

GGUF names its architectures after llama.cpp's, so only models shaped like one of them can go:
GPT-2's architecture as 'gpt2' (llama.cpp's gpt2 has the tanh GELU only, so a model trained with
the exact erf GELU is exported with a note of the logit difference this costs), and RMSNorm +
rotary + SwiGLU without biases as 'llama'. The tokenizer travels as metadata (a
byte-level BPE: its tokens, merges and special ids), padded with unused tokens up to the
embedding's row count, which readers take as the vocabulary size. A character vocabulary goes as a
byte-level BPE too: its merges join the bytes of each multi-byte character, since llama.cpp refuses
a 'gpt2' vocabulary without merges.

llama.cpp rounds its context up to a multiple of 256 positions, and its gpt2 reads the position
table by index with no bound check, so a GPT-2-shaped file carries a table of that many rows (the
rows past block_size repeat the last trained one) and says so as its context length: generation
past block_size then runs instead of aborting the process.

Types: float32; float16 (2-D weights in f16, norms and biases in f32, as llama.cpp's converter
does); q8_0 and q4_0 (2-D weights in blocks of 32 values with one f16 scale; a matrix whose rows
are not a multiple of 32 stays f16).
"""

import json

import numpy as np

from core.interop import hf
from core.errors import UserError
from core.interop.export_dest import export_file

DTYPES = ('float32', 'float16', 'q8_0', 'q4_0')
# llama.cpp pads the context it allocates to a multiple of this many positions (GGML_PAD(n_ctx, 256))
CONTEXT_PADDING = 256

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


def gguf_context(config, arch):
    """The context length the file states: block_size, or for gpt2 block_size rounded up to llama.cpp's
    context padding (the position table is padded to match)."""
    if arch != 'gpt2':
        return config.block_size
    return -(-config.block_size // CONTEXT_PADDING) * CONTEXT_PADDING


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
        if names[key] == 'position_embd.weight':
            rows = gguf_context(cfg, arch)
            w = np.concatenate([w, np.repeat(w[-1:], rows - len(w), axis=0)])
        if arch == 'llama' and names[key].endswith(('attn_q.weight', 'attn_k.weight')):
            w = _permute_rope(w, cfg.n_head)
        out[names[key]] = np.ascontiguousarray(w)
    return out


def char_vocab_and_merges(chars, first_free, rows):
    """A character vocabulary as byte-level BPE: {token: id}, merges, {piece: id}. Each character is its UTF-8 bytes in
    GPT-2's byte alphabet, and the merges join a multi-byte character's bytes left to right, so BPE
    gives back exactly one token per character. transformers also needs every piece a merge joins to
    be a token: the pieces take the spare rows from first_free on when there are enough of them.
    An all-ASCII vocabulary gets one merge of two bytes that never occur in UTF-8 (0xF8, 0xF9), since
    llama.cpp refuses a vocabulary without merges and the gguf package writes no empty list."""
    from core.data.tokenizer import BYTE_TO_CHAR
    vocab = {''.join(BYTE_TO_CHAR[b] for b in c.encode('utf-8')): i for i, c in enumerate(chars)}
    merges, pieces = [], []
    for c in chars:
        data = c.encode('utf-8')
        for k in range(1, len(data)):
            left, right = ''.join(BYTE_TO_CHAR[b] for b in data[:k]), BYTE_TO_CHAR[data[k]]
            merges.append(f"{left} {right}")
            pieces += [left, right]
    if not merges:
        merges = [f"{BYTE_TO_CHAR[0xF8]} {BYTE_TO_CHAR[0xF9]}"]
        pieces = [BYTE_TO_CHAR[0xF8], BYTE_TO_CHAR[0xF9], BYTE_TO_CHAR[0xF8] + BYTE_TO_CHAR[0xF9]]
    pieces = [p for p in dict.fromkeys(pieces) if p not in vocab]
    spare = {p: first_free + i for i, p in enumerate(pieces)} if first_free + len(pieces) <= rows else {}
    return vocab, merges, spare


def tokenizer_metadata(tokenizer, vocab_rows):
    """(tokens, token types, merges, eot id) of a byte-level BPE for our tokenizer state, padded to vocab_rows."""
    import gguf
    hf.check_tokenizer_fits(tokenizer, vocab_rows)  # a damaged state is refused as the HF export refuses it
    kind = hf.tokenizer_kind(tokenizer)
    spare = {}  # tokens that only a reader's bookkeeping needs: never produced by our tokenizer
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
        specials = dict(tokenizer.get('special_tokens') or {})
        first_free = max([len(tokenizer['chars']) - 1, *specials.values()]) + 1
        # without <|endoftext|> one padding row stays free to be llama.cpp's end of text (save_gguf)
        vocab, merges, spare = char_vocab_and_merges(tokenizer['chars'], first_free, vocab_rows - (hf.EOT not in specials))
        vocab.update(spare)
        vocab.update(specials)
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
    for i in spare.values():
        types[i] = gguf.TokenType.UNUSED
    for t, i in specials.items():
        types[i] = gguf.TokenType.CONTROL
    return tokens, [int(t) for t in types], merges, specials.get(hf.EOT)


def _add_tensor(writer, name, w, dtype):
    import gguf
    if w.ndim == 1 or dtype == 'float32':
        writer.add_tensor(name, w.astype(np.float32))
    elif dtype in ('q8_0', 'q4_0') and w.shape[-1] % 32 == 0:
        kind = getattr(gguf.GGMLQuantizationType, dtype.upper())
        q = gguf.quants.quantize(w.astype(np.float32), kind)
        writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=kind)
    else:
        writer.add_tensor(name, w.astype(np.float16))


def save_gguf(model, dest, tokenizer, dtype='float32', force=False):
    """Write model (and its tokenizer) as one GGUF file at dest; returns (the architecture written, a note
    on what the format cannot express, or None)."""
    try:
        import gguf
    except ImportError:
        raise UserError("--format=gguf needs the gguf package: pip install gguf")
    model = model.without_mup()
    arch = gguf_arch(model.config)
    cfg = model.config
    tensors = gguf_tensors(model, arch)
    tokens, types, merges, eot = tokenizer_metadata(tokenizer, cfg.vocab_size)
    # without an <|endoftext|>, llama.cpp would take id 11 (a real token) as the end of text: name a padding
    # row instead, which our tokenizer never produces
    stop = eot if eot is not None else next((i for i, t in enumerate(tokens) if t == f'[PAD{i}]'), None)
    file_type = {'float32': gguf.LlamaFileType.ALL_F32, 'float16': gguf.LlamaFileType.MOSTLY_F16,
                 'q8_0': gguf.LlamaFileType.MOSTLY_Q8_0, 'q4_0': gguf.LlamaFileType.MOSTLY_Q4_0}[dtype]

    def writer_to(path):
        w = gguf.GGUFWriter(path, arch)
        w.add_name('nanogpt-plus export')
        w.add_file_type(file_type)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_context_length(gguf_context(cfg, arch))
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
        w.add_token_merges(merges)
        if stop is not None:
            w.add_bos_token_id(stop)
            w.add_eos_token_id(stop)
        for name, t in tensors.items():
            _add_tensor(w, name, t, dtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    export_file(dest, writer_to, force)
    notes = []
    if stop is None:
        notes.append(f"the tokenizer has no <|endoftext|> and the embedding no spare row, so llama.cpp takes id 11 "
                     f"({tokens[11] if len(tokens) > 11 else 'none'!r}) as the end of text and stops there: pass it --ignore-eos, or train with a "
                     f"vocabulary padded past the tokenizer")
    if arch == 'gpt2' and hf.gelu_kind(cfg) == 'erf':
        notes.append(f"llama.cpp's gpt2 (and transformers' GGUF reader) compute GPT-2's tanh GELU, this model was "
                     f"trained with the exact erf one: its logits there differ from ours by up to {gelu_gap(model):.2g} "
                     f"(measured on 64 random tokens) before llama.cpp's own rounding (its CPU GELU reads an f16 "
                     f"table, its KV cache is f16 unless --cache-type-k f32 --cache-type-v f32); the Hugging Face "
                     f"folder (--format=hf) is exact")
    return arch, '\nnote: '.join(notes) or None
