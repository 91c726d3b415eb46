"""train.py's config keys after the configurator: what a resumed run takes from its checkpoint, and the checks
that end a mistake in one line before anything starts."""

import os

from configurator import check_choice
from core import hardware
from core.errors import UserError
from core.training import checkpoint
from core.training.optim import MUON_NS

# keys that describe this machine or this invocation: a resumed run never takes them from its checkpoint
LOCAL_KEYS = {'out_dir', 'init_from', 'overwrite', 'allow_dataset_change', 'eval_only', 'device', 'dtype', 'compile',
              'backend', 'fsdp', 'memory_budget_gb', 'ckpt', 'threads'}


def resume_config(config, defaults, extra, explicit):
    """On init_from='resume', load the checkpoint and fill the keys the user did not set from its config, so a plain
    --init_from=resume continues the same run. Updates config in place; returns (checkpoint, its path), or
    (None, None) for any other init_from. A saved value of another type than the key's is ignored."""
    if config['init_from'] != 'resume':
        return None, None
    path = checkpoint.resolve(config['out_dir'], config['ckpt'])
    # an FSDP run reads only the metadata here (mmap leaves the full weights on disk) and its shards later
    ckpt = checkpoint.load(path, map_location='cpu', mmap=config['fsdp'])
    saved = {k: v for k, v in ckpt.get('config', {}).items()
             if k in defaults and k not in explicit and k not in LOCAL_KEYS and
             (type(v) is type(defaults[k]) or any(type(v) is type(e) and v == e for e in extra.get(k, ())))}
    config.update(saved)
    if ckpt.get('nanogpt') and 'dataset' not in explicit:
        # nanoGPT names its data folder: the one in the checkout the run sits in, when it is there
        from core.interop import nanogpt_files
        config['dataset'] = nanogpt_files.data_folder(path, config['dataset'])
    return ckpt, path


# the only values these keys take, checked by the configurator for what a user types (train.py's configure)
CHOICES = {'compile': (True, False, 'auto'), 'optimizer': ('adamw', 'muon'), 'lr_schedule': ('iters', 'time'),
           'muon_ns': MUON_NS}


FLOAT32_KEYS = ('learning_rate', 'min_lr', 'weight_decay', 'grad_clip', 'muon_lr', 'embed_lr')
FLOAT32_MAX = 3.4028234663852886e38


def check_lora_rank(rank):
    """lora_rank as train.py and bench.py take it: 0 (off) or the adapters' rank."""
    if not isinstance(rank, int) or rank < 0:
        raise UserError(f"lora_rank must be 0 (off) or a positive integer, got {rank!r}")


def check_config(c, explicit=()):
    """Every value train.py cannot use, as one UserError; c is the config dict."""
    positive = dict(batch_size=1 if c['batch_size'] == 'auto' else c['batch_size'], block_size=c['block_size'],
                    gradient_accumulation_steps=c['gradient_accumulation_steps'], eval_iters=c['eval_iters'],
                    eval_interval=c['eval_interval'], log_interval=c['log_interval'])
    for k, v in positive.items():
        if v <= 0:
            raise UserError(f"{k} must be positive, got {v}")
    for k in ('checkpoint_interval', 'keep_checkpoints', 'learning_rate', 'min_lr', 'weight_decay', 'grad_clip',
              'max_iters', 'warmup_iters', 'max_seconds', 'muon_lr', 'embed_lr', 'max_bad_steps',
              'early_stop_patience', 'memory_budget_gb', 'lora_alpha', 'peak_tflops'):
        if not c[k] >= 0:  # NaN too: every comparison with it is False, so it would pass the rest
            raise UserError(f"{k} must {'be a number' if c[k] != c[k] else 'not be negative'}, got {c[k]}")
        if k in FLOAT32_KEYS and c[k] > FLOAT32_MAX:  # rates and factors reach the optimizers as float32
            raise UserError(f"{k} must be at most 3.4e38 (float32's largest), got {c[k]}")
    hardware.check_threads(c['threads'])
    if c['max_bad_steps'] == 0:
        raise UserError("max_bad_steps=0 would end the run before its first step; it is how many non-finite steps "
                        "in a row end a run (divergence), so give 1 or more (the default is 10)")
    if c['decay_lr'] and c['min_lr'] > c['learning_rate']:
        lr = c['learning_rate'] + 0.0  # -0.0 is 0
        give = f"--min_lr={lr / 10:g} (a tenth of it, nanoGPT's ratio)" if lr else "--min_lr=0 as well"
        raise UserError(f"min_lr={c['min_lr']:g} is above learning_rate={lr:g}, so the schedule would raise the "
                        f"learning rate as it decays; give {give} or --decay_lr=False")
    for k in ('beta1', 'beta2', 'muon_momentum'):
        if not 0 <= c[k] < 1:
            raise UserError(f"{k} must be in [0, 1), got {c[k]}")
    for key, allowed in CHOICES.items():  # a resumed run's saved values come this way too
        check_choice(key, c[key], allowed)
    if c['lr_schedule'] == 'time' and c['max_seconds'] <= 0:
        raise UserError("lr_schedule='time' decays the learning rate over max_seconds; set --max_seconds too")
    if not 0 <= c['warmdown_frac'] <= 1:
        raise UserError(f"warmdown_frac must be in [0, 1], got {c['warmdown_frac']}")
    if c['fsdp'] and c['optimizer'] == 'muon':
        raise UserError("optimizer='muon' does not work with fsdp=True: Muon orthogonalizes whole matrices and FSDP "
                        "shards them; use --optimizer=adamw, or DDP (--fsdp=False)")
    init_from = c['init_from']
    if not (init_from in ('scratch', 'resume') or init_from.startswith('gpt2') or init_from.startswith('hf:')
            or os.path.exists(init_from)):
        raise UserError(f"init_from must be scratch, resume, gpt2[-medium|-large|-xl], hf:<folder>, or a checkpoint "
                        f"(.pt file or run folder); nothing exists at '{init_from}'")
    if 'ckpt' in explicit and init_from != 'resume':
        raise UserError(f"ckpt={c['ckpt']!r} picks the checkpoint that --init_from=resume reads, and this run has "
                        f"init_from={init_from!r}; add --init_from=resume, or drop --ckpt (to start from a kept step, "
                        f"give its file: --init_from=<out_dir>/ckpt_<step>.pt)")
    lora_rank = c['lora_rank']
    check_lora_rank(lora_rank)
    if lora_rank and c['fsdp']:
        raise UserError("LoRA does not work with fsdp=True here (frozen and trainable tensors in one shard); "
                        "the adapters are small, so use DDP (--fsdp=False)")
    if lora_rank and init_from == 'scratch':
        raise UserError("LoRA adapts a pretrained model; set --init_from=gpt2 (another gpt2*, hf:<folder>, or a checkpoint)")

