"""A model's loss over every token of a split, each predicted once, and bits per byte: how scripts score
a finished checkpoint (eval.py, the studies), and the figure train.py's eval_full matches."""

import contextlib
import math

import torch


def bits_per_byte(nats, n_bytes):
    """Summed loss in nats over ln 2 and over the bytes it covers; nan when there are no bytes."""
    return nats / math.log(2) / n_bytes if n_bytes > 0 else float('nan')


def exact_eval(model, data, split='val', block_size=None, batch_size=64, device='cpu', ctx=None, progress=None,
               doc_aware=False):
    """A model's loss over every token of a split, each predicted once, in consecutive windows of
    block_size (default: the model's), on this process alone: how scripts score a finished checkpoint.
    Returns loss (mean nats per token), perplexity, bpb, tokens and bytes. train.py's eval_full is
    the same sum, split across ranks. progress, if given, is called with the tokens of each batch.
    doc_aware keeps attention inside each document of a window: the same windows and targets, so the
    two figures are sums over the same tokens and compare directly."""
    block_size = block_size or model.config.block_size
    ctx = ctx or contextlib.nullcontext()
    was_training = model.training
    model.eval()
    nats, tokens, n_bytes = 0.0, 0, 0
    with torch.no_grad():
        for x, y in data.exact_batches(split, batch_size, block_size, device):
            with ctx:
                # only document-aware runs pass docs, so any model with the (x, y) signature can be scored
                _, loss = model(x, y, docs=data.documents(x)) if doc_aware else model(x, y)
            n = int((y != -1).sum())
            nats, tokens, n_bytes = nats + loss.item() * n, tokens + n, n_bytes + data.target_bytes(y)
            if progress:
                progress(n)
    model.train(was_training)
    loss = nats / tokens
    return dict(loss=loss, perplexity=math.exp(min(loss, 700)), bpb=bits_per_byte(nats, n_bytes), tokens=tokens,
                bytes=n_bytes)


def exact_loss(model, data, split='val', block_size=None, batch_size=64, doc_aware=False):
    """exact_eval's mean loss alone."""
    return exact_eval(model, data, split, block_size, batch_size, doc_aware=doc_aware)['loss']
