"""
Train a GPT, on one CPU or GPU or on many through torchrun.

    python train.py config/train_shakespeare_char.py --batch_size=32
    python train.py config/finetune_chat.py --init_from=gpt2 --lora_rank=8    # chat SFT with LoRA adapters
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
    torchrun --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 --nproc_per_node=8 train.py ...

Every global below is a config key: a config file or --key=value overrides it. The machinery lives in
core/training/, a module per part (settings, distributed, init, memory, optim, estimate, guards, report, ...).
"""

import functools
import math
import os
import sys
import time

# before CUDA starts: expandable segments let the allocator grow blocks instead of failing on fragments
if 'PYTORCH_CUDA_ALLOC_CONF' not in os.environ and 'PYTORCH_ALLOC_CONF' not in os.environ:
    os.environ['PYTORCH_CUDA_ALLOC_CONF'] = 'expandable_segments:True'

import torch

from configurator import config_keys, configure
from core import hardware
from core.data import tokenizer as tokenizer_lib
from core.data.loader import Dataset, to_device
from core.errors import UserError, install_excepthook
from core.training import fp8 as fp8_training
from core.training import checkpoint, distributed, guards, init, lora, memory, report, runs, settings, tracking
from core.training.estimate import estimate_loss
from core.training.metrics import MetricsLog, Wandb, code_version
from core.training.optim import FiniteStep
from model import CONFIG_DEFAULTS

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
# norm, pos_encoding, mlp, qk_norm, ...: every other switch is GPTConfig's (model.py), a key at its default there
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
fp8 = False  # float8 matmuls in the blocks' linear layers (torchao; GPUs of compute capability 8.9+)
fsdp = False  # under torchrun: shard parameters, gradients and optimizer state (FSDP2) instead of DDP
device = 'auto'  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'; under torchrun each process takes its LOCAL_RANK's GPU
# 'auto': bfloat16 on GPUs with it in hardware (compute capability 8.0+), else float16; on CPUs bfloat16
# autocast where they have it in hardware (AVX512-BF16, AMX), else float32
dtype = 'auto'
compile = 'auto'  # torch.compile: on for CUDA GPUs of compute capability 7.0+ unless set
threads = 0  # CPU threads; 0: OMP_NUM_THREADS if set, else 1 or all cores, whichever steps faster now
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
distributed.report_once()  # under torchrun a mistake is said once, not by every rank
_keys = config_keys(globals())
_explicit = set()
_defaults = {k: globals()[k] for k in _keys}
_extra = {'compile': (True, False), 'batch_size': ('auto',)}
config = configure(globals(), _keys, extra=_extra, explicit=_explicit, choices=settings.CHOICES)
# on resume, the keys the user did not set come from the checkpoint, so a plain --init_from=resume goes on as it was
resume_ckpt, resume_path = settings.resume_config(config, _defaults, _extra, _explicit)
globals().update(config)
settings.check_config(config, _explicit)

# -----------------------------------------------------------------------------
# set-up: the device, one process or many under torchrun (DDP, or FSDP with fsdp=True), the dtype
ddp, rank, local_rank, world_size, device, dtype, compile, ctx = distributed.compute_init(device, dtype, compile,
                                                                                         backend, fsdp)
master = rank == 0  # rank 0 logs and writes the files
log = functools.partial(print, flush=True) if master else lambda *args: None
fp8_training.check(fp8, device, dtype, fsdp=fsdp, lora_rank=lora_rank)
device_type = device.split(':')[0]
# the global batch stays what one process would take: the processes share the micro-steps (or each micro-batch)
gradient_accumulation_steps, batch_size, batch_split = distributed.share_batch(gradient_accumulation_steps, batch_size,
                                                                                world_size, log)

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
run_lock, moved_to = runs.claim(out_dir, init_from, overwrite) if master and not eval_only else (None, None)
if moved_to:
    log(f"overwrite: moved the previous run in {out_dir} to {moved_to}")
try:
    tokenizer_state = tokenizer_lib.load(data.data_dir).state()
