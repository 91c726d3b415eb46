"""Checkpoint I/O: atomic writes, weights_only loads, and one-line errors for bad files."""

import io
import json
import os
import pickle
import random
import re
import warnings

import numpy as np
import torch

from core import fileio
from core.errors import UserError, one_line

COMPILE_PREFIX = '_orig_mod.'




def serialize(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save(obj, *paths):
    """Serialize once and write atomically to each path. A failed write (full disk, say)
    leaves the previous file in place and raises UserError saying so."""
    data = serialize(obj)
    for path in paths:
        try:
            fileio.write_bytes(path, data)
        except OSError as e:
            kept = "the previous one is untouched" if os.path.exists(path) else "nothing was written"
            raise UserError(f"could not write checkpoint {path} ({e.strerror or e}); {kept}")


def save_merged(model, out_dir, **meta):
    """out_dir/merged.pt: a LoRA model with its adapters folded into plain weights (lora.merge), and meta
    (model_args, config, ...) beside them; returns its path."""
    from core.training import lora
    path = os.path.join(out_dir, 'merged.pt')
    save({'model': lora.merge(model).state_dict(), **meta}, path)
    return path


def load(path, map_location='cpu', mmap=False):
    """Load a checkpoint with torch.load(weights_only=True); a missing, truncated, corrupted or
    foreign file raises UserError naming the file and the problem."""
    if not os.path.exists(path):
        raise UserError(f"no checkpoint at {path}; train one first (python train.py ...) or set --out_dir")
    if os.path.isdir(path):
        raise UserError(f"checkpoint {path} is a folder, not a file")
    if os.path.getsize(path) == 0:
        raise UserError(f"checkpoint {path} is empty (truncated); use another checkpoint")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torch warns about odd pickles before it refuses them
            ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = re.search(r'Unsupported global: GLOBAL (\S+)', str(e))
        if found:
            raise UserError(f"checkpoint {path} holds a Python object ({found.group(1)}) that the safe weights_only "
                            f"load refuses; checkpoints here hold only tensors and plain values")
        raise UserError(f"{path} is not a PyTorch checkpoint or is corrupted; use another checkpoint or retrain")
    except Exception as e:  # a damaged file can fail anywhere inside torch.load
        raise UserError(f"checkpoint {path} is truncated or corrupted ({type(e).__name__}); "
                        f"use another checkpoint or retrain")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('model'), dict) or \
            not isinstance(ckpt.get('model_args'), dict):
        raise UserError(f"{path} is not a checkpoint of this repository (no model and model_args)")
    bad = next((k for k, v in ckpt['model'].items() if not isinstance(k, str) or not torch.is_tensor(v)
                or v.is_meta), None)
    if bad is not None:  # found before anything reads the names
        raise damaged(path, f"its weights have a name {bad!r:.40}" if not isinstance(bad, str) else
                      f"its weight {bad!r:.40} is not a tensor" if not torch.is_tensor(ckpt['model'][bad]) else
                      f"its weight {bad!r:.40} holds no values (it was saved from the meta device)")
    ckpt['model'] = strip_compile_prefix(ckpt['model'])
    from core.interop import nanogpt_files as nanogpt
    if nanogpt.is_nanogpt(ckpt):
        nanogpt.convert(ckpt)
    ckpt['model_args'] = upgrade_model_args(ckpt['model_args'])
    check_fields(ckpt, path)
    return ckpt


# the model args no default may stand in for: every checkpoint, ours or nanoGPT's, holds them
SHAPE_ARGS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'vocab_size')
# what the scripts read from a checkpoint besides the model args, and the types they read it as (None: absent)
FIELDS = {'iter_num': int, 'best_val_loss': (int, float), 'config': dict, 'dataset': str, 'tokenizer': dict,
          'world_size': int, 'evals_without_improvement': int, 'train_seconds': (int, float), 'optimizer': dict,
          'dataset_fingerprint': dict, 'rng': dict, 'rng_per_rank': list, 'data_rng': torch.Tensor}
LORA_FIELDS = {'base': str, 'rank': int, 'alpha': (int, float), 'targets': str}


def damaged(path, what):
    """The one error of a checkpoint whose contents are not what we save (damaged or made by hand)."""
    return UserError(f"checkpoint {path} is damaged: {what}; use another checkpoint or retrain")


