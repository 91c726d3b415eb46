"""train.py's evaluation: the mean loss on eval_iters random batches of each split (the same batches every eval),
or over the whole val split when eval_full, with each split's bits per byte; ranks split the batches."""

import torch

from core.evaluation.exact import bits_per_byte
from core.training.distributed import all_reduce


@torch.no_grad()
def estimate_loss(model, data, ctx, device, batch_size, block_size, eval_iters, eval_full=False, seed=0,
                  doc_aware=False, rank=0, world_size=1, fsdp=False, stop=lambda: False):
    """{'train', 'val', 'train_bpb', 'val_bpb'} (and 'val_tokens' when eval_full) for the raw model. Bits per byte
    are the summed nats over ln 2 and over the bytes the targets decode to. stop() is asked between batches: when
    it says True on any rank, every rank leaves the evaluation at the end of the split and returns None."""
    docs = lambda x: data.documents(x) if doc_aware else None
    was_training = model.training
    model.eval()
    out = {}
    for split in ('train', 'val'):
        total, count, nats, n_bytes, stopped = 0.0, 0, 0.0, 0, False
        if eval_full and split == 'val':
            done = 0
            for x, y in data.exact_batches(split, batch_size, block_size, device, rank, world_size):
                if stop():
                    break  # FSDP's forwards are collective: the batches left are padded below
                with ctx:
                    loss = model(x, y, docs=docs(x))[1]
                n = int((y != -1).sum())
                total, count, done = total + loss.item() * n, count + n, done + 1
                nats, n_bytes = nats + loss.item() * n, n_bytes + data.target_bytes(y)
            n_batches = -(-data.num_windows(split, block_size) // batch_size)
            pad_forwards(model, -(-n_batches // world_size) - done, block_size, ctx, device, fsdp)
        else:
            gen = torch.Generator().manual_seed(seed + 1)
            for k in range(eval_iters):
                # every rank draws every batch's positions (one stream), and reads and runs only its own
                starts = data.sample_starts(split, batch_size, block_size, gen, doc_aware)
                if k % world_size == rank and not stopped:
                    if stop():  # FSDP's forwards are collective: the batches left are padded below
                        stopped = True
                        continue
                    x, y = data.get_batch(split, batch_size, block_size, None, device, starts)
                    with ctx:
                        loss = model(x, y, docs=docs(x))[1]  # the logits go at once, not at the next forward
                    total, count = total + loss.item(), count + 1
                    nats, n_bytes = nats + loss.item() * int((y != -1).sum()), n_bytes + data.target_bytes(y)
            pad_forwards(model, -(-eval_iters // world_size) - count, block_size, ctx, device, fsdp)
        total, count, nats, n_bytes, stops = all_reduce([total, count, nats, n_bytes, float(stop())], device)
        if stops:
            model.train(was_training)
            return None
        out[split] = total / max(count, 1)
        out[f'{split}_bpb'] = bits_per_byte(nats, n_bytes)  # nan when the dataset names no tokenizer
        if eval_full and split == 'val':
            out['val_tokens'] = int(count)
    model.train(was_training)
    return out


def pad_forwards(model, n, block_size, ctx, device, fsdp):
    """FSDP forwards are collective: a rank with fewer eval batches than another runs n throwaway ones."""
    dummy = torch.zeros((1, block_size), dtype=torch.long, device=device)
    for _ in range(n if fsdp else 0):
        with ctx:
            model(dummy)
