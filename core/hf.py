"""
GPT-2 weights in and out, in the Hugging Face layout.

    model = hf.from_pretrained('gpt2')              # downloads openai-community/gpt2 once, then from the cache
    model = hf.from_pretrained('hf:path/to/folder')  # a saved HF GPT-2: config.json + model.safetensors, no network
    hf.save_hf_folder(model, 'out/hf', {'kind': 'gpt2'})

Downloads go through `huggingface_hub` (hf_hub_download), the hub's own small client, and
fetch only config.json and model.safetensors. We do not import `transformers` for this: it
takes seconds to import, and its default GPT-2 files are pickles (pytorch_model.bin) that
can run code when loaded; safetensors files hold plain tensors and load fast.

HF's GPT-2 keeps its linear layers as Conv1D with (in, out) weights; ours are nn.Linear
with (out, in), so those four matrices are transposed on the way in and out.
"""

import json
import os
import shutil
import socket
import tempfile
from urllib.parse import urlparse

import torch

from core.errors import UserError
from model import GPT, GPTConfig

HUB_MODELS = {
    'gpt2': 'openai-community/gpt2',                # 124M
    'gpt2-medium': 'openai-community/gpt2-medium',  # 350M
    'gpt2-large': 'openai-community/gpt2-large',    # 774M
    'gpt2-xl': 'openai-community/gpt2-xl',          # 1558M
}
# Conv1D weights, stored (in, out) by HF
TRANSPOSED = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
# our architecture switches and the values GPT-2 has
GPT2_SWITCHES = dict(norm='layernorm', prenorm=True, pos_encoding='learned', mlp='gelu', qk_norm=False,
                     logit_softcap=0.0)
# HF's activation_function names for our gelu kinds: GPT-2's own is gelu_new (tanh); gelu is the exact erf one
HF_GELUS = {'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh', 'gelu': 'erf'}
EOT = '<|endoftext|>'


# ----- in -----

def from_pretrained(init_from, dropout=None):
    """A GPT with GPT-2 weights: init_from is gpt2, gpt2-medium, gpt2-large, gpt2-xl or hf:<folder>."""
    if init_from.startswith('hf:'):
        folder = os.path.expanduser(init_from[3:])
        config_path, weights_path = _folder_files(folder)
        source = folder
    elif init_from in HUB_MODELS:
        config_path, weights_path = _download(HUB_MODELS[init_from])
        source = HUB_MODELS[init_from]
    else:
        raise UserError(f"unknown pretrained model '{init_from}'; use one of {', '.join(HUB_MODELS)} or hf:<folder>")
    try:
        with open(config_path) as f:
            hf_config = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {config_path} ({type(e).__name__}: {e})")
    config = gpt_config(hf_config, source, dropout or 0.0)
    state = from_hf_state_dict(_read_weights(weights_path), config, source)
    # built on the meta device to skip the random init (a minute for gpt2-xl): every weight is loaded
    with torch.device('meta'):
        model = GPT(config)
    model.to_empty(device='cpu')
    if config.tie_embeddings:  # to_empty gives each module its own tensor; tie them again as GPT does
        model.transformer.wte.weight = model.lm_head.weight
    model.load_state_dict(state)
    return model