def check_fields(ckpt, path):
    """A damaged or hand-made checkpoint whose fields are not of the types the scripts read stops here, naming the
    first such field, rather than in whichever script reads it (its weights: load, before their names are read)."""

    def kind(value, kinds):
        return isinstance(value, kinds) and not isinstance(value, bool)
    for key, kinds in FIELDS.items():
        if key in ckpt and ckpt[key] is None:
            del ckpt[key]  # a field saved as None is absent: readers' defaults (.get(key, default)) then apply
        if ckpt.get(key) is not None and not kind(ckpt[key], kinds):
            raise damaged(path, f"its {key} is {type(ckpt[key]).__name__} {ckpt[key]!r:.40}")
    shards = ckpt.get('fsdp')  # an FSDP run's: how many shards, and which of their two slots is this save's
    if shards is not None and not (isinstance(shards, dict) and all(kind(shards.get(k), int) for k in
                                                                    ('world_size', 'slot'))):
        raise damaged(path, f"its fsdp is {shards!r:.40}, not the world_size and slot of an FSDP run's shards")
    if 'rng_per_rank' in ckpt and len(ckpt['rng_per_rank']) != ckpt.get('world_size', 1):  # one state per rank
        raise damaged(path, f"its rng_per_rank holds {len(ckpt['rng_per_rank'])} random states for "
                            f"{ckpt.get('world_size', 1)} process(es)")
    spec = ckpt.get('lora')
    if spec:  # a LoRA run's: what the adapters adapt
        if not isinstance(spec, dict):
            raise damaged(path, f"its lora is {type(spec).__name__} {spec!r:.40}, not the adapters' rank, alpha, "
                                f"targets and base")
        for key, kinds in LORA_FIELDS.items():
            if not kind(spec.get(key), kinds):
                raise damaged(path, f"its lora {key} is {spec.get(key)!r:.40}")


def check_shape_args(args, path):
    """GPTConfig's defaults must not stand in for a model's shape: the weights would then not fit, and be listed as
    missing rather than the model_args named."""
    lacking = [k for k in SHAPE_ARGS if k not in args]
    if lacking:
        raise damaged(path, f"its model_args lack {', '.join(lacking)}")


def upgrade_model_args(args):
    """model_args of an older checkpoint with the keys added since filled in with what its model computed.
    Ours from before the gelu key used GPT-2's tanh GELU; nanoGPT's own (no switch keys at all) the erf one."""
    args = dict(args)
    if 'gelu' not in args:
        args['gelu'] = 'tanh' if 'mlp' in args else 'erf'
    return args


def build_lora_model(ckpt, path, merge=True, _seen=()):
    """A LoRA run's checkpoint holds only the adapters and the base it adapts ('lora': rank, alpha,
    targets, base): the base is loaded again, grown for the tokenizer's added tokens the way train.py
    grew it, cropped to the run's block size, and given the adapters; merge folds them into plain weights."""
    from core.data import chat
    from core.interop import hf
    from core.training import lora
    from core.data import tokenizer as tokenizer_lib
    spec, args = ckpt['lora'], ckpt['model_args']
    if spec['base'].startswith(('gpt2', 'hf:')):
        model = hf.from_pretrained(spec['base'], dropout=args.get('dropout', 0.0))
    else:  # a checkpoint the run was initialized from
        try:
            base_path = resolve(spec['base'])
        except UserError as e:  # say that it is the adapters' base that is missing, not the run
            raise UserError(f"checkpoint {path} holds LoRA adapters for the base {spec['base']}, which cannot be read "
                            f"({e}); put the base back where it was") from None
        # a run fine-tuned in its own folder (--overwrite=True moved the old run aside) names itself as its base
        seen = _seen + (os.path.realpath(path),)
        if os.path.realpath(base_path) in seen:
            raise UserError(f"checkpoint {path} holds LoRA adapters whose base {spec['base']} is now {base_path}, "
                            f"itself a LoRA run on that base: the base the adapters were trained on was replaced "
                            f"(a run started over in its folder moves the old one to <folder>-prev-<date>); put it "
                            f"back at {spec['base']}")
        model = build_model(load(base_path), base_path, _seen=seen)
    if ckpt.get('tokenizer'):
        chat.grow_vocab(model, tokenizer_lib.from_state(ckpt['tokenizer']))
    if args['block_size'] < model.config.block_size:
        model.crop_block_size(args['block_size'])
    try:
        lora.add(model, spec['rank'], spec['alpha'], spec['targets'])
    except UserError as e:  # the run that saved them added these adapters, so the file is what changed
        raise damaged(path, f"its adapters (rank {spec['rank']}, targets {spec['targets']!r:.40}) cannot be added "
                            f"({e})") from None
    want = set(lora.adapter_state(model))
    if set(ckpt['model']) != want or model.config.vocab_size != args['vocab_size']:
        raise UserError(f"checkpoint {path}: its adapters do not fit {spec['base']} with rank {spec['rank']} on "
                        f"{spec['targets']}; it is damaged or its base changed")
    check_floats(ckpt['model'], path)
    model.load_state_dict(ckpt['model'], strict=False)
    check_finite(model, path)
    return lora.merge(model) if merge else model


