"""
Peak training memory, predicted before anything is allocated, and the batch size that fits.

    from core.training.planner import estimate_training_memory
    plan = estimate_training_memory(GPTConfig(), batch_size=12, block_size=1024, dtype='bfloat16',
                                    device_type='cuda', compiled=True)
    print(format_plan(plan))

The estimate walks one training step the way autograd runs it: the forward saves each block's
activations, the loss holds the logits, the backward frees a block's activations as it writes that
block's gradients, and the optimizer step needs every gradient, its state and its temporaries. The
peak is the largest of those moments; the components returned are the ones alive at that moment.
Counts are for live tensors (what torch.cuda.max_memory_allocated reports), not for the allocator's
cache, the CUDA context or the Python process itself.

What each block saves was read off autograd's saved tensors for every switch, and the totals were
checked against measured peaks with bench_memory.py: eager fp32 on CPU (within a few percent).
16-bit autocast follows the same bookkeeping with 2-byte matmul inputs and outputs. Under torch.compile
what a block keeps was read off the compiled backward graph's inputs (TORCH_LOGS=aot_graphs), and the
totals checked against a CPU compile (bench_memory.py --compile=True); the partitioner's choices are the
same on a GPU, but only studies/gpu_round.py on one measures them there.
"""

import os

from core.training.optim import stack_chunks
from core.training.accounting import param_counts
from core.units import format_bytes
from model import attention_written_out, loss_chunk_rows



def _bytes(dtype):
    return {'float32': 4, 'bfloat16': 2, 'float16': 2}[dtype]


def attention_kind(config, device_type, fused=None, seq_len=None, act=4):
    """'flash' when a fused kernel saves only q, k, v, the output and the log-sum-exp; 'math' when the
    (T x T) weights are materialized: on CPU with dropout (the CPU kernel has no dropout), on a CPU under
    bf16 (act=2) over short windows (model.attention_written_out), on MPS,
    and on a CUDA GPU without a fused kernel for the dtype (fused=False: see hardware.fused_attention)."""
    if device_type == 'mps' or (device_type == 'cpu' and config.dropout > 0):
        return 'math'
    if seq_len is not None and attention_written_out(device_type, act == 2, seq_len, config.dropout):
        return 'math'
    if device_type == 'cuda' and fused is False:
        return 'math'
    return 'flash'


def compiled_per_token(config, seq_len, act, device_type, fused=None):
    """Bytes per token one pre-norm block saves under torch.compile, as read off the backward graph's inputs
    (TORCH_LOGS=aot_graphs) for each switch: the partitioner keeps what the matmuls and attention need and
    recomputes little else. A norm keeps its normalized input (LayerNorm) or the residual it reads (RMSNorm,
    where the second one is rebuilt from the attention's projection) in fp32 and its 1/rms per token, never
    the mean; GELU keeps its input and output, SwiGLU the gate-value matmul's output and their product."""
    C, nh, H = config.n_embd, config.n_head, config.mlp_hidden
    if config.norm == 'layernorm':
        per_token = 2 * C * 4 + 2 * 4
    else:
        per_token = C * 4 + C * act + 2 * 4
    per_token += 2 * C * act + 3 * C * act  # the norms' outputs (the matmuls' inputs) and the qkv output
    if config.pos_encoding == 'rope' or config.qk_norm:
        per_token += 2 * C * act + C * act  # the new q and k, and the (B, T, C) copy of the attention output
    if config.qk_norm:
        per_token += 2 * nh * 4
    if attention_kind(config, device_type, fused, seq_len, act) == 'flash':
        per_token += C * act + nh * 4  # attention output and the log-sum-exp
    else:
        weight_bytes = 6 if attention_written_out(device_type, act == 2, seq_len, config.dropout) else act
        per_token += C * act + nh * seq_len * weight_bytes
    per_token += {'gelu': 2 * H, 'relu2': 2 * H, 'swiglu': 3 * H}[config.mlp] * act
    return per_token


