"""
Weights in and out in the Hugging Face layout.

    model = hf.from_pretrained('gpt2')              # downloads openai-community/gpt2 once, then from the cache
    model = hf.from_pretrained('hf:path/to/folder')  # a saved folder (GPT-2, Llama, or one export.py wrote), no network
    hf.save_hf_folder(model, 'out/hf', tokenizer_state)

Every model goes out as the most widely read format that computes exactly its function
(export_kind): GPT-2's architecture as GPT2LMHeadModel, RMSNorm + rotary + SwiGLU as
LlamaForCausalLM, and any other switch combination as a folder with its own modeling file
(core/interop/hf_modeling.py, copied in) that transformers loads with trust_remote_code=True.

Downloads go through `huggingface_hub` (hf_hub_download), the hub's own small client, and
fetch only config.json and model.safetensors. We do not import `transformers` for this: it
takes seconds to import, and its default GPT-2 files are pickles (pytorch_model.bin) that
can run code when loaded; safetensors files hold plain tensors and load fast.

HF's GPT-2 keeps its linear layers as Conv1D with (in, out) weights; ours are nn.Linear
with (out, in), so those four matrices are transposed on the way in and out.
"""

import functools
import json
import os

import torch

from core import fileio, network
from core.errors import UserError
from core.interop.export_dest import export_folder
from model import CONFIG_KEYS, GPT, GPTConfig

HUB_MODELS = {
    'gpt2': 'openai-community/gpt2',                # 124M
    'gpt2-medium': 'openai-community/gpt2-medium',  # 350M
    'gpt2-large': 'openai-community/gpt2-large',    # 774M
    'gpt2-xl': 'openai-community/gpt2-xl',          # 1558M
}
# Conv1D weights, stored (in, out) by HF
TRANSPOSED = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
# our architecture switches and the values each HF class has; bias and the head's tie are free in both
GPT2_SWITCHES = dict(norm='layernorm', prenorm=True, pos_encoding='learned', mlp='gelu', qk_norm=False,
                     logit_softcap=0.0, value_embed=False, unet=False, attn_scale=0.0)
LLAMA_SWITCHES = dict(norm='rmsnorm', prenorm=True, pos_encoding='rope', mlp='swiglu', qk_norm=False,
                      logit_softcap=0.0, value_embed=False, unet=False, attn_scale=0.0)
# HF's names for the two GELUs: 'gelu_new' is GPT-2's tanh approximation, 'gelu' the exact erf
HF_GELU = {'tanh': 'gelu_new', 'erf': 'gelu'}
GELU_FROM_HF = {'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh', 'gelu_fast': 'tanh', 'gelu': 'erf'}
MODELING_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'hf_modeling.py')
EOT = '<|endoftext|>'
# every name an export may write, whatever the model and tokenizer
EXPORT_FILES = ('config.json', 'model.safetensors', 'modeling_nanogpt.py', 'vocab.json', 'merges.txt',
                'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json')


def config_dict(config):
    return config.to_dict() if hasattr(config, 'to_dict') else dict(config)


def gelu_kind(config):
    """'tanh' or 'erf'. A checkpoint written before the gelu key existed used GPT-2's tanh."""
    return config_dict(config).get('gelu', 'tanh')


# ----- in -----