def build_model(ckpt, path, merge=True, _seen=()):
    """A GPT with the checkpoint's weights; missing or unexpected weights are named in one line. A LoRA
    checkpoint is rebuilt from its base and adapters, merged into plain weights unless merge=False."""
    from model import GPT, GPTConfig
    if ckpt.get('lora'):
        return build_lora_model(ckpt, path, merge, _seen)
    check_shape_args(ckpt['model_args'], path)
    try:
        config = GPTConfig(**ckpt['model_args'])
    except (TypeError, ValueError) as e:
        raise UserError(f"checkpoint {path} has model_args this model.py cannot build ({one_line(e)[:200]})")
    # the meta model below is built block by block: a damaged n_layer (10**20) would loop for ever before any shape
    # is compared, so the blocks the weights hold are counted first
    blocks = {m.group(1) for k in ckpt['model'] for m in [re.match(r'transformer\.h\.(\d+)\.', k)] if m}
    if config.n_layer > len(blocks):
        raise damaged(path, f"its model_args say n_layer={config.n_layer:,} but its weights hold {len(blocks)} "
                            f"block(s)")
    # the names and shapes first, from a model on the meta device: model_args far bigger than the weights saved
    # with them (a damaged n_embd) would otherwise be built in memory first, a CPU allocation's traceback
    with torch.device('meta'):
        want = GPT(config).state_dict()
    missing = [k for k in want if k not in ckpt['model']]
    extra = [k for k in ckpt['model'] if k not in want]
    if missing or extra:
        parts = [f"{what} {', '.join(keys[:3])}{f' and {len(keys) - 3} more' if len(keys) > 3 else ''}"
                 for what, keys in (('lacks', missing), ('has unknown weights', extra)) if keys]
        raise UserError(f"checkpoint {path} {'; '.join(parts)}; it is damaged or from another model")
    bad = [k for k, v in want.items() if tuple(ckpt['model'][k].shape) != tuple(v.shape)]
    if bad:
        raise UserError(f"checkpoint {path}: {bad[0]} has shape {tuple(ckpt['model'][bad[0]].shape)}, its model_args "
                        f"imply {tuple(want[bad[0]].shape)}")
    check_floats(ckpt['model'], path)
    model = GPT(config)
    model.load_state_dict(ckpt['model'])
    check_finite(model, path)
    return model


def check_floats(weights, path):
    """load_state_dict casts bool or integer tensors into float weights without a word; no run saves them."""
    bad = [k for k, v in weights.items() if not (torch.is_tensor(v) and v.is_floating_point())]
    if bad:
        what = getattr(weights[bad[0]], 'dtype', type(weights[bad[0]]).__name__)
        raise UserError(f"checkpoint {path}: its weight {bad[0]} holds {what} values, not floating point; it is "
                        f"damaged or not a model checkpoint")
    # a sparse (or other non-dense) tensor passes the dtype check, and load_state_dict cannot copy it into a weight
    odd = next((k for k, v in weights.items() if v.layout != torch.strided), None)
    if odd is not None:
        raise UserError(f"checkpoint {path}: its weight {odd} is a {str(weights[odd].layout).split('.')[-1]} tensor, "
                        f"not a dense one as training saves; it is damaged or not a model checkpoint")