def gpt_config(hf_config, source='the config', dropout=0.0):
    """Our GPTConfig for a HF GPT-2 config dict; a GPT-2 variant we cannot reproduce exactly is refused."""
    if hf_config.get('model_type', 'gpt2') != 'gpt2':
        raise UserError(f"{source} is a '{hf_config.get('model_type')}' model, not gpt2")
    act = hf_config.get('activation_function', 'gelu_new')
    n_embd = hf_config.get('n_embd', 768)
    problems = []
    if act not in HF_GELUS:
        problems.append(f"activation_function={act!r} (ours are {', '.join(HF_GELUS)})")
    if hf_config.get('n_inner') not in (None, 4 * n_embd):
        problems.append(f"n_inner={hf_config['n_inner']} (ours is 4 * n_embd)")
    if abs(hf_config.get('layer_norm_epsilon', 1e-5) - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon={hf_config['layer_norm_epsilon']} (ours is 1e-5)")
    if hf_config.get('scale_attn_by_inverse_layer_idx') or not hf_config.get('scale_attn_weights', True):
        problems.append("non-standard attention scaling")
    if hf_config.get('add_cross_attention'):
        problems.append("cross-attention")
    if problems:
        raise UserError(f"{source} is a GPT-2 variant this model cannot reproduce: {'; '.join(problems)}")
    try:
        return GPTConfig(n_layer=hf_config['n_layer'], n_head=hf_config['n_head'], n_embd=n_embd,
                         block_size=hf_config['n_positions'], vocab_size=hf_config['vocab_size'], bias=True,
                         dropout=dropout, tie_embeddings=bool(hf_config.get('tie_word_embeddings', True)),
                         gelu=HF_GELUS[act], **GPT2_SWITCHES)
    except KeyError as e:
        raise UserError(f"{source}: config.json lacks {e.args[0]}")
    except ValueError as e:
        raise UserError(f"{source}: {e}")


def from_hf_state_dict(state, config, source='the weights'):
    """Map HF GPT-2 tensor names (with or without the 'transformer.' prefix) onto ours."""
    ours = {}
    for key, value in state.items():
        name = key[len('transformer.'):] if key.startswith('transformer.') else key
        parts = name.split('.')
        # older checkpoints also store the causal mask as attn.bias / attn.masked_bias buffers
        if len(parts) == 4 and parts[0] == 'h' and parts[2] == 'attn' and parts[3] in ('bias', 'masked_bias'):
            continue
        if name.endswith(TRANSPOSED):
            value = value.t()
        ours[name if name == 'lm_head.weight' else 'transformer.' + name] = value.float().contiguous()
    if 'lm_head.weight' not in ours or config.tie_embeddings:
        ours['lm_head.weight'] = ours.get('transformer.wte.weight')
    return _check_shapes(ours, config, source)


def _check_shapes(ours, config, source):
    # build the shapes a model of this config has without allocating one
    with torch.device('meta'):
        reference = GPT(config).state_dict()
    missing = [k for k in reference if ours.get(k) is None]
    extra = [k for k in ours if k not in reference]
    if missing or extra:
        what = (f"missing {', '.join(missing[:3])}" if missing else '') + \
               ('; ' if missing and extra else '') + (f"unexpected {', '.join(extra[:3])}" if extra else '')
        raise UserError(f"{source} does not hold GPT-2 weights matching its config.json ({what})")
    for k, v in reference.items():
        if tuple(ours[k].shape) != tuple(v.shape):
            raise UserError(f"{source}: {k} has shape {tuple(ours[k].shape)}, config.json implies {tuple(v.shape)}")
    return {k: ours[k] for k in reference}


def _folder_files(folder):
    config_path = os.path.join(folder, 'config.json')
    if not os.path.isdir(folder):
        raise UserError(f"hf:{folder} is not a folder; save a model with transformers' save_pretrained or export.py")
    if not os.path.exists(config_path):
        raise UserError(f"hf:{folder} has no config.json; it must be a Hugging Face GPT-2 folder")
    for name in ('model.safetensors', 'pytorch_model.bin'):
        if os.path.exists(os.path.join(folder, name)):
            return config_path, os.path.join(folder, name)
    if any(n.endswith('.safetensors.index.json') or n.endswith('.bin.index.json') for n in os.listdir(folder)):
        raise UserError(f"hf:{folder} holds sharded weights; save it unsharded (save_pretrained(max_shard_size='100GB'))")
    raise UserError(f"hf:{folder} has no model.safetensors or pytorch_model.bin")


def _read_weights(path):
    try:
        if path.endswith('.safetensors'):
            from safetensors.torch import load_file
            return load_file(path)
        # a pickle: weights_only refuses anything but tensors and plain containers
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"cannot read weights {path} ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})")


def _hub_reachable(timeout=3.0):
    import huggingface_hub.constants as hc
    url = urlparse(hc.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == 'https' else 80)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


