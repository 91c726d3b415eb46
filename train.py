"""
Train a GPT, on one CPU or GPU or on many through torchrun.

    python train.py config/train_shakespeare_char.py --batch_size=32
    python train.py config/finetune_chat.py --init_from=gpt2 --lora_rank=8    # chat SFT with LoRA adapters
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
    torchrun --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 --nproc_per_node=8 train.py ...

Every global below is a config key: a config file or --key=value overrides it.
"""

import datetime
import json
import math
import os
import signal
import sys
import time

# before CUDA starts: expandable segments let the allocator grow blocks instead of failing on fragments
if 'PYTORCH_CUDA_ALLOC_CONF' not in os.environ and 'PYTORCH_ALLOC_CONF' not in os.environ:
    os.environ['PYTORCH_CUDA_ALLOC_CONF'] = 'expandable_segments:True'

import torch

from core.training import checkpoint
from core import hardware
from core.training import lora
from core.data import tokenizer as tokenizer_lib
from configurator import config_keys, configure
from core.errors import UserError, install_excepthook
from core.data.loader import Dataset, Prefetcher, dataset_change, to_device
from core.evaluation.exact import bits_per_byte
from core.training.optim import MUON_NS, Muon
from core.training import planner
from core.training import runs
from model import ARCH_KEYS, CONFIG_DEFAULTS, CONFIG_KEYS, GPT, GPTConfig

# -----------------------------------------------------------------------------
# I/O
out_dir = 'out'
eval_interval = 2000
log_interval = 1
eval_iters = 200
eval_only = False  # evaluate once and exit
eval_full = False  # val loss over the whole split (exact, with perplexity) instead of eval_iters random batches
always_save_checkpoint = True  # save the latest at every eval; the best by val loss is always kept too
checkpoint_interval = 0  # save ckpt.pt every this many iterations instead of at evals (0: at evals)
keep_checkpoints = 0  # also keep the last N saves as ckpt_<step>.pt beside ckpt.pt and best.pt (0: none)
init_from = 'scratch'  # 'scratch', 'resume', 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', 'hf:<folder>', or a .pt / run folder to fine-tune
ckpt = 'latest'  # what init_from='resume' reads: 'latest' (ckpt.pt), 'best' or a step kept by keep_checkpoints
overwrite = False  # a fresh run in an out_dir holding a checkpoint moves the old run aside (never deletes it)
# wandb
wandb_log = False
wandb_project = 'owt'
wandb_run_name = 'gpt2'
log_health = False  # at each eval: per-layer gradient norms, update/weight ratios, activation RMS (metrics.jsonl, wandb)
# data
dataset = 'openwebtext'  # a folder under data/ or a path to a prepared folder
allow_dataset_change = False  # resume or fine-tune on a dataset or tokenizer other than the checkpoint's
gradient_accumulation_steps = 5 * 8  # micro-steps per optimizer step, summed over all processes
batch_size = 12  # micro-batch per process
block_size = 1024
doc_aware = False  # windows start at documents, attention and positions stay inside each document of a window
# model
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False
vocab_size = 0  # 0: the dataset's vocab, padded to a multiple of 64 when above 256
norm = 'layernorm'
prenorm = True
pos_encoding = 'learned'
mlp = 'gelu'
gelu = 'erf'  # 'erf' (exact) or 'tanh' (GPT-2's); init_from=gpt2*/hf: and resume take the checkpoint's
qk_norm = False
tie_embeddings = True
logit_softcap = 0.0
# optimizer
optimizer = 'adamw'  # 'adamw' or 'muon' (Muon on the hidden matrices, AdamW on the rest)
learning_rate = 6e-4
max_iters = 600000
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # 0 disables clipping
muon_lr = 0.02
muon_momentum = 0.95
muon_ns = 'quintic'  # Muon's orthogonalization: torch's quintic Newton-Schulz x5, or 'polar_express'
embed_lr = 0.0  # AdamW lr for embeddings and head; 0 means learning_rate
# learning rate schedule
decay_lr = True
warmup_iters = 2000
lr_decay_iters = 600000
min_lr = 6e-5
lr_schedule = 'iters'  # 'iters': decay ends at lr_decay_iters; 'time': it follows the training clock and ends at max_seconds
warmdown_frac = 0.0  # 0: cosine decay after warmup; >0: hold the peak, then decay linearly over this last fraction
# system
backend = 'auto'  # 'nccl' on CUDA, 'gloo' on CPU
fsdp = False  # under torchrun: shard parameters, gradients and optimizer state (FSDP2) instead of DDP
device = 'auto'  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'; under torchrun each process takes its LOCAL_RANK's GPU
# 'auto': bfloat16 on GPUs with it in hardware (compute capability 8.0+), else float16; on CPUs bfloat16
# autocast where they have it in hardware (AVX512-BF16, AMX), else float32
dtype = 'auto'
compile = 'auto'  # torch.compile: on for CUDA GPUs of compute capability 7.0+ unless set
peak_tflops = 0.0  # the device's peak MFU is quoted against; 0 = the data sheet (GPUs the table lacks: MFU n/a)
seed = 1337
max_seconds = 0.0  # wall-clock budget: stop, eval and save when spent; 0 = none
timed_eval = True  # False: evaluations and saves stop the clock that max_seconds and lr_schedule='time' read
# reliability
max_bad_steps = 10  # consecutive non-finite steps before giving up
early_stop_patience = 0  # evals without val improvement before stopping; 0 = off
# LoRA fine-tuning (core/training/lora.py): the pretrained weights frozen, small adapters trained and saved
lora_rank = 0  # 0: off (full fine-tuning)
lora_alpha = 16.0  # the adapters' update is scaled by lora_alpha / lora_rank
lora_targets = 'attn'  # 'attn', 'mlp' or 'attn,mlp': which matrices of each block get adapters
merge_lora = False  # at the end, also write out_dir/merged.pt: plain weights with the adapters folded in
# memory
chunked_ce = False  # compute the loss in chunks so the fp32 (B, T, vocab) logits never exist
activation_checkpointing = False  # recompute block activations in the backward
memory_budget_gb = 0.0  # batch_size='auto' plans within this many GiB; 0 = the device's free memory
# -----------------------------------------------------------------------------
# every other field of GPTConfig is a config key too, at the model's default: a switch added to model.py
# needs no line here
for _k, _v in CONFIG_DEFAULTS.items():
    globals().setdefault(_k, _v)
install_excepthook()
_keys = config_keys(globals())
_explicit = set()
_defaults = {k: globals()[k] for k in _keys}
_extra = {'compile': (True, False), 'batch_size': ('auto',)}
config = configure(globals(), _keys, extra=_extra, explicit=_explicit)
# on resume, the keys the user did not set come from the checkpoint (so a plain --init_from=resume continues the
# same run), except those that describe this machine or this invocation
_local_keys = {'out_dir', 'init_from', 'overwrite', 'allow_dataset_change', 'eval_only', 'device', 'dtype', 'compile',
               'backend', 'fsdp', 'memory_budget_gb', 'ckpt'}