def check_finite(model, path):
    """A model whose weights hold a NaN or an infinity (a run that diverged before it was saved) samples from NaN
    probabilities and scores NaN losses: it stops here, naming the first such weight."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise UserError(f"checkpoint {path}: its weight {name} holds NaN or infinite values (the run diverged "
                            f"before it was saved); use an earlier checkpoint (--ckpt=<step> with keep_checkpoints) "
                            f"or retrain with a lower learning rate")


def load_model(path):
    """(GPT with the checkpoint's weights, the checkpoint) from a file of this repository or nanoGPT's;
    a checkpoint this model.py cannot rebuild raises UserError naming the file."""
    state = load(path, map_location='cpu')
    return build_model(state, path), state


def tokenizer_state(ckpt, path, dataset=''):
    """(tokenizer state, where it came from) for a loaded checkpoint: the one saved in it, else (a
    nanoGPT checkpoint, or an old one of ours) the one of the dataset it names."""
    if ckpt.get('nanogpt'):
        from core.interop import nanogpt_files as nanogpt
        return nanogpt.tokenizer_state(ckpt, path, dataset)
    if ckpt.get('tokenizer'):
        return ckpt['tokenizer'], 'the checkpoint'
    from core.data import tokenizer as tokenizer_lib
    from core.paths import resolve_data_dir
    name = dataset or ckpt.get('dataset') or (ckpt.get('config') or {}).get('dataset', '')
    if not name:
        return None, 'nowhere (the checkpoint holds none and names no dataset)'
    try:
        return tokenizer_lib.load(resolve_data_dir(name)).state(), f"dataset '{name}'"
    except tokenizer_lib.TokenizerError as e:
        raise UserError(f"{path} holds no tokenizer and its dataset's cannot be read ({e}); pass --dataset=...")



def load_tokenizer(ckpt, path, dataset=''):
    """(tokenizer, where it came from) for a loaded checkpoint, or one UserError line saying what to pass."""
    from core.data import tokenizer as tokenizer_lib
    state, where = tokenizer_state(ckpt, path, dataset)
    if state is None:
        raise UserError(f"{path} holds no tokenizer and names no dataset; pass --dataset=<its data folder>")
    try:
        return tokenizer_lib.from_state(state), where
    except (tokenizer_lib.TokenizerError, TypeError, KeyError, AttributeError) as e:
        raise UserError(f"checkpoint {path} holds a tokenizer this version cannot rebuild ({e}); "
                        f"pass --dataset=NAME to use that dataset's tokenizer instead") from None

STEP_FILE = re.compile(r'^ckpt_(\d+)\.pt$')


def step_path(out_dir, step):
    """Where keep_checkpoints puts the checkpoint of a step: ckpt_00001000.pt, so names sort by step."""
    return os.path.join(out_dir, f'ckpt_{int(step):08d}.pt')


def steps(out_dir):
    """The steps that have a step checkpoint in out_dir, ascending."""
    try:
        names = os.listdir(out_dir)
    except OSError:
        return []
    return sorted(int(m.group(1)) for m in map(STEP_FILE.match, names) if m)


def save_run(state, out_dir, step, best=False, keep=0):
    """A training run's save: ckpt.pt (the latest), best.pt when best, and with keep > 0 the step's own
    ckpt_<step>.pt, after which only the newest keep step checkpoints stay. Each file is written whole
    before anything is deleted, so a kill at any instant leaves at least one complete checkpoint and at
    most keep + 1 step checkpoints."""
    paths = [os.path.join(out_dir, 'ckpt.pt')] + ([os.path.join(out_dir, 'best.pt')] if best else [])
    save(state, *paths, *([step_path(out_dir, step)] if keep > 0 else []))
    # a writer killed in an earlier best.pt save left its temporary file, a whole model's size, which
    # only the next best.pt save would sweep, and that may never come
    fileio.remove_stale_temps(out_dir, 'best.pt')
    if keep > 0:
        prune_steps(out_dir, keep, step)


def keep_later_latest(out_dir, resumed_path, resumed_iter):
    """A run resumed from an earlier checkpoint (best.pt, a kept step) saves over ckpt.pt, which may hold later
    iterations: such a ckpt.pt first moves to its own step's name, ckpt_<step>.pt (which prune_steps leaves alone
    while the run is behind it, and --ckpt=<step> reads). Returns (its step, where it went), or None."""
    latest = os.path.join(out_dir, 'ckpt.pt')
    if not os.path.isfile(latest) or os.path.realpath(latest) == os.path.realpath(resumed_path):
        return None
    try:
        step = load(latest, map_location='cpu', mmap=True).get('iter_num')
    except (UserError, AttributeError):  # unreadable, or no checkpoint dict: no later iterations to keep
        return None
    dest = step_path(out_dir, step) if isinstance(step, int) and step > resumed_iter else None
    if dest is None or os.path.exists(dest):  # not later, or keep_checkpoints saved that step already
        return None
    os.rename(latest, dest)
    fileio.fsync_dir(out_dir)
    return step, dest


def prune_steps(out_dir, keep, current):
    """Delete all but the newest keep step checkpoints up to step current, and the temporary files of
    step saves that a crash cut short. Steps after current (left by a run resumed from an earlier step)
    are the user's to delete, not ours."""
    for step in [s for s in steps(out_dir) if s <= current][:-keep]:
        try:
            os.unlink(step_path(out_dir, step))
        except OSError:
            pass
    fileio.remove_stale_temps(out_dir, STEP_FILE)