def from_pretrained(init_from, dropout=None):
    """A GPT from gpt2, gpt2-medium, gpt2-large, gpt2-xl or hf:<folder> (GPT-2, Llama or an export of ours)."""
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
            hf_cfg = fileio.read_json(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {config_path} ({type(e).__name__}: {e})")
    if not isinstance(hf_cfg, dict):
        raise UserError(f"{config_path} is not a config object")
    kind = hf_cfg.get('model_type', 'gpt2')
    weights = _read_weights(weights_path)
    if kind == 'gpt2':
        config = hf_gpt2_to_config(hf_cfg, source, dropout or 0.0)
        state = hf_gpt2_to_state_dict(weights, config, source)
        biases = [k for k in state if k.endswith('.bias')]
        if biases and all(not state[k].any() for k in biases):  # how export.py writes a model without biases
            config = GPTConfig(**{**config.to_dict(), 'bias': False})
            state = {k: v for k, v in state.items() if k not in biases}
    elif kind == 'llama':
        config = hf_llama_to_config(hf_cfg, source, dropout or 0.0)
        state = hf_llama_to_state_dict(weights, config, source)
    elif kind == 'nanogpt':  # our custom kind keeps the model_type its first exports were written with
        config = hf_custom_to_config(hf_cfg, source, dropout or 0.0)
        state = dict(weights)
        state.setdefault('lm_head.weight', state.get('transformer.wte.weight'))
        if config.tie_embeddings:
            state['lm_head.weight'] = state.get('transformer.wte.weight')
        state = _check_shapes({k: v.float() if v is not None else None for k, v in state.items()}, config, source)
    else:
        raise UserError(f"{source} is a '{kind}' model; hf: reads gpt2, llama and the folders export.py writes")
    # built on the meta device to skip the random init (a minute for gpt2-xl): every weight is loaded
    with torch.device('meta'):
        model = GPT(config)
    model.to_empty(device='cpu')
    if config.tie_embeddings:  # to_empty gives each module its own tensor; tie them again as GPT does
        model.transformer.wte.weight = model.lm_head.weight
    model.load_state_dict(state)
    if config.pos_encoding == 'rope':  # the rope tables are buffers that to_empty left unset
        from model import rope_tables
        model.rope_cos, model.rope_sin = rope_tables(config.n_embd // config.n_head, config.block_size,
                                                     config.rope_base)
    return model


def _check_numbers(hf_cfg, keys, source):
    """Refuse a config.json whose numbers are not numbers ("n_layer": "12"), naming the key."""
    for k in keys:
        v = hf_cfg.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise UserError(f"{source}: config.json's {k} is {v!r}, not a number")


def hf_gpt2_to_config(hf_cfg, source='the config', dropout=0.0):
    """Our GPTConfig for a HF GPT-2 config dict; a GPT-2 variant we cannot reproduce exactly is refused."""
    if hf_cfg.get('model_type', 'gpt2') != 'gpt2':
        raise UserError(f"{source} is a '{hf_cfg.get('model_type')}' model, not gpt2")
    _check_numbers(hf_cfg, ('n_layer', 'n_head', 'n_embd', 'n_positions', 'vocab_size', 'n_inner',
                            'layer_norm_epsilon'), source)
    act = hf_cfg.get('activation_function', 'gelu_new')
    n_embd = hf_cfg.get('n_embd', 768)
    problems = []
    if act not in GELU_FROM_HF:
        problems.append(f"activation_function={act!r} (ours is GPT-2's tanh gelu or the exact erf gelu)")
    if hf_cfg.get('n_inner') not in (None, 4 * n_embd):
        problems.append(f"n_inner={hf_cfg['n_inner']} (ours is 4 * n_embd)")
    if abs(hf_cfg.get('layer_norm_epsilon', 1e-5) - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon={hf_cfg['layer_norm_epsilon']} (ours is 1e-5)")
    if hf_cfg.get('scale_attn_by_inverse_layer_idx') or not hf_cfg.get('scale_attn_weights', True):
        problems.append("non-standard attention scaling")
    if hf_cfg.get('add_cross_attention'):
        problems.append("cross-attention")
    if problems:
        raise UserError(f"{source} is a GPT-2 variant this model cannot reproduce: {'; '.join(problems)}")
    try:
        args = dict(n_layer=hf_cfg['n_layer'], n_head=hf_cfg['n_head'], n_embd=n_embd,
                    block_size=hf_cfg['n_positions'], vocab_size=hf_cfg['vocab_size'], bias=True, dropout=dropout,
                    tie_embeddings=bool(hf_cfg.get('tie_word_embeddings', True)), **GPT2_SWITCHES)
        return GPTConfig(**args, gelu=GELU_FROM_HF[act])
    except KeyError as e:
        raise UserError(f"{source}: config.json lacks {e.args[0]}")
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: {e}")


def hf_llama_to_config(hf_cfg, source='the config', dropout=0.0):
    """Our GPTConfig for a HF Llama config dict, when ours computes exactly that Llama."""
    _check_numbers(hf_cfg, ('hidden_size', 'num_attention_heads', 'num_hidden_layers', 'max_position_embeddings',
                            'vocab_size', 'num_key_value_heads', 'head_dim', 'intermediate_size', 'rms_norm_eps',
                            'rope_theta'), source)
    try:
        C, nh = int(hf_cfg['hidden_size']), int(hf_cfg['num_attention_heads'])
        args = dict(n_layer=int(hf_cfg['num_hidden_layers']), n_head=nh, n_embd=C,
                    block_size=int(hf_cfg['max_position_embeddings']), vocab_size=int(hf_cfg['vocab_size']),
                    bias=bool(hf_cfg.get('attention_bias', False)), dropout=dropout,
                    tie_embeddings=bool(hf_cfg.get('tie_word_embeddings', False)),
                    rope_base=float(_rope_theta(hf_cfg)), **LLAMA_SWITCHES)
        config = GPTConfig(**args)
    except KeyError as e:
        raise UserError(f"{source}: config.json lacks {e.args[0]}")
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: {e}")
    problems = []
    if hf_cfg.get('num_key_value_heads', nh) != nh:
        problems.append(f"grouped-query attention ({hf_cfg['num_key_value_heads']} key/value heads for {nh})")
    if hf_cfg.get('head_dim', C // nh) != C // nh:
        problems.append(f"head_dim={hf_cfg['head_dim']}")
    if hf_cfg.get('intermediate_size') != config.mlp_hidden:
        problems.append(f"intermediate_size={hf_cfg.get('intermediate_size')} (ours is {config.mlp_hidden} "
                        f"for a width of {C})")
    if hf_cfg.get('hidden_act', 'silu') != 'silu':
        problems.append(f"hidden_act={hf_cfg['hidden_act']!r}")
    if abs(float(hf_cfg.get('rms_norm_eps', 1e-6)) - 1e-5) > 1e-12:
        problems.append(f"rms_norm_eps={hf_cfg.get('rms_norm_eps', 1e-6)} (ours is 1e-5)")
    if bool(hf_cfg.get('mlp_bias', False)) != config.bias:
        problems.append("biases in the attention but not the MLP, or the other way round")
    scaling = hf_cfg.get('rope_scaling') or {}
    if (hf_cfg.get('rope_parameters') or {}).get('rope_type', 'default') != 'default' or \
            scaling.get('rope_type', scaling.get('type', 'default')) != 'default':
        problems.append("scaled rotary positions")
    if problems:
        raise UserError(f"{source} is a Llama variant this model cannot reproduce: {'; '.join(problems)}")
    return config


def _rope_theta(hf_cfg):
    return (hf_cfg.get('rope_parameters') or {}).get('rope_theta', hf_cfg.get('rope_theta', 10000.0))


def hf_custom_to_config(hf_cfg, source='the config', dropout=0.0):
    """Our GPTConfig for a folder export.py wrote with its own modeling file."""
    args = {k: hf_cfg[k] for k in CONFIG_KEYS if k in hf_cfg}
    args['dropout'] = dropout
    try:
        return GPTConfig(**args)
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: config.json does not describe a model this model.py builds ({e})")


def hf_gpt2_to_state_dict(state, config, source='the weights'):
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


def llama_names(n_layer):
    """(our name, HF Llama name, slice of our rows or None) for every tensor but the fused ones' parts."""
    out = [('transformer.wte.weight', 'model.embed_tokens.weight'), ('transformer.ln_f.weight', 'model.norm.weight'),
           ('lm_head.weight', 'lm_head.weight')]
    for i in range(n_layer):
        ours, theirs = f'transformer.h.{i}.', f'model.layers.{i}.'
        out += [(ours + 'ln_1.weight', theirs + 'input_layernorm.weight'),
                (ours + 'ln_2.weight', theirs + 'post_attention_layernorm.weight'),
                (ours + 'attn.c_proj.weight', theirs + 'self_attn.o_proj.weight'),
                (ours + 'attn.c_proj.bias', theirs + 'self_attn.o_proj.bias'),
                (ours + 'mlp.c_proj.weight', theirs + 'mlp.down_proj.weight'),
                (ours + 'mlp.c_proj.bias', theirs + 'mlp.down_proj.bias')]
    return out


def hf_llama_to_state_dict(state, config, source='the weights'):
    """Llama's separate q/k/v and gate/up matrices joined into our fused c_attn and c_fc."""
    ours = {o: state[t].float() for o, t in llama_names(config.n_layer) if t in state}
    for i in range(config.n_layer):
        p, o = f'model.layers.{i}.', f'transformer.h.{i}.'
        for suffix in ('weight', 'bias'):
            qkv = [state.get(f'{p}self_attn.{n}_proj.{suffix}') for n in 'qkv']
            if all(t is not None for t in qkv):
                ours[f'{o}attn.c_attn.{suffix}'] = torch.cat(qkv).float()
            gate_up = [state.get(f'{p}mlp.{n}_proj.{suffix}') for n in ('gate', 'up')]
            if all(t is not None for t in gate_up):
                ours[f'{o}mlp.c_fc.{suffix}'] = torch.cat(gate_up).float()
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
        raise UserError(f"{source} does not hold weights matching its config.json ({what})")
    for k, v in reference.items():
        if tuple(ours[k].shape) != tuple(v.shape):
            raise UserError(f"{source}: {k} has shape {tuple(ours[k].shape)}, config.json implies {tuple(v.shape)}")
    return {k: ours[k] for k in reference}


def _folder_files(folder):
    config_path = os.path.join(folder, 'config.json')
    if not os.path.isdir(folder):
        raise UserError(f"hf:{folder} is not a folder; save a model with transformers' save_pretrained or export.py")
    if not os.path.exists(config_path):
        raise UserError(f"hf:{folder} has no config.json; it must be a Hugging Face model folder")
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
    problem = network.unreachable(hc.ENDPOINT)
    if problem:
        raise UserError(f"cannot reach {hc.ENDPOINT} to download {repo_id} ({problem}); {hint}")
    try:
        return tuple(hf_hub_download(repo_id, f) for f in files)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ''
        raise UserError(f"downloading {repo_id} failed ({type(e).__name__}: {first}); {hint}")


def folder_tokenizer(folder):
    """Our Tokenizer for the tokenizer files in a HF folder (the ones export.py writes, or GPT-2's
    vocab.json/merges.txt); None when the folder has none."""
    from core.data import tokenizer as tokenizer_lib
    path = os.path.join(folder, 'tokenizer.json')
    try:
        if os.path.exists(os.path.join(folder, 'vocab.json')):
            with open(os.path.join(folder, 'vocab.json'), encoding='utf-8') as f:
                vocab = fileio.read_json(f)
            if len(vocab) < 50257 or vocab.get(EOT) != 50256:
                raise tokenizer_lib.TokenizerError(f"vocab.json has {len(vocab)} entries; only GPT-2's (50257, and "
                                                   f"tokens added after them) is read here")
            return tokenizer_lib.gpt2(sorted((t for t, i in vocab.items() if i > 50256), key=vocab.get))
        if os.path.exists(path):
            with open(path, encoding='utf-8') as f:
                text = f.read()
            d = fileio.read_json(text)
            if d.get('model', {}).get('type') == 'WordLevel':
                return tokenizer_lib.from_state(char_state_from_tokenizer_json(d))
            return tokenizer_lib.from_state({'kind': 'bpe', 'json': text})
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as e:
        raise UserError(f"cannot read the tokenizer in {folder} ({one_line_reason(e)})")
    return None


def one_line_reason(e):
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


# ----- out -----

def switch_blockers(config, switches):
    cfg = config_dict(config)
    return [f"{k}={cfg[k]!r}" for k, want in switches.items() if k in cfg and cfg[k] != want]


def unsupported_switches(config):
    """Names (key=value) of the settings a HF GPT-2 cannot express; bias=False and untied heads can be."""
    return switch_blockers(config, GPT2_SWITCHES)


# every GPTConfig key the exports know how to carry; a switch added to model.py must be added here,
# to hf_modeling.py and to the GPT-2/Llama tests of export_kind (tests/test_export.py checks the lists agree)
EXPORTED_KEYS = ('block_size', 'vocab_size', 'n_layer', 'n_head', 'n_embd', 'dropout', 'bias', 'gelu',
                 'tie_embeddings', 'rope_base', 'zero_init_proj', *GPT2_SWITCHES,  # zero_init_proj: the init alone
                 'mup', 'mup_base_width')  # muP: folded into the weights before export (GPT.without_mup)


def export_kind(config):
    """'gpt2', 'llama' or 'custom' (a folder with its own modeling file) for an architecture."""
    unknown = [k for k in CONFIG_KEYS if k not in EXPORTED_KEYS
               and config_dict(config).get(k, GPTConfig.__dataclass_fields__[k].default) !=
               GPTConfig.__dataclass_fields__[k].default]
    if unknown:
        raise UserError(f"export does not know the switch{'es' if len(unknown) > 1 else ''} {', '.join(unknown)} yet; "
                        f"this model cannot be exported")
    if not switch_blockers(config, GPT2_SWITCHES):
        return 'gpt2'
    if not switch_blockers(config, LLAMA_SWITCHES):
        return 'llama'
    return 'custom'


def state_dict_to_hf_gpt2(model):
    """Our weights under HF GPT2LMHeadModel names, Conv1D matrices transposed. A model without
    biases gets zero biases, which compute the same function. The tied head is left out, as HF does."""
    config = model.config
    bad = unsupported_switches(config)
    if bad:
        raise UserError(f"this model uses switches GPT-2 lacks: {', '.join(bad)}; it cannot be a Hugging Face GPT-2")
    out = {}
    for key, value in model.state_dict().items():
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


def state_dict_to_hf_llama(model):
    """Our weights under HF LlamaForCausalLM names: c_attn split into q, k, v and c_fc into gate, up.
    Both use rotate-half rope on the split halves of each head, so q and k need no permutation."""
    config = model.config
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out = {theirs: state[ours] for ours, theirs in llama_names(config.n_layer) if ours in state}
    if config.tie_embeddings:
        del out['lm_head.weight']
    for i in range(config.n_layer):
        p, o = f'model.layers.{i}.', f'transformer.h.{i}.'
        for suffix in ('weight', 'bias'):
            if f'{o}attn.c_attn.{suffix}' in state:
                for name, part in zip('qkv', state[f'{o}attn.c_attn.{suffix}'].chunk(3)):
                    out[f'{p}self_attn.{name}_proj.{suffix}'] = part
                gate, up = state[f'{o}mlp.c_fc.{suffix}'].chunk(2)
                out[f'{p}mlp.gate_proj.{suffix}'], out[f'{p}mlp.up_proj.{suffix}'] = gate, up
    return {k: v.contiguous() for k, v in out.items()}


def state_dict_to_hf_custom(model):
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
            if not (k == 'lm_head.weight' and model.config.tie_embeddings)}


def special_ids(tokenizer):
    eot = 50256 if tokenizer_kind(tokenizer) == 'gpt2' else _special_id(tokenizer, EOT)
    return dict(bos_token_id=eot, eos_token_id=eot)


def config_to_hf_gpt2(model, tokenizer=None):
    """A HF GPT2Config as a dict. vocab_size is the rows of the embedding, padding included."""
    cfg = model.config
    return {
        'architectures': ['GPT2LMHeadModel'],
        'model_type': 'gpt2',
        'vocab_size': cfg.vocab_size,
        'n_positions': cfg.block_size,
        'n_embd': cfg.n_embd,
        'n_layer': cfg.n_layer,
        'n_head': cfg.n_head,
        'n_inner': None,
        'activation_function': HF_GELU[gelu_kind(cfg)],
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
        **special_ids(tokenizer),
        'torch_dtype': 'float32',
    }


def config_to_hf_llama(model, tokenizer=None):
    """A HF LlamaConfig as a dict, with the rope base and norm epsilon ours uses."""
    cfg = model.config
    return {
        'architectures': ['LlamaForCausalLM'],
        'model_type': 'llama',
        'vocab_size': cfg.vocab_size,
        'hidden_size': cfg.n_embd,
        'intermediate_size': cfg.mlp_hidden,
        'num_hidden_layers': cfg.n_layer,
        'num_attention_heads': cfg.n_head,
        'num_key_value_heads': cfg.n_head,
        'head_dim': cfg.n_embd // cfg.n_head,
        'hidden_act': 'silu',
        'max_position_embeddings': cfg.block_size,
        'rms_norm_eps': 1e-5,
        'rope_theta': cfg.rope_base,  # transformers 4's key; 5 reads rope_parameters
        'rope_parameters': {'rope_type': 'default', 'rope_theta': cfg.rope_base},
        'attention_bias': cfg.bias,
        'mlp_bias': cfg.bias,
        'attention_dropout': cfg.dropout,
        'tie_word_embeddings': cfg.tie_embeddings,
        'initializer_range': 0.02,
        'use_cache': True,
        **special_ids(tokenizer),
        'torch_dtype': 'float32',
    }


def config_to_hf_custom(model, tokenizer=None):
    """The config of a folder with its own modeling file: our GPTConfig's keys, read by NanoGPTConfig."""
    cfg = config_dict(model.config)
    cfg['gelu'] = gelu_kind(cfg)
    return {
        'architectures': ['NanoGPTForCausalLM'],
        'model_type': 'nanogpt',
        'auto_map': {'AutoConfig': 'modeling_nanogpt.NanoGPTConfig',
                     'AutoModelForCausalLM': 'modeling_nanogpt.NanoGPTForCausalLM'},
        **cfg,
        'tie_word_embeddings': cfg['tie_embeddings'],
        'use_cache': False,
        **special_ids(tokenizer),
        'torch_dtype': 'float32',
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
    """{filename: text} of the HF tokenizer files for our tokenizer state (or kind string)."""
    kind = tokenizer_kind(tokenizer)
    if kind == 'gpt2':
        vocab, merges = gpt2_vocab_and_merges()
        # tokens added after GPT-2's 50257 (the chat tokens) are special: matched whole, never merged into
        added = dict(tokenizer.get('added_tokens') or {}) if isinstance(tokenizer, dict) else {}
        vocab.update(added)
        special = dict(bos_token=EOT, eos_token=EOT, unk_token=EOT)
        extra = {}
        if added:
            extra['additional_special_tokens'] = sorted(added, key=added.get)
            extra['added_tokens_decoder'] = {str(i): dict(content=t, special=True, lstrip=False, rstrip=False,
                                                          normalized=False, single_word=False)
                                             for t, i in {EOT: 50256, **added}.items()}
        return {
            'vocab.json': json.dumps(vocab, ensure_ascii=False),
            'merges.txt': '#version: 0.2\n' + ''.join(f"{a} {b}\n" for a, b in merges),
            'tokenizer_config.json': json.dumps(dict(tokenizer_class='GPT2Tokenizer', model_max_length=max_length,
                                                     add_prefix_space=False, **special, **extra), indent=2),
            'special_tokens_map.json': json.dumps({**special, **({'additional_special_tokens':
                                                                 extra['additional_special_tokens']} if added else {})},
                                                  indent=2),
        }
    if kind in ('bpe', 'char') and isinstance(tokenizer, dict):
        eot = _special_id(tokenizer, EOT)
        special = dict(bos_token=EOT, eos_token=EOT) if eot is not None else {}
        text = tokenizer['json'] if kind == 'bpe' else char_tokenizer_json(tokenizer)
        return {
            'tokenizer.json': text,
            'tokenizer_config.json': json.dumps(dict(tokenizer_class='PreTrainedTokenizerFast',
                                                     model_max_length=max_length, **special), indent=2),
        }
    return {}


def char_tokenizer_json(state):
    """A character vocabulary as a `tokenizers` tokenizer.json: every character is a piece of its own
    (a WordLevel model over single characters) and decoding joins them with nothing between."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    vocab = {c: i for i, c in enumerate(state['chars'])}
    specials = state.get('special_tokens') or {}
    # an unknown character must fail as ours does, not become some id: the unk token is one no text holds
    unk = '<|unk|>'
    tok = Tokenizer(models.WordLevel({**vocab, **specials, unk: len(vocab) + len(specials)}, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r'[\s\S]'), behavior='isolated')
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(specials))
    d = json.loads(tok.to_str())
    # the unk entry only satisfies WordLevel's constructor; ids stay 0..vocab_size-1
    del d['model']['vocab'][unk]
    d['model']['unk_token'] = unk
    return json.dumps(d, ensure_ascii=False)


def char_state_from_tokenizer_json(d):
    specials = {t['content']: t['id'] for t in d.get('added_tokens', [])}
    vocab = d['model']['vocab']
    chars = [c for c, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if c not in specials]
    return {'kind': 'char', 'chars': chars, 'special_tokens': specials}


def gpt2_vocab_and_merges():
    """GPT-2's vocab.json and merges.txt contents, derived offline from assets/r50k_base.tiktoken.
    Ranks 0..255 are the bytes and each later rank is one merge, in order; the merge that made a
    token is the split that byte-pair encoding reaches using only the ranks below it."""
    vocab, merges = _gpt2_vocab_and_merges()
    return dict(vocab), list(merges)


@functools.lru_cache(maxsize=1)
def _gpt2_vocab_and_merges():
    # a few seconds of pure python: done once per process
    from core.data import tokenizer as tokenizer_lib
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


def check_tokenizer_fits(tokenizer, vocab_rows):
    """Refuse to export a tokenizer with ids the model has no rows for (--dataset naming another dataset): the
    folder would load, and fail on the first such token."""
    if not isinstance(tokenizer, dict):
        return
    from core.data import tokenizer as tokenizer_lib
    try:
        n = tokenizer_lib.from_state(tokenizer).vocab_size
    except (TypeError, KeyError, AttributeError) as e:
        raise UserError(f"the tokenizer cannot be rebuilt ({one_line_reason(e)}); pass --dataset=<its data folder>")
    if n > vocab_rows:
        raise UserError(f"the tokenizer has {n} tokens but the model only {vocab_rows} rows: it is not the one the "
                        f"model was trained with; pass --dataset=<the data folder it was trained on>")


def save_hf_folder(model, folder, tokenizer=None, force=False, dtype=torch.float32):
    """Write model as a HF folder of the kind export_kind picks: config.json, model.safetensors, the
    tokenizer files and, for the self-contained kind, modeling_nanogpt.py. See export_dest.export_folder
    for what happens to an existing folder. Returns (kind, the names of the files written, the names of
    the other entries of the folder, left as they were)."""
    from safetensors.torch import save_file
    check_tokenizer_fits(tokenizer, model.config.vocab_size)
    model = model.without_mup()
    kind = export_kind(model.config)
    state, config = {'gpt2': (state_dict_to_hf_gpt2, config_to_hf_gpt2),
                     'llama': (state_dict_to_hf_llama, config_to_hf_llama),
                     'custom': (state_dict_to_hf_custom, config_to_hf_custom)}[kind]
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state(model).items()}
    cfg = config(model, tokenizer)
    cfg['torch_dtype'] = str(dtype).replace('torch.', '')
    files = {'config.json': json.dumps(cfg, indent=2),
             'model.safetensors': lambda path: save_file(tensors, path, metadata={'format': 'pt'})}
    if kind == 'custom':
        with open(MODELING_FILE, encoding='utf-8') as f:
            files['modeling_nanogpt.py'] = f.read()
    files.update(tokenizer_files(tokenizer, model.config.block_size))
    others = export_folder(folder, files, force)
    return kind, list(files), others