def _download(repo_id):
    """config.json and model.safetensors from the hub cache, downloading them when missing."""
    from huggingface_hub import hf_hub_download
    import huggingface_hub.constants as hc
    files = ('config.json', 'model.safetensors')
    try:
        return tuple(hf_hub_download(repo_id, f, local_files_only=True) for f in files)
    except Exception:
        pass  # not cached yet
    hint = "connect to the internet once (the files are cached), or save the model to a folder and use init_from=hf:<folder>"
    if hc.HF_HUB_OFFLINE:
        raise UserError(f"{repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; {hint}")
    # the hub client retries a dead network for half a minute; a short probe answers in seconds
    if not _hub_reachable():
        raise UserError(f"cannot reach {hc.ENDPOINT} to download {repo_id}; {hint}")
    try:
        return tuple(hf_hub_download(repo_id, f) for f in files)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ''
        raise UserError(f"downloading {repo_id} failed ({type(e).__name__}: {first}); {hint}")


# ----- out -----

def unsupported_switches(config):
    """Names (key=value) of the settings a HF GPT-2 cannot express; bias=False and untied heads can be."""
    cfg = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
    return [f"{k}={cfg[k]!r}" for k, want in GPT2_SWITCHES.items() if k in cfg and cfg[k] != want]


def to_hf_state_dict(model):
    """Our weights under HF GPT2LMHeadModel names, Conv1D matrices transposed. A model without
    biases gets zero biases, which compute the same function. The tied head is left out, as HF does."""
    config = model.config
    bad = unsupported_switches(config)
    if bad:
        raise UserError(f"this model uses switches GPT-2 lacks: {', '.join(bad)}; it cannot be a Hugging Face GPT-2")
    state = model.state_dict()
    out = {}
    for key, value in state.items():
        value = value.detach().cpu()
        if key.endswith(TRANSPOSED):
            value = value.t()
        if key == 'lm_head.weight' and config.tie_embeddings:
            continue
        out[key] = value.contiguous()
    if not config.bias:
        for key, value in list(out.items()):
            if (key.endswith('.weight') and value.dim() == 1) or key.endswith(TRANSPOSED):
                bias_key = key[:-len('weight')] + 'bias'
                width = value.shape[-1]  # (in, out) for Conv1D, (C,) for layer norms
                out.setdefault(bias_key, torch.zeros(width, dtype=value.dtype))
    return out


def hf_config(model, tokenizer=None):
    """A HF GPT2Config as a dict. vocab_size is the rows of the embedding, padding included."""
    cfg = model.config
    eot = 50256 if tokenizer_kind(tokenizer) == 'gpt2' else _special_id(tokenizer, EOT)
    return {
        'architectures': ['GPT2LMHeadModel'],
        'model_type': 'gpt2',
        'vocab_size': cfg.vocab_size,
        'n_positions': cfg.block_size,
        'n_embd': cfg.n_embd,
        'n_layer': cfg.n_layer,
        'n_head': cfg.n_head,
        'n_inner': None,
        'activation_function': 'gelu_new' if cfg.gelu == 'tanh' else 'gelu',
        'resid_pdrop': cfg.dropout,
        'embd_pdrop': cfg.dropout,
        'attn_pdrop': cfg.dropout,
        'layer_norm_epsilon': 1e-5,
        'initializer_range': 0.02,
        'scale_attn_weights': True,
        'scale_attn_by_inverse_layer_idx': False,
        'reorder_and_upcast_attn': False,
        'use_cache': True,
        'tie_word_embeddings': cfg.tie_embeddings,
        'bos_token_id': eot,
        'eos_token_id': eot,
        'torch_dtype': str(model.transformer.wte.weight.dtype).replace('torch.', ''),
    }


def tokenizer_kind(tokenizer):
    if isinstance(tokenizer, dict):
        return tokenizer.get('kind')
    return tokenizer


def _special_id(tokenizer, name):
    if isinstance(tokenizer, dict):
        if name in (tokenizer.get('special_tokens') or {}):
            return tokenizer['special_tokens'][name]
        if tokenizer.get('kind') == 'bpe' and 'json' in tokenizer:
            for t in json.loads(tokenizer['json']).get('added_tokens', []):
                if t.get('content') == name:
                    return t['id']
    return None


