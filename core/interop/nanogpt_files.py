"""Checkpoints written by karpathy/nanoGPT: its ckpt.pt and its data folders' meta.pkl.

nanoGPT saves {'model', 'optimizer', 'model_args', 'iter_num', 'best_val_loss', 'config'}: the
weights under the same GPT-2 names as ours (with torch.compile's '_orig_mod.' prefix when it
compiled), model_args with n_layer, n_head, n_embd, block_size, bias, vocab_size and dropout, and
config with the run's globals (config['dataset'] names its data folder). Its model is GPT-2's
with the exact erf GELU (nn.GELU()). The tokenizer is not in the checkpoint: nanoGPT's sample.py
reads data/<dataset>/meta.pkl when there is one (a character vocabulary) and GPT-2's BPE otherwise.
"""

import io
import os
import pickle

from core.errors import UserError

NANOGPT_ARGS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout')


def is_nanogpt(ckpt):
    """True for a checkpoint nanoGPT wrote: its model_args have none of our architecture switches."""
    args = ckpt.get('model_args') or {}
    return 'tokenizer' not in ckpt and set(args) <= set(NANOGPT_ARGS)


def convert(ckpt):
    """Our form of a nanoGPT checkpoint, in place: model_args with the erf GELU, no attention-mask buffers."""
    ckpt['model_args'] = {**ckpt['model_args'], 'gelu': 'erf'}
    # nanoGPT without flash attention keeps the causal mask as a buffer named attn.bias
    ckpt['model'] = {k: v for k, v in ckpt['model'].items()
                     if not (k.endswith('.attn.bias') and getattr(v, 'dim', lambda: 0)() == 4)}
    ckpt['nanogpt'] = True
    ckpt.setdefault('config', {})
    if 'best_val_loss' in ckpt:  # nanoGPT stores it as a 0-d tensor
        ckpt['best_val_loss'] = float(ckpt['best_val_loss'])
    return ckpt


def optimizer_state(saved, model, optimizer):
    """nanoGPT's AdamW state_dict renumbered for our optimizer over the same parameters.

    nanoGPT has two groups, every >= 2-D parameter (decayed) then every other, each in named_parameters
    order; ours puts the hidden matrices before the embeddings and head. A state_dict numbers parameters
    by position, so each moment is moved to where the same-named parameter sits in ours."""
    params = dict(model.named_parameters())
    # nanoGPT's module order: wte, wpe, the blocks, ln_f (ours registers wpe last); blocks list alike
    first = ('transformer.wte.', 'transformer.wpe.', 'transformer.h.', 'transformer.ln_f.')
    names = sorted(params, key=lambda n: next((i for i, f in enumerate(first) if n.startswith(f)), len(first)))
    theirs = [n for n in names if params[n].dim() >= 2] + [n for n in names if params[n].dim() < 2]
    name_of = {id(p): n for n, p in params.items()}
    ours = [[name_of[id(p)] for p in g['params']] for g in optimizer.param_groups]
    sizes = [len(g['params']) for g in saved.get('param_groups', [])]
    if len(ours) != 2 or sizes != [sum(p.dim() >= 2 for p in params.values()), sum(p.dim() < 2 for p in params.values())] \
            or [len(g) for g in ours] != sizes:
        raise UserError("a nanoGPT checkpoint resumes with nanoGPT's AdamW groups: use --optimizer=adamw and "
                        "--embed_lr=0 (its optimizer state has groups of "
                        f"{sizes}, this run's optimizer {[len(g) for g in ours]})")
    at = {n: i for i, n in enumerate(theirs)}
    flat = [n for g in ours for n in g]
    state = {j: saved['state'][at[n]] for j, n in enumerate(flat) if at[n] in saved['state']}
    groups, start = [], 0
    for old, new, current in zip(saved['param_groups'], ours, optimizer.param_groups):
        # the kernel choice (fused, foreach) is this machine's, not the one nanoGPT ran on
        kernel = {k: current[k] for k in ('fused', 'foreach', 'capturable', 'differentiable') if k in current}
        groups.append({**old, **kernel, 'params': list(range(start, start + len(new)))})
        start += len(new)
    return {'state': state, 'param_groups': groups}