if init_from == 'resume':
    ckpt_path = checkpoint.resolve(out_dir, config['ckpt'])  # the config key; `ckpt` becomes the loaded state
    # an FSDP run reads only the metadata here (mmap leaves the full weights on disk) and its shards below
    ckpt = checkpoint.load(ckpt_path, map_location='cpu', mmap=fsdp)
    _saved = {k: v for k, v in ckpt.get('config', {}).items() if k in _keys and k not in _explicit and
              k not in _local_keys and
              (type(v) is type(_defaults[k]) or any(type(v) is type(e) and v == e for e in _extra.get(k, ())))}
    globals().update(_saved)
    config.update(_saved)
    if ckpt.get('nanogpt') and 'dataset' not in _explicit:
        # nanoGPT names its data folder: the one in the checkout the run sits in, when it is there
        from core.interop import nanogpt_files as nanogpt
        dataset = config['dataset'] = nanogpt.data_folder(ckpt_path, dataset)
else:
    ckpt = None


def check_config():
    positive = dict(batch_size=1 if batch_size == 'auto' else batch_size, block_size=block_size,
                    gradient_accumulation_steps=gradient_accumulation_steps,
                    eval_iters=eval_iters, eval_interval=eval_interval, log_interval=log_interval)
    for k, v in positive.items():
        if v <= 0:
            raise UserError(f"{k} must be positive, got {v}")
    for k, v in dict(checkpoint_interval=checkpoint_interval, keep_checkpoints=keep_checkpoints,
                     learning_rate=learning_rate, min_lr=min_lr, weight_decay=weight_decay, grad_clip=grad_clip,
                     max_iters=max_iters, warmup_iters=warmup_iters, max_seconds=max_seconds, muon_lr=muon_lr,
                     embed_lr=embed_lr, max_bad_steps=max_bad_steps, early_stop_patience=early_stop_patience,
                     memory_budget_gb=memory_budget_gb).items():
        if v < 0:
            raise UserError(f"{k} must not be negative, got {v}")
    for k, v in dict(beta1=beta1, beta2=beta2, muon_momentum=muon_momentum).items():
        if not 0 <= v < 1:
            raise UserError(f"{k} must be in [0, 1), got {v}")
    if compile not in ('auto', True, False):
        raise UserError(f"compile must be True, False or 'auto', got {compile!r}")
    if optimizer not in ('adamw', 'muon'):
        raise UserError(f"optimizer must be 'adamw' or 'muon', got '{optimizer}'")
    if muon_ns not in MUON_NS:
        raise UserError(f"muon_ns must be one of {', '.join(MUON_NS)}, got {muon_ns!r}")
    if lr_schedule not in ('iters', 'time'):
        raise UserError(f"lr_schedule must be 'iters' or 'time', got '{lr_schedule}'")
    if lr_schedule == 'time' and max_seconds <= 0:
        raise UserError("lr_schedule='time' decays the learning rate over max_seconds; set --max_seconds too")
    if not 0 <= warmdown_frac <= 1:
        raise UserError(f"warmdown_frac must be in [0, 1], got {warmdown_frac}")
    if fsdp and optimizer == 'muon':
        raise UserError("optimizer='muon' does not work with fsdp=True: Muon orthogonalizes whole matrices and FSDP "
                        "shards them; use --optimizer=adamw, or DDP (--fsdp=False)")
    if not (init_from in ('scratch', 'resume') or init_from.startswith('gpt2') or init_from.startswith('hf:')
            or os.path.exists(init_from)):
        raise UserError(f"init_from must be scratch, resume, gpt2[-medium|-large|-xl], hf:<folder>, or a checkpoint "
                        f"(.pt file or run folder); nothing exists at '{init_from}'")
    if not isinstance(lora_rank, int) or lora_rank < 0:
        raise UserError(f"lora_rank must be 0 (off) or a positive integer, got {lora_rank!r}")
    if lora_rank and fsdp:
        raise UserError("LoRA does not work with fsdp=True here (frozen and trainable tensors in one shard); "
                        "the adapters are small, so use DDP (--fsdp=False)")
    if lora_rank and init_from == 'scratch':
        raise UserError("LoRA adapts a pretrained model; set --init_from=gpt2 (another gpt2*, hf:<folder>, or a checkpoint)")


check_config()

# -----------------------------------------------------------------------------
# distributed setup: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE
ddp = int(os.environ.get('RANK', -1)) != -1
if ddp:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    rank = int(os.environ['RANK'])
    local_rank = int(os.environ['LOCAL_RANK'])
    world_size = int(os.environ['WORLD_SIZE'])
    local_world_size = int(os.environ.get('LOCAL_WORLD_SIZE', world_size))
    device, device_note = hardware.rank_device(device, local_rank, local_world_size)
    if device == 'cpu':
        # processes on one machine share its cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world_size))
    # rank 0 writes the checkpoints while the others wait in their next collective: a large model on a slow
    # disk can take longer than the default 10 minutes, which would kill a healthy run
    dist.init_process_group(backend=('nccl' if device.startswith('cuda') else 'gloo') if backend == 'auto' else backend,
                            timeout=datetime.timedelta(minutes=60))
    install_excepthook()  # again, outside the one init_process_group installs, which would swallow our error line
    # the global batch (micro-steps x batch_size) stays what one process would take: the processes share
    # the micro-steps, or, when there are fewer micro-steps than processes, each micro-batch
    batch_split = 1
    if gradient_accumulation_steps % world_size == 0:
        gradient_accumulation_steps //= world_size
    elif batch_size == 'auto' or batch_size % world_size == 0:
        batch_split = world_size
        if batch_size != 'auto':
            batch_size //= world_size
        if rank == 0:
            print(f"torchrun: gradient_accumulation_steps={gradient_accumulation_steps} does not divide over "
                  f"{world_size} processes, so each takes 1/{world_size} of every micro-batch and the global batch "
                  f"stays what one process would take", flush=True)
    else:
        nearest = max(world_size, round(batch_size / world_size) * world_size)
        raise UserError(f"gradient_accumulation_steps={gradient_accumulation_steps} and batch_size={batch_size} "
                        f"cannot be shared by {world_size} processes; use --batch_size={nearest} (a multiple of "
                        f"{world_size}) or --gradient_accumulation_steps={world_size * gradient_accumulation_steps}")
else:
    rank, local_rank, world_size, device_note = 0, 0, 1, None
    device = hardware.pick_device(device)
    if fsdp:
        raise UserError("fsdp=True shards the model over several processes; launch with "
                        "torchrun --standalone --nproc_per_node=N train.py ..., or set --fsdp=False")
master = rank == 0
device_type = device.split(':')[0]


def all_reduce(values, op='sum'):
    """Floats combined over all processes ('sum', 'min' or 'max'); unchanged without DDP."""
    if not ddp:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op={'sum': dist.ReduceOp.SUM, 'min': dist.ReduceOp.MIN, 'max': dist.ReduceOp.MAX}[op])
    return t.tolist()


def log(*args):
    if master:
        print(*args, flush=True)


if device_note:
    log(device_note)
dtype = hardware.pick_dtype(dtype, device, training=True)
if device_type == 'cpu':
    hardware.tune_cpu_allocator()  # glibc keeps the memory of each step for the next instead of faulting it in again
if fsdp and dtype == 'float16':
    # the grad scaler would decide on each rank's shards alone whether to skip a step
    raise UserError("fsdp=True trains in bfloat16 or float32, not float16; use --dtype=bfloat16")
