"""Checkpoint I/O: atomic writes, weights_only loads, and one-line errors for bad files."""

import io
import os
import pickle
import random
import tempfile
import zipfile

import numpy as np
import torch

from errors import UserError

COMPILE_PREFIX = '_orig_mod.'


def atomic_write_bytes(path, data):
    """Write data beside path and rename it over path, so a crash at any instant leaves
    either the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


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
            atomic_write_bytes(path, data)
        except OSError as e:
            raise UserError(f"could not write checkpoint {path} ({e.strerror or e}); the previous one is untouched")


def load(path, map_location='cpu'):
    """Load a checkpoint with torch.load(weights_only=True); a missing, truncated, corrupted or
    foreign file raises UserError naming the file and the problem."""
    if not os.path.exists(path):
        raise UserError(f"no checkpoint at {path}; train one first (python train.py ...) or set --out_dir")
    if os.path.getsize(path) == 0:
        raise UserError(f"checkpoint {path} is empty (truncated); use another checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else 'unpickling failed'
        raise UserError(f"checkpoint {path} holds objects a weights_only load refuses ({first[:200]})")
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise UserError(f"checkpoint {path} is truncated or corrupted ({type(e).__name__}); "
                        f"use another checkpoint or retrain")
    if not isinstance(ckpt, dict) or 'model' not in ckpt or 'model_args' not in ckpt:
        raise UserError(f"{path} is not a checkpoint of this repository (no model and model_args)")
    ckpt['model'] = strip_compile_prefix(ckpt['model'])
    return ckpt


def strip_compile_prefix(state_dict):
    return {(k[len(COMPILE_PREFIX):] if k.startswith(COMPILE_PREFIX) else k): v for k, v in state_dict.items()}


def rng_state():
    """Every random state a training step reads, in forms weights_only accepts."""
    np_state = np.random.get_state()
    state = {
        'python': random.getstate(),
        'numpy': (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])),
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(_to_tuples(state['python']))
    name, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _to_tuples(x):
    # python's random state must come back as nested tuples; a load may hand back lists
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
