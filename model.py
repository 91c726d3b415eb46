"""
The GPT language model, GPT-2 by default, with switches for the architecture
changes that made small GPTs train faster since (RMSNorm, rotary embeddings,
SwiGLU/ReLU^2, QK-norm, untied heads, logit soft-capping).
Names follow GPT-2 (wte, wpe, c_attn, c_proj, ln_f, lm_head) so the weights map
one to one onto the Hugging Face model.
"""

import inspect
import math
import numbers
from dataclasses import dataclass, fields, asdict

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from core.training.optim import Muon, OptimizerList

NORMS = ('layernorm', 'rmsnorm', 'none')
POS_ENCODINGS = ('learned', 'rope', 'none')
MLPS = ('gelu', 'swiglu', 'relu2')
# the exact erf GELU (nanoGPT's, and ATen's fast kernel on CPU) or GPT-2's tanh approximation
GELUS = ('erf', 'tanh')


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for speed
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2
    norm: str = 'layernorm'
    prenorm: bool = True
    pos_encoding: str = 'learned'
    mlp: str = 'gelu'
    gelu: str = 'erf'  # 'tanh' for GPT-2's weights, so they give HF's logits
    qk_norm: bool = False
    tie_embeddings: bool = True
    logit_softcap: float = 0.0
    rope_base: float = 10000.0
    attn_scale: float = 0.0  # the attention logits' scale; 0: 1/sqrt(head size). With qk_norm it sets their range
    value_embed: bool = False  # a second token table mixed into every layer's values (modded-nanogpt's)
    unet: bool = False  # U-net skips: the first half's block outputs join the second half's inputs, mirrored, weighted
    zero_init_proj: bool = False  # the residual projections start at zero, so each block starts as the identity
    # muP (Yang et al., Tensor Programs V): hyper-parameters tuned at mup_base_width keep working at other widths.
    # The logits are scaled by mup_base_width / n_embd, hidden matrices start at 0.02 * sqrt(base / width) and
    # take AdamW learning rates scaled by base / width, and attention scores shrink as 1 / head size.
    # At n_embd == mup_base_width the model is the standard one, weight for weight.
    mup: bool = False
    mup_base_width: int = 128

    def __post_init__(self):
        # a config read from a file (a checkpoint's model_args, an hf: config.json) may hold a string where a
        # number belongs: name the field rather than fail in a comparison below
        for f in fields(self):
            value, want = getattr(self, f.name), type(f.default)
            if not (isinstance(value, bool) if want is bool else isinstance(value, str) if want is str else
                    isinstance(value, (numbers.Integral if want is int else numbers.Real)) and not isinstance(value, bool)):
                kind = {bool: 'True or False', int: 'an integer', float: 'a number', str: 'a string'}[want]
                raise ValueError(f"{f.name} must be {kind}, got {value!r}")
            if want is float:
                # an integer there (logit_softcap=10**20 in a hand-edited model_args) would reach torch as an int64
                # and overflow in the forward pass: held as the float it stands for, or refused beyond a float's range
                try:
                    setattr(self, f.name, float(value))
                except OverflowError:
                    raise ValueError(f"{f.name} must be a finite number, got an integer beyond 1e308") from None
            if want is float and not math.isfinite(value):  # NaN passes every range check below
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
        for name, value, allowed in (('norm', self.norm, NORMS), ('pos_encoding', self.pos_encoding, POS_ENCODINGS),
                                     ('mlp', self.mlp, MLPS), ('gelu', self.gelu, GELUS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        for name in ('block_size', 'vocab_size', 'n_layer', 'n_head', 'n_embd', 'mup_base_width', 'rope_base'):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        rows = max(self.vocab_size, self.block_size, 3 * self.n_embd, self.mlp_hidden)
        if rows * self.n_embd >= 2 ** 60:  # torch could not even size such a tensor: a RuntimeError in nn.Linear
            raise ValueError(f"n_embd={self.n_embd} with {rows} rows makes a weight of {rows * self.n_embd:.3g} "
                             f"numbers, more than a tensor can hold; use a smaller model")
        if self.pos_encoding == 'rope' and (self.n_embd // self.n_head) % 2 != 0:
            raise ValueError(f"rope needs an even head size, got n_embd/n_head={self.n_embd // self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.logit_softcap < 0:
            raise ValueError(f"logit_softcap must be >= 0, got {self.logit_softcap}")
        if self.attn_scale < 0:
            raise ValueError(f"attn_scale must be >= 0 (0: 1/sqrt(head size)), got {self.attn_scale}")

    @property
    def mup_width_mult(self):
        """How many times wider than its base width the model is under muP; 1 without muP."""
        return self.n_embd / self.mup_base_width if self.mup else 1.0

    @property
    def attention_scale(self):
        """The attention logits' scale, None for SDPA's own 1/sqrt(head size). Under muP attn_scale (or
        1/sqrt(head size)) holds at the base width and shrinks as 1/head size beyond: q and k grow correlated
        as training aligns them, so their dot product grows with the head size, not its square root."""
        head = self.n_embd // self.n_head
        if not self.mup:
            return self.attn_scale or None
        base_head = self.mup_base_width / self.n_head
        return (self.attn_scale or base_head ** -0.5) * base_head / head

    @property
    def mlp_hidden(self):
        # swiglu has three matrices instead of two, so 2/3 of the width keeps the parameter count
        return round(8 * self.n_embd / 3) if self.mlp == 'swiglu' else 4 * self.n_embd

    def to_dict(self):
        return asdict(self)


CONFIG_KEYS = tuple(f.name for f in fields(GPTConfig))
# the one list of architecture switches and their defaults: scripts and tests derive theirs from it
CONFIG_DEFAULTS = {f.name: f.default for f in fields(GPTConfig)}
# keys that change the shapes or the function computed; dropout only acts in training
ARCH_KEYS = tuple(k for k in CONFIG_KEYS if k != 'dropout')


def loss_chunk_rows(n_rows, vocab_size):
    """Rows per chunk of the chunked loss: eight chunks or more, so the logits take an eighth of the memory
    or less, and chunks of at most 2^25 logits (128 MiB in fp32), a cap that never goes below 128 rows
    so the head's matmul stays efficient."""
    return max(1, min(-(-n_rows // 8), max(128, (1 << 25) // vocab_size)))


class ChunkedHeadLoss(torch.autograd.Function):
    """Summed cross-entropy of the head's logits scale * x @ weight.T (soft-capped when softcap > 0) against targets,
    ignoring -1, over chunks of rows: the forward keeps only x, and the backward recomputes each chunk's
    logits and writes its gradients from softmax - one-hot, so only one chunk's (rows, vocab) logits are
    ever alive. An autograd.Function rather than checkpointed chunks: torch.compile keeps its chunks apart,
    where it merges checkpointed ones back into full-size logits."""

    @staticmethod
    def forward(ctx, x, weight, targets, rows, softcap, scale, dtype):
        ctx.save_for_backward(x, weight, targets)
        ctx.rows, ctx.softcap, ctx.scale, ctx.dtype = rows, softcap, scale, dtype
        w = weight.to(dtype)
        total = x.new_zeros((), dtype=torch.float32)
        for xc, tc in zip(x.split(rows), targets.split(rows)):
            logits = ChunkedHeadLoss.logits(xc.to(dtype), w, softcap, scale)
            total = total + F.cross_entropy(logits, tc, ignore_index=-1, reduction='sum')
        return total

    @staticmethod
    def logits(x, w, softcap, scale):
        logits = F.linear(x, w).float() * scale
        return softcap * torch.tanh(logits / softcap) if softcap > 0 else logits

    @staticmethod
    def backward(ctx, grad):
        x, weight, targets = ctx.saved_tensors
        rows, softcap, scale, dtype = ctx.rows, ctx.softcap, ctx.scale, ctx.dtype
        w = weight.to(dtype)
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        for i, (xc, tc) in enumerate(zip(x.split(rows), targets.split(rows))):
            xc = xc.to(dtype)
            capped = ChunkedHeadLoss.logits(xc, w, softcap, scale)
            g = capped.softmax(-1)
            keep = tc != -1
            g = g.scatter_add(1, tc.clamp(min=0)[:, None], -keep[:, None].to(g.dtype))  # softmax - one-hot
            g = g * (grad * scale * keep[:, None])
            if softcap > 0:
                g = g * (1 - (capped / softcap) ** 2)  # d(cap tanh(z / cap))/dz
            g = g.to(dtype)
            grad_x[i * rows:i * rows + xc.size(0)] = g @ w
            if grad_w is not None:
                grad_w += (g.t() @ xc).float()
        return grad_x, (grad_w.to(weight.dtype) if grad_w is not None else None), None, None, None, None, None


class Norm(nn.Module):
    """LayerNorm (optional bias) or RMSNorm, both with a learned gain."""

    def __init__(self, ndim, kind, bias):
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if (bias and kind == 'layernorm') else None

    def forward(self, x):
        if self.kind == 'rmsnorm':
            return F.rms_norm(x, self.weight.shape, self.weight, eps=1e-5)
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, eps=1e-5)


def make_norm(config):
    if config.norm == 'none':
        return nn.Identity()
    return Norm(config.n_embd, config.norm, config.bias)


def rope_tables(head_dim, length, base, device=None, start=0):
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    positions = torch.arange(start, start + length, device=device, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)  # (T, hd/2)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    # x: (B, nh, T, hd); rotate pairs (first half, second half) of each head by a position-dependent angle
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # a no-op when the caller already cast them once per forward
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def document_layout(docs):
    """Positions (B, T) that restart at 0 where the document number in docs (B, T) changes, and the
    block-diagonal causal mask (B, 1, T, T): True where a query may attend, i.e. to the earlier
    tokens of its own document."""
    B, T = docs.shape
    arange = torch.arange(T, device=docs.device)
    starts = torch.ones_like(docs, dtype=torch.bool)
    starts[:, 1:] = docs[:, 1:] != docs[:, :-1]
    first = torch.where(starts, arange, 0).cummax(dim=1).values  # where each token's document began
    same = docs.unsqueeze(2) == docs.unsqueeze(1)  # (B, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=docs.device).tril()
    return arange - first, (same & causal).unsqueeze(1)


class CacheSlots:
    """Where one forward's tokens sit in a KV cache whose rows are at different positions (core/inference/engine.py).

    Decode (one new token per row): pos (B,) is each row's position, slot (B,) the cache slot it writes
    (pos mod block_size for a sliding window; the spare last slot for a row that sits this step out),
    length the slots to attend over, mask (B, 1, 1, length) which of them each row sees, end one past
    the largest position (known on the host, so no device sync is needed to size the rope tables).
    Prefill into chosen rows: rows (n,) the cache rows the chunk starts at position 0 in."""

    def __init__(self, pos=None, slot=None, length=None, mask=None, end=None, rows=None):
        self.pos, self.slot, self.length, self.mask, self.end, self.rows = pos, slot, length, mask, end, rows


# On a CPU under bf16, causal attention over at most this many positions is written out (see below); longer
# windows attend in fp32 with torch's kernel, which never holds the (T, T) weights. core/training/planner.py counts both.
SMALL_ATTENTION = 256


def attention_written_out(device_type, bf16, seq_len, dropout):
    """Whether causal attention over seq_len positions is written out (written_out_attention below) instead of
    run by torch's kernel: on a CPU under bf16, without dropout, for windows up to SMALL_ATTENTION. The model
    decides by this, and core/training/planner.py counts the (T, T) weights by it."""
    return device_type == 'cpu' and bf16 and not dropout and seq_len <= SMALL_ATTENTION


def written_out_attention(q, k, v, scale=None):
    """Causal attention as its matmuls, for bf16 on a CPU: the scores and the weighted sum in bf16, the
    softmax in fp32. torch's CPU kernels are slow in bf16 (the flash backward 5x its fp32 time) and its fp32
    kernel leaves the matmuls in fp32; for short windows this is faster (under torch.compile, which fuses the
    mask and the softmax: 7% off a speedrun step on 2 cores), at the price of keeping the (T, T) weights."""
    T = q.size(2)
    att = (q @ k.transpose(-2, -1)).float() * (scale or q.size(-1) ** -0.5)
    att = att.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float('-inf'))
    return att.softmax(-1).to(q.dtype) @ v


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.head_dim = config.n_embd // config.n_head
        self.dropout = config.dropout
        self.qk_norm = config.qk_norm
        self.scale = config.attention_scale  # None: SDPA's own 1/sqrt(head size)
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        if config.value_embed:  # v = a * v + b * value_embedding(token), a and b learned per layer
            self.v_mix = nn.Parameter(torch.tensor([0.5, 0.5]))

    def forward(self, x, rope=None, cache=None, pos=0, mask=None, ve=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        if ve is not None:
            v = self.v_mix[0] * v + self.v_mix[1] * ve
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        if self.qk_norm:
            q = F.rms_norm(q, (self.head_dim,), eps=1e-5)
            k = F.rms_norm(k, (self.head_dim,), eps=1e-5)
        if rope is not None:  # already the tables of these T positions, cast to q's dtype (see GPT.hidden_states)
            cos, sin = rope
            q = apply_rope(q, cos, sin)
            k = apply_rope(k, cos, sin)
        causal = mask is None  # a document mask (B, 1, T, T) is causal already
        if cache is not None:
            k, v = cache.update(k, v, pos)  # (B, nh, pos+T, hd), or the slots CacheSlots says to attend
            if isinstance(pos, CacheSlots):
                mask, causal = pos.mask, pos.mask is None
            elif pos > 0:
                causal = False
                if T > 1:  # a chunk after a prefix: each new query sees the prefix and its own past
                    mask = torch.ones(T, pos + T, dtype=torch.bool, device=x.device).tril(diagonal=pos)
        dropout_p, is_causal = self.dropout if self.training else 0.0, causal and mask is None
        if is_causal and q.size(2) == k.size(2) and \
                attention_written_out(q.device.type, q.dtype == torch.bfloat16, k.size(2), dropout_p):
            y = written_out_attention(q, k, v, self.scale)
        elif T == 1 and isinstance(pos, CacheSlots) and torch.compiler.is_compiling():
            # a compiled decode step (core/inference/decode.py): one query per row against the whole static
            # cache, which as two matmuls and a masked softmax compiles to far less than torch's CPU kernel
            att = (q.float() @ k.float().transpose(-2, -1)) * (self.scale or self.head_dim ** -0.5)
            y = (att.masked_fill(~mask, float('-inf')).softmax(-1) @ v.float()).to(q.dtype)
        elif q.device.type == 'cpu' and q.dtype == torch.bfloat16:
            # torch's CPU attention kernels are slow in bf16 (the flash backward about 5x its fp32 time at
            # T=64): attend in fp32, a small share of the step, and keep the matmuls around it in bf16
            with torch.autocast('cpu', enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask,
                                                   is_causal=is_causal, dropout_p=dropout_p, scale=self.scale).to(q.dtype)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout_p,
                                               scale=self.scale)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.kind = config.mlp
        self.approximate = 'tanh' if config.gelu == 'tanh' else 'none'
        hidden = config.mlp_hidden
        # swiglu's gate and value projections share one matmul
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden if self.kind == 'swiglu' else hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x)
        if self.kind == 'gelu':
            h = F.gelu(h, approximate=self.approximate)
        elif self.kind == 'relu2':
            h = F.relu(h).square()
        else:
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        return self.dropout(self.c_proj(h))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.prenorm = config.prenorm
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, rope=None, cache=None, pos=0, mask=None, ve=None):
        if self.prenorm:
            x = x + self.attn(self.ln_1(x), rope, cache, pos, mask, ve)
            x = x + self.mlp(self.ln_2(x))
        else:
            x = self.ln_1(x + self.attn(x, rope, cache, pos, mask, ve))
            x = self.ln_2(x + self.mlp(x))
        return x


class KVCache:
    """Keys and values of one layer, preallocated for the whole context window plus one spare slot
    that rows sitting out a batched step write to (never attended). Zeros, not empty memory: a masked
    slot still multiplies its value by a zero weight, and 0 * NaN would be NaN."""

    def __init__(self, batch_size, n_head, max_len, head_dim, device, dtype):
        self.k = torch.zeros(batch_size, n_head, max_len + 1, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)

    def first_rows(self, n):
        """This cache's first n rows, sharing its memory: a decode step compiled for n rows writes through it."""
        view = KVCache.__new__(KVCache)
        view.k, view.v = self.k[:n], self.v[:n]
        return view

    def update(self, k, v, pos):
        if isinstance(pos, CacheSlots):
            if pos.rows is not None:  # a prefill from position 0: the chunk attends only to itself
                T = k.size(2)
                self.k[:, :, :T].index_copy_(0, pos.rows, k)
                self.v[:, :, :T].index_copy_(0, pos.rows, v)
                return k, v
            B = k.size(0)
            rows = torch.arange(B, device=k.device)
            self.k[rows, :, pos.slot] = k[:, :, 0]
            self.v[rows, :, pos.slot] = v[:, :, 0]
            return self.k[:B, :, :pos.length], self.v[:B, :, :pos.length]
        T = k.size(2)
        self.k[:, :, pos:pos + T] = k
        self.v[:, :, pos:pos + T] = v
        return self.k[:, :, :pos + T], self.v[:, :, :pos + T]


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        parts = dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            # post-norm blocks already end in a norm, so only pre-norm needs a final one
            ln_f=make_norm(config) if config.prenorm else nn.Identity(),
        )
        if config.pos_encoding == 'learned':
            parts['wpe'] = nn.Embedding(config.block_size, config.n_embd)
        if config.value_embed:
            parts['vte'] = nn.Embedding(config.vocab_size, config.n_embd)
        self.transformer = nn.ModuleDict(parts)
        if config.unet:
            self.skip_weights = nn.Parameter(torch.ones(config.n_layer // 2))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight
        if config.pos_encoding == 'rope':
            cos, sin = rope_tables(config.n_embd // config.n_head, config.block_size, config.rope_base)
            self.register_buffer('rope_cos', cos, persistent=False)
            self.register_buffer('rope_sin', sin, persistent=False)
        self.set_memory_savers()

        self.apply(self._init_weights)
        # muP: hidden matrices start with a variance 1/fan_in relative to the base width, so their outputs keep
        # their size as the model widens; embeddings and the head keep 0.02 (the head's 1/width is in head())
        hidden_std = 0.02 / math.sqrt(config.mup_width_mult)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer): each block adds two of them
        for pn, p in self.named_parameters():
            if pn.endswith('c_proj.weight'):
                if config.zero_init_proj:
                    torch.nn.init.zeros_(p)
                else:
                    torch.nn.init.normal_(p, mean=0.0, std=hidden_std / math.sqrt(2 * config.n_layer))
            elif config.mup and pn.startswith('transformer.h.') and p.dim() == 2:
                with torch.no_grad():  # rescaled, not redrawn: at the base width the weights are the standard ones
                    p.mul_(hidden_std / 0.02)

    def set_memory_savers(self, chunked_ce=False, activation_checkpointing=False):
        """Trade compute for memory in training: the loss in chunks (the fp32 (B, T, vocab) logits never
        exist), block activations recomputed in the backward. Off when the model is built."""
        self.chunked_ce, self.activation_checkpointing = bool(chunked_ce), bool(activation_checkpointing)
        return self

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding=True):
        """Parameters, counted once when tied. Non-embedding leaves out the lookup tables
        (position and value embeddings, and the token embeddings when they are not the head)."""
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if 'wpe' in self.transformer:
                n_params -= self.transformer.wpe.weight.numel()
            if not self.config.tie_embeddings:
                n_params -= self.transformer.wte.weight.numel()
            if 'vte' in self.transformer:
                n_params -= self.transformer.vte.weight.numel()
        return n_params

    def _rope(self, positions, end, dtype):
        """cos and sin at positions (a slice or an index tensor), cast once per forward; past block_size
        (a sliding rope cache) the tables grow, keeping the rows they had so cached keys stay bit-identical."""
        if self.config.pos_encoding != 'rope':
            return None
        have = self.rope_cos.size(0)
        if end is not None and end > have:  # None: the caller grew the tables beforehand (a compiled step)
            more = max(end, 2 * have) - have
            cos, sin = rope_tables(self.config.n_embd // self.config.n_head, more, self.config.rope_base,
                                   self.rope_cos.device, start=have)
            self.rope_cos = torch.cat([self.rope_cos, cos])
            self.rope_sin = torch.cat([self.rope_sin, sin])
        return self.rope_cos[positions].to(dtype), self.rope_sin[positions].to(dtype)

    def hidden_states(self, idx, caches=None, pos=0, docs=None):
        """The final normalized hidden states (B, T, C). docs (B, T), optional: each token's document
        number in a packed window (see document_layout); attention then stays inside a document and
        positions restart at each one, so every document is computed as if it were alone. pos: the
        position of idx[:, 0] in every row, or a CacheSlots (core/inference/engine.py's batched decode, and prefill
        into chosen cache rows)."""
        B, T = idx.size()
        step = pos if isinstance(pos, CacheSlots) else None
        if step is None and pos + T > self.config.block_size:
            raise ValueError(f"cannot forward {pos + T} tokens, block size is only {self.config.block_size}")
        if docs is not None and caches is not None:
            raise ValueError("docs and caches do not mix: generation runs one document")
        mask = None
        x = self.transformer.wte(idx)  # (B, T, C)
        if step is not None and step.pos is not None:
            positions, end = step.pos[:, None], step.end  # (B, 1): one new token per row
        elif docs is not None:
            (positions, mask), end = document_layout(docs), T  # (B, T), (B, 1, T, T)
        else:
            start = 0 if step is not None else pos
            positions, end = torch.arange(start, start + T, dtype=torch.long, device=idx.device), start + T
        if 'wpe' in self.transformer:
            x = x + self.transformer.wpe(positions)
        x = self.transformer.drop(x)
        dev = idx.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        rope = None
        if self.config.pos_encoding == 'rope':
            cos, sin = self._rope(positions if positions.dim() == 2 else slice(end - T, end), end, dtype)
            rope = (cos[:, None], sin[:, None]) if positions.dim() == 2 else (cos, sin)  # broadcast over heads
        ve = self.transformer.vte(idx) if self.config.value_embed else None
        n = len(self.transformer.h)
        skips = []
        for i, block in enumerate(self.transformer.h):
            if self.config.unet and i >= n - n // 2:  # the second half takes the first half's outputs, mirrored
                x = x + self.skip_weights[n - 1 - i] * skips.pop()
            if self.activation_checkpointing and self.training and caches is None:
                x = checkpoint(block, x, rope, None, 0, mask, ve, use_reentrant=False)
            else:
                x = block(x, rope, caches[i] if caches is not None else None, pos, mask, ve)
            if self.config.unet and i < n // 2:
                skips.append(x)
        return self.transformer.ln_f(x)

    def head(self, x):
        logits = self.lm_head(x)
        if self.config.mup:  # muP's output multiplier: a wider model's logits sum over more coordinates
            logits = logits * (1.0 / self.config.mup_width_mult)
        return self.softcap(logits)

    def softcap(self, logits):
        cap = self.config.logit_softcap
        if cap > 0:
            # in fp32: tanh of 16-bit logits would round away the differences the cap keeps
            logits = cap * torch.tanh(logits.float() / cap)
        return logits

    def forward(self, idx, targets=None, caches=None, pos=0, docs=None, last=None):
        x = self.hidden_states(idx, caches, pos, docs)
        if targets is None:
            # inference only needs the next token: skip the head on all but the last position
            # (or, for right-padded prompts, each row's last real position)
            if last is not None:
                return self.head(x[torch.arange(x.size(0), device=x.device), last][:, None]), None
            return self.head(x[:, -1:, :]), None
        if self.chunked_ce:
            return None, self.chunked_loss(x, targets)
        logits = self.head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        # the logits go back without their graph: a compiled model would otherwise hand its backward a zero-filled
        # gradient of the logits' size for them (the loop drops them) and add the loss's gradient into it
        return logits.detach(), loss

    def chunked_loss(self, x, targets, chunk_rows=None):
        """Mean cross-entropy over targets != -1, computed a few rows at a time (ChunkedHeadLoss): the head's
        logits exist one chunk at a time, in the forward and again in the backward, so the (B, T, vocab) logits
        never exist, compiled or not."""
        x = x.reshape(-1, x.size(-1))
        targets = targets.reshape(-1)
        rows = chunk_rows or loss_chunk_rows(x.size(0), self.config.vocab_size)
        kind = x.device.type
        # the head's matmuls run in the autocast dtype; each chunk's head gradient is handed back in fp32
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
        with torch.autocast(kind, enabled=False):
            scale = 1.0 / self.config.mup_width_mult if self.config.mup else 1.0  # muP's output multiplier
            total = ChunkedHeadLoss.apply(x, self.lm_head.weight, targets, rows, self.config.logit_softcap, scale,
                                          dtype)
        return total / (targets != -1).sum().clamp(min=1)

    def crop_block_size(self, block_size):
        """Shrink the context window, e.g. to fine-tune GPT-2 (1024) with a smaller block."""
        if block_size > self.config.block_size:
            raise ValueError(f"cannot grow block_size from {self.config.block_size} to {block_size}")
        self.config.block_size = block_size
        if 'wpe' in self.transformer:
            wpe = self.transformer.wpe.weight  # a frozen table (LoRA) stays frozen
            self.transformer.wpe.weight = nn.Parameter(wpe[:block_size], requires_grad=wpe.requires_grad)
        if self.config.pos_encoding == 'rope':
            self.rope_cos = self.rope_cos[:block_size]
            self.rope_sin = self.rope_sin[:block_size]

    def without_mup(self):
        """This model with muP's multipliers folded into its weights: a standard GPTConfig (mup=False) computing
        the same function, for formats that know nothing of muP. The logits' 1/width goes into the head (which
        is untied from the embedding when they were tied); the attention scale goes into the query weights, or,
        under qk_norm, which would undo that, into attn_scale. Returns self when mup is off."""
        cfg = self.config
        if not cfg.mup:
            return self
        head_dim = cfg.n_embd // cfg.n_head
        scale = cfg.attention_scale
        plain = dict(cfg.to_dict(), mup=False, mup_base_width=GPTConfig.mup_base_width)
        if cfg.qk_norm:
            plain['attn_scale'] = scale
        mult = cfg.mup_width_mult
        if mult != 1.0:
            plain['tie_embeddings'] = False
        folded = GPT(GPTConfig(**plain)).to(self.lm_head.weight.device)
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        state['lm_head.weight'] = self.lm_head.weight.detach() / mult
        if not cfg.qk_norm:
            q = scale / (cfg.attn_scale or head_dim ** -0.5)  # what the query rows carry beyond the plain scale
            for i in range(cfg.n_layer):
                for name in (f'transformer.h.{i}.attn.c_attn.weight', f'transformer.h.{i}.attn.c_attn.bias'):
                    if name in state:
                        state[name][:cfg.n_embd] *= q
        if plain['tie_embeddings'] != cfg.tie_embeddings:
            state['transformer.wte.weight'] = self.transformer.wte.weight.detach().clone()
        folded.load_state_dict(state)
        return folded.train(self.training)

    def param_groups(self):
        """Split parameters for the optimizers: 2-D hidden matrices (decayed, Muon-able),
        embeddings and head (2-D, decayed, AdamW), and gains and biases (1-D, not decayed)."""
        seen, matrices, embed_head, vectors = set(), [], [], []
        for name, p in self.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if p.dim() < 2:
                vectors.append(p)
            elif name.startswith('transformer.h.'):
                matrices.append(p)
            else:
                embed_head.append(p)
        return matrices, embed_head, vectors

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, optimizer='adamw',
                             muon_lr=0.02, muon_momentum=0.95, embed_lr=None, muon_ns='quintic'):
        """AdamW with weight decay on >= 2-D tensors only; or Muon on the hidden matrices with AdamW for the rest.
        Each param group records its own base learning rate in 'initial_lr' for the schedule to scale."""
        matrices, embed_head, vectors = self.param_groups()
        # one kernel per tensor instead of a dozen small ops each: CUDA, and CPU since torch 2.4
        fused = device_type in ('cuda', 'cpu') and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        adamw_kw = dict(betas=betas, fused=True) if fused else dict(betas=betas)
        embed_lr = learning_rate if embed_lr is None else embed_lr
        if optimizer == 'adamw':
            # muP: Adam moves every entry by about the learning rate, so a hidden matrix's effect on its output grows
            # with its fan-in; 1/width keeps it. Embeddings, the head (scaled in the forward) and vectors keep theirs
            hidden_lr = learning_rate / self.config.mup_width_mult
            groups = [dict(params=matrices + embed_head, weight_decay=weight_decay, initial_lr=learning_rate),
                      dict(params=vectors, weight_decay=0.0, initial_lr=learning_rate)]
            if embed_lr != learning_rate or hidden_lr != learning_rate:
                groups = [dict(params=matrices, weight_decay=weight_decay, initial_lr=hidden_lr),
                          dict(params=embed_head, weight_decay=weight_decay, initial_lr=embed_lr),
                          dict(params=vectors, weight_decay=0.0, initial_lr=learning_rate)]
            for g in groups:
                g['lr'] = g['initial_lr']
            return torch.optim.AdamW(groups, **adamw_kw)
        if optimizer == 'muon':
            # Muon needs nothing for muP: its orthogonalized update has a spectral norm set by the learning rate and
            # the matrix's aspect ratio alone, which is the size muP asks of a hidden matrix's update at any width
            adam_groups = [dict(params=embed_head, weight_decay=weight_decay, initial_lr=embed_lr, lr=embed_lr),
                           dict(params=vectors, weight_decay=0.0, initial_lr=learning_rate, lr=learning_rate)]
            muon = Muon([dict(params=matrices, initial_lr=muon_lr, lr=muon_lr)], ns=muon_ns, lr=muon_lr,
                        momentum=muon_momentum, weight_decay=weight_decay)
            return OptimizerList([muon, torch.optim.AdamW(adam_groups, **adamw_kw)])
        raise ValueError(f"optimizer={optimizer!r} is not one of adamw, muon")

    # ----- accounting (core/training/accounting.py counts; these are the calls nanoGPT's users know) -----

    def flops_per_token(self, seq_len=None):
        """Model FLOPs of one training step (forward + backward) per token, the figure MFU is based on."""
        from core.training import accounting
        return accounting.flops_per_token(self.config, seq_len)

    def estimate_mfu(self, tokens_per_sec, peak_flops, seq_len=None):
        """Model FLOPs utilization: achieved training FLOP/s over the device's peak FLOP/s."""
        from core.training import accounting
        return accounting.mfu(self.config, tokens_per_sec, peak_flops, seq_len)

    # ----- generation: nanoGPT's loop, with a KV cache while the sequence fits in the window -----
    # (sample.py, the chat and serve.py use core/inference/engine.py, which batches rows and slides the window)

    def new_caches(self, batch_size, device, dtype):
        cfg = self.config
        return [KVCache(batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head, device, dtype)
                for _ in range(cfg.n_layer)]

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_token=None,
                 use_cache=True, generator=None, n_vocab=None):
        """Continue idx (B, T) by up to max_new_tokens; temperature 0 is greedy. A row that produces
        stop_token stops there and is padded with it; generation ends once every row has stopped.
        n_vocab: the tokenizer's size, so the ids the embedding is padded with are never sampled.
        Past block_size each token recomputes the last block_size tokens, as nanoGPT does."""
        if max_new_tokens <= 0:
            return idx
        L = self.config.block_size
        caches = None
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for i in range(max_new_tokens):
            if not use_cache or idx.size(1) > L:
                logits, _ = self(idx[:, -L:])
            elif caches is None:  # the prompt in one forward, filling the cache
                caches = self.new_caches(idx.size(0), idx.device, self.lm_head.weight.dtype)
                logits, _ = self(idx, caches=caches)
            else:
                logits, _ = self(idx[:, -1:], caches=caches, pos=idx.size(1) - 1)
            nxt = sample(logits[:, -1], temperature, top_k, top_p, generator, n_vocab)
            if stop_token is not None:
                nxt = torch.where(done, stop_token, nxt)
                done |= nxt == stop_token
            idx = torch.cat((idx, nxt[:, None]), dim=1)
            if stop_token is not None and i % 16 == 15 and bool(done.all()):  # a host sync every 16 tokens only
                break
        if stop_token is not None:  # cut the columns after the last row's stop
            new = idx[:, idx.size(1) - i - 1:]
            hit = (new == stop_token).int()
            ends = torch.where(hit.any(1), hit.argmax(1) + 1, new.size(1))
            idx = idx[:, :idx.size(1) - new.size(1) + int(ends.max())]
        return idx


MAX_TEMPERATURE = 1e30  # float32 holds it, and every temperature past about 1e3 samples alike (near uniformly)


def sampling_problem(temperature, top_k=0, top_p=1.0):
    """Why sample() cannot take these settings, as a sentence for an error line, or None when it can;
    scripts and the server check what a user typed with it before a tensor is filled."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= MAX_TEMPERATURE:
        return f"temperature must be a number from 0 (greedy) to {MAX_TEMPERATURE:g}, got {temperature}"
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        return f"top_k must be an integer >= 0 (0 keeps every token), got {top_k}"
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        return f"top_p must be in (0, 1], got {top_p}"
    return None


def first_argmax(x):
    """x.argmax(-1) for rows of x: the first index of each row's largest value, in two vectorised passes
    (the largest value, then the least index holding it). A CPU's argmax is a scalar loop: over a 50k vocabulary
    it took 58 us, where these take 15, in a 7M model's decode step of 1.2 ms. A row holding NaN gets its last
    index (argmax would pick the NaN): the id stays in range either way."""
    ids = torch.arange(x.size(-1), device=x.device, dtype=torch.int32)
    return torch.where(x == x.amax(dim=-1, keepdim=True), ids, x.size(-1) - 1).amin(dim=-1).long()


def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None, n_vocab=None, noise=None):
    """Next token ids (B,) from last-position logits (B, V). temperature, top_k and top_p are numbers,
    or (B,) tensors with one value per row; temperature 0 is greedy, top_k 0 or None and top_p 1 or None
    keep every token. Ids from n_vocab up (the rows an embedding is padded with, which no tokenizer can
    decode) are never picked, and neither top_k nor top_p counts them.
    noise (B, n_vocab or V), optional: Exp(1) draws made outside, for a compiled step that cannot take a
    generator; the token is then argmax(p / noise), which picks each token with its probability p."""
    logits = logits.float()
    if n_vocab is not None:
        logits = logits[:, :n_vocab]
    greedy = first_argmax(logits)
    per_row = any(torch.is_tensor(v) for v in (temperature, top_k, top_p))
    if not per_row and temperature == 0:
        return greedy
    V = logits.size(-1)
    # within (1e-30, MAX_TEMPERATURE): a float32 temperature of inf would turn a -inf logit into nan
    if torch.is_tensor(temperature):
        t = temperature.float().clamp(min=1e-30, max=MAX_TEMPERATURE)[:, None]
    else:
        t = min(max(temperature, 1e-30), MAX_TEMPERATURE)
    # the top logit becomes 0 before dividing, so a tiny temperature gives 0 and -inf, never inf - inf
    z = (logits - logits.max(dim=-1, keepdim=True).values) / t
    if torch.is_tensor(top_k):
        k = torch.where(top_k <= 0, V, top_k.clamp(max=V))
        kth = z.sort(dim=-1, descending=True).values.gather(1, (k - 1)[:, None])
        z = z.masked_fill(z < kth, float('-inf'))
    elif top_k and 0 < top_k < V:
        kth = torch.topk(z, top_k).values[:, -1:]
        z = z.masked_fill(z < kth, float('-inf'))
    if torch.is_tensor(top_p) or (top_p is not None and top_p < 1):
        p = top_p[:, None] if torch.is_tensor(top_p) else top_p
        sorted_z, order = torch.sort(z, dim=-1, descending=True)
        probs = sorted_z.softmax(dim=-1)
        # drop a token once the tokens before it already cover top_p; the first always stays, so a
        # top_p that rounds to 0 cannot drop them all
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= p
        drop_sorted[:, 0] = False
        z = z.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float('-inf'))
    if noise is not None:
        tokens = first_argmax(z.softmax(dim=-1) / noise)
    else:
        tokens = torch.multinomial(z.softmax(dim=-1), num_samples=1, generator=generator)[:, 0]
    if torch.is_tensor(temperature):
        tokens = torch.where(temperature == 0, greedy, tokens)
    return tokens