compile = hardware.pick_compile(compile, device)
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
ctx = hardware.autocast_context(device, dtype)

# -----------------------------------------------------------------------------
# data: every rank draws the same initial weights (FSDP shards them without a broadcast), and dropout is
# reseeded per rank before the loop; the data sampler shares one seed so ranks split one global batch
torch.manual_seed(seed)
data_gen = torch.Generator().manual_seed(seed)
data = Dataset(dataset)
data_fingerprint = data.fingerprint()
if 'note' in data_fingerprint and 'counts only' in data_fingerprint['note']:
    log(f"dataset {data.data_dir}: {data_fingerprint['note']}")
# the run folder is this run's until it ends (rank 0 holds the lock); a fresh start never replaces a checkpoint.
# eval_only writes nothing there, so it reads a folder even while another run trains in it
run_lock = None
if master and not eval_only:
    run_lock, moved_to = runs.claim(out_dir, init_from, overwrite)
    if moved_to:
        log(f"overwrite: moved the previous run in {out_dir} to {moved_to}")
try:
    from core.data import tokenizer as tokenizer_lib
    tokenizer_state = tokenizer_lib.load(data.data_dir).state()
except Exception:  # the tokenizer is a convenience for sample.py; training does not need it
    tokenizer_state = data.meta.get('tokenizer')

# -----------------------------------------------------------------------------
# model, and the training state a checkpoint keeps (restored here on resume)
model_args = {k: config[k] for k in CONFIG_KEYS}
if model_args['vocab_size'] == 0:
    v = data.vocab_size
    model_args['vocab_size'] = v if v <= 256 else -(-v // 64) * 64  # multiples of 64 are faster
iter_num, best_val_loss, evals_without_improvement = 0, float('inf'), 0
lora_config = None  # {'rank', 'alpha', 'targets', 'base'} of a LoRA run; checkpoints then keep only the adapters
resumed_at = -1  # the iteration whose eval a resumed run does not repeat
clock_offset = 0.0  # training seconds already spent, when a time schedule resumes
shard_slot, shard = 0, None  # fsdp: the slot of the last complete set of shards, and this rank's shard
if init_from == 'resume':
    sharded = ckpt.get('fsdp')  # {'world_size', 'slot'} when an FSDP run wrote it
    if sharded and not fsdp:
        raise UserError(f"{ckpt_path} was written by an FSDP run on {sharded['world_size']} processes; resume it with "
                        f"--fsdp=True under torchrun --nproc_per_node={sharded['world_size']} (sample.py reads it as is)")
    if fsdp and not sharded:
        raise UserError(f"{ckpt_path} was not written with fsdp=True; resume it with --fsdp=False")
    if fsdp and sharded['world_size'] != world_size:
        raise UserError(f"{ckpt_path} is sharded over {sharded['world_size']} processes, this run has {world_size}; "
                        f"resume with --nproc_per_node={sharded['world_size']}")
    # nanoGPT's checkpoints keep no random states: those start fresh
    missing = [k for k in ('config', 'iter_num', 'best_val_loss') + (() if ckpt.get('nanogpt') else ('rng', 'data_rng'))
               + (() if fsdp else ('optimizer',)) if k not in ckpt]
    if missing:
        raise UserError(f"{ckpt_path} cannot be resumed: it has no {', '.join(missing)}; it can still be sampled "
                        f"from, or fine-tuned from with --init_from={ckpt_path} and another --out_dir")
    if ckpt['config'].get('optimizer', 'adamw') != optimizer:
        raise UserError(f"cannot resume: the checkpoint was trained with optimizer={ckpt['config'].get('optimizer')!r}, "
                        f"not {optimizer!r}")
    if ckpt.get('nanogpt'):
        checkpoint.check_tokenizer(ckpt, ckpt_path, tokenizer_state, dataset)
        if master and not os.path.exists(os.path.join(out_dir, 'ckpt.nanogpt.pt')):
            # our first save replaces nanoGPT's ckpt.pt, a file we did not write: its bytes stay beside it
            import shutil
            shutil.copy2(ckpt_path, os.path.join(out_dir, 'ckpt.nanogpt.pt'))
    if fsdp:
        shard_slot = sharded['slot']
        shard_path = checkpoint.shard_path(out_dir, rank, world_size, shard_slot)
        shard = checkpoint.load(shard_path, map_location='cpu')
        if shard.get('iter_num') != ckpt['iter_num'] or 'optimizer' not in shard:
            raise UserError(f"{shard_path} does not belong to {ckpt_path} (iteration {shard.get('iter_num')} "
                            f"vs {ckpt['iter_num']}); resume from a complete checkpoint")
    saved = ckpt['model_args']
    differ = [f"{k} (checkpoint {saved[k]!r}, config {model_args[k]!r})" for k in ARCH_KEYS
              if k in _explicit and k in saved and saved[k] != model_args[k]]
    if differ:
        raise UserError(f"cannot resume {ckpt_path}: the architecture differs: {'; '.join(differ)}")
    model_args = {**saved, 'dropout': dropout}
    changed = [f"{k} {ckpt['config'][k]!r} -> {config[k]!r}" for k in _explicit
               if k not in ARCH_KEYS and k in ckpt.get('config', {}) and ckpt['config'][k] != config[k]
               and k != 'init_from']
    if changed:
        log(f"resume: changed {', '.join(sorted(changed))}")
    if ckpt.get('lora'):  # the base's weights come from where the run began, the adapters from the checkpoint
        ckpt['model_args'] = model_args
        model = checkpoint.build_model(ckpt, ckpt_path, merge=False)
        model_args = model.config.to_dict()
        lora_config = ckpt['lora']
    else:
        try:
            model_config = GPTConfig(**model_args)
            planner.check_build(model_config, device)
            model = GPT(model_config)
            if not fsdp:  # FSDP loads its shards once the model is sharded
                model.load_state_dict(ckpt['model'])
        except (TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"cannot resume {ckpt_path}: {' '.join(str(e).split())[:300]}")
    # the weights learned these ids: a dataset or tokenizer swapped under the same name would train on nonsense
    if 'dataset_fingerprint' in ckpt:
        change = dataset_change(ckpt['dataset_fingerprint'], data_fingerprint)
    else:  # a checkpoint from before fingerprints: its tokenizer still tells
        same = json.dumps(ckpt.get('tokenizer'), sort_keys=True) == json.dumps(tokenizer_state, sort_keys=True)
        change = None if same or ckpt.get('tokenizer') is None else "the tokenizer differs"
    if change and not allow_dataset_change:
        raise UserError(f"cannot resume {ckpt_path} on dataset '{dataset}': {change}; pass "
                        f"--allow_dataset_change=True to train on it anyway")
    if change:
        log(f"resume: dataset changed ({change}), allowed by allow_dataset_change")
    iter_num, best_val_loss = ckpt['iter_num'], ckpt['best_val_loss']
    evals_without_improvement = ckpt.get('evals_without_improvement', 0)
    # an interrupt saved before its iteration's eval: the resumed run does that eval
    resumed_at = iter_num if ckpt.get('evaluated', True) else -1
    # a time schedule goes on from where the run it resumes left its clock
    clock_offset = ckpt.get('train_seconds', 0.0) if lr_schedule == 'time' else 0.0
elif init_from == 'scratch':
    try:
        model_config = GPTConfig(**model_args)
    except ValueError as e:
        raise UserError(str(e))
    planner.check_build(model_config, device)  # before allocating: a size typo ends in one line, not the allocator's
    model = GPT(model_config)
elif init_from.startswith('gpt2') or init_from.startswith('hf:'):
    if init_from.startswith('gpt2') and data_fingerprint['tokenizer']['kind'] != 'gpt2' and not allow_dataset_change:
        raise UserError(f"init_from={init_from} learned GPT-2's token ids, but dataset '{dataset}' uses a "
                        f"{data_fingerprint['tokenizer']['kind']} tokenizer; prepare it with --tokenizer=gpt2, or pass "
                        f"--allow_dataset_change=True")
    from core.interop import hf
    if init_from.startswith('hf:') and not allow_dataset_change:
        # a folder that carries its tokenizer says which ids the weights learned
        folder_tok = hf.folder_tokenizer(os.path.expanduser(init_from[3:]))
        try:
            data_tok = tokenizer_lib.from_state(tokenizer_state, base_dir=data.data_dir)
        except tokenizer_lib.TokenizerError:
            data_tok = None
        if folder_tok is not None and data_tok is not None and not tokenizer_lib.keeps_ids(folder_tok, data_tok):
            raise UserError(f"{init_from[3:]} holds a {folder_tok.kind} tokenizer of {folder_tok.vocab_size} ids, "
                            f"not dataset '{dataset}'s ({data_tok.kind}, {data_tok.vocab_size} ids); prepare the data "
                            f"with the folder's tokenizer, or pass --allow_dataset_change=True")
    model = hf.from_pretrained(init_from, dropout=dropout)
    model_args = model.config.to_dict()
else:
    # a fine-tune: the weights and architecture of a checkpoint (ours or nanoGPT's), everything else fresh
    if os.path.isfile(os.path.join(init_from, 'config.json')) and not checkpoint.steps(init_from) and \
            not any(os.path.exists(os.path.join(init_from, n)) for n in ('best.pt', 'ckpt.pt')):
        raise UserError(f"{init_from} is a Hugging Face folder, not a run; use --init_from=hf:{init_from}")
    source_path = checkpoint.resolve(init_from)
    source = checkpoint.load(source_path)
    differ = [f"{k} (checkpoint {source['model_args'][k]!r}, config {model_args[k]!r})" for k in ARCH_KEYS
              if k in _explicit and k != 'block_size' and source['model_args'].get(k, model_args[k]) != model_args[k]]
    if differ:
        raise UserError(f"init_from={init_from} fixes the architecture, which differs from the config: "
                        f"{'; '.join(differ)}; drop those keys")
    checkpoint.check_tokenizer(source, source_path, tokenizer_state, dataset)
    source['model_args'] = {**source['model_args'], 'dropout': dropout}
    model = checkpoint.build_model(source, source_path)
    model_args = model.config.to_dict()
    log(f"init_from {source_path}: its weights and architecture (iteration {source.get('iter_num', '?')} of "
        f"{'a nanoGPT run' if source.get('nanogpt') else 'its run'}); a fresh optimizer, schedule and iteration count")
    del source
if init_from not in ('scratch', 'resume'):
    from core.data import chat
    # special tokens the data's tokenizer added (the chat turns) need rows in a pretrained embedding
    if tokenizer_state and chat.grow_vocab(model, tokenizer_lib.from_state(tokenizer_state)):
        log(f"vocabulary grown to {model.config.vocab_size} for the tokenizer's added special tokens")
        model_args['vocab_size'] = model.config.vocab_size
    if lora_rank:
        lora.add(model, lora_rank, lora_alpha, lora_targets)
        lora_config = dict(rank=lora_rank, alpha=lora_alpha, targets=lora_targets, base=init_from)
if block_size < model.config.block_size:
    model.crop_block_size(block_size)
    model_args['block_size'] = block_size
elif block_size > model.config.block_size:
    raise UserError(f"block_size={block_size} is larger than the model's {model.config.block_size}")
data.check_fits(model.config.vocab_size, model.config.block_size)
model.save_memory(chunked_ce, activation_checkpointing)
if fsdp:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    # one unit per block, so only one block's full weights exist at a time, then the root (embeddings,
    # final norm, head); fully_shard moves each rank's shards to the device. In bf16 the weights travel
    # in bf16 and the gradients are reduced in fp32.
    mesh = init_device_mesh(device_type, (world_size,))
    mp_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if dtype == 'bfloat16' else MixedPrecisionPolicy()
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh, mp_policy=mp_policy)
    fully_shard(model, mesh=mesh, mp_policy=mp_policy)
