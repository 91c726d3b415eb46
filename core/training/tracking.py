"""
Watching a run: Weights & Biases logging, and the network-health numbers of log_health=True.

wandb runs offline unless you are logged in (WANDB_API_KEY, or `wandb login`, which writes
~/.netrc) or set WANDB_MODE yourself. An offline run is a folder of files; upload it later with
`wandb sync <folder>` (the folder is printed at the start). Nothing touches the network offline.

Health (at each eval, per layer: the token and position embeddings, each block h.N, ln_f, the
untied head):
    grad_norm/<layer>     L2 norm of the layer's gradients on the step before the eval, before clipping
    update_ratio/<layer>  ||W_after - W_before|| / ||W_before|| over that step: the learning rate
                          times the optimizer's direction, relative to the weights; ~1e-3 is healthy
                          for AdamW, much larger means the weights churn, much smaller means they freeze
    act_rms/<layer>       RMS of the embeddings' output and of each block's output on one val batch
"""

import netrc
import os
import re
from urllib.parse import urlparse

import torch

from core import network
from core.errors import UserError

# hosts whose ~/.netrc entry means `wandb login` was run (the older and the newer default server)
WANDB_HOSTS = ('api.wandb.ai', 'api.forge.coreweave.com')


def logged_in():
    """True when wandb has credentials to go online: an API key in the environment or a netrc entry."""
    if os.environ.get('WANDB_API_KEY'):
        return True
    hosts = set(WANDB_HOSTS)
    if os.environ.get('WANDB_BASE_URL'):
        hosts.add(urlparse(os.environ['WANDB_BASE_URL']).hostname)
    path = os.environ.get('NETRC') or os.path.expanduser('~/.netrc')
    try:
        entries = netrc.netrc(path).hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any(h in entries for h in hosts)


WANDB_MODES = ('online', 'offline', 'disabled', 'dryrun', 'run', 'shared')  # what wandb itself accepts


def start_wandb(project, run_name, config):
    """Start a wandb run logging the full config; offline when not logged in. Returns the run."""
    if not os.environ.get('WANDB_MODE') and not logged_in():
        # set before wandb is imported: its own background telemetry reads the mode from the
        # environment, and would otherwise look up the server even for an offline run
        os.environ['WANDB_MODE'] = 'offline'
    mode = os.environ.get('WANDB_MODE', 'online')
    if mode not in WANDB_MODES:
        raise UserError(f"WANDB_MODE={mode} is not a wandb mode; use one of {', '.join(WANDB_MODES)}, or unset it")
    try:
        import wandb
    except ImportError:
        raise UserError("wandb_log=True needs the wandb package: pip install wandb")
    offline = mode in ('offline', 'dryrun')
    if mode not in ('offline', 'dryrun', 'disabled'):
        # wandb itself retries for minutes without a network before failing with a traceback
        url = os.environ.get('WANDB_BASE_URL') or wandb.Settings().base_url
        problem = network.unreachable(url)
        if problem:
            raise UserError(f"wandb_log=True cannot reach {url} ({problem}); no network? set WANDB_MODE=offline to "
                            f"log locally and `wandb sync` later, or --wandb_log=False")
    kwargs = dict(project=project, name=run_name, config=dict(config))
    if not os.environ.get('WANDB_DIR') and config.get('out_dir'):
        kwargs['dir'] = config['out_dir']  # the run's wandb folder sits beside its checkpoints
    if offline:
        kwargs['settings'] = wandb.Settings(silent=True)  # our one line below says what matters
    try:
        run = wandb.init(**kwargs)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"wandb could not start ({first}); log in with `wandb login`, or set WANDB_MODE=offline, "
                        f"or --wandb_log=False") from None
    if offline:
        folder = os.path.dirname(run.dir)
        print(f"wandb: not logged in, logging offline to {folder}; upload later with: wandb sync {folder}",
              flush=True)
    return run


# ----- network health -----

def layer_of(name):
    """The layer a parameter belongs to: 'transformer.h.3.attn.c_attn.weight' -> 'h.3'."""
    m = re.match(r'(?:_orig_mod\.)?(?:transformer\.)?(h\.\d+|[^.]+)', name)
    return m.group(1)