def layer_activations(config, n_tokens, seq_len, act, device_type, compiled=False, fused=None):
    """Bytes one block saves for its backward. act is the bytes of a matmul's inputs and outputs
    (2 under bf16/fp16 autocast, 4 in fp32); the residual stream stays fp32 (4 bytes)."""
    C, nh, H = config.n_embd, config.n_head, config.mlp_hidden
    N, res = n_tokens, 4
    drop = config.dropout > 0
    if compiled and config.norm != 'none' and config.prenorm and not drop:
        return N * compiled_per_token(config, seq_len, act, device_type, fused)
    per_token = 0
    if config.norm == 'none':
        per_token += 2 * C * act  # the matmuls save the residual stream (or its autocast copy) itself
    else:
        per_token += 2 * C * res + 2 * C * act  # the norms save their input, the matmuls their output
        per_token += 2 * (2 if config.norm == 'layernorm' else 1) * 4  # mean and 1/std per token
        if config.norm == 'rmsnorm':
            per_token += 2 * C * res  # rms_norm is composite: the gain's multiply saves the normalized input
    rotated = config.pos_encoding == 'rope' or config.qk_norm
    if attention_kind(config, device_type, fused, seq_len, act) == 'flash':
        per_token += 3 * C * act  # the qkv output, which q, k and v are views of
        if rotated:
            # rope and qk-norm make new q and k; the kernel's output is then laid out (B, nh, T, hd),
            # so the (B, T, C) copy for c_proj is a new tensor too
            per_token += 2 * C * act + C * act
        per_token += C * act + nh * 4  # attention output and the log-sum-exp
    else:
        per_token += 3 * C * act + C * act  # copies of q, k, v and the merged output
        # the weights (and dropout mask and dropped weights); written out under bf16 on a CPU, the fp32
        # softmax output and its bf16 copy
        weight_bytes = 6 if attention_written_out(device_type, act == 2, seq_len, config.dropout) else act
        per_token += (3 if drop else 1) * nh * seq_len * weight_bytes
    if config.qk_norm:
        per_token += 2 * nh * 4
    per_token += {'gelu': 2 * H, 'relu2': 2 * H, 'swiglu': 4 * H}[config.mlp] * act
    if drop:
        per_token += 2 * C * (act if device_type == 'cpu' else 1)  # dropout masks: float on CPU, bool on GPU
    return N * per_token