else:
    model.to(device)
raw_model = model  # `model` becomes the compiled and DDP-wrapped one below; checkpoints and evals use this


def memory_plan(b, accumulation):
    """The memory plan (planner.py) of this process's training steps at micro-batch b: components and total."""
    return planner.estimate_training_memory(raw_model.config, b, block_size, dtype, config['optimizer'], device_type,
                                            bool(compile), chunked_ce, activation_checkpointing, accumulation,
                                            ddp=ddp and not fsdp, fsdp_world_size=world_size if fsdp else 0,
                                            fused_attention=hardware.fused_attention(device, dtype),
                                            lora=(lora_config['rank'], lora_config['targets']) if lora_config else None)


# the budget of the whole plan: what is free now plus the parameters already on the device (under FSDP this
# process's shards, not the sharded tensors' global sizes)
local = lambda p: p.to_local() if hasattr(p, 'to_local') else p
memory_budget = memory_budget_gb * 2 ** 30 if memory_budget_gb > 0 else \
    (planner.device_budget(device) or 0) + sum(local(p).numel() * p.element_size() for p in model.parameters())
if batch_size == 'auto':
    from configurator import parse as parse_config
    memory_budget = all_reduce([memory_budget], 'min')[0]  # every process must choose the same batch: the tightest
    # the tokens per step kept are those of the batch_size the config gives without 'auto'
    configured = parse_config([a for a in sys.argv[1:] if a.replace('"', '').replace("'", '') != '--batch_size=auto'],
                              _defaults, _extra)
    configured = configured['batch_size'] if configured['batch_size'] != 'auto' else _defaults['batch_size']
    rows = gradient_accumulation_steps * configured
    if ddp and batch_split > 1:  # this process's share of the rows
        if rows % batch_split:
            raise UserError(f"batch_size='auto' keeps the {rows} sequences per micro-step that batch_size={configured} "
                            f"gives, which do not split over {batch_split} processes; give a batch_size that is a "
                            f"multiple of {batch_split}")
        rows //= batch_split
    batch_size, gradient_accumulation_steps = planner.auto_batch(lambda b, a: memory_plan(b, a)['total'], rows,
                                                                 memory_budget, device_type)
    if batch_size == 0:
        raise UserError(f"batch_size='auto': not even one sequence of {block_size} tokens fits in "
                        f"{planner.format_bytes(memory_budget)} by the estimate; lower block_size or the model size")
    config['batch_size'], config['gradient_accumulation_steps'] = batch_size, gradient_accumulation_steps * world_size
    planned = memory_plan(batch_size, gradient_accumulation_steps)['total']
    log(f"batch_size auto: {batch_size} x {gradient_accumulation_steps} micro-steps per process keeps {rows} "
        f"sequences per step; planned {planner.format_bytes(planned)} of {planner.format_bytes(memory_budget)} "
        f"({planner.SAFETY.get(device_type, 0.75):.0%} at most)")

