"""LoRA: fine-tune a few small matrices beside frozen weights.

    lora.add(model, rank=8, alpha=16, targets='attn,mlp')   # base frozen, adapters trainable
    lora.adapter_state(model)                                # what a checkpoint keeps
    lora.merge(model)                                        # plain Linear layers again, W + (alpha/r) B A

Each targeted Linear (attention's c_attn and c_proj, the MLP's c_fc and c_proj) gains lora_A
(rank, in) and lora_B (out, rank) and computes W x + b + (alpha / rank) B A x. B starts at zero, so
an adapted model gives exactly the base model's logits until it trains. The module keeps its
weight and bias under their old names, so the base's state dict loads into it unchanged.
"""

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from core.errors import UserError

TARGETS = {'attn': ('attn.c_attn', 'attn.c_proj'), 'mlp': ('mlp.c_fc', 'mlp.c_proj')}


class LoRALinear(nn.Linear):
    """A Linear with a low-rank update; built from an existing Linear, sharing its weight and bias."""

    def __init__(self, base, rank, alpha):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.rank, self.scale = rank, alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initializes its weight

    def forward(self, x):
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale

    def merged(self):
        """a plain Linear holding W + scale * B A."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.weight + self.scale * (self.lora_B @ self.lora_A))
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out


def parse_targets(targets):
    """'attn', 'mlp', 'attn,mlp' (or a list of them) as a tuple of group names."""
    names = [t.strip() for t in (targets.split(',') if isinstance(targets, str) else targets) if t.strip()]
    bad = [t for t in names if t not in TARGETS]
    if not names or bad:
        raise UserError(f"lora_targets={targets!r}: use attn, mlp or attn,mlp")
    return tuple(dict.fromkeys(names))


def target_modules(model, targets):
    """(name, parent, attribute) of every Linear the targets name, block by block."""
    out = []
    for i, block in enumerate(model.transformer.h):
        for group in parse_targets(targets):
            for path in TARGETS[group]:
                owner, attr = path.split('.')
                out.append((f'transformer.h.{i}.{path}', getattr(block, owner), attr))
    return out


def add(model, rank, alpha, targets='attn'):
    """freeze every parameter of model and add trainable adapters to the target matrices."""
    if not isinstance(rank, int) or rank <= 0:
        raise UserError(f"lora_rank must be a positive integer to use LoRA, got {rank!r}")
    found = target_modules(model, targets)
    for name, parent, attr in found:
        linear = getattr(parent, attr)
        smallest = min(linear.in_features, linear.out_features)
        if rank > smallest:
            raise UserError(f"lora_rank={rank} is larger than {name} ({linear.out_features} x {linear.in_features}) "
                            f"allows; use a rank of at most {smallest}")
    for p in model.parameters():
        p.requires_grad_(False)
    for _, parent, attr in found:
        setattr(parent, attr, LoRALinear(getattr(parent, attr), rank, alpha))
    return model


def is_lora(model):
    return any(isinstance(m, LoRALinear) for m in model.modules())


def adapter_state(model):
    """the adapters' tensors by their names in model.state_dict()."""
    return {k: v for k, v in model.state_dict().items() if k.endswith(('.lora_A', '.lora_B'))}


def merge(model):
    """replace every LoRALinear by a plain Linear with the update folded in; all parameters trainable again."""
    for name, module in list(model.named_modules()):
        for attr, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, attr, child.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def count(config, rank, targets):
    """adapter parameters LoRA adds to a GPTConfig's model, without building it."""
    C, L, H = config.n_embd, config.n_layer, config.mlp_hidden
    fc_out = 2 * H if config.mlp == 'swiglu' else H
    shapes = {'attn': [(C, 3 * C), (C, C)], 'mlp': [(C, fc_out), (H, C)]}
    return L * sum(rank * (i + o) for group in parse_targets(targets) for i, o in shapes[group])
