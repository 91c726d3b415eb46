"""The memory side of a training run: its plan (core/training/planner.py) for this model and config, the budget
it must fit, and batch_size='auto'."""

import torch

from core import hardware
from core.errors import UserError
from core.training import planner
from core.units import format_bytes


def training_plan(model, c, dtype, device, compile, ddp, world_size, lora_config):
    """plan(b, accumulation): the memory plan (components and total) of this process's training steps at
    micro-batch b. c is the config dict; model the raw (unwrapped) one."""
    fsdp = c['fsdp']

    def plan(b, accumulation):
        return planner.estimate_training_memory(
            model.config, b, c['block_size'], dtype, c['optimizer'], device.split(':')[0], bool(compile),
            c['chunked_ce'], c['activation_checkpointing'], accumulation, ddp=ddp and not fsdp,
            fsdp_world_size=world_size if fsdp else 0, fused_attention=hardware.fused_attention(device, dtype),
            lora=(lora_config['rank'], lora_config['targets']) if lora_config else None)
    return plan


def budget(model, device, memory_budget_gb):
    """Bytes the whole plan may use: memory_budget_gb, else what is free now plus the parameters already on the
    device (under FSDP this process's shards, not the sharded tensors' global sizes)."""
    if memory_budget_gb > 0:
        return memory_budget_gb * 2 ** 30
    local = lambda p: p.to_local() if hasattr(p, 'to_local') else p
    return (planner.device_budget(device) or 0) + sum(local(p).numel() * p.element_size() for p in model.parameters())


def auto_batch_size(plan, configured, accumulation, block_size, memory_budget, device, batch_split, log=print):
    """batch_size='auto': (batch_size, micro-steps per process) that keep the sequences per step of the batch_size
    the config gives without 'auto' (configured), within memory_budget bytes."""
    rows = accumulation * configured
    if batch_split > 1:  # this process's share of the rows
        if rows % batch_split:
            raise UserError(f"batch_size='auto' keeps the {rows} sequences per micro-step that batch_size={configured} "
                            f"gives, which do not split over {batch_split} processes; give a batch_size that is a "
                            f"multiple of {batch_split}")
        rows //= batch_split
    device_type = device.split(':')[0]
    batch_size, accumulation = planner.auto_batch(lambda b, a: plan(b, a)['total'], rows, memory_budget, device_type)
    if batch_size == 0:
        raise UserError(f"batch_size='auto': not even one sequence of {block_size} tokens fits in "
                        f"{format_bytes(memory_budget)} by the estimate; lower block_size or the model size")
    log(f"batch_size auto: {batch_size} x {accumulation} micro-steps per process keeps {rows} "
        f"sequences per step; planned {format_bytes(plan(batch_size, accumulation)['total'])} of "
        f"{format_bytes(memory_budget)} ({planner.SAFETY.get(device_type, 0.75):.0%} at most)")
    return batch_size, accumulation


def check_fits(plan, batch_size, block_size, accumulation, memory_budget, device, world_size):
    """Stop before the first step a run whose planned peak is more than twice the memory available: no error of
    the estimate makes that fit, and on a CPU the system kills such a process (no message) only after it has
    pushed the rest of the machine into swap. Nearer the line the run tries, and an out-of-memory error ends it
    with oom_message."""
    if memory_budget and plan(batch_size, accumulation)['total'] > 2 * memory_budget:
        raise UserError("this run would run " + planner.oom_message(
            lambda b, a: plan(b, a)['total'], batch_size, block_size, accumulation, memory_budget, device, world_size))


def configured_batch_size(argv, defaults, extra):
    """The batch_size the config files and overrides in argv give when --batch_size=auto is left out (the default's
    when they give 'auto' too): batch_size='auto' keeps its sequences per step."""
    from configurator import parse
    configured = parse([a for a in argv if a.replace('"', '').replace("'", '') != '--batch_size=auto'], defaults,
                       extra)['batch_size']
    return configured if configured != 'auto' else defaults['batch_size']


def out_of_memory(e):
    """Whether an exception is an allocation that failed: torch's OutOfMemoryError on a GPU, a RuntimeError of
    the CPU's allocator (a step's windows or tensors larger than the machine's memory)."""
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def oom_message(plan, batch_size, block_size, accumulation, memory_budget, memory_budget_gb, device, world_size):
    """The one line for an out-of-memory error in training: the estimated peak and a batch that fits. On CUDA the
    budget is re-read after freeing the cache (the whole device, unless memory_budget_gb)."""
    import torch
    if device.startswith('cuda'):
        torch.cuda.empty_cache()
        memory_budget = memory_budget_gb * 2 ** 30 or torch.cuda.get_device_properties(device).total_memory
    return planner.oom_message(lambda b, a: plan(b, a)['total'], batch_size, block_size, accumulation, memory_budget,
                               device, world_size)