# -----------------------------------------------------------------------------
# optimizer: the config key `optimizer` names its kind ('adamw' or 'muon', kept in config['optimizer']);
# from here on `optimizer` is the object, one even when Muon and AdamW share the parameters
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type, config['optimizer'],
                                       muon_lr, muon_momentum, embed_lr or None, muon_ns)
if ckpt is not None:
    fresh_lrs = [g['initial_lr'] for g in optimizer.param_groups]
    try:
        if fsdp:
            checkpoint.load_local_shards(model, optimizer, shard['model'], shard['optimizer'])
        elif ckpt.get('nanogpt'):
            from core.interop import nanogpt_files as nanogpt
            optimizer.load_state_dict(nanogpt.optimizer_state(ckpt['optimizer'], model, optimizer))
        else:
            optimizer.load_state_dict(ckpt['optimizer'])
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError) as e:
        raise UserError(f"cannot resume {ckpt_path}: its state does not fit this model "
                        f"({' '.join(str(e).split())[:300]})")
    # a resumed run keeps its moments but takes the learning rates it is given now
    for group, lr in zip(optimizer.param_groups, fresh_lrs):
        group['initial_lr'] = lr
    if 'scaler' in ckpt and scaler.is_enabled():
        scaler.load_state_dict(ckpt['scaler'])


def decay_shape(ratio, min_mult):
    """From 1 at ratio 0 to min_mult at ratio 1: a cosine, or a hold then a linear warmdown."""
    ratio = min(max(ratio, 0.0), 1.0)
    if warmdown_frac > 0:
        return min_mult + min(1.0, (1.0 - ratio) / warmdown_frac) * (1.0 - min_mult)
    return min_mult + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (1.0 - min_mult)


def get_lr_mult(it, clock=0.0):
    """Learning rate as a fraction of the peak: linear warmup (never 0 at step 0), then down to min_lr,
    by iterations or, with lr_schedule='time', by the share of max_seconds spent (clock seconds)."""
    if not decay_lr:
        return 1.0
    min_mult = min_lr / learning_rate if learning_rate > 0 else 0.0
    warmup = (it + 1) / (warmup_iters + 1)
    if lr_schedule == 'time':
        # a time budget does not know its iteration count, so the warmup multiplies the decay instead
        return min(1.0, warmup) * decay_shape(clock / max_seconds, min_mult)
    if it < warmup_iters:
        return warmup
    return decay_shape((it - warmup_iters) / max(1, lr_decay_iters - warmup_iters), min_mult)


# -----------------------------------------------------------------------------
# compile and wrap
if compile:
    log("compiling the model...")
    model = torch.compile(model)
if ddp and not fsdp:
    # the buffers (rope tables) are the same on every rank, so no broadcast before each forward; gradients
    # live in the all-reduce buckets instead of a copy beside them
    model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None, broadcast_buffers=False,
                gradient_as_bucket_view=True)

tokens_per_iter = gradient_accumulation_steps * world_size * batch_size * block_size
n_params = raw_model.get_num_params()
flops_per_token = raw_model.flops_per_token(block_size)
peak, peak_desc = hardware.peak_flops(device, dtype, peak_tflops)
if ddp and device_type == 'cpu' and not peak_tflops:
    # every rank timed its own matmul; one slowed by a neighbour still starting up would read low and
    # inflate the MFU, so all ranks use the fastest reading (the cores are alike)
    peak = all_reduce([peak], 'max')[0]
    peak_desc = (f"the fastest rank's CPU {hardware.cpu_gemm_precision(dtype)[1]} matmul ({peak / 1e9:.1f} GFLOP/s, "
                 f"{torch.get_num_threads()} threads each)")
log(f"parameters: {n_params / 1e6:.2f}M (non-embedding), {raw_model.get_num_params(False) / 1e6:.2f}M total")
if lora_config:
    n_train = sum(p.numel() for p in raw_model.parameters() if p.requires_grad)
    log(f"LoRA rank {lora_config['rank']} on {lora_config['targets']}: {n_train:,} trainable adapter parameters "
        f"({n_train / raw_model.get_num_params(False) * 100:.2f}% of the model), base {lora_config['base']} frozen")
log(f"tokens per iteration: {tokens_per_iter:,} ({world_size} process{'es' if world_size > 1 else ''} x "
    f"{gradient_accumulation_steps} micro-steps x {batch_size} x {block_size})")
log(f"tokens planned: {tokens_per_iter * max_iters:,} over {max_iters:,} iterations, "
    f"{tokens_per_iter * max_iters / n_params:.1f} tokens per parameter")
log(f"training FLOPs: {planner.format_flops(flops_per_token)} per token, "
    f"{planner.format_flops(flops_per_token * tokens_per_iter)} per iteration, "
    f"{planner.format_flops(flops_per_token * tokens_per_iter * max_iters)} in all; MFU measured against {peak_desc}")
log(f"memory estimate per process: {planner.summary(memory_plan(batch_size, gradient_accumulation_steps))}")
log(f"device {device}, dtype {dtype}, compile {compile}, dataset {data.data_dir}")

# -----------------------------------------------------------------------------
# logging, interrupts, and the random state the loop starts from
wandb_run = None
if wandb_log and master:
    from core.training import tracking
    wandb_run = tracking.start_wandb(wandb_project, wandb_run_name, config)
if log_health:
    from core.training import tracking
health = {}  # log_health: filled on the step before an eval, written with the eval's record

# the first SIGINT/SIGTERM finishes the step and saves; a second exits at once
stop_signal = []


def on_signal(signum, frame):
    if stop_signal:
        raise KeyboardInterrupt
    stop_signal.append(signum)
    try:  # os.write, since a print here could land inside a print the signal interrupted
        if master:
            os.write(sys.stdout.fileno(), f"\n{signal.Signals(signum).name} received: finishing this step and saving "
                                          f"(press Ctrl-C again to quit now)\n".encode())
    except (OSError, ValueError):  # no real stdout: the stop itself still happens
        pass


def quit_now(signum, frame):
    if run_lock is not None:
        run_lock.release()
    os._exit(128 + signum)


signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)

if ckpt is not None and ckpt.get('nanogpt'):
    torch.manual_seed(seed + rank)
    log(f"resumed a nanoGPT run from {ckpt_path} at iteration {iter_num}: its weights, "
        f"optimizer and iteration; the random states start fresh from seed={seed} (nanoGPT does not save them); "
        f"its own file is kept as ckpt.nanogpt.pt")
    del ckpt, shard
elif ckpt is not None:
    if ckpt.get('world_size', 1) == world_size:
        checkpoint.set_rng_state(ckpt['rng_per_rank'][rank] if 'rng_per_rank' in ckpt else ckpt['rng'])
    else:
        # one saved state per rank of another world size cannot be dealt out: fresh states, still one per rank
        # (the data sampler, shared by all ranks, is restored either way)
        torch.manual_seed(seed + 1_000_003 * iter_num + rank)
        log(f"resume: {ckpt.get('world_size', 1)} process(es) saved this run and {world_size} resume it, so dropout "
            f"and the other random draws start from fresh per-rank seeds (the data order goes on exactly)")
    data_gen.set_state(ckpt['data_rng'])
    log(f"resumed from {ckpt_path} at iteration {iter_num}")
    del ckpt, shard