def tokenizer_files(tokenizer, max_length):
    """{filename: text} of the HF tokenizer files for our tokenizer state (or kind string);
    empty for a char tokenizer, which HF has no class for."""
    kind = tokenizer_kind(tokenizer)
    if kind == 'gpt2':
        vocab, merges = gpt2_vocab_and_merges()
        special = dict(bos_token=EOT, eos_token=EOT, unk_token=EOT)
        return {
            'vocab.json': json.dumps(vocab, ensure_ascii=False),
            'merges.txt': '#version: 0.2\n' + ''.join(f"{a} {b}\n" for a, b in merges),
            'tokenizer_config.json': json.dumps(dict(tokenizer_class='GPT2Tokenizer', model_max_length=max_length,
                                                     add_prefix_space=False, **special), indent=2),
            'special_tokens_map.json': json.dumps(special, indent=2),
        }
    if kind == 'bpe' and isinstance(tokenizer, dict) and 'json' in tokenizer:
        eot = _special_id(tokenizer, EOT)
        special = dict(bos_token=EOT, eos_token=EOT) if eot is not None else {}
        return {
            'tokenizer.json': tokenizer['json'],
            'tokenizer_config.json': json.dumps(dict(tokenizer_class='PreTrainedTokenizerFast',
                                                     model_max_length=max_length, **special), indent=2),
        }
    return {}


def gpt2_vocab_and_merges():
    """GPT-2's vocab.json and merges.txt contents, derived offline from assets/r50k_base.tiktoken.
    Ranks 0..255 are the bytes and each later rank is one merge, in order; the merge that made a
    token is the split that byte-pair encoding reaches using only the ranks below it."""
    from core import tokenizer as tokenizer_lib
    from tiktoken.load import load_tiktoken_bpe
    ranks = load_tiktoken_bpe(tokenizer_lib.GPT2_RANKS, tokenizer_lib.GPT2_SHA256)
    to_chars = tokenizer_lib.BYTE_TO_CHAR

    def show(b):
        return ''.join(to_chars[x] for x in b)

    vocab = {show(token): rank for token, rank in ranks.items()}
    vocab[EOT] = len(ranks)
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = _merge_below(token, ranks, rank)
        if len(parts) != 2:
            raise UserError(f"assets/r50k_base.tiktoken: token {rank} is not one merge of lower ranks; restore the file")
        merges.append((show(parts[0]), show(parts[1])))
    return vocab, merges


def _merge_below(token, ranks, limit):
    # byte-pair encoding of token, merging the lowest-ranked neighbours while their rank is below limit
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, at = limit, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1], limit)
            if r < best:
                best, at = r, i
        if at < 0:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


def save_hf_folder(model, folder, tokenizer=None):
    """Write model as a HF GPT-2 folder (config.json, model.safetensors, tokenizer files when the
    tokenizer is gpt2 or a trained bpe). The folder appears whole or not at all: it is written
    beside its target and renamed into place. Returns the names of the files written."""
    from safetensors.torch import save_file
    folder = os.path.abspath(folder)
    if os.path.exists(folder) and not (os.path.isdir(folder) and
                                       (not os.listdir(folder) or os.path.exists(os.path.join(folder, 'config.json')))):
        raise UserError(f"{folder} exists and is not a model folder; choose another --dest")
    state = to_hf_state_dict(model)
    files = {'config.json': json.dumps(hf_config(model, tokenizer), indent=2)}
    files.update(tokenizer_files(tokenizer, model.config.block_size))
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(folder) + '.', suffix='.tmp', dir=parent)
    try:
        save_file(state, os.path.join(tmp, 'model.safetensors'), metadata={'format': 'pt'})
        for name, text in files.items():
            with open(os.path.join(tmp, name), 'w', encoding='utf-8') as f:
                f.write(text)
        old = None
        if os.path.exists(folder):
            old = tempfile.mkdtemp(prefix=os.path.basename(folder) + '.old.', suffix='.tmp', dir=parent)
            os.rmdir(old)
            os.rename(folder, old)
        os.rename(tmp, folder)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ['model.safetensors'] + list(files)