def resolve(out_dir, ckpt=None):
    """The checkpoint file to read from a run folder. ckpt: None or 'best' (best.pt, else ckpt.pt),
    'latest' (ckpt.pt, else best.pt), or a step (ckpt_<step>.pt). out_dir may also be a .pt file.
    A missing run or step raises UserError listing what exists."""
    ckpt = 'best' if ckpt in (None, '') else str(ckpt)
    if os.path.isfile(out_dir):
        if ckpt not in ('best', 'latest'):
            raise UserError(f"{out_dir} is a checkpoint file; --ckpt={ckpt} picks a step in a run folder, give the folder")
        return out_dir
    if not os.path.isdir(out_dir):
        raise UserError(f"no checkpoint in {out_dir}: the folder does not exist; train one "
                        f"(python train.py --out_dir={out_dir} ...) or fix --out_dir")
    available = steps(out_dir)
    if ckpt.isdigit():
        path = step_path(out_dir, int(ckpt))
        if not os.path.exists(path):
            have = ', '.join(map(str, available)) if available else 'none (train with --keep_checkpoints=N)'
            raise UserError(f"no checkpoint of step {int(ckpt)} in {out_dir}; steps saved there: {have}")
        return path
    if ckpt not in ('best', 'latest'):
        raise UserError(f"ckpt must be 'best', 'latest' or a step number, got '{ckpt}'")
    order = ['best.pt', 'ckpt.pt'] if ckpt == 'best' else ['ckpt.pt', 'best.pt']
    for name in order:
        if os.path.exists(os.path.join(out_dir, name)):
            return os.path.join(out_dir, name)
    if available:
        return step_path(out_dir, available[-1])
    raise UserError(f"no checkpoint in {out_dir} (no best.pt, ckpt.pt or ckpt_<step>.pt); train one first or fix --out_dir")


def strip_compile_prefix(state_dict):
    return {(k[len(COMPILE_PREFIX):] if k.startswith(COMPILE_PREFIX) else k): v for k, v in state_dict.items()}


def rng_state():
    """Every random state a training step of this process reads, in forms weights_only accepts. On CUDA
    only the current device's generator: each process draws its dropout on its own GPU, and a state per
    visible GPU would not fit a machine that shows fewer of them."""
    np_state = np.random.get_state()
    state = {
        'python': random.getstate(),
        'numpy': (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])),
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda_device'] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def set_rng_state(state, path=None):
    """Restore what rng_state saved; the CUDA generator goes to the current device. CPU states that are not what
    rng_state saves (a damaged or hand-made checkpoint at path) are one UserError."""
    try:
        random.setstate(_to_tuples(state['python']))
        name, keys, pos, has_gauss, gauss = state['numpy']
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state['torch'])
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError, AttributeError) as e:
        raise damaged(path, f"its random state cannot be restored ({one_line(e):.80})") from None
    if not torch.cuda.is_available():
        return
    if 'cuda_device' in state:
        torch.cuda.set_rng_state(state['cuda_device'], torch.cuda.current_device())
    elif 'cuda' in state:
        # older checkpoints hold one state per GPU the saving machine showed: this device's, when it had one
        index = torch.cuda.current_device()
        if index < len(state['cuda']):
            torch.cuda.set_rng_state(state['cuda'][index], index)


def _to_tuples(x):
    # python's random state must come back as nested tuples; a load may hand back lists
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


# ----- FSDP2: every rank saves and loads its own shards -----

def shard_path(out_dir, rank, world_size, slot):
    """Shards go to two alternating slots; ckpt.pt, written last, names the complete one, so a
    crash in the middle of writing the shards of several ranks never leaves a mixed set."""
    return os.path.join(out_dir, f'ckpt_shard{rank}of{world_size}_{slot}.pt')