else:
    # seeded here, after everything that draws random numbers during setup, and per rank so dropout differs
    torch.manual_seed(seed + rank)

if compile:
    # torch.compile builds its kernels at the first forward and backward: that happens here, on random tokens whose
    # gradients are thrown away (no optimizer step), so the clock (max_seconds, lr_schedule='time', ms/iter) counts
    # training alone, as modded-nanogpt times its runs; the seconds it took are logged
    t0 = time.time()
    # inputs and targets as two tensors, as every step has them: the compiled graph is specialized on aliasing
    warm_gen = torch.Generator().manual_seed(seed + 2)
    warm_x, warm_y = (torch.randint(0, model_args['vocab_size'], (batch_size, block_size), generator=warm_gen).to(device)
                      for _ in range(2))
    with ctx:
        warm_loss = model(warm_x, warm_y, docs=data.documents(warm_x) if doc_aware else None)[1]
    scaler.scale(warm_loss).backward()
    optimizer.zero_grad(set_to_none=True)
    del warm_x, warm_y, warm_loss
    log(f"compiled in {time.time() - t0:.1f} s, before the clock starts")

exit_code = 0
t_start = time.time()
t_last, tokens_since, running_mfu, speed_windows = t_start, 0, -1.0, 0
eval_seconds = 0.0  # spent in evals and saves, which the clock leaves out when timed_eval is False
clock = clock_offset  # training seconds, the same on every rank
lr_mult = get_lr_mult(max(iter_num - 1, 0), clock)  # the last step's, as an uninterrupted run logs at its next eval


def draw_starts():
    """One global batch per step from the sampler all ranks share."""
    return data.sample_starts('train', gradient_accumulation_steps * world_size * batch_size, block_size, data_gen,
                              doc_aware)


def build_batches(starts):
    """This rank's slice of the step's windows, one (x, y) per micro-step, still on the host."""
    n = gradient_accumulation_steps * batch_size
    mine = starts[rank * n:(rank + 1) * n].split(batch_size)
    return [data.host_batch('train', rows, block_size, pin=device_type == 'cuda') for rows in mine]


# the next step's windows are read (and pinned) on a thread while this step computes
train_batches = Prefetcher(data_gen, draw_starts, build_batches)


def train_clock():
    """Seconds of training: the wall time of this loop, less evaluations and saves when timed_eval is False."""
    return clock_offset + time.time() - t_start - (0.0 if timed_eval else eval_seconds)


def format_seconds(s):
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def pad_forwards(n):
    """FSDP forwards are collective: a rank with fewer eval batches than another runs n throwaway ones."""
    dummy = torch.zeros((1, block_size), dtype=torch.long, device=device)
    for _ in range(n if fsdp else 0):
        with ctx:
            raw_model(dummy)


