"""
Token batches from a prepared dataset folder: data/<name>/{train,val[,test]}.bin + meta.json.

Training draws random windows, as nanoGPT does; evaluation can instead walk a whole split
once (exact loss and perplexity). Every evaluation also gives bits per byte: the summed loss in
nats over ln 2 and over the UTF-8 bytes the target tokens decode to, a figure that compares
models with different tokenizers. The memmaps are opened once per process.
"""

from concurrent.futures import ThreadPoolExecutor
import os

import numpy as np
import torch

from core import fileio
from core.data import tokenizer
from core.errors import UserError
from core.paths import resolve_data_dir

HASH_LIMIT = 1 << 30  # an old dataset's token files are hashed at start only below this many bytes


class Dataset:

    def __init__(self, dataset):
        self.name = dataset
        self.data_dir = resolve_data_dir(dataset)
        tokenizer.finish_interrupted_prepare(self.data_dir)
        meta_path = os.path.join(self.data_dir, 'meta.json')
        nanogpt_meta = os.path.join(self.data_dir, 'meta.pkl')
        if os.path.exists(self.data_dir) and not os.path.isdir(self.data_dir):
            hint = (f"to make one from it: python data/prepare.py --input={self.data_dir} --name=NAME, then --dataset=NAME"
                    if self.data_dir.endswith(('.txt', '.jsonl', '.parquet')) else
                    "--dataset names a folder that prepare made (train.bin, val.bin, meta.json), e.g. data/NAME or NAME")
            raise UserError(f"--dataset={dataset} is a file ({self.data_dir}), not a dataset folder; {hint}")
        if not os.path.exists(meta_path) and not os.path.exists(nanogpt_meta):
            what = 'is incomplete (no meta.json)' if os.path.isdir(self.data_dir) else 'not found'
            raise UserError(f"dataset '{dataset}' {what} at {self.data_dir}; run: {tokenizer.prepare_hint(self.data_dir)}")
        try:
            if not os.path.exists(meta_path):
                # a character dataset made by karpathy/nanoGPT: uint16 ids, its vocabulary in meta.pkl (written last)
                from core.interop import nanogpt_files as nanogpt
                state = nanogpt.read_meta_pkl(nanogpt_meta)
                self.meta = {'vocab_size': len(state['chars']), 'dtype': 'uint16', 'tokenizer': state}
            else:
                with open(meta_path) as f:
                    self.meta = fileio.read_json(f)
            self.vocab_size = self.meta['vocab_size']
            self.dtype = np.dtype(self.meta.get('dtype', 'uint16'))
        except (ValueError, KeyError, TypeError, OverflowError, OSError) as e:
            raise UserError(f"{meta_path} is unreadable ({type(e).__name__}: {e}); rerun the dataset's prepare with --force")
        # ids are stored as unsigned 16- or 32-bit integers: any other vocab_size is a damaged meta.json
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, (int, float)) or \
                not (1 <= self.vocab_size <= 2 ** 32 and float(self.vocab_size).is_integer()):
            raise UserError(f"{meta_path} gives vocab_size {self.vocab_size!r}, not a vocabulary a token file can hold "
                            f"(1 to 2**32 ids); rerun the dataset's prepare with --force")
        self.vocab_size = int(self.vocab_size)
        if self.dtype not in (np.uint16, np.uint32):
            raise UserError(f"{meta_path} gives dtype {self.dtype}, not uint16 or uint32; rerun the dataset's prepare "
                            f"with --force")
        # a run trained on a dataset whose tokenizer is unknown could never be sampled or evaluated in text
        missing = [k for k in ('dtype', 'tokenizer') if not self.meta.get(k)]
        if missing:
            raise UserError(f"{meta_path} has no {' and no '.join(missing)} (it holds {', '.join(map(str, self.meta)) or 'nothing'}): "
                            f"it was not written by prepare, and a model trained on it could not be sampled; rerun the "
                            f"dataset's prepare with --force")
        self._splits = {}
        self._max_id = {}
        self._masks = {}
        self._starts = {}
        # <|endoftext|> starts each document after the first (prepare writes it after every document)
        self.eot = self.meta.get('eot_token')
        self._bytes = {}  # device -> bytes per token id

    def split(self, name):
        """The split's tokens as a read-only memmap, opened on first use."""
        if name not in self._splits:
            path = os.path.join(self.data_dir, f'{name}.bin')
            if os.path.isdir(path):
                raise UserError(f"{path} is a folder, not a token file; move it away and rerun the dataset's prepare "
                                f"with --force")
            splits = self.meta.get('splits')
            if not os.path.exists(path):
                if isinstance(splits, dict) and splits and name not in splits:
                    # prepared without it: preparing again would not make it either
                    raise UserError(f"dataset '{self.name}' has no {name} split: it was prepared with "
                                    f"{' and '.join(map(str, splits))} only; score one of those (--split=...), or a "
                                    f"dataset prepared with a {name} split (python data/wikitext2/prepare.py makes one)")
                raise UserError(f"dataset '{self.name}' has no {name} split ({path}); "
                                f"run: {tokenizer.prepare_hint(self.data_dir)}")
            size = os.path.getsize(path)
            n = size // self.dtype.itemsize
            expected = splits.get(name) if isinstance(splits, dict) else None
            if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int) or expected < 0):
                raise UserError(f"{os.path.join(self.data_dir, 'meta.json')} gives the {name} split's size as "
                                f"{expected!r}, not a count of tokens: it was not written by prepare; rerun the "
                                f"dataset's prepare with --force")
            if size % self.dtype.itemsize:
                raise UserError(f"{path} holds {size} bytes, not a whole number of {self.dtype} tokens: it is cut "
                                f"short or not a token file; rerun the dataset's prepare with --force")
            other = np.dtype(np.uint32 if self.dtype == np.uint16 else np.uint16)
            if expected is not None and expected != n and size == expected * other.itemsize:
                raise UserError(f"{path} holds {expected} {other} tokens but meta.json says its dtype is {self.dtype}: "
                                f"meta.json does not match the file; rerun the dataset's prepare with --force")
            if expected is not None and expected != n:
                raise UserError(f"{path} holds {n} tokens but meta.json says {expected}: the prepare was "
                                f"interrupted; rerun it with --force")
            if n == 0:
                raise UserError(f"{path} is empty; rerun the dataset's prepare with --force")
            data = np.memmap(path, dtype=self.dtype, mode='r')
            if expected is None and self.dtype == np.uint16 and n >= 64 and n % 2 == 0:
                # without the split's size in meta.json, uint32 ids read as uint16 pass every check above and
                # train on garbage: below 65,536 each id's upper half is 0, so every second uint16 is 0
                head = data[:1 << 16]
                if not head[1::2].any() and head[0::2].any():
                    raise UserError(f"{path} looks like uint32 tokens (every second uint16 is 0) but meta.json says "
                                    f"its dtype is uint16: meta.json does not match the file; rerun the dataset's "
                                    f"prepare with --force")
            self._splits[name] = data
        return self._splits[name]

    def fingerprint(self):
        """The dataset's identity (tokenizer.fingerprint): from meta.json, or for a dataset prepared before
        fingerprints, computed from its files (without checksums when they are large, said in 'note')."""
        if isinstance(self.meta.get('fingerprint'), dict):
            return self.meta['fingerprint']
        names = [n for n in ('train', 'val', 'test') if os.path.exists(os.path.join(self.data_dir, f'{n}.bin'))]
        counts = {n: len(self.split(n)) for n in names}
        small = sum(counts.values()) * self.dtype.itemsize < HASH_LIMIT
        fp = tokenizer.fingerprint(self.data_dir, self.meta.get('tokenizer'), counts, checksums=small)
        fp['note'] = ("prepared before fingerprints: computed from its files" + ("" if small else
                      ", by token counts only (too large to hash at every start; rerun its prepare to record checksums)"))
        return fp

    def check_fits(self, vocab_size, block_size, splits=('train', 'val')):
        """Stop before training if a token id is outside the model's vocab or a split is too short."""
        for name in splits:
            data = self.split(name)
            if name not in self._max_id:
                self._max_id[name] = int(data.max())
            if self._max_id[name] >= vocab_size:
                raise UserError(f"dataset '{self.name}' {name} split has token id {self._max_id[name]} but the model's "
                                f"vocab_size is {vocab_size}; raise vocab_size or use the matching dataset")
            if len(data) <= block_size:
                raise UserError(f"block_size={block_size} is not smaller than the {name} split "
                                f"({len(data)} tokens); lower --block_size")

    def token_bytes(self, device='cpu'):
        """The UTF-8 bytes each token id decodes to (special tokens 0), a tensor on device; None when
        meta.json names no tokenizer, so bits per byte cannot be known."""
        device = str(device)
        if device not in self._bytes:
            state = self.meta.get('tokenizer')
            if not state:
                return None
            try:
                table = tokenizer.from_state(state, base_dir=self.data_dir).token_bytes(self.vocab_size)
            except tokenizer.TokenizerError as e:
                raise UserError(f"dataset '{self.name}': {e}")
            self._bytes[device] = torch.from_numpy(table).to(device)
        return self._bytes[device]

    def target_bytes(self, y):
        """The bytes that the targets y (B, T) decode to, ignoring -1; 0 when unknown."""
        table = self.token_bytes(y.device)
        if table is None:
            return 0
        return int((table[y.clamp(min=0)] * (y != -1)).sum())

    def loss_mask(self, split):
        """The split's <split>.mask.bin (one byte per token, 1 where the loss sees it) when the dataset
        has one (prepare --format=chat), else None."""
        if 'loss_mask' not in self.meta:
            return None
        if split not in self._masks:
            path = os.path.join(self.data_dir, f'{split}.mask.bin')
            n = len(self.split(split))
            if not os.path.exists(path) or os.path.getsize(path) != n:
                raise UserError(f"{path} is missing or does not hold one byte per token ({n}); rerun the dataset's "
                                f"prepare with --force")
            self._masks[split] = np.memmap(path, dtype=np.uint8, mode='r')
        return self._masks[split]

    def document_starts(self, split, block_size):
        """Window starts for document-aware batches: every document's start (its <|endoftext|>, or the
        split's first token) and, inside a document longer than a window, every block_size tokens after
        it, so no text is left out; only starts with a whole window after them."""
        key = (split, block_size)
        if key not in self._starts:
            if self.eot is None:
                raise UserError(f"dataset '{self.name}' has no <|endoftext|> between documents, so doc_aware has no "
                                f"documents to start at; prepare one with documents, e.g. python data/prepare.py "
                                f"--input=data/shakespeare_char/input.txt --name=shakespeare_speeches --tokenizer=char "
                                f"--doc_sep=blank, then --dataset=shakespeare_speeches")
            data = self.split(split)
            starts = np.union1d([0], np.flatnonzero(data == self.eot))
            ends = np.append(starts[1:], len(data))
            extra = (ends - starts - 1) // block_size  # continuation windows of long documents
            offsets = np.arange(extra.sum()) - np.repeat(np.cumsum(extra) - extra, extra) + 1
            starts = np.sort(np.concatenate([starts, np.repeat(starts, extra) + offsets * block_size]))
            starts = starts[starts + block_size < len(data)]
            if len(starts) == 0:
                raise UserError(f"no window of block_size={block_size} fits in the {split} split; lower --block_size")
            self._starts[key] = torch.from_numpy(starts.astype(np.int64))
        return self._starts[key]

    def sample_starts(self, split, n, block_size, generator, doc_aware=False):
        """n random window starts: any token (nanoGPT), or with doc_aware a document start."""
        if not doc_aware:
            return torch.randint(len(self.split(split)) - block_size, (n,), generator=generator)
        starts = self.document_starts(split, block_size)
        return starts[torch.randint(len(starts), (n,), generator=generator)]

    def get_batch(self, split, batch_size, block_size, generator, device='cpu', starts=None, doc_aware=False):
        """Random windows: x (B, T) and y, the same shifted by one, -1 where a loss mask hides a target."""
        if starts is None:
            starts = self.sample_starts(split, batch_size, block_size, generator, doc_aware)
        return to_device(*self.host_batch(split, starts, block_size, pin=device.startswith('cuda')), device)

    def host_batch(self, split, starts, block_size, pin=False):
        """The windows at starts (a CPU tensor) as CPU tensors x, y; pinned for an asynchronous copy to a GPU."""
        data = self.split(split)
        starts = starts.tolist()
        x = np.stack([data[i:i + block_size] for i in starts]).astype(np.int64)
        y = np.stack([data[i + 1:i + 1 + block_size] for i in starts]).astype(np.int64)
        mask = self.loss_mask(split)
        if mask is not None:
            y[np.stack([mask[i + 1:i + 1 + block_size] for i in starts]) == 0] = -1
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        return (x.pin_memory(), y.pin_memory()) if pin else (x, y)

    def step_batches(self, generator, accumulation, batch_size, block_size, rank=0, world_size=1, doc_aware=False,
                     pin=False):
        """train.py's batches: each step draws one global batch of windows from the sampler all ranks share, and
        this rank reads its slice, one (x, y) per micro-step, on the host; the next step's on a thread (Prefetcher)."""
        n = accumulation * batch_size
        draw = lambda: self.sample_starts('train', n * world_size, block_size, generator, doc_aware)
        build = lambda starts: [self.host_batch('train', rows, block_size, pin=pin)
                                for rows in starts[rank * n:(rank + 1) * n].split(batch_size)]
        return Prefetcher(generator, draw, build)

    def documents(self, x):
        """Each token's document number (B, T) in windows x, for the model's docs argument: a new
        document begins at every <|endoftext|>."""
        return document_ids(x, self.eot)

    def num_windows(self, split, block_size):
        return -(-(len(self.split(split)) - 1) // block_size)

    def exact_batches(self, split, batch_size, block_size, device='cpu', rank=0, world_size=1):
        """Consecutive windows that predict every token of the split after the first exactly once.
        The last window is short and its missing targets are -1 (ignored by the loss).
        Rank r of world_size takes every world_size-th batch."""
        data = self.split(split)
        n = len(data) - 1  # number of (input, target) pairs
        starts = list(range(0, n, block_size))
        batches = [starts[i:i + batch_size] for i in range(0, len(starts), batch_size)]
        for b in batches[rank::world_size]:
            x = np.zeros((len(b), block_size), dtype=np.int64)
            y = np.full((len(b), block_size), -1, dtype=np.int64)
            mask = self.loss_mask(split)
            for row, s in enumerate(b):
                length = min(block_size, n - s)
                x[row, :length] = data[s:s + length]
                y[row, :length] = data[s + 1:s + 1 + length]
                if mask is not None:
                    y[row, :length][mask[s + 1:s + 1 + length] == 0] = -1
            yield to_device(torch.from_numpy(x), torch.from_numpy(y), device)


def document_ids(x, eot):
    """(B, T) document numbers: a running count of <|endoftext|> tokens, which open each document."""
    return (x == eot).cumsum(dim=1)


def dataset_change(saved, current):
    """None when two fingerprints describe the same dataset, else a short account of what differs.
    A checksum missing on either side (a dataset too large to hash) is not compared."""
    def tok(fp):
        t = fp.get('tokenizer') or {}
        return f"{t.get('kind')} with {t.get('vocab_size')} ids"
    a, b = saved.get('tokenizer') or {}, current.get('tokenizer') or {}
    if a.get('sha256') != b.get('sha256'):
        same = tok(saved) == tok(current)
        return f"the tokenizer differs (checkpoint: {tok(saved)}, dataset: {tok(current)}{', other ids' if same else ''})"
    for name in sorted(set(saved.get('splits', {})) | set(current.get('splits', {}))):
        x, y = saved.get('splits', {}).get(name), current.get('splits', {}).get(name)
        if x is None or y is None:
            if name in ('train', 'val'):
                return f"the {name} split is {'new' if x is None else 'gone'}"
            continue
        if x['tokens'] != y['tokens']:
            return f"the {name} split differs (checkpoint: {x['tokens']:,} tokens, dataset: {y['tokens']:,})"
        if x.get('sha256') and y.get('sha256') and x['sha256'] != y['sha256']:
            return f"the {name} split's tokens differ (same count {x['tokens']:,}, other sha256)"
    return None


def to_device(x, y, device):
    if device.startswith('cuda'):
        # pinned memory lets the copy overlap with compute
        x, y = (t if t.is_pinned() else t.pin_memory() for t in (x, y))
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return x.to(device), y.to(device)


class Prefetcher:
    """build(draw()) one call ahead, on a background thread. draw (the sampler) runs on the calling thread in
    the order it would without prefetching, so the samples and their order are unchanged; build (host work:
    reading windows from the memmap, pinning them) runs while the caller's step computes. state() is the
    generator's state before the first draw not handed out yet: a checkpoint written between two calls
    resumes with the very batch that would have come next."""

    def __init__(self, generator, draw, build, enabled=True):
        self.generator, self.draw, self.build = generator, draw, build
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix='prefetch') if enabled else None
        self._ahead = None  # (generator state before the draw, future of its build)

    def next(self):
        if self._ahead is None:
            out = self.build(self.draw())
        else:
            out = self._ahead[1].result()
            self._ahead = None
        if self._pool is not None:
            state = self.generator.get_state()
            self._ahead = (state, self._pool.submit(self.build, self.draw()))
        return out

    def state(self):
        return self._ahead[0] if self._ahead is not None else self.generator.get_state()

    def set_state(self, state):
        self._ahead = None
        self.generator.set_state(state)

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