def estimate_training_memory(model_config, batch_size, block_size=None, dtype='float32', optimizer='adamw',
                             device_type='cpu', compiled=False, chunked_ce=False, activation_checkpointing=False,
                             gradient_accumulation_steps=1, ddp=False, fused_optimizer=None, holds_logits=False,
                             fsdp_world_size=0, fused_attention=None, lora=None):
    """Predicted peak memory of training steps, in bytes, by component.

    model_config: a GPTConfig. dtype: the autocast dtype ('float32' means no autocast; parameters are
    fp32 either way). optimizer: 'adamw' or 'muon'. fused_optimizer: AdamW's fused kernel (no
    temporaries), by default as model.configure_optimizers picks it (CUDA and CPU). holds_logits: the
    training loop keeps the returned logits alive through the backward (train.py drops them before its
    backward). fsdp_world_size: FSDP2 over that many processes (train.py's fsdp=True): this process holds
    its shard of the fp32 parameters, gradients and optimizer state, the root's weights (embeddings, final
    norm, head) gathered through forward and backward, and two blocks' weights gathered at a time (the one
    running and the one prefetched), in bf16 under bf16 training. fused_attention: False when a CUDA GPU
    has no fused attention kernel for the dtype (hardware.fused_attention), so the weights are materialized.
    lora: (rank, targets) for LoRA fine-tuning (core/training/lora.py): gradients and optimizer state only for the
    adapters, and no weight gradient for the frozen embedding and head.
    With gradient accumulation the gradients of earlier micro-steps are alive during the next one.

    Returns a dict: the components alive at the peak (params, grads, optimizer, activations,
    autocast_copies, logits_loss, temporaries, batch, ddp_buckets), 'total' (their sum, the peak),
    'phase' (where the peak falls) and, for reading, 'per_layer' activations, 'logits_loss_peak',
    'optimizer_step', 'attention' ('flash' or 'math') and 'moments' (each moment's components). Under
    FSDP, 'fsdp_gathered' is the gathered weights alive at the peak."""
    cfg = model_config
    T = cfg.block_size if block_size is None else block_size
    B, C, V, L, H = batch_size, cfg.n_embd, cfg.vocab_size, cfg.n_layer, cfg.mlp_hidden
    N = B * T
    act = 4 if dtype == 'float32' else _bytes(dtype)
    counts = param_counts(cfg)
    n_params = counts['total']
    n_matrix = counts['qkv'] + counts['attn_proj'] + counts['mlp']  # hidden matrices (with their biases)
    head_numel = V * C
    per_layer_params = n_matrix // L + counts['norm'] // (2 * L + int(cfg.prenorm)) * 2
    W = max(1, fsdp_world_size)
    params = 4 * n_params // W
    grads = 4 * n_params // W
    fc_out = 2 * H if cfg.mlp == 'swiglu' else H
    n_train = n_params
    if lora:
        from core.training.lora import count as lora_count
        n_train = lora_count(cfg, *lora)
        params += 4 * n_train
        grads = 4 * n_train

    # optimizer state and the temporaries of its step
    if fused_optimizer is None:
        fused_optimizer = device_type in ('cuda', 'cpu')
    largest = max(head_numel, C * fc_out, counts['wpe'])
    if optimizer == 'muon':
        state = 4 * (n_matrix + 2 * (n_params - n_matrix))
        # Newton-Schulz works on a stack of same-shaped matrices at a time (core/training/optim.py), bounded in size
        shapes = [(3 * C, C), (C, C), (fc_out, C), (C, H)] * L
        stack = max(sum(shapes[i][0] * shapes[i][1] for i in chunk) for chunk in stack_chunks(shapes))
        step_temp = 4 * 4 * stack
        step_temp += 0 if fused_optimizer else 2 * 4 * largest
    else:
        state = 4 * 2 * n_params
        # torch's AdamW: fused has no temporaries; the per-tensor loop makes two of the largest tensor;
        # foreach (CUDA, unfused) makes a copy of every moment at once
        if fused_optimizer:
            step_temp = 0
        elif device_type == 'cpu':
            step_temp = 2 * 4 * largest
        else:
            step_temp = 2 * 4 * n_params
    if lora:  # the adapters are small matrices: AdamW's two moments (Muon's one), no large temporaries
        state, step_temp = 4 * (1 if optimizer == 'muon' else 2) * n_train, 0
    state //= W
    step_temp //= W
    ddp_buckets = 4 * n_train if ddp and W == 1 else 0
    batch = 2 * 8 * N  # int64 inputs and targets
    grads_kept = grads if gradient_accumulation_steps > 1 else 0
    gathered_fwd = gathered_bwd = 0
    if W > 1:
        # FSDP2 without gradient sync keeps each micro-step's gradients unsharded, in fp32, until the last one
        grads_kept = 4 * n_params if gradient_accumulation_steps > 1 else 0
        p_bytes = 2 if dtype == 'bfloat16' else 4
        root = n_params - L * per_layer_params  # the root unit stays gathered from its forward to its backward
        gathered_fwd = p_bytes * root
        # two blocks gathered, and one block's unsharded gradient with its fp32 copy for the reduce-scatter
        gathered_bwd = gathered_fwd + 2 * p_bytes * per_layer_params + (p_bytes + 4) * per_layer_params

    # activations
    per_layer = layer_activations(cfg, N, T, act, device_type, compiled, fused_attention)
    outside = N * C * 4  # the last block's output
    if cfg.norm != 'none' and cfg.prenorm:
        outside += N * C * (act + (4 if cfg.norm == 'rmsnorm' else 0))  # ln_f's output (and normalized input)
    if cfg.dropout > 0:
        outside += N * C * (act if device_type == 'cpu' else 1)
    if lora:  # each adapter saves its (N, rank) middle for lora_B's gradient
        from core.training.lora import parse_targets
        per_layer += N * lora[0] * act * 2 * len(parse_targets(lora[1]))
    saved_layer = N * C * 4 if activation_checkpointing else per_layer  # a checkpointed block keeps its input
    # the largest transient of one block's backward: gradients of the mlp's hidden state or of q, k, v
    layer_backward_temp = N * (max(H + fc_out, 6 * C) * act + 2 * C * 4)
    if compiled:  # the activation's backward is one fused kernel: one gradient the width of c_fc's output
        layer_backward_temp = N * (max(fc_out, 3 * C) * act + 2 * C * 4)
    if activation_checkpointing:
        layer_backward_temp += per_layer  # the block's activations, recomputed

    # autocast keeps a 16-bit copy of each matmul weight from its first use until its backward
    # (FSDP's bf16 weights are already 16-bit: nothing to copy)
    cast_layer = 2 * (n_matrix // L) if act == 2 and W == 1 else 0
    cast_head = 2 * head_numel if act == 2 and W == 1 else 0

    # logits and loss: the most alive during the loss's backward, and what the loop keeps afterwards
    if chunked_ce:
        rows = loss_chunk_rows(N, V)
        held = 0
        if compiled:
            # the compiler unrolls the chunks into one graph and its schedule runs several side by side: on a
            # CPU compile (bench_memory.py --compile=True) about one fp32 (N, V) logits' worth in all, in fp32
            # and bf16 alike; a measured figure, not a derivation (studies/gpu_round.py checks it on a GPU)
            loss_bwd = N * V * 4
        else:
            # one chunk at a time: its logits, the fp32 log-softmax and two gradients of that size
            loss_bwd = rows * V * (act + 4 + 4 + 4) + (2 * rows * V * 4 if cfg.logit_softcap > 0 else 0)
        # the head's weight gradient of one chunk, added into the full one, and the hidden states'
        # full-size gradient that each chunk's slice writes into
        loss_bwd += (0 if lora else 4 * head_numel) + 2 * N * C * 4
    else:
        held = N * V * act if holds_logits else 0  # the logits the caller keeps
        if compiled:
            # the compiled graph saves the logits and writes their gradient beside them; the model hands the
            # logits back detached, so no gradient for them comes into the backward (one would add a third
            # (N, V) tensor, zero-filled). A soft cap returns its fp32 output besides the saved logits
            out = 4 if cfg.logit_softcap > 0 else act
            loss_bwd = N * V * (act + out)
            held = N * V * out if holds_logits else 0  # the returned logits, counted in loss_bwd as well
        else:
            cast = N * V * 4 if act != 4 else 0  # .float() of 16-bit logits, freed before the backward
            softcap = N * V * 4 if cfg.logit_softcap > 0 else 0  # tanh's output, saved (in fp32)
            # the saved fp32 log-softmax with the gradients of nll and of log-softmax
            loss_bwd = N * V * act + softcap + 3 * N * V * 4
            loss_bwd += 0 if holds_logits else -N * V * act
            loss_bwd = max(loss_bwd, held + cast + N * V * 4 + softcap)  # the forward's own peak

    acts_all = L * saved_layer + outside
    moments = []
    # the backward's start: everything saved, plus the loss's gradients
    moments.append(('loss backward', dict(params=params, grads=grads_kept, optimizer=state, batch=batch,
                                          ddp_buckets=ddp_buckets, activations=acts_all,
                                          autocast_copies=L * cast_layer + cast_head, logits_loss=loss_bwd,
                                          temporaries=0, fsdp_gathered=gathered_bwd)))
    # then the blocks, last to first: each frees its activations and writes its gradients
    head_grad = 4 * head_numel if (counts['lm_head'] or cfg.tie_embeddings) and not lora else 0
    per_block_grad = 4 * n_train // L if lora else 4 * per_layer_params
    blocks = range(L)
    if L > 64:  # each part is linear in the block's index, or that capped: its peak is at an end or at the cap
        cap = L - 1 - -(-(grads * W - head_grad) // max(1, per_block_grad))  # from here down, the gradients are all
        blocks = sorted({0, L - 1, *(i for i in (cap - 1, cap, cap + 1) if 0 <= i < L)})  # (1e12 blocks: no loop)
    for i in reversed(blocks):
        done = L - 1 - i  # blocks already through their backward
        g = grads_kept or min(grads, (head_grad + per_block_grad * (done + 1)) // W)
        alive = (i + 1) * saved_layer + N * C * 4  # blocks not yet through, and the residual's gradient
        moments.append((f'block {i} backward', dict(params=params, grads=g, optimizer=state, batch=batch,
                                                    ddp_buckets=ddp_buckets, activations=alive,
                                                    autocast_copies=(i + 1) * cast_layer, logits_loss=held,
                                                    temporaries=layer_backward_temp, fsdp_gathered=gathered_bwd)))
    # the token embedding's dense gradient is added into the tied head's
    moments.append(('embedding backward', dict(params=params, grads=max(grads, grads_kept), optimizer=state,
                                               batch=batch, ddp_buckets=ddp_buckets, activations=0, autocast_copies=0,
                                               logits_loss=held, temporaries=0 if lora else 4 * head_numel + N * C * 4,
                                               fsdp_gathered=gathered_fwd)))
    moments.append(('optimizer step', dict(params=params, grads=grads, optimizer=state, batch=batch,
                                           ddp_buckets=ddp_buckets, activations=0, autocast_copies=0,
                                           logits_loss=held, temporaries=step_temp, fsdp_gathered=0)))
    phase, parts = max(moments, key=lambda m: sum(m[1].values()))
    out = dict(parts)
    out['total'] = sum(parts.values())
    out['phase'] = phase
    out['per_layer'] = saved_layer
    out['logits_loss_peak'] = loss_bwd
    out['optimizer_step'] = sum(moments[-1][1].values())
    out['attention'] = attention_kind(cfg, device_type, fused_attention, T, act)
    out['moments'] = dict(moments)  # every moment's components, for reading and tests
    return out


def fit_batch_size(total_for, budget, largest=1 << 16):
    """The largest micro-batch b with total_for(b) <= budget (0 when not even 1 fits); total_for grows with b."""
    if total_for(1) > budget:
        return 0
    lo, hi = 1, 2
    while hi <= largest and total_for(hi) <= budget:
        lo, hi = hi, hi * 2
    hi = min(hi, largest + 1)
    while hi - lo > 1:  # total_for(lo) fits, total_for(hi) does not (or hi is past the largest)
        mid = (lo + hi) // 2
        if total_for(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def device_budget(device):
    """Bytes this process may still allocate: free memory on a CUDA device, available RAM on CPU
    (MemAvailable, which counts reclaimable page cache), None when unknown."""
    kind = device.split(':')[0]
    if kind == 'cuda':
        import torch
        free, _total = torch.cuda.mem_get_info(device)
        return free
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # macOS and Windows have no /proc: psutil knows their available memory
        import psutil
        return psutil.virtual_memory().available
    except ImportError:
        pass
    try:
        return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError):
        return None


def check_build(model_config, device='cpu'):
    """Stop with one line before building a model whose fp32 weights alone do not fit: they are made in
    host memory first, then moved to the device, so both must hold them. Returns the weights' bytes."""
    from core.errors import UserError
    n = param_counts(model_config)['total']
    need = 4 * n
    for where in dict.fromkeys(('cpu', device)):
        have = device_budget(where)
        if have is not None and need > have:
            cfg = model_config
            raise UserError(f"this model (n_layer={cfg.n_layer}, n_embd={cfg.n_embd}, vocab_size={cfg.vocab_size:,}) has "
                            f"{n:,} parameters: its weights alone need {format_bytes(need)}, you have "
                            f"{format_bytes(have)} {'free on ' + where if where != 'cpu' else 'of memory available'}; "
                            f"use a smaller model")
    return need


# the share of the budget a plan may take: the CUDA caching allocator's blocks and, on CPU, glibc's
# retained free memory (up to a fifth over the live bytes) need the rest
SAFETY = {'cuda': 0.90, 'cpu': 0.75, 'mps': 0.75}


def device_batch_size(total_for, device):
    """The largest micro-batch whose planned peak, total_for(batch), fits SAFETY of the device's free memory now."""
    from core.errors import UserError
    budget = device_budget(device) or 0
    batch = fit_batch_size(total_for, budget * SAFETY.get(device.split(':')[0], 0.75))
    if batch == 0:
        raise UserError(f"not even batch_size=1 fits in {format_bytes(budget)} on {device}")
    return batch


def auto_batch(total_for, rows_per_step, budget, device_type):
    """Micro-batch and accumulation for batch_size='auto': the largest micro-batch whose plan fits
    SAFETY of the budget and divides the rows of one optimizer step, so tokens per step stay exactly
    as configured. total_for(batch, accumulation) is the planned peak. Returns (batch, accumulation),
    (0, 0) when not even one row fits."""
    budget = budget * SAFETY.get(device_type, 0.75)
    if total_for(rows_per_step, 1) <= budget:
        return rows_per_step, 1
    # accumulating keeps the gradients alive through the next micro-steps' forward and backward
    cap = fit_batch_size(lambda b: total_for(b, 2), budget, largest=rows_per_step)
    if cap == 0:
        return 0, 0
    b = max(d for d in range(1, cap + 1) if rows_per_step % d == 0)
    return b, rows_per_step // b


def oom_message(total_for, batch_size, block_size, accumulation, budget, device, world_size=1):
    """The line train.py ends with on an out-of-memory error: the estimate, and a micro-batch with the
    accumulation that keeps the tokens per step and fits by the estimate (per process)."""
    device_type = device.split(':')[0]
    now = total_for(batch_size, accumulation)
    rows = batch_size * accumulation
    b, acc = auto_batch(total_for, rows, budget, device_type) if budget else (0, 0)
    if b >= batch_size:  # the estimate says it fits: something else holds memory; halve anyway
        b = max((d for d in range(1, batch_size // 2 + 1) if rows % d == 0), default=0)
        acc = rows // b if b else 0
    msg = (f"out of memory on {device} at batch_size={batch_size} x block_size={block_size} "
           f"(estimated peak {format_bytes(now)}, {format_bytes(budget)} available)")
    tokens = rows * block_size * world_size
    if b:
        msg += (f"; --batch_size={b} --gradient_accumulation_steps={acc * world_size} keeps the {tokens:,} tokens "
                f"per step and is estimated at {format_bytes(total_for(b, acc))}")
    else:
        msg += "; not even batch_size=1 fits by the estimate: use a smaller model or block_size"
    return msg + ("; --batch_size=auto picks this by itself, --chunked_ce=True and --activation_checkpointing=True "
                  "save more")


LABELS = {
    'params': 'parameters (fp32)',
    'grads': 'gradients',
    'optimizer': 'optimizer state',
    'activations': 'activations saved for backward',
    'autocast_copies': 'autocast 16-bit weight copies',
    'logits_loss': 'logits and loss',
    'temporaries': 'temporaries',
    'batch': 'input batch',
    'ddp_buckets': 'DDP gradient buckets',
    'fsdp_gathered': 'FSDP gathered weights',
}


def format_plan(plan):
    """A few lines: the components alive at the peak, the total, and where the peak falls."""
    lines = []
    for k, label in LABELS.items():
        if plan.get(k):
            lines.append(f"  {label:<34}{format_bytes(plan[k]):>12}")
    lines.append(f"  {'peak (' + plan['phase'] + ')':<34}{format_bytes(plan['total']):>12}")
    lines.append(f"  activations per block {format_bytes(plan['per_layer'])} ({plan['attention']} attention); "
                 f"the loss part peaks at {format_bytes(plan['logits_loss_peak'])}")
    return "\n".join(lines)


def summary(plan):
    """One line for a training log."""
    short = dict(logits_loss='logits+loss', autocast_copies='autocast copies', ddp_buckets='DDP buckets',
                 fsdp_gathered='FSDP gathered')
    parts = ', '.join(f"{short.get(k, k)} {format_bytes(plan[k])}" for k in LABELS if plan.get(k))
    return f"{format_bytes(plan['total'])} at the peak ({plan['phase']}): {parts}"