except Exception:  # the tokenizer is a convenience for sample.py; training does not need it
    tokenizer_state = data.meta.get('tokenizer')

# -----------------------------------------------------------------------------
# model: from init_from, every check on the way in core/training/init.py; on resume, where the run left off
model, model_args, start = init.init_model(config, _explicit, data, data_fingerprint, tokenizer_state, device, dtype,
                                           world_size, rank, resume_ckpt, resume_path, log)
raw_model = model  # `model` becomes the compiled and DDP-wrapped one below; checkpoints and evals use this
iter_num, best_val_loss, evals_without_improvement = start.iter_num, start.best_val_loss, start.evals_without_improvement
lora_config = start.lora
memory_plan = memory.training_plan(raw_model, config, dtype, device, compile, ddp, world_size, lora_config)
# the least any process has, so all take the same batch or all stop
memory_budget = distributed.all_reduce([memory.budget(raw_model, device, memory_budget_gb)], device, 'min')[0]
if batch_size == 'auto':  # the sequences per step of the batch_size the config gives without 'auto', in memory
    batch_size, gradient_accumulation_steps = memory.auto_batch_size(
        memory_plan, memory.configured_batch_size(sys.argv[1:], _defaults, _extra), gradient_accumulation_steps,
        block_size, memory_budget, device, batch_split, log)
    config['batch_size'], config['gradient_accumulation_steps'] = batch_size, gradient_accumulation_steps * world_size
else:
    memory.check_fits(memory_plan, batch_size, block_size, gradient_accumulation_steps, memory_budget, device,
                      world_size)

# -----------------------------------------------------------------------------
# optimizer (the key `optimizer` names its kind; `opt` is the object, one even when Muon and AdamW share the
# parameters) and the learning rate schedule
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
opt = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type, optimizer, muon_lr,
                                 muon_momentum, embed_lr or None, muon_ns)
if resume_ckpt is not None:  # its moments, with the learning rates given now
    init.restore_optimizer(opt, model, scaler, resume_ckpt, resume_path, start)


