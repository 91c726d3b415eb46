"""The model train.py starts from, by init_from: from scratch, a resumed run, GPT-2 or a Hugging Face folder, or a
checkpoint of ours or nanoGPT's to fine-tune; then LoRA adapters, the block-size crop and the FSDP wrap. Every
check on the way ends in one line. Also what a resumed run restores after the model: optimizer and random states."""

import dataclasses
import json
import os
import shutil

import torch

from core.data import tokenizer as tokenizer_lib
from core.data.loader import dataset_change
from core.errors import UserError, one_line
from core.training import checkpoint, fp8, lora, planner
from model import ARCH_KEYS, CONFIG_KEYS, GPT, GPTConfig


@dataclasses.dataclass
class Start:
    """Where the loop begins: fresh, or what a resumed checkpoint says."""
    iter_num: int = 0
    best_val_loss: float = float('inf')
    evals_without_improvement: int = 0
    resumed_at: int = -1  # the iteration whose eval a resumed run does not repeat
    clock_offset: float = 0.0  # training seconds already spent, when a time schedule resumes
    lora: dict = None  # {'rank', 'alpha', 'targets', 'base'} of a LoRA run; its checkpoints keep only the adapters
    shard_slot: int = 0  # fsdp: the slot of the last complete set of shards
    shard: dict = None  # fsdp: this rank's shard of the resumed checkpoint


def check_architecture(saved_args, model_args, explicit, where, ignore=()):
    """A checkpoint fixes the architecture: architecture keys the user set to other values end in one line."""
    differ = [f"{k} (checkpoint {saved_args[k]!r}, config {model_args[k]!r})" for k in ARCH_KEYS
              if k in explicit and k not in ignore and k in saved_args and saved_args[k] != model_args[k]]
    if differ:
        raise UserError(f"{where}: the architecture differs from the config: {'; '.join(differ)}; drop those keys "
                        f"(the checkpoint fixes them)")


