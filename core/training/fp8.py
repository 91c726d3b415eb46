"""FP8 training of the blocks' Linear layers with torchao's float8 (tensorwise dynamic scaling).

    from core.training import fp8
    fp8.check(True, device, dtype, fsdp=fsdp, lora_rank=lora_rank)   # one line (UserError) where it cannot run
    fp8.convert(model, fsdp=fsdp)                                    # before torch.compile and fully_shard

Each block's c_attn, c_proj and c_fc becomes a torchao Float8Linear: its inputs, weight and output
gradient are cast to float8 with one scale per tensor before the matmul, in the forward and in both
products of the backward; the master weights, the optimizer and everything between the matmuls stay
as they were. The token embedding and the head stay in bf16: the head is tied to the embedding and
decides the loss, so it keeps its precision (nanochat and torchtitan leave the output layer out too).
A Float8Linear keeps the Linear's parameter names, so checkpoints read and write the same keys.
FP8 matmuls need tensor cores of compute capability 8.9 or later (Ada: L4, L40S, RTX 4090; Hopper:
H100, H200; Blackwell); torch.compile fuses the casts and scales, without it they cost more than they save.
"""

import dataclasses

import torch
import torch.nn as nn

from core.errors import UserError

MIN_CAPABILITY = (8, 9)
# torch._scaled_mm needs both dimensions of an FP8 matmul to be multiples of 16
ALIGNMENT = 16


def torchao_float8():
    """torchao's float8 module, or None when torchao is not installed (or cannot be imported with this torch)."""
    try:
        import torchao.float8 as float8
    except Exception:  # a torchao built for another torch fails in many ways at import
        return None
    return float8


def check(enabled, device, dtype, fsdp=False, lora_rank=0):
    """Stop with one line (UserError) when fp8 training cannot run here; nothing to do when not enabled.
    device: the picked device ('cpu', 'cuda', 'cuda:1', 'mps'); dtype: the picked autocast dtype."""
    if not enabled:
        return
    kind = device.split(':')[0]
    if kind != 'cuda':
        raise UserError(f"fp8=True needs an NVIDIA GPU with FP8 tensor cores (compute capability 8.9 or later: L4, "
                        f"L40S, RTX 4090, H100, H200, B200); this run is on {device}: use --fp8=False")
    if torch.version.hip:
        raise UserError("fp8=True is wired for NVIDIA GPUs (torchao's float8_e4m3fn matmuls); on ROCm use --fp8=False")
    cap = tuple(torch.cuda.get_device_capability(device))
    if cap < MIN_CAPABILITY:
        raise UserError(f"fp8=True needs FP8 tensor cores (compute capability 8.9 or later: L4, L40S, RTX 4090, H100, "
                        f"H200, B200); {torch.cuda.get_device_name(device)} is {cap[0]}.{cap[1]}: use --fp8=False")
    if dtype != 'bfloat16':
        raise UserError(f"fp8=True trains the matmuls in FP8 and the rest under bfloat16 autocast; dtype={dtype} "
                        f"does not mix with it: use --dtype=bfloat16 (or auto)")
    if lora_rank:
        raise UserError("fp8=True does not work with LoRA here (frozen base weights under float8 casts are not "
                        "wired); use --fp8=False for LoRA fine-tuning")
    float8 = torchao_float8()
    if float8 is None:
        raise UserError(f"fp8=True needs torchao (pip install torchao, a version built for torch "
                        f"{torch.__version__.split('+')[0]}); or use --fp8=False")
    if fsdp and 'enable_fsdp_float8_all_gather' not in {f.name for f in dataclasses.fields(float8.Float8LinearConfig)}:
        raise UserError("fp8=True with fsdp=True needs torchao's FSDP2 float8 support (Float8LinearConfig's "
                        "enable_fsdp_float8_all_gather), which this torchao lacks: upgrade torchao or use DDP "
                        "(--fsdp=False)")


def targets(model):
    """Names of the Linear layers fp8 trains: those inside the blocks whose two dimensions are multiples of 16."""
    return [name for name, m in model.named_modules() if convertible(m, name)]


def convertible(module, name):
    return (type(module) is nn.Linear and name.startswith('transformer.h.')
            and module.in_features % ALIGNMENT == 0 and module.out_features % ALIGNMENT == 0)


def convert(model, fsdp=False, emulate=False, float8=None):
    """Swap the blocks' Linear layers (targets(model)) for torchao's Float8Linear, in place, and return their
    names. Call it after the weights are loaded and before torch.compile and fully_shard. fsdp: FSDP2 then
    gathers the weights in float8 (half the bytes). emulate: torchao's CPU emulation of the float8 matmuls,
    for tests without an FP8 GPU. float8: the module to use (torchao.float8 by default)."""
    float8 = float8 or torchao_float8()
    if float8 is None:
        raise UserError("fp8=True needs torchao (pip install torchao); or use --fp8=False")
    names = targets(model)
    if not names:
        return names
    options = dict(emulate=emulate)
    if fsdp:
        options['enable_fsdp_float8_all_gather'] = True
    config = float8.Float8LinearConfig(**options)
    chosen = set(names)
    float8.convert_to_float8_training(model, config=config, module_filter_fn=lambda m, fqn: fqn in chosen)
    return names


def converted(model):
    """Names of the layers that are Float8Linear now (what convert swapped)."""
    return [name for name, m in model.named_modules() if type(m).__name__ == 'Float8Linear']