def get_lr_mult(it, clock=0.0):
    """Learning rate as a fraction of the peak: a linear warmup (never 0 at step 0), then down to min_lr along a
    cosine, or held and then decayed linearly over the last warmdown_frac; by iterations or, with lr_schedule='time',
    by the share of max_seconds spent (clock seconds), the warmup then scaling the decay (no iteration count)."""
    if not decay_lr:
        return 1.0
    warmup = (it + 1) / (warmup_iters + 1)
    if lr_schedule == 'iters' and it < warmup_iters:
        return warmup
    done = clock / max_seconds if lr_schedule == 'time' else (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    ratio = min(max(done, 0.0), 1.0)
    shape = min(1.0, (1.0 - ratio) / warmdown_frac) if warmdown_frac > 0 else 0.5 * (1.0 + math.cos(math.pi * ratio))
    min_mult = min_lr / learning_rate if learning_rate > 0 else 0.0
    return min(1.0, warmup) * (min_mult + shape * (1.0 - min_mult))


# -----------------------------------------------------------------------------
# compile and wrap
if compile:
    log("compiling the model...")
    model = torch.compile(model)
if ddp and not fsdp:
    model = distributed.wrap_ddp(model, local_rank, device_type)

tokens_per_iter = gradient_accumulation_steps * world_size * batch_size * block_size
peak, peak_desc = report.peak_flops(device, dtype, peak_tflops, ddp)
for line in report.plan_lines(raw_model, tokens_per_iter, max_iters, world_size, gradient_accumulation_steps,
                              batch_size, block_size, peak_desc, memory_plan, lora_config, max_seconds):
    log(line)
log(f"device {device}, dtype {dtype}, compile {compile}, dataset {data.data_dir}")

# -----------------------------------------------------------------------------
# logging, interrupts, and the random state the loop starts from
wandb = Wandb(wandb_log and master, wandb_project, wandb_run_name, config)
health = tracking.Health(raw_model, log_health)
metrics = MetricsLog(out_dir)
code = code_version()  # the commit this run trains with, and whether the tree differed from it
if master and not eval_only:
    metrics.start(iter_num, code, config)
# the first SIGINT/SIGTERM finishes the step (or evaluation batch) and saves; a second quits (in a save, a third)
interrupts = guards.Interrupts(announce=master, release=run_lock.release if run_lock else None)
# a step on random tokens that changes nothing: it compiles the model before the clock starts, and times threads
warm_step = lambda: init.warm_up(model, scaler, opt, ctx, model_args['vocab_size'], batch_size, block_size, device,
                                 seed, data.documents if doc_aware else None)
if compile:
    guards.compile_warm_up(warm_step, interrupts, out_dir, log)
if not ddp or threads:  # torchrun's processes share the cores out unless told
    hardware.pick_threads(warm_step, threads, device, log)
# seeded after everything that draws random numbers during set-up, or restored from the resumed run
init.restore_rng(resume_ckpt, resume_path, seed, rank, world_size, iter_num, data_gen, log)
del resume_ckpt
start.shard = None

exit_code = 0
t_start = time.time()
speed = report.Speedometer(tokens_per_iter,
                           lambda tok_s: raw_model.estimate_mfu(tok_s, peak * world_size, block_size) if peak else None)
eval_seconds = 0.0  # spent in evals and saves, which the clock leaves out when timed_eval is False
clock = start.clock_offset  # training seconds, the same on every rank
lr_mult = get_lr_mult(max(iter_num - 1, 0), clock)  # the last step's, as an uninterrupted run logs at its next eval
# one global batch per step from the sampler all ranks share; the next step's windows are read (and pinned) on a
# thread while this step computes
train_batches = data.step_batches(data_gen, gradient_accumulation_steps, batch_size, block_size, rank, world_size,
                                  doc_aware, pin=device_type == 'cuda')


def train_clock():
    """Seconds of training: the wall time of this loop, less evaluations and saves when timed_eval is False."""
    return start.clock_offset + time.time() - t_start - (0.0 if timed_eval else eval_seconds)


def save_checkpoint(is_best, evaluated=True, latest=True):
    """ckpt.pt (with keep_checkpoints, also ckpt_<step>.pt) and best.pt when is_best; latest=False writes best.pt
    alone. evaluated=False: an interrupt saved before this iteration's eval, which the resumed run then does."""
    with interrupts.saving_now(f"the checkpoint of iteration {iter_num} to {out_dir}"):
        state = dict(model=raw_model.state_dict(), optimizer=opt.state_dict(), model_args=model_args,
                     iter_num=iter_num, best_val_loss=best_val_loss, config=config, dataset=dataset,
                     dataset_fingerprint=data_fingerprint, tokenizer=tokenizer_state, rng=checkpoint.rng_state(),
                     data_rng=train_batches.state(), world_size=world_size, evaluated=evaluated,
                     evals_without_improvement=evals_without_improvement, train_seconds=clock, code=code)
        if lora_config:
            state['model'], state['lora'] = lora.adapter_state(raw_model), lora_config
        if scaler.is_enabled():
            state['scaler'] = scaler.state_dict()
        if ddp:
            state['rng_per_rank'] = distributed.all_gather_object(state['rng'], world_size)
        if fsdp:
            start.shard_slot = checkpoint.save_shards(state, raw_model, opt, out_dir, rank, world_size,
                                                      start.shard_slot, latest)
        if master and latest:
            checkpoint.save_run(state, out_dir, iter_num, best=is_best, keep=keep_checkpoints)
        elif master:
            checkpoint.save(state, os.path.join(out_dir, 'best.pt'))


def evaluate_and_save():
    """Evaluate, record, keep the checkpoints, and count evals without improvement.
    Returns True when training ends here: eval_only, or early stopping."""
    global best_val_loss, evals_without_improvement, eval_seconds, stop_now
    t_eval = time.time()
    losses = estimate_loss(raw_model, data, ctx, device, batch_size, block_size, eval_iters, eval_full, seed,
                           doc_aware, rank, world_size, fsdp, stop=lambda: interrupts.signum != 0)
    if losses is None:  # a signal stopped it between batches: half an evaluation is no result
        log(f"step {iter_num}: evaluation interrupted, not recorded")
        stop_now = True
        return False
    log('\n'.join(report.eval_lines(iter_num, losses)))
    improved = math.isfinite(losses['val']) and losses['val'] < best_val_loss
    if improved:
        best_val_loss, evals_without_improvement = losses['val'], 0
    elif iter_num != start.resumed_at:
        evals_without_improvement += 1
    record = dict(iter=iter_num, tokens=iter_num * tokens_per_iter, train_loss=losses['train'],
                  val_loss=losses['val'], lr=learning_rate * lr_mult, elapsed=round(time.time() - t_start, 3),
                  train_seconds=round(clock, 3))
    record.update({k: losses[k] for k in ('train_bpb', 'val_bpb') if math.isfinite(losses[k])})
    if log_health:
        # every rank runs the forward: under fsdp it gathers the shards together
        x_health, _ = data.get_batch('val', batch_size, block_size, torch.Generator().manual_seed(seed + 2), device)
        record['health'] = health.record(x_health, ctx)
    if master and iter_num != start.resumed_at and not eval_only:
        metrics.append(record)
    wandb.log_eval(record, speed.running_mfu)
    if eval_only:
        return True
    saving = iter_num > 0 and iter_num != start.resumed_at
    if not math.isfinite(losses['val']):
        log(f"step {iter_num}: val loss is not finite; the checkpoints are left as they were")
    elif saving and checkpoint_interval and improved:
        save_checkpoint(True, latest=False)  # ckpt.pt follows checkpoint_interval instead
        log(f"saved best.pt to {out_dir} (best so far)")
    elif saving and (improved or always_save_checkpoint):
        save_checkpoint(improved)
        log(f"saved checkpoint to {out_dir}" + (" (best so far)" if improved else ""))
    eval_seconds += time.time() - t_eval
    speed.restart()  # the next speed window starts after the eval and the save
    if early_stop_patience and evals_without_improvement >= early_stop_patience:
        log(f"early stop: val loss has not improved for {evals_without_improvement} evaluations "
            f"(best {best_val_loss:.4f} kept in {os.path.join(out_dir, 'best.pt')})")
        return True
    return False


def log_progress(loss_value, norm_value):
    """The iteration line (and wandb), every log_interval iterations: loss, lr, speed, MFU, ETA."""
    hardware.synchronize(device)
    dt, tok_s, mfu = speed.read()
    eta = (max_iters - iter_num) * dt
    if max_seconds > 0:
        eta = min(eta, max(0.0, max_seconds - train_clock()))
    log(f"iter {iter_num}: loss {loss_value:.4f}, lr {learning_rate * lr_mult:.2e}, {dt * 1000:.1f} ms/iter, "
        f"{tok_s:,.0f} tok/s, {speed.mfu_text()}, eta {guards.format_seconds(eta)}")
    if master and not eval_only:  # every log line is a point of the run's curve too (plot.py draws it)
        metrics.append(dict(kind='train', iter=iter_num, tokens=iter_num * tokens_per_iter, train_loss=loss_value,
                            lr=learning_rate * lr_mult, elapsed=round(time.time() - t_start, 3),
                            train_seconds=round(train_clock(), 3)))
    wandb.log_step(iter_num, loss_value, learning_rate * lr_mult, tok_s, norm_value, mfu)


# -----------------------------------------------------------------------------
# the training loop. Between log lines the host never waits for the device: the loss, the gradient norm and the
# counts of skipped steps stay on the device, a non-finite step is skipped there (the optimizers' found_inf flag,
# as the grad scaler uses it), and under DDP the ranks agree on a stop and the clock every AGREE_EVERY iterations.
AGREE_EVERY = 10
optimizer_step = FiniteStep(opt, scaler, fsdp)
bad_steps = guards.BadSteps(device)
since_agreed = AGREE_EVERY
model.train()
try:
    while True:
        # a stop is decided together so every rank saves the same step, and the ranks share one clock;
        # a lone process agrees with itself at no cost, every iteration
        since_agreed += 1
        if not ddp or since_agreed >= AGREE_EVERY or iter_num % eval_interval == 0 or iter_num >= max_iters:
            stop_votes, clock_sum = distributed.all_reduce([float(bool(interrupts.signum)), train_clock()], device)
            stop_now, clock, since_agreed = stop_votes > 0, clock_sum / world_size, 0
        last = iter_num >= max_iters or (max_seconds > 0 and clock >= max_seconds)
        done = (iter_num % eval_interval == 0 or last or eval_only) and not stop_now and evaluate_and_save()
        if checkpoint_interval and iter_num > 0 and iter_num != start.resumed_at and not (stop_now or eval_only) and \
                (iter_num % checkpoint_interval == 0 or last or done):
            save_checkpoint(False)
            log(f"saved checkpoint to {out_dir}")
        if done:
            break
        if stop_now and not eval_only:  # eval_only writes nothing
            save_checkpoint(False, evaluated=False)
            log(f"stopped at iteration {iter_num}; resume with: {guards.resume_command(ddp)}")
        if stop_now:
            exit_code = interrupts.exit_code()
        if stop_now or last:
            break

        lr_mult = get_lr_mult(iter_num, clock)
        for group in opt.param_groups:
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

        scaler.unscale_(opt)
        health.before_clip((iter_num + 1) % eval_interval == 0 or iter_num + 1 >= max_iters)
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip if grad_clip > 0 else float('inf'))
        if hasattr(grad_norm, 'full_tensor'):  # fsdp: a DTensor, made whole on the device
            grad_norm = grad_norm.full_tensor()
        step_stats = torch.stack([step_loss.float(), grad_norm.float()])
        if ddp:  # summed on the device, so every rank skips the same steps (stream-ordered: no host wait)
            torch.distributed.all_reduce(step_stats)
        finite = torch.isfinite(step_stats).all()
        optimizer_step(finite)
        health.after_step()
        opt.zero_grad(set_to_none=True)
        bad_steps.count(finite, iter_num)

        iter_num += 1
        speed.add(tokens_per_iter)
        # read at log lines, and before evals and the end, which wait for the device anyway
        if iter_num % log_interval == 0 or iter_num % eval_interval == 0 or iter_num >= max_iters:
            loss_sum, norm_sum, worst, last_bad = bad_steps.read(step_stats, log)
            if worst >= max_bad_steps:
                exit_code = 3
                if master:
                    print(f"error: {guards.divergence_message(worst, last_bad, dtype, learning_rate, out_dir)}",
                          file=sys.stderr)
                break
            if iter_num % log_interval == 0:
                log_progress(loss_sum / world_size, norm_sum / world_size)