def _layers(model):
    # tied weights are one tensor: count it once, under the name it first appears with (wte)
    layers, seen = {}, set()
    for name, p in model.named_parameters():
        if id(p) not in seen and p.requires_grad:
            seen.add(id(p))
            layers.setdefault(layer_of(name), []).append(p)
    return dict(sorted(layers.items(), key=lambda kv: layer_rank(kv[0])))


def layer_rank(layer):
    """Sort key putting layers in the order data flows: embeddings, blocks by depth, the rest."""
    if layer in ('wte', 'wpe', 'emb'):
        return (0, ('wte', 'wpe', 'emb').index(layer))
    if layer.startswith('h.') and layer[2:].isascii() and layer[2:].isdigit() and len(layer) < 12:  # int() reads it
        return (1, int(layer[2:]))
    return (2, layer)


def _local(t):
    # under fsdp a parameter is a DTensor and each rank holds one shard of it
    return t.to_local() if hasattr(t, 'to_local') else t


def _sharded(model):
    return any(hasattr(p, 'to_local') for p in model.parameters())


def _norms(tensor_lists, sharded=False):
    # one device sync for all layers; sharded tensors sum their shards' squares over the ranks
    if not tensor_lists:
        return []
    sq = torch.stack([sum(_local(t).detach().float().pow(2).sum() for t in ts) for ts in tensor_lists])
    if sharded:
        torch.distributed.all_reduce(sq)
    return sq.sqrt().tolist()


def grad_norms(model):
    """{'grad_norm/<layer>': float} from the gradients now in the model."""
    names, grads = [], []
    for layer, params in _layers(model).items():
        gs = [p.grad for p in params if p.grad is not None]
        if gs:
            names.append(layer)
            grads.append(gs)
    return {f'grad_norm/{n}': v for n, v in zip(names, _norms(grads, _sharded(model)))}


def snapshot(model):
    """A copy of the weights, to measure what one optimizer step changes."""
    return {id(p): _local(p).detach().clone() for params in _layers(model).values() for p in params}


def update_ratios(model, before):
    """{'update_ratio/<layer>': ||W - W_before|| / ||W_before||} against a snapshot()."""
    layers = _layers(model)
    names = list(layers)
    sharded = _sharded(model)
    deltas = _norms([[_local(p).detach() - before[id(p)] for p in layers[n]] for n in names], sharded)
    weights = _norms([[before[id(p)] for p in layers[n]] for n in names], sharded)
    return {f'update_ratio/{n}': d / max(w, 1e-12) for n, d, w in zip(names, deltas, weights)}


@torch.no_grad()
def activation_rms(model, idx, ctx):
    """{'act_rms/<layer>': float}: RMS of the embedding output and of each block's output on idx."""
    found = {}

    def hook(name):
        return lambda module, inputs, output: found.__setitem__(name, output.float().pow(2).mean().sqrt())

    hooks = [model.transformer.drop.register_forward_hook(hook('emb'))]
    hooks += [block.register_forward_hook(hook(f'h.{i}')) for i, block in enumerate(model.transformer.h)]
    was_training = model.training
    model.eval()
    try:
        with ctx:
            model(idx)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    names = list(found)
    values = torch.stack([found[n] for n in names]).tolist()
    return {f'act_rms/{n}': v for n, v in zip(names, values)}


class Health:
    """log_health's figures for the next evaluation's record: per-layer gradient norms (before clipping, so a
    blow-up shows) and update/weight ratios from the optimizer step before it, activation RMS at it."""

    def __init__(self, model, on):
        self.model, self.on, self.figures, self.before = model, on, {}, None

    def before_clip(self, due):
        """At the step's gradients, before clipping; due: the next evaluation follows this step."""
        if self.on and due:
            self.figures, self.before = grad_norms(self.model), snapshot(self.model)

    def after_step(self):
        if self.before is not None:
            self.figures.update(update_ratios(self.model, self.before))
            self.before = None

    def record(self, idx, ctx):
        """Everything gathered since the last record, with the activations on idx."""
        figures, self.figures = {**self.figures, **activation_rms(self.model, idx, ctx)}, {}
        return figures