class _PlainUnpickler(pickle.Unpickler):
    """Builds only what pickle's own opcodes make (dicts, lists, tuples, str, bytes, numbers, bools, None):
    any class or function a pickle names is refused, so nothing in the file can run."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("a persistent id")


def read_meta_pkl(path):
    """nanoGPT's character vocabulary from meta.pkl as our char tokenizer state, never running pickle code."""
    try:
        if os.path.getsize(path) > 64 << 20:
            raise UserError(f"{path} is {os.path.getsize(path) >> 20} MiB, too large for a vocabulary; is it the right file?")
        with open(path, 'rb') as f:
            meta = _PlainUnpickler(io.BytesIO(f.read())).load()
    except pickle.UnpicklingError as e:
        raise UserError(f"{path} holds a Python object ({e}), not plain data; refusing to load it (a pickle can run "
                        f"code); delete it or recreate it with nanoGPT's prepare.py")
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError) as e:
        raise UserError(f"{path} is not a readable meta.pkl ({type(e).__name__}); recreate it with nanoGPT's prepare.py")
    itos = meta.get('itos') if isinstance(meta, dict) else None
    if not isinstance(itos, dict) and isinstance(meta, dict) and isinstance(meta.get('stoi'), dict):
        itos = {i: s for s, i in meta['stoi'].items()}
    if not isinstance(itos, dict) or not itos:
        raise UserError(f"{path} has no 'itos' or 'stoi' vocabulary (nanoGPT's meta.pkl has both)")
    if sorted(itos) != list(range(len(itos))) or \
            any(not isinstance(c, str) or len(c) != 1 for c in itos.values()):
        raise UserError(f"{path}: 'itos' must map 0..{len(itos) - 1} to single characters")
    chars = [itos[i] for i in range(len(itos))]
    if chars != sorted(set(chars)):
        raise UserError(f"{path}: the characters are not in sorted order as nanoGPT's prepare.py writes them")
    return {'kind': 'char', 'chars': chars, 'special_tokens': {}}


def data_candidates(ckpt_path, dataset):
    """Folders that may hold the data of a nanoGPT run: the nanoGPT checkout the run folder sits in
    (out-x/ckpt.pt beside data/<dataset>/), then this repository's data folder or a path."""
    from core.paths import resolve_data_dir
    run = os.path.dirname(os.path.abspath(ckpt_path))
    found = [os.path.join(os.path.dirname(run), 'data', dataset), os.path.join(run, 'data', dataset),
             resolve_data_dir(dataset)]
    return list(dict.fromkeys(found))


def data_folder(ckpt_path, dataset):
    """The first of data_candidates holding a meta.json or meta.pkl, else dataset as it is."""
    for folder in data_candidates(ckpt_path, dataset):
        if any(os.path.exists(os.path.join(folder, m)) for m in ('meta.json', 'meta.pkl')):
            return folder
    return dataset


def tokenizer_state(ckpt, ckpt_path, dataset=''):
    """(tokenizer state, a line saying where it came from) for a nanoGPT checkpoint, as nanoGPT's
    sample.py finds it: the data folder's meta (our meta.json or its meta.pkl), else GPT-2's BPE."""
    from core.data import tokenizer as tokenizer_lib
    name = dataset or (ckpt.get('config') or {}).get('dataset') or ''
    looked = data_candidates(ckpt_path, name) if name else []
    for folder in looked:
        if os.path.exists(os.path.join(folder, 'meta.json')):
            try:
                return tokenizer_lib.load(folder).state(), f"the tokenizer of {folder}/meta.json"
            except tokenizer_lib.TokenizerError as e:
                raise UserError(str(e))
        if os.path.exists(os.path.join(folder, 'meta.pkl')):
            return read_meta_pkl(os.path.join(folder, 'meta.pkl')), f"the vocabulary in {folder}/meta.pkl"
    vocab = (ckpt.get('model_args') or {}).get('vocab_size', 0)
    if vocab < 50257:
        where = ', '.join(looked) if looked else 'nowhere (its config names no dataset)'
        raise UserError(f"{ckpt_path} is a nanoGPT checkpoint with a {vocab}-token vocabulary and no meta.pkl or "
                        f"meta.json was found (looked in {where}); pass --dataset=<the folder holding meta.pkl>")
    return {'kind': 'gpt2'}, "GPT-2's BPE (no meta.pkl for its dataset, as nanoGPT assumes)"