except KeyboardInterrupt:  # the second Ctrl-C (the third in a save): quit now, without the save
    exit_code = interrupts.exit_code()
    print(f"interrupted: {'the save was abandoned' if interrupts.abandoned else 'quit without saving'}; {out_dir} "
          f"keeps its last checkpoint", file=sys.stderr, flush=True)
except (torch.OutOfMemoryError, RuntimeError) as e:
    if not memory.out_of_memory(e):
        raise
    raise UserError(memory.oom_message(memory_plan, batch_size, block_size, gradient_accumulation_steps, memory_budget,
                                       memory_budget_gb, device, world_size))
finally:
    interrupts.quit()  # only clean-up is left: another Ctrl-C ends the process at once
    train_batches.close()
    wandb.finish()
    distributed.finish(clean=sys.exc_info()[0] is None and exit_code == 0)
if lora_config and merge_lora and master:
    merged_path = checkpoint.save_merged(raw_model, out_dir, model_args=model_args, config=config, dataset=dataset,
                                         tokenizer=tokenizer_state, iter_num=iter_num, best_val_loss=best_val_loss)
    log(f"merged the adapters into plain weights: {merged_path}")
if run_lock is not None:  # on an exception the atexit handler releases it
    run_lock.release()
distributed.exit_process(exit_code, ddp)
