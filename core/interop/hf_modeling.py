"""
A model exported by nanogpt-plus's export.py, for Hugging Face transformers:

    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

export.py copies this file into the folder as modeling_nanogpt.py. It needs only torch and
transformers (it imports nothing from the repository that wrote it), so the folder works
on its own. The tensors keep the repository's names (transformer.h.0.attn.c_attn.weight,
...), and every architecture switch the repository has is honoured here: the norm
(layernorm, rmsnorm, none), pre- or post-norm, the positions (learned, rope, none), the MLP
(gelu with erf or tanh, swiglu, relu2), QK-norm, a tied or untied head and a logit soft cap.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

# the architecture keys and their defaults (GPT-2's), as the repository's GPTConfig has them
DEFAULTS = dict(block_size=1024, vocab_size=50304, n_layer=12, n_head=12, n_embd=768, dropout=0.0, bias=True,
                norm='layernorm', prenorm=True, pos_encoding='learned', mlp='gelu', gelu='erf', qk_norm=False,
                tie_embeddings=True, logit_softcap=0.0, rope_base=10000.0, value_embed=False, unet=False,
                zero_init_proj=False, attn_scale=0.0, mup=False, mup_base_width=128)  # export folds muP away


class NanoGPTConfig(PretrainedConfig):
    model_type = 'nanogpt'

    def __init__(self, **kwargs):
        for key, default in DEFAULTS.items():
            setattr(self, key, kwargs.pop(key, default))
        kwargs.setdefault('tie_word_embeddings', self.tie_embeddings)
        kwargs.setdefault('use_cache', False)  # no KV cache here: generate() recomputes the context
        super().__init__(**kwargs)

    @property
    def mlp_hidden(self):
        # swiglu has three matrices instead of two, so 2/3 of the width keeps the parameter count
        return round(8 * self.n_embd / 3) if self.mlp == 'swiglu' else 4 * self.n_embd


class Norm(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.kind = config.norm
        self.weight = nn.Parameter(torch.ones(config.n_embd))
        self.bias = nn.Parameter(torch.zeros(config.n_embd)) if (config.bias and self.kind == 'layernorm') else None

    def forward(self, x):
        if self.kind == 'rmsnorm':
            return F.rms_norm(x, self.weight.shape, self.weight, eps=1e-5)
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, eps=1e-5)


def make_norm(config):
    return nn.Identity() if config.norm == 'none' else Norm(config)


def rope(x, cos, sin):
    # rotates the pairs (i, i + head_dim/2) of each head, the split-halves convention
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Attention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_embd, self.qk_norm = config.n_head, config.n_embd, config.qk_norm
        self.scale = config.attn_scale or None  # None: 1/sqrt(head size)
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        if config.value_embed:  # v = a * v + b * (the token's row of a second table)
            self.v_mix = nn.Parameter(torch.tensor([0.5, 0.5]))

    def forward(self, x, cos_sin, mask=None, ve=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        if ve is not None:
            v = self.v_mix[0] * v + self.v_mix[1] * ve
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.qk_norm:
            q, k = F.rms_norm(q, (q.size(-1),), eps=1e-5), F.rms_norm(k, (k.size(-1),), eps=1e-5)
        if cos_sin is not None:
            q, k = rope(q, *cos_sin), rope(k, *cos_sin)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.kind, self.gelu = config.mlp, config.gelu
        hidden = config.mlp_hidden
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden if self.kind == 'swiglu' else hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)

    def forward(self, x):
        h = self.c_fc(x)
        if self.kind == 'gelu':
            h = F.gelu(h, approximate='tanh' if self.gelu == 'tanh' else 'none')
        elif self.kind == 'relu2':
            h = F.relu(h).square()
        else:
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        return self.c_proj(h)


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.prenorm = config.prenorm
        self.ln_1, self.attn, self.ln_2, self.mlp = make_norm(config), Attention(config), make_norm(config), MLP(config)

    def forward(self, x, cos_sin, mask=None, ve=None):
        if self.prenorm:
            x = x + self.attn(self.ln_1(x), cos_sin, mask, ve)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, cos_sin, mask, ve))
        return self.ln_2(x + self.mlp(x))


class NanoGPTForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = NanoGPTConfig
    base_model_prefix = 'transformer'
    _tied_weights_keys = {'lm_head.weight': 'transformer.wte.weight'}
    _no_split_modules = ['Block']

    def __init__(self, config):
        super().__init__(config)
        parts = dict(wte=nn.Embedding(config.vocab_size, config.n_embd),
                     h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                     ln_f=make_norm(config) if config.prenorm else nn.Identity())
        if config.pos_encoding == 'learned':
            parts['wpe'] = nn.Embedding(config.block_size, config.n_embd)
        if config.value_embed:
            parts['vte'] = nn.Embedding(config.vocab_size, config.n_embd)
        self.transformer = nn.ModuleDict(parts)
        if config.unet:  # U-net skips: block i's output joins the input of block n-1-i
            self.skip_weights = nn.Parameter(torch.ones(config.n_layer // 2))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, value):
        self.transformer.wte = value

    def get_output_embeddings(self):
        return self.lm_head

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, Norm):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _rope(self, pos):
        if self.config.pos_encoding != 'rope':
            return None
        hd = self.config.n_embd // self.config.n_head
        inv_freq = 1.0 / (self.config.rope_base ** (torch.arange(0, hd, 2, device=pos.device, dtype=torch.float32) / hd))
        angles = pos[:, None, :, None].float() * inv_freq  # (B, 1, T, hd/2): one head axis to broadcast over
        return angles.cos(), angles.sin()

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        B, T = input_ids.size()
        if T > self.config.block_size:
            raise ValueError(f"{T} tokens is more than the model's block size of {self.config.block_size}")
        pos = torch.arange(T, device=input_ids.device).expand(B, T)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            # padded rows (padding on the left, as for batched generation): positions count real tokens only,
            # and no query sees a padding key; a padding query sees itself so its row is not empty
            keep = attention_mask.bool()
            pos = (keep.long().cumsum(-1) - 1).clamp(min=0)
            causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()
            mask = (causal & keep[:, None, :]) | torch.eye(T, dtype=torch.bool, device=input_ids.device)
            mask = mask[:, None]  # (B, 1, T, T)
        x = self.transformer.wte(input_ids)
        if 'wpe' in self.transformer:
            x = x + self.transformer.wpe(pos)
        cos_sin = self._rope(pos)
        if cos_sin is not None:
            cos_sin = tuple(t.to(x.dtype) for t in cos_sin)
        ve = self.transformer.vte(input_ids) if 'vte' in self.transformer else None
        n, skips, unet = len(self.transformer.h), [], self.config.unet
        for i, block in enumerate(self.transformer.h):
            if unet and i >= n - n // 2:
                x = x + self.skip_weights[n - 1 - i] * skips.pop()
            x = block(x, cos_sin, mask, ve)
            if unet and i < n // 2:
                skips.append(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        cap = self.config.logit_softcap
        if cap > 0:
            logits = cap * torch.tanh(logits / cap)
        loss = None
        if labels is not None:
            # the usual causal LM loss: position t predicts labels[t + 1]
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        # no cache: the whole context (its last block_size tokens) goes through every step
        n = self.config.block_size
        return {'input_ids': input_ids[:, -n:], 'attention_mask': None if attention_mask is None else attention_mask[:, -n:]}

