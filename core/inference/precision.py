"""Weights in the precision the user asks for: float32, bfloat16, float16 (GPUs) or int8 (weight-only, CPU).

Generation reads every weight once per token, so fewer bytes per weight is more tokens per second. bf16 and
fp16 convert the whole model (its KV cache follows); int8 stores each Linear's matrix as int8 with one scale
per output row and multiplies in bf16 (torch's _weight_int8pack_mm), the rest of the model in bf16
(and a Linear whose input size is not a multiple of 32, which the kernel does not take).
"""

import torch
import torch.nn as nn

from core.errors import UserError

PRECISIONS = ('auto', 'float32', 'bfloat16', 'float16', 'int8')


class Int8Linear(nn.Module):
    """y = x @ (scale * w8).T + bias, w8 int8 (out, in), scale (out,): weight-only int8, symmetric per row."""

    def __init__(self, linear, dtype):
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
        self.register_buffer('weight', (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer('scale', scale.to(dtype))
        self.register_buffer('bias', None if linear.bias is None else linear.bias.detach().to(dtype))
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x):
        shape = x.shape
        y = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]).to(self.scale.dtype), self.weight, self.scale)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)


def pick(precision, device):
    """The weights' dtype name for generation: auto is fp32 on a CPU (exact logits) and bf16, or fp16
    where bf16 is not native, on a GPU."""
    from core import hardware
    kind = device.split(':')[0]
    if precision not in PRECISIONS:
        raise UserError(f"unknown dtype '{precision}'; use {', '.join(PRECISIONS)}")
    if precision == 'auto':
        return hardware.pick_dtype('auto', device)
    if precision == 'float16' and kind == 'cpu':
        raise UserError("float16 is not supported on CPU; use --dtype=bfloat16, int8 or float32")
    if precision == 'int8' and kind != 'cpu':
        raise UserError(f"dtype=int8 (weight-only) runs on a CPU only; on {kind} use --dtype=bfloat16 or float16")
    return precision


def convert(model, precision):
    """model with its weights in precision (a name from pick), converted in place; returns it."""
    if precision == 'float32':
        return model.float()
    if precision in ('bfloat16', 'float16'):
        return model.to(getattr(torch, precision))
    if model.lm_head.weight is model.transformer.wte.weight:
        # the embedding looks rows up and stays bf16; the head, the largest matrix, becomes int8
        model.transformer.wte.weight = nn.Parameter(model.lm_head.weight.detach().clone(), requires_grad=False)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            # torch's int8 kernel crashes on some inner sizes (seen: 100, 171); multiples of 32 are safe
            if isinstance(child, nn.Linear) and child.in_features % 32 == 0:
                setattr(parent, name, Int8Linear(child, torch.bfloat16))  # from the fp32 weights
    return model.to(torch.bfloat16)