@torch.no_grad()
def estimate_loss():
    """Mean loss on eval_iters random train and val batches (the same batches every eval),
    or over the whole val split when eval_full; ranks split the batches. With each split's loss
    comes its bits per byte: the summed nats over ln 2 and over the bytes the targets decode to."""
    model.eval()
    out = {}
    for split in ('train', 'val'):
        total, count, nats, n_bytes = 0.0, 0, 0.0, 0
        if eval_full and split == 'val':
            done = 0
            for x, y in data.exact_batches(split, batch_size, block_size, device, rank, world_size):
                with ctx:
                    loss = raw_model(x, y, docs=data.documents(x) if doc_aware else None)[1]
                n = int((y != -1).sum())
                total, count, done = total + loss.item() * n, count + n, done + 1
                nats, n_bytes = nats + loss.item() * n, n_bytes + data.target_bytes(y)
            n_batches = -(-data.num_windows(split, block_size) // batch_size)
            pad_forwards(-(-n_batches // world_size) - done)
        else:
            gen = torch.Generator().manual_seed(seed + 1)
            for k in range(eval_iters):
                # every rank draws every batch's positions (one stream), and reads and runs only its own
                starts = data.sample_starts(split, batch_size, block_size, gen, doc_aware)
                if k % world_size == rank:
                    x, y = data.get_batch(split, batch_size, block_size, None, device, starts)
                    with ctx:
                        # the logits go at once, not at the next forward
                        loss = raw_model(x, y, docs=data.documents(x) if doc_aware else None)[1]
                    total, count = total + loss.item(), count + 1
                    nats, n_bytes = nats + loss.item() * int((y != -1).sum()), n_bytes + data.target_bytes(y)
            pad_forwards(-(-eval_iters // world_size) - count)
        total, count, nats, n_bytes = all_reduce([total, count, nats, n_bytes])
        out[split] = total / max(count, 1)
        out[f'{split}_bpb'] = bits_per_byte(nats, n_bytes)  # nan when the dataset names no tokenizer
        if eval_full and split == 'val':
            out['val_tokens'] = int(count)
    model.train()
    return out


def save_checkpoint(is_best, evaluated=True, latest=True):
    """ckpt.pt (with keep_checkpoints, also ckpt_<step>.pt) and best.pt when is_best; latest=False
    writes best.pt alone."""
    global shard_slot
    state = {
        'model': raw_model.state_dict(),
        'optimizer': optimizer.state_dict(),
        'model_args': model_args,
        'iter_num': iter_num,
        'best_val_loss': best_val_loss,
        'config': config,
        'dataset': dataset,
        'dataset_fingerprint': data_fingerprint,
        'tokenizer': tokenizer_state,
        'rng': checkpoint.rng_state(),
        'data_rng': train_batches.state(),
        'world_size': world_size,
        'evals_without_improvement': evals_without_improvement,
        # False when an interrupt saved before this iteration's eval, so the resumed run does that eval
        'evaluated': evaluated,
        'train_seconds': clock,
    }
    if lora_config:
        state['model'], state['lora'] = lora.adapter_state(raw_model), lora_config
    if scaler.is_enabled():
        state['scaler'] = scaler.state_dict()
    if ddp:
        per_rank = [None] * world_size
        dist.all_gather_object(per_rank, state['rng'])
        state['rng_per_rank'] = per_rank
    if fsdp and not latest:
        # best.pt alone holds the gathered weights for sampling; the shard slots stay ckpt.pt's
        del state['optimizer']
        state['model'] = checkpoint.full_model_state(raw_model)
    elif fsdp:
        # every rank writes its shards into the free slot; ckpt.pt, written after all of them, names that
        # slot and holds the gathered weights for sample.py
        shard_slot = 1 - shard_slot
        model_sd, optim_sd = checkpoint.local_shards(raw_model, optimizer)
        checkpoint.save({'model': model_sd, 'optimizer': optim_sd, 'model_args': model_args, 'iter_num': iter_num},
                        checkpoint.shard_path(out_dir, rank, world_size, shard_slot))
        del state['optimizer']
        state['model'] = checkpoint.full_model_state(raw_model)
        state['fsdp'] = {'world_size': world_size, 'slot': shard_slot}
        dist.barrier()
    if master and latest:
        checkpoint.save_run(state, out_dir, iter_num, best=is_best, keep=keep_checkpoints)
    elif master:
        checkpoint.save(state, os.path.join(out_dir, 'best.pt'))


metrics_failed = []  # the first append that failed, so its warning is said once


def append_metrics(record):
    """One line per eval; a failure (full disk, odd out_dir) is a warning, so the checkpoint save still happens."""
    path = os.path.join(out_dir, 'metrics.jsonl')
    try:
        with open(path, 'a') as f:
            f.write(json.dumps(record) + '\n')
    except OSError as e:
        if not metrics_failed:
            print(f"warning: cannot append to {path} ({e.strerror or e}); training goes on and checkpoints are still "
                  f"saved, but this run's curve has gaps", file=sys.stderr, flush=True)
        metrics_failed.append(iter_num)


def evaluate_and_save():
    """Evaluate, record, keep the checkpoints, and count evals without improvement.
    Returns True when training ends here: eval_only, or early stopping."""
    global best_val_loss, evals_without_improvement, health, eval_seconds, t_last, tokens_since
    t_eval = time.time()
    losses = estimate_loss()
    bpb = f", val bpb {losses['val_bpb']:.4f}" if math.isfinite(losses['val_bpb']) else ''
    log(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}{bpb}")
    if 'val_tokens' in losses:
        log(f"step {iter_num}: val perplexity {math.exp(min(losses['val'], 50)):.4f} "
            f"(exact over {losses['val_tokens']:,} tokens)")
    improved = math.isfinite(losses['val']) and losses['val'] < best_val_loss
    if improved:
        best_val_loss = losses['val']
        evals_without_improvement = 0
    elif iter_num != resumed_at:
        evals_without_improvement += 1
    record = dict(iter=iter_num, tokens=iter_num * tokens_per_iter, train_loss=losses['train'],
                  val_loss=losses['val'], lr=learning_rate * lr_mult, elapsed=round(time.time() - t_start, 3),
                  train_seconds=round(clock, 3))
    record.update({k: losses[k] for k in ('train_bpb', 'val_bpb') if math.isfinite(losses[k])})
    if log_health:
        # every rank runs the forward: under fsdp it gathers the shards together
        x_health, _ = data.get_batch('val', batch_size, block_size, torch.Generator().manual_seed(seed + 2), device)
        record['health'] = {**health, **tracking.activation_rms(raw_model, x_health, ctx)}
        health = {}
    if master and iter_num != resumed_at and not eval_only:
        append_metrics(record)
    if wandb_run is not None:
        wandb_run.log({'iter': iter_num, 'tokens': record['tokens'], 'train/loss': losses['train'],
                       'val/loss': losses['val'], 'lr': learning_rate * lr_mult,
                       **({'mfu': running_mfu * 100} if running_mfu >= 0 else {}),
                       **{f'{k[:-4]}/bpb': record[k] for k in ('train_bpb', 'val_bpb') if k in record},
                       **{f'health/{k}': v for k, v in record.get('health', {}).items()}}, step=iter_num)
    if eval_only:
        return True
    if not math.isfinite(losses['val']):
        log(f"step {iter_num}: val loss is not finite; the checkpoints are left as they were")
    elif iter_num > 0 and iter_num != resumed_at and checkpoint_interval and improved:
        save_checkpoint(True, latest=False)  # ckpt.pt follows checkpoint_interval instead
        log(f"saved best.pt to {out_dir} (best so far)")
    elif iter_num > 0 and iter_num != resumed_at and (improved or always_save_checkpoint):
        save_checkpoint(improved)
        log(f"saved checkpoint to {out_dir}" + (" (best so far)" if improved else ""))
    eval_seconds += time.time() - t_eval
    t_last, tokens_since = time.time(), 0  # the next speed window starts after the eval and the save
    if early_stop_patience and evals_without_improvement >= early_stop_patience:
        log(f"early stop: val loss has not improved for {evals_without_improvement} evaluations "
            f"(best {best_val_loss:.4f} kept in {os.path.join(out_dir, 'best.pt')})")
        return True
    return False


def divergence_message(run, at):
    """What to try, for the dtype in use, and what was kept."""
    advice = {'float16': "or train in bfloat16 (--dtype=bfloat16) or float32, whose range does not overflow",
              'bfloat16': "or train in float32 (--dtype=float32)"}.get(dtype, "or raise warmup_iters, or lower grad_clip")
    kept = [n for n in ('best.pt', 'ckpt.pt') if os.path.exists(os.path.join(out_dir, n))]
    saved = (f"{' and '.join(kept)} in {out_dir} {'are' if len(kept) > 1 else 'is'} untouched" if kept
             else "no checkpoint was saved yet")
    return (f"training diverged: {run} non-finite steps in a row at iteration {at}; lower learning_rate "
            f"(now {learning_rate:g}) {advice}. {saved}")


def log_progress(loss_value, norm_value):
    """The iteration line (and wandb), every log_interval iterations: loss, lr, speed, MFU, ETA."""
    global t_last, tokens_since, running_mfu, speed_windows
    hardware.synchronize(device)
    now = time.time()
    dt = (now - t_last) / (tokens_since / tokens_per_iter)  # a window restarted by an eval has fewer steps
    tok_s = tokens_since / (now - t_last)
    t_last, tokens_since = now, 0
    speed_windows += 1
    # the first window holds compilation and warm-up, so the MFU starts from the second; a GPU the peak
    # table lacks has none
    mfu = raw_model.estimate_mfu(tok_s, peak * world_size, block_size) if peak else None
    if mfu is not None and speed_windows > 1:
        running_mfu = mfu if running_mfu < 0 else 0.9 * running_mfu + 0.1 * mfu
    mfu_text = f"mfu {running_mfu * 100:.1f}%" if running_mfu >= 0 else "mfu n/a"
    eta = (max_iters - iter_num) * dt
    if max_seconds > 0:
        eta = min(eta, max(0.0, max_seconds - train_clock()))
    log(f"iter {iter_num}: loss {loss_value:.4f}, lr {learning_rate * lr_mult:.2e}, {dt * 1000:.1f} ms/iter, "
        f"{tok_s:,.0f} tok/s, {mfu_text}, eta {format_seconds(eta)}")
    if wandb_run is not None:
        wandb_run.log({'train/loss_step': loss_value, 'tokens_per_sec': tok_s, 'lr': learning_rate * lr_mult,
                       'grad_norm': norm_value, **({'mfu': mfu * 100} if mfu is not None else {})}, step=iter_num)


# -----------------------------------------------------------------------------
# the training loop. Between log lines the host never waits for the device: the loss, the gradient
# norm and the counts of skipped steps stay on the device, a non-finite step is skipped there (the
# optimizers' found_inf flag, as the grad scaler uses it), and under DDP the ranks agree on a stop
# and on the clock every AGREE_EVERY iterations instead of at each one.
AGREE_EVERY = 10
optimizers = getattr(optimizer, 'optimizers', [optimizer])
# FSDP's DTensor parameters would need found_inf as a DTensor too: there the host decides, as it does for
# an optimizer without found_inf (AdamW without its fused kernel)
skip_on_device = not fsdp and all(isinstance(o, Muon) or o.defaults.get('fused') for o in optimizers)
# consecutive non-finite steps now, the longest run since the last log line, all of them, the last one's iteration
bad_run, worst_run, skipped, last_bad = (torch.zeros((), dtype=torch.long, device=device) for _ in range(4))
skipped_logged, since_agreed = 0, AGREE_EVERY


def read_step_stats(step_stats):
    """The host's one read between log lines: (loss, grad norm), and the skipped steps reported and
    True when too many came in a row."""
    global skipped_logged, exit_code
    loss_sum, norm_sum, worst, total, last = torch.stack(
        [step_stats[0], step_stats[1], worst_run.double(), skipped.double(), last_bad.double()]).tolist()
    worst_run.zero_()
    new, worst, total = int(total) - skipped_logged, int(worst), int(total)
    skipped_logged = total
    if new == 1:
        log(f"iter {int(last)}: non-finite loss or gradient norm, step skipped ({worst} in a row, {total} in all)")
    elif new > 1:
        log(f"iter {int(last)}: {new} non-finite steps skipped since the last log line (up to {worst} in a row, "
            f"{total} in all)")
    if worst >= max_bad_steps:
        exit_code = 3
        if master:
            print(f"error: {divergence_message(worst, int(last))}", file=sys.stderr)
    return loss_sum / world_size, norm_sum / world_size, exit_code == 3


model.train()
try:
    while True:
        # a stop is decided together so every rank saves the same step, and the ranks share one clock;
        # a lone process agrees with itself at no cost, every iteration
        since_agreed += 1
        if not ddp or since_agreed >= AGREE_EVERY or iter_num % eval_interval == 0 or iter_num >= max_iters:
            stop_votes, clock_sum = all_reduce([float(bool(stop_signal)), train_clock()])
            stop_now, clock, since_agreed = stop_votes > 0, clock_sum / world_size, 0
        last = iter_num >= max_iters or (max_seconds > 0 and clock >= max_seconds)
        done = (iter_num % eval_interval == 0 or last or eval_only) and not stop_now and evaluate_and_save()
        if checkpoint_interval and iter_num > 0 and iter_num != resumed_at and not (stop_now or eval_only) and \
                (iter_num % checkpoint_interval == 0 or last or done):
            save_checkpoint(False)
            log(f"saved checkpoint to {out_dir}")
        if done:
            break
        if stop_now:
            save_checkpoint(False, evaluated=False)
            args = ' '.join(a for a in sys.argv[1:] if not a.startswith(('--init_from=', '--ckpt=')))
            log(f"stopped at iteration {iter_num}; resume with: {'torchrun ...' if ddp else 'python'} train.py {args} "
                f"--init_from=resume")
            exit_code = 128 + stop_signal[0]
            break
        if last:
            break

        lr_mult = get_lr_mult(iter_num, clock)
        for group in optimizer.param_groups:
            group['lr'] = group['initial_lr'] * lr_mult
        step_loss = torch.zeros((), device=device)
        for micro_step, (x, y) in enumerate(train_batches.next()):
            x, y = to_device(x, y, device)
            # gradients are averaged across ranks only on the last micro-step
            if fsdp:
                raw_model.set_requires_gradient_sync(micro_step == gradient_accumulation_steps - 1)
            elif ddp:
                model.require_backward_grad_sync = micro_step == gradient_accumulation_steps - 1
            with ctx:
                # [1]: the (B, T, vocab) logits are not kept alive through the backward
                loss = model(x, y, docs=data.documents(x) if doc_aware else None)[1] / gradient_accumulation_steps
            step_loss += loss.detach()
            scaler.scale(loss).backward()

        scaler.unscale_(optimizer)
        health_step = log_health and ((iter_num + 1) % eval_interval == 0 or iter_num + 1 >= max_iters)
        if health_step:
            health = tracking.grad_norms(raw_model)  # before clipping, so a blow-up shows
            weights_before = tracking.snapshot(raw_model)
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip if grad_clip > 0 else float('inf'))
        if hasattr(grad_norm, 'full_tensor'):  # fsdp: a DTensor, made whole on the device
            grad_norm = grad_norm.full_tensor()
        step_stats = torch.stack([step_loss.float(), grad_norm.float()])
        if ddp:  # summed on the device, so every rank skips the same steps (stream-ordered: no host wait)
            dist.all_reduce(step_stats)
        finite = torch.isfinite(step_stats).all()
        if scaler.is_enabled():  # with fp16 the scaler itself skips steps whose gradients overflowed
            scaler.step(optimizer)
            scaler.update()
        elif skip_on_device:
            optimizer.found_inf = (~finite).float()
            optimizer.step()
            del optimizer.found_inf
        elif finite.item():  # an optimizer without found_inf (non-fused AdamW): the host decides
            optimizer.step()
        if health_step:
            health.update(tracking.update_ratios(raw_model, weights_before))
            del weights_before
        optimizer.zero_grad(set_to_none=True)
        bad_run = torch.where(finite, 0, bad_run + 1)
        torch.maximum(worst_run, bad_run, out=worst_run)
        skipped += (~finite).long()
        last_bad = torch.where(finite, last_bad, iter_num)

        iter_num += 1
        tokens_since += tokens_per_iter
        # read at log lines, and before evals and the end, which wait for the device anyway
        if iter_num % log_interval == 0 or iter_num % eval_interval == 0 or iter_num >= max_iters:
            loss_value, norm_value, diverged = read_step_stats(step_stats)
            if diverged:
                break
            if iter_num % log_interval == 0:
                log_progress(loss_value, norm_value)
except KeyboardInterrupt:  # the second Ctrl-C: quit now, without the save the first one was waiting for
    exit_code = 128 + (stop_signal[0] if stop_signal else signal.SIGINT)
    print(f"interrupted: quit without saving; {out_dir} keeps its last checkpoint", file=sys.stderr, flush=True)
except torch.OutOfMemoryError:
    if device_type == 'cuda':
        torch.cuda.empty_cache()
        memory_budget = memory_budget_gb * 2 ** 30 or torch.cuda.get_device_properties(device).total_memory
    raise UserError(planner.oom_message(lambda b, a: memory_plan(b, a)['total'], batch_size, block_size,
                                        gradient_accumulation_steps, memory_budget, device, world_size))
finally:
    # only cleanup is left: another Ctrl-C ends the process at once instead of raising inside atexit callbacks
    signal.signal(signal.SIGINT, quit_now)
    signal.signal(signal.SIGTERM, quit_now)
    train_batches.close()
    if wandb_run is not None:
        wandb_run.finish()
    if ddp:
        if sys.exc_info()[0] is None and exit_code == 0:
            # the ranks leave together: a rank tearing its process group down while another still saves was
            # seen to abort at exit (std::terminate in gloo's teardown, about 1 run in 15 of the DDP test)
            dist.barrier()
        dist.destroy_process_group()
if lora_config and merge_lora and master:
    lora.merge(raw_model)
    merged_path = os.path.join(out_dir, 'merged.pt')
    checkpoint.save({'model': raw_model.state_dict(), 'model_args': model_args, 'config': config, 'dataset': dataset,
                     'tokenizer': tokenizer_state, 'iter_num': iter_num, 'best_val_loss': best_val_loss}, merged_path)
    log(f"merged the adapters into plain weights: {merged_path}")
if run_lock is not None:  # on an exception the atexit handler releases it
    run_lock.release()
sys.exit(exit_code)