def init_model(c, explicit, data, fingerprint, tokenizer_state, device, dtype, world_size, rank, ckpt=None, ckpt_path=None,
               log=print):
    """(model on its device or sharded, model_args, Start) from the config dict c. ckpt is the resumed checkpoint
    that settings.resume_config loaded (None unless init_from='resume'); fingerprint is the dataset's."""
    init_from, fsdp = c['init_from'], c['fsdp']
    model_args = {k: c[k] for k in CONFIG_KEYS}
    if model_args['vocab_size'] == 0:
        v = data.vocab_size
        model_args['vocab_size'] = v if v <= 256 else -(-v // 64) * 64  # multiples of 64 are faster
    start = Start()
    if init_from == 'resume':
        model, model_args = resume_model(c, explicit, ckpt, ckpt_path, model_args, fingerprint, tokenizer_state,
                                         device, world_size, rank, start, log)
    elif init_from == 'scratch':
        try:
            model_config = GPTConfig(**model_args)
        except ValueError as e:
            raise UserError(str(e))
        planner.check_build(model_config, device)  # before allocating: a size typo ends in one line, not the allocator's
        model = GPT(model_config)
    elif init_from.startswith('gpt2') or init_from.startswith('hf:'):
        model = pretrained_model(c, data, fingerprint, tokenizer_state)
        model_args = model.config.to_dict()
    else:
        model = finetune_model(c, explicit, model_args, tokenizer_state, log)
        model_args = model.config.to_dict()
    if init_from not in ('scratch', 'resume'):
        from core.data import chat
        # special tokens the data's tokenizer added (the chat turns) need rows in a pretrained embedding
        if tokenizer_state and chat.grow_vocab(model, tokenizer_lib.from_state(tokenizer_state)):
            log(f"vocabulary grown to {model.config.vocab_size} for the tokenizer's added special tokens")
            model_args['vocab_size'] = model.config.vocab_size
        if c['lora_rank']:
            lora.add(model, c['lora_rank'], c['lora_alpha'], c['lora_targets'])
            start.lora = dict(rank=c['lora_rank'], alpha=c['lora_alpha'], targets=c['lora_targets'], base=init_from)
    block_size = c['block_size']
    if block_size < model.config.block_size:
        model.crop_block_size(block_size)
        model_args['block_size'] = block_size
    elif block_size > model.config.block_size:
        raise UserError(f"block_size={block_size} is larger than the model's {model.config.block_size}")
    data.check_fits(model.config.vocab_size, model.config.block_size)
    model.set_memory_savers(c['chunked_ce'], c['activation_checkpointing'])
    if fsdp:
        if c.get('fp8'):  # torchao's float8 layers are sharded as they are
            fp8.convert(model, fsdp=True)
        shard_model(model, device, dtype, world_size)
    else:
        model.to(device)
        if c.get('fp8'):
            fp8.convert(model)
    return model, model_args, start


def resume_model(c, explicit, ckpt, ckpt_path, model_args, fingerprint, tokenizer_state, device, world_size, rank,
                 start, log):
    """The resumed run's model, after every check that the checkpoint can go on here; fills start."""
    fsdp, out_dir = c['fsdp'], c['out_dir']
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
    if ckpt['config'].get('optimizer', 'adamw') != c['optimizer']:
        raise UserError(f"cannot resume: the checkpoint was trained with optimizer={ckpt['config'].get('optimizer')!r}, "
                        f"not {c['optimizer']!r}")
    if ckpt.get('nanogpt'):
        checkpoint.check_tokenizer(ckpt, ckpt_path, tokenizer_state, c['dataset'])
        if rank == 0 and not os.path.exists(os.path.join(out_dir, 'ckpt.nanogpt.pt')):
            # our first save replaces nanoGPT's ckpt.pt, a file we did not write: its bytes stay beside it
            shutil.copy2(ckpt_path, os.path.join(out_dir, 'ckpt.nanogpt.pt'))
    kept = rank == 0 and not (fsdp or c['eval_only']) and checkpoint.keep_later_latest(out_dir, ckpt_path,
                                                                                      ckpt['iter_num'])
    if kept:
        log(f"resume: ckpt.pt held iteration {kept[0]}, past {ckpt_path}'s {ckpt['iter_num']}; this run's saves "
            f"replace ckpt.pt, so it is kept as {kept[1]} (--ckpt={kept[0]} reads it)")
    if fsdp:
        start.shard_slot = sharded['slot']
        shard_path = checkpoint.shard_path(out_dir, rank, world_size, start.shard_slot)
        start.shard = checkpoint.load(shard_path, map_location='cpu')
        if start.shard.get('iter_num') != ckpt['iter_num'] or 'optimizer' not in start.shard:
            raise UserError(f"{shard_path} does not belong to {ckpt_path} (iteration {start.shard.get('iter_num')} "
                            f"vs {ckpt['iter_num']}); resume from a complete checkpoint")
    checkpoint.check_shape_args(ckpt['model_args'], ckpt_path)
    check_architecture(ckpt['model_args'], model_args, explicit, f"cannot resume {ckpt_path}")
    saved_rank = (ckpt.get('lora') or {}).get('rank', 0)
    if 'lora_rank' in explicit and c['lora_rank'] != saved_rank:  # else silently the saved run's way
        raise UserError(f"cannot resume {ckpt_path} with lora_rank={c['lora_rank']}: the run trains "
                        f"{f'LoRA adapters of rank {saved_rank}' if saved_rank else 'every weight'}; to fine-tune "
                        f"it another way, --init_from={ckpt_path} with another --out_dir")
    model_args = {**ckpt['model_args'], 'dropout': c['dropout']}
    changed = sorted(f"{k} {ckpt['config'][k]!r} -> {c[k]!r}" for k in explicit
                     if k not in ARCH_KEYS and k != 'init_from' and k in ckpt['config'] and ckpt['config'][k] != c[k])
    if changed:
        log(f"resume: changed {', '.join(changed)}")
    if ckpt.get('lora'):  # the base's weights come from where the run began, the adapters from the checkpoint
        ckpt['model_args'] = model_args
        model = checkpoint.build_model(ckpt, ckpt_path, merge=False)
        model_args = model.config.to_dict()
        start.lora = ckpt['lora']
    else:
        try:
            model_config = GPTConfig(**model_args)
            planner.check_build(model_config, device)
            model = GPT(model_config)
            checkpoint.check_floats(ckpt['model'], ckpt_path)
            if not fsdp:  # FSDP loads its shards once the model is sharded
                model.load_state_dict(ckpt['model'])
        except (TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"cannot resume {ckpt_path}: {' '.join(str(e).split())[:300]}")
    # the weights learned these ids: a dataset or tokenizer swapped under the same name would train on nonsense
    if 'dataset_fingerprint' in ckpt:
        change = dataset_change(ckpt['dataset_fingerprint'], fingerprint)
    else:  # a checkpoint from before fingerprints: its tokenizer still tells
        same = json.dumps(ckpt.get('tokenizer'), sort_keys=True) == json.dumps(tokenizer_state, sort_keys=True)
        change = None if same or ckpt.get('tokenizer') is None else "the tokenizer differs"
    if change and not c['allow_dataset_change']:
        raise UserError(f"cannot resume {ckpt_path} on dataset '{c['dataset']}': {change}; pass "
                        f"--allow_dataset_change=True to train on it anyway")
    if change:
        log(f"resume: dataset changed ({change}), allowed by allow_dataset_change")
    start.iter_num, start.best_val_loss = ckpt['iter_num'], ckpt['best_val_loss']
    if not start.best_val_loss >= 0:  # NaN (nanoGPT saves a diverged eval's loss as the best) or below any loss
        log(f"resume: {ckpt_path}'s best val loss {start.best_val_loss} is no loss a run can beat; the next "
            f"evaluation is the best so far")
        start.best_val_loss = float('inf')
    start.evals_without_improvement = ckpt.get('evals_without_improvement', 0)
    # an interrupt saved before its iteration's eval: the resumed run does that eval
    start.resumed_at = start.iter_num if ckpt.get('evaluated', True) else -1
    # a time schedule goes on from where the run it resumes left its clock
    start.clock_offset = ckpt.get('train_seconds', 0.0) if c['lr_schedule'] == 'time' else 0.0
    return model, model_args


def pretrained_model(c, data, fingerprint, tokenizer_state):
    """GPT-2's weights (init_from=gpt2*) or a Hugging Face folder's (hf:<folder>), after checking that they learned
    the dataset's token ids."""
    init_from, dataset = c['init_from'], c['dataset']
    kind = fingerprint['tokenizer']['kind']
    if init_from.startswith('gpt2') and kind != 'gpt2' and not c['allow_dataset_change']:
        raise UserError(f"init_from={init_from} learned GPT-2's token ids, but dataset '{dataset}' uses a "
                        f"{kind} tokenizer; prepare it with --tokenizer=gpt2, or pass --allow_dataset_change=True")
    from core.interop import hf
    if init_from.startswith('hf:') and not c['allow_dataset_change']:
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
    return hf.from_pretrained(init_from, dropout=c['dropout'])


def finetune_model(c, explicit, model_args, tokenizer_state, log):
    """A fine-tune: the weights and architecture of a checkpoint (ours or nanoGPT's), everything else fresh."""
    init_from = c['init_from']
    if os.path.isfile(os.path.join(init_from, 'config.json')) and not checkpoint.steps(init_from) and \
            not any(os.path.exists(os.path.join(init_from, n)) for n in ('best.pt', 'ckpt.pt')):
        raise UserError(f"{init_from} is a Hugging Face folder, not a run; use --init_from=hf:{init_from}")
    source_path = checkpoint.resolve(init_from)
    source = checkpoint.load(source_path)
    # a smaller block_size crops the model, so it may differ
    check_architecture(source['model_args'], model_args, explicit, f"init_from={init_from}", ignore=('block_size',))
    checkpoint.check_tokenizer(source, source_path, tokenizer_state, c['dataset'])
    source['model_args'] = {**source['model_args'], 'dropout': c['dropout']}
    model = checkpoint.build_model(source, source_path)
    log(f"init_from {source_path}: its weights and architecture (iteration {source.get('iter_num', '?')} of "
        f"{'a nanoGPT run' if source.get('nanogpt') else 'its run'}); a fresh optimizer, schedule and iteration count")
    return model


def shard_model(model, device, dtype, world_size):
    """FSDP2: one unit per block, so only one block's full weights exist at a time, then the root (embeddings, final
    norm, head); fully_shard moves each rank's shards to the device. In bf16 the weights travel in bf16 and the
    gradients are reduced in fp32."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = init_device_mesh(device.split(':')[0], (world_size,))
    mp_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if dtype == 'bfloat16' else MixedPrecisionPolicy()
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh, mp_policy=mp_policy)
    fully_shard(model, mesh=mesh, mp_policy=mp_policy)


def restore_optimizer(opt, model, scaler, ckpt, ckpt_path, start):
    """A resumed run's optimizer moments (and grad scaler), with the learning rates it is given now."""
    fresh_lrs = [g['initial_lr'] for g in opt.param_groups]
    try:
        if start.shard is not None:
            checkpoint.load_local_shards(model, opt, start.shard['model'], start.shard['optimizer'])
        elif ckpt.get('nanogpt'):
            from core.interop import nanogpt_files
            opt.load_state_dict(nanogpt_files.optimizer_state(ckpt['optimizer'], model, opt))
        else:
            opt.load_state_dict(ckpt['optimizer'])
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError) as e:
        raise UserError(f"cannot resume {ckpt_path}: its state does not fit this model "
                        f"({' '.join(str(e).split())[:300]})")
    if start.shard is None:  # torch loads moments of any shape, and its fused step then reads past them (a crash)
        names = {p: n for n, p in model.named_parameters()}
        for o in getattr(opt, 'optimizers', [opt]):
            for p, state in o.state.items():
                bad = next((k for k, v in state.items() if torch.is_tensor(v) and v.dim() and v.shape != p.shape), None)
                if bad:
                    raise checkpoint.damaged(ckpt_path, f"its optimizer's {bad} for {names.get(p, 'a weight')} has "
                                                        f"shape {tuple(state[bad].shape)}, the weight "
                                                        f"{tuple(p.shape)}")
    for group, lr in zip(opt.param_groups, fresh_lrs):
        group['initial_lr'] = lr
    if 'scaler' in ckpt and scaler.is_enabled():
        scaler.load_state_dict(ckpt['scaler'])


