"""
A plain GPT-2, written the straightforward way nanoGPT writes it, and bench.py's timing of it beside ours.

Same architecture and initialization as model.py's defaults (pre-norm LayerNorm, learned positions,
the GELU kind of the config, tied head), but every piece is the obvious PyTorch call: nn.Module per part, dropout
modules even at p=0, the loss on the full logits, torch.optim.AdamW with its default implementation
for the device, and clip_grad_norm_. Nothing here is tuned; that is the point of it.
"""

import math
import statistics
from contextlib import nullcontext

import torch
import torch.nn as nn
from torch.nn import functional as F


class LayerNorm(nn.Module):

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class Attention(nn.Module):

    def __init__(self, cfg):
        super().__init__()
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.n_head, self.dropout = cfg.n_head, cfg.dropout

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class MLP(nn.Module):

    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU(approximate='tanh' if cfg.gelu == 'tanh' else 'none')
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, cfg.bias)
        self.attn = Attention(cfg)
        self.ln_2 = LayerNorm(cfg.n_embd, cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class PlainGPT(nn.Module):
    """Takes model.py's GPTConfig; only its shape keys, bias and dropout are read."""

    def __init__(self, cfg):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=LayerNorm(cfg.n_embd, cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for name, p in self.named_parameters():
            if name.endswith('c_proj.weight'):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def forward(self, idx, targets):
        T = idx.size(1)
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type='cpu'):
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [dict(params=[p for p in params if p.dim() >= 2], weight_decay=weight_decay),
                  dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0)]
        # fused on CUDA, torch's default elsewhere (a loop over the tensors on CPU), as nanoGPT chooses
        extra = dict(fused=True) if device_type == 'cuda' else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)


# what PlainGPT builds: GPT-2's architecture, with either GELU
GPT2_ARCH = dict(norm='layernorm', prenorm=True, pos_encoding='learned', mlp='gelu', qk_norm=False,
                 tie_embeddings=True, logit_softcap=0.0)


def unsupported(cfg, optimizer='adamw', **settings):
    """The switches of cfg and the training settings (key=value) that PlainGPT does not run: it is GPT-2 with
    AdamW, no LoRA and no memory savers (settings such as lora_rank=0, chunked_ce=False count when set)."""
    return ([f"{k}={getattr(cfg, k)!r}" for k, v in GPT2_ARCH.items() if getattr(cfg, k) != v] +
            [f"{k}={v!r}" for k, v in settings.items() if v] +
            ([f"optimizer={optimizer!r}"] if optimizer != 'adamw' else []))


def compare(cfg, ours, ours_opt, get_batch, ctx, dev, compile_mode, n_warm, n_iters, accum, tokens_per_iter):
    """Our step against PlainGPT of the same shape: one step of each in turn (which goes first alternates), so
    both see the same machine; medians. compile_mode None: eager. Returns (figures, a line for the report);
    ({}, why) when the two do not fit in memory together."""
    from core.bench.timing import timed_train_steps
    times = {'ours': [], 'reference': []}
    try:
        ref = PlainGPT(cfg).to(dev)
        ref_opt = ref.configure_optimizers(0.1, 6e-4, (0.9, 0.95), dev.split(':')[0])
        ref_m = torch.compile(ref, mode=compile_mode) if compile_mode else ref
        # nanoGPT's train.py autocasts on GPUs only: on a CPU it trains in fp32 whatever its dtype says
        ref_ctx = nullcontext() if dev.split(':')[0] == 'cpu' else ctx
        timed_train_steps(ref_m, ref_opt, get_batch, n_warm, ref_ctx, dev, accum)
        runs = {'ours': (ours, ours_opt, ctx), 'reference': (ref_m, ref_opt, ref_ctx)}
        for i in range(n_iters):
            for name in (('ours', 'reference') if i % 2 == 0 else ('reference', 'ours')):
                m, o, c = runs[name]
                times[name] += timed_train_steps(m, o, get_batch, 1, c, dev, accum)
    except torch.OutOfMemoryError:  # two models and their optimizer states may not fit where one does
        return {}, "plain reference: not timed, it does not fit in memory beside ours (--reference=False to skip it)"
    ours_s, ref_s = statistics.median(times['ours']), statistics.median(times['reference'])
    line = (f"against the plain PyTorch reference (core/bench/reference.py: the same GPT written nanoGPT's way, torch's "
            f"default AdamW for the device{'; fp32, as nanoGPT runs on a CPU' if dev.startswith('cpu') else ''}), "
            f"{n_iters} steps each, alternating: reference {ref_s * 1000:.2f} ms/iter "
            f"({tokens_per_iter / ref_s:,.0f} tokens/s), ours {ours_s * 1000:.2f} ms/iter "
            f"({tokens_per_iter / ours_s:,.0f} tokens/s): {ref_s / ours_s:.3f}x its tokens/s")
    return dict(reference_ms_per_iter=ref_s * 1000, reference_tokens_per_sec=tokens_per_iter / ref_s,
                paired_ms_per_iter=ours_s * 1000, speedup_vs_reference=ref_s / ours_s), line