def _to_local(value):
    return value.to_local().cpu() if hasattr(value, 'to_local') else value


def local_shards(model, optimizer):
    """This rank's pieces of an FSDP2 model and of its optimizer state as plain tensors, since a
    weights_only load refuses DTensors."""
    model_sd = {k: _to_local(v) for k, v in model.state_dict().items()}
    optim_sd = optimizer.state_dict()
    optim_sd = {'state': {i: {k: _to_local(v) for k, v in s.items()} for i, s in optim_sd['state'].items()},
                'param_groups': optim_sd['param_groups']}
    return model_sd, optim_sd


def _like(local, ref):
    # rebuild a DTensor with the sharding of ref (same world size, so the local shapes match)
    from torch.distributed.tensor import DTensor
    return DTensor.from_local(local.to(ref.device), ref.device_mesh, ref.placements, run_check=False,
                              shape=ref.shape, stride=ref.stride())


def load_local_shards(model, optimizer, model_sd, optim_sd):
    """Put what local_shards saved back into an FSDP2 model and optimizer sharded the same way."""
    current = model.state_dict()
    model.load_state_dict({k: _like(v, current[k]) if k in current else v for k, v in model_sd.items()})
    params = [p for group in optimizer.param_groups for p in group['params']]
    state = {i: {k: _like(v, params[i]) if torch.is_tensor(v) and v.dim() > 0 else v for k, v in s.items()}
             for i, s in optim_sd['state'].items()}
    optimizer.load_state_dict({'state': state, 'param_groups': optim_sd['param_groups']})


def save_shards(state, model, optimizer, out_dir, rank, world_size, slot, latest=True):
    """FSDP's part of a save, on every rank; state (what rank 0 writes to ckpt.pt or best.pt) gets the gathered
    weights in place of the shards. With latest, each rank writes its shards into the free slot (1 - slot) and
    state names it; returns the slot ckpt.pt now names. best.pt alone (latest=False) leaves the slots as they were."""
    import torch.distributed as dist
    if latest:
        slot = 1 - slot
        model_sd, optim_sd = local_shards(model, optimizer)
        save({'model': model_sd, 'optimizer': optim_sd, 'model_args': state['model_args'],
              'iter_num': state['iter_num']}, shard_path(out_dir, rank, world_size, slot))
        state['fsdp'] = {'world_size': world_size, 'slot': slot}
    del state['optimizer']
    state['model'] = full_model_state(model)
    if latest:
        dist.barrier()  # ckpt.pt, written after all of them, names the slot
    return slot


def full_model_state(model):
    """The whole FSDP2 model gathered into CPU tensors on rank 0 (empty elsewhere); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _describe_tokenizer(state):
    kind = state.get('kind')
    if kind == 'char':
        return f"char, {len(state['chars']) + len(state.get('special_tokens') or {})} symbols"
    if kind == 'bpe':
        return f"trained bpe, {len(json.loads(state['json'])['model']['vocab'])} ranks"
    return str(kind)


def check_tokenizer(ckpt, path, data_state, dataset):
    """UserError in one line, saying which differ, when a checkpoint's tokenizer is not the dataset's:
    the ids the weights learned would mean other text."""
    from core.data import tokenizer as tokenizer_lib
    try:
        saved, where = tokenizer_state(ckpt, path)
    except UserError:  # a nanoGPT run whose meta.pkl is elsewhere: the dataset given is taken as its tokenizer
        return
    if saved is None or data_state is None:
        return
    try:
        a, b = tokenizer_lib.from_state(saved).state(), tokenizer_lib.from_state(data_state).state()
    except tokenizer_lib.TokenizerError as e:
        raise UserError(f"{path}: its tokenizer cannot be rebuilt ({e})")
    if a == b:
        return
    detail = ''
    if a['kind'] == b['kind'] == 'char':
        only_a = sorted(set(a['chars']) - set(b['chars']))
        only_b = sorted(set(b['chars']) - set(a['chars']))
        detail = (f"; only the checkpoint's has {' '.join(map(repr, only_a[:10]))}" if only_a else '') + \
                 (f"; only the dataset's has {' '.join(map(repr, only_b[:10]))}" if only_b else '')
    raise UserError(f"the tokenizer of {path} ({_describe_tokenizer(a)}, from {where}) differs from dataset "
                    f"'{dataset}'s ({_describe_tokenizer(b)}){detail}; train on data prepared with the checkpoint's "
                    f"tokenizer")