def restore_rng(ckpt, ckpt_path, seed, rank, world_size, iter_num, data_gen, log=print):
    """Seed this rank's random draws (dropout): from the resumed checkpoint when it kept them, else fresh per
    rank. Called after everything that draws random numbers during set-up."""
    if ckpt is None:
        torch.manual_seed(seed + rank)  # per rank so dropout differs
    elif ckpt.get('nanogpt'):
        torch.manual_seed(seed + rank)
        log(f"resumed a nanoGPT run from {ckpt_path} at iteration {iter_num}: its weights, "
            f"optimizer and iteration; the random states start fresh from seed={seed} (nanoGPT does not save them); "
            f"its own file is kept as ckpt.nanogpt.pt")
    else:
        if ckpt.get('world_size', 1) == world_size:
            checkpoint.set_rng_state(ckpt['rng_per_rank'][rank] if 'rng_per_rank' in ckpt else ckpt['rng'], ckpt_path)
        else:
            # one saved state per rank of another world size cannot be dealt out: fresh states, still one per rank
            # (the data sampler, shared by all ranks, is restored either way)
            torch.manual_seed(seed + 1_000_003 * iter_num + rank)
            log(f"resume: {ckpt.get('world_size', 1)} process(es) saved this run and {world_size} resume it, so "
                f"dropout and the other random draws start from fresh per-rank seeds (the data order goes on exactly)")
        try:
            data_gen.set_state(ckpt['data_rng'])
        except (TypeError, RuntimeError) as e:  # a tensor, but not a generator's state
            raise checkpoint.damaged(ckpt_path, f"its data_rng is no sampler state ({one_line(e):.80})") from None
        log(f"resumed from {ckpt_path} at iteration {iter_num}")


def warm_up(model, scaler, opt, ctx, vocab_size, batch_size, block_size, device, seed, docs=None):
    """torch.compile builds its kernels at the first forward and backward: run them here, on random tokens whose
    gradients are thrown away (no optimizer step), so the training clock counts training alone, as modded-nanogpt
    times its runs. docs(x) gives the document ids of a doc_aware run."""
    gen = torch.Generator().manual_seed(seed + 2)
    # inputs and targets as two tensors, as every step has them: the compiled graph is specialized on aliasing
    x, y = (torch.randint(0, vocab_size, (batch_size, block_size), generator=gen).to(device) for _ in range(2))
    with ctx:
        loss = model(x, y, docs=docs(x) if docs else None)[1]
    scaler.scale(loss).backward()
    opt.zero_grad(set_to_none=True)
