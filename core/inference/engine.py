"""One generation engine for sample.py, its chat and serve.py.

    batch = Batch(model, rows=8, device='cpu')
    seqs = [Sequence(ids, Params(max_tokens=100, temperature=0.8), decode=tok.decode) for ids in prompts]
    for seq, delta, done in run(batch, seqs):   # text as it is read back, and whether seq has ended
        ...

Sequences of different lengths share one KV cache, a row each. Every row keeps its own position: a
prompt is prefilled from position 0 (right-padded beside the others admitted with it), and each decode
step feeds every row its last token at its own position, attending only to the slots its mask allows.
A row's tokens are therefore the ones it would get alone (tested under greedy). New sequences join a
running batch in any free row, so a server batches requests that arrive at different times.

Past block_size (the context window):
  rope, no positions   the cache slides: a token writes slot position % block_size, over the oldest key.
                       Positions enter attention only as relative angles, so the cached keys stay valid
                       as they are; each was computed with the context it had when it was made.
  learned positions    a key's absolute position is baked into it, so the cache cannot slide. When the
                       window is full, its last `keep` tokens (3/4 of it) are prefilled again at positions
                       0.. in one chunk, and decoding goes on: one chunk forward every block_size - keep
                       tokens instead of a full-window forward for every token. The trade-off: a token
                       sees between keep and block_size tokens of context instead of always block_size.
  exact_window=True    nanoGPT's behaviour for any model: once full, the whole window is recomputed for
                       every new token (keep = block_size), the same tokens as generating with no cache.

With a CompiledDecode (core/inference/decode.py), each decode step is one compiled graph over a static
cache (the whole window, rows rounded up to a bucket) with the sampler inside; prefill stays eager.

Tokens stay on the device between steps; they are read back every `sync_every` steps (1 to stream), so a
GPU is not stalled by a host sync per token. A row whose max_tokens is reached leaves at once (the host
counts); a stop token or string is seen when the tokens are read back.
"""

import contextlib
import os
import queue
import threading
from dataclasses import dataclass

import torch

from core.training import checkpoint
from core.data import tokenizer as tokenizer_lib
from core.errors import UserError
from core.inference import hugepages
from core.paths import resolve_data_dir
from model import CacheSlots, sample  # noqa: F401  (engine.sample: the one sampler, in model.py)


@dataclass
class Params:
    """How one sequence is sampled and when it ends."""
    max_tokens: int = 16
    temperature: float = 1.0  # 0 is greedy
    top_k: int = 0  # 0 keeps every token
    top_p: float = 1.0  # 1 keeps every token
    stop_ids: tuple = ()  # token ids that end the sequence (not part of its output)
    stop: tuple = ()  # strings that end the sequence (cut from its text)
    seed: int = None  # its own random stream, so its tokens do not depend on what it is batched with

    def sampling(self):
        return (self.temperature, self.top_k, self.top_p)


class Sequence:
    """A prompt and what has been generated for it; with decode, also its text, stop strings applied."""

    def __init__(self, prompt, params, decode=None):
        self.prompt, self.params, self.decode = list(prompt), params, decode
        self.out = []  # new token ids read back so far
        self.text = ''  # text handed out so far (held back: a cut multi-byte character, a stop string's start)
        self.finish_reason = None  # 'stop' or 'length'
        self.cancelled = False
        self.pos = 0  # the position of this row's next input token: tokens in its cache row
        self.dispatched = 0  # tokens sampled on the device, read back or not
        self.slot = None
        self.generator = None
        self.settled, self.settled_text = 0, ''  # see _full

    @property
    def finished(self):
        return self.finish_reason is not None

    def context(self):
        return self.prompt + self.out

    def feed(self, token):
        """Take one generated token; returns the text it releases ('' without decode)."""
        if self.finished:
            return ''
        if token in self.params.stop_ids:
            self.finish_reason = 'stop'
            return self._release(self._full())
        self.out.append(token)
        done = len(self.out) >= self.params.max_tokens
        if self.decode is None:
            if done:
                self.finish_reason = 'length'
            return ''
        full = self._full()
        stops = [s for s in self.params.stop if s]
        if stops:
            # a stop string can only start in the text not handed out yet, or just before it
            look = max(0, len(self.text) - max(map(len, stops)) + 1)
            hits = [i for i in (full.find(s, look) for s in stops) if i >= 0]
            if hits:
                self.finish_reason = 'stop'
                return self._release(full[:min(hits)])
        if done:
            self.finish_reason = 'length'
            return self._release(full)
        safe = full.rstrip('\ufffd')  # the start of a multi-byte character waits for the rest
        held = 0
        for s in stops:  # so does text that may be the start of a stop string
            for n in range(min(len(s) - 1, len(safe)), held, -1):
                if safe.endswith(s[:n]):
                    held = n
                    break
        return self._release(safe[:len(safe) - held])

    def _full(self):
        if self.decode is None:
            return ''
        # a long generation would decode all its tokens for every new one: the text of the tokens
        # before `settled` is kept, checked once to join the rest's exactly, and only the rest decoded
        tail = self.decode(self.out[self.settled:])
        if len(self.out) - self.settled > max(64, self.settled):
            whole, cut = self.decode(self.out), len(self.out) - 8
            head, rest = self.decode(self.out[:cut]), self.decode(self.out[cut:])
            if head + rest == whole:
                self.settled_text, self.settled = head, cut
            return whole
        return self.settled_text + tail

    def _release(self, text):
        if len(text) <= len(self.text) or not text.startswith(self.text):
            return ''
        delta, self.text = text[len(self.text):], text
        return delta


# A prefill pads its prompts to the longest, and a server's burst of requests is mostly padding. Prompts are
# split into groups of similar length where the padded tokens saved outweigh a forward's fixed cost, counted in
# tokens: a few on a CPU, where every token's work shows; many on a GPU, where launching a forward's kernels
# costs more than rows of padding.
PREFILL_OVERHEAD_TOKENS = {'cpu': 32, 'other': 1024}


def prefill_groups(lengths, overhead):
    """The indices of lengths split into groups, each prefilled as one forward padded to its longest: the split
    with the fewest padded tokens plus overhead per forward (shortest group first)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    cost, cut = [0] + [float('inf')] * len(order), [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):  # cost[j]: the best split of the j shortest; cut[j]: where its last group starts
        for i in range(j):
            c = cost[i] + (j - i) * lengths[order[j - 1]] + overhead
            if c < cost[j]:
                cost[j], cut[j] = c, i
    groups, j = [], len(order)
    while j:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def cache_dtype(model, device):
    device_type = torch.device(device).type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return next(model.parameters()).dtype


def check_rows_fit(cfg, rows, device, dtype):
    """Stop in one line before a batch whose KV cache (every row holds the whole window) and logits do not fit
    (serve.py --max_batch, bench.py --sample_batch): the allocation would fail with a traceback, or, just under what
    the system lets a process reserve, the process would be killed without a word."""
    from core.training.planner import device_budget
    from core.units import format_bytes
    per_row = 2 * cfg.n_layer * (cfg.block_size + 1) * cfg.n_embd * dtype.itemsize + 3 * 4 * cfg.vocab_size
    need, have = rows * per_row, device_budget(str(device))
    if have is not None and need > have:
        raise UserError(f"generating {rows:,} rows together needs about {format_bytes(need)} for their KV cache, and "
                        f"{format_bytes(have)} is available on {device}; ask for fewer rows (serve.py --max_batch, "
                        f"bench.py --sample_batch)")


class Batch:
    """The rows of one KV cache, a sequence in each, generated together (see the module's docstring).

    forward: what runs the model, e.g. torch.compile(model); static: every decode step has the same
    shapes (all rows, the whole window), which a compiled forward wants; n_vocab: the tokenizer's size,
    so padded embedding rows are never sampled; generator: the random stream of rows without a seed.
    compiled: a CompiledDecode (core/inference/decode.py) that runs each decode step instead, over the
    smallest of buckets (row counts, default all rows) that holds every row in use; greedy_graphs: a
    greedy step gets its own graph (argmax only), else one graph per bucket serves every setting."""

    def __init__(self, model, rows, device, exact_window=False, keep=None, forward=None, n_vocab=None,
                 generator=None, static=False, compiled=None, buckets=None, greedy_graphs=True):
        cfg = model.config
        self.model, self.rows, self.device, self.L = model, rows, device, cfg.block_size
        self.forward = model if forward is None else forward
        self.ring = cfg.pos_encoding != 'learned' and not exact_window
        self.keep = self.L if exact_window else (keep or max(1, 3 * self.L // 4))
        self.n_vocab = n_vocab or cfg.vocab_size
        self.generator, self.static = generator, static
        dtype = cache_dtype(model, device)
        check_rows_fit(cfg, rows, device, dtype)
        self.caches = model.new_caches(rows, device, dtype)
        # every step reads every weight and the filled cache: on huge pages, fewer TLB misses (a CPU's)
        hugepages.advise(hugepages.tensor_ranges([*model.parameters(), *model.buffers(),
                                                  *(t for c in self.caches for t in (c.k, c.v))]))
        if self.ring and cfg.pos_encoding == 'rope':
            # grow the rope tables now, so a compiled forward does not meet a buffer that changes size
            model._rope(slice(0, 1), self.L + 16384, torch.float32)
        self.seqs = [None] * rows
        self.pos = torch.zeros(rows, dtype=torch.long, device=device)  # each row's next input position
        self.last = torch.zeros(rows, dtype=torch.long, device=device)  # each row's next input token
        self.live = torch.zeros(rows, dtype=torch.bool, device=device)  # rows the decode step advances
        self.temperature = torch.ones(rows, device=device)
        self.top_k = torch.zeros(rows, dtype=torch.long, device=device)
        self.top_p = torch.ones(rows, device=device)
        self.compiled, self.greedy_graphs = compiled, greedy_graphs
        self.buckets = sorted({b for b in (buckets or ()) if 0 < b < rows} | {rows})
        self.bucket_caches = {}

    def active(self):
        return [s for s in self.seqs if s is not None]

    def free(self):
        return self.seqs.count(None)

    def add(self, seqs):
        """Prefill seqs into free rows; returns the events (first tokens on the device, their seqs)."""
        slots = [i for i, s in enumerate(self.seqs) if s is None][:len(seqs)]
        if len(slots) < len(seqs):
            raise ValueError(f"{len(seqs)} sequences but only {len(slots)} free rows")
        for slot, seq in zip(slots, seqs):
            self.seqs[slot], seq.slot = seq, slot
            t, k, p = seq.params.sampling()
            self.temperature[slot], self.top_k[slot], self.top_p[slot] = t, k, p
            if seq.params.seed is not None and seq.generator is None:
                seq.generator = torch.Generator(device=self.device).manual_seed(seq.params.seed)
        windows = [s.context()[-self.L:] for s in seqs]
        overhead = PREFILL_OVERHEAD_TOKENS['cpu' if torch.device(self.device).type == 'cpu' else 'other']
        return [self._prefill([seqs[i] for i in group], [windows[i] for i in group])
                for group in prefill_groups([len(w) for w in windows], overhead)]

    def release(self, seq):
        if seq.slot is not None and self.seqs[seq.slot] is seq:
            self.seqs[seq.slot] = None
            self.live[seq.slot] = False
        seq.slot = None

    def needs_context(self):
        """True when the next step refills a full window, which needs every row's tokens on the host."""
        return not self.ring and any(s.pos >= self.L for s in self.active())

    def step(self):
        """One new token for every row in use; returns events (tokens on the device, row -> sequence)."""
        events = []
        full = [s for s in self.active() if not self.ring and s.pos >= self.L]
        going = [s for s in self.active() if self.ring or s.pos < self.L]
        if full:
            self.live[torch.tensor([s.slot for s in full], device=self.device)] = False
        if going and self.compiled is not None:
            tokens = self._compiled_step(going)
            if tokens is not None:
                rows = self.seqs[:tokens.size(0)]
                events.append((tokens, [s if s in going else None for s in rows]))
                going = []
        if going:
            hi = self.rows if self.static else max(s.slot for s in going) + 1
            end = max(s.pos for s in going) + 1
            length = self.L if self.static else min(self.L, end)
            live = self.live[:hi]
            # rows sitting this step out read position 0 and write the spare slot no one attends to
            pos = torch.where(live, self.pos[:hi], 0)
            slot = torch.where(live, pos % self.L, self.L)
            j = torch.arange(length, device=self.device)
            mask = (j <= pos[:, None]) | (pos[:, None] >= self.L)  # once a sliding row is full it sees every slot
            step = CacheSlots(pos=pos, slot=slot, length=length, mask=mask[:, None, None, :], end=end)
            logits, _ = self.forward(self.last[:hi, None], caches=self.caches, pos=step)
            rows = self.seqs[:hi]
            tokens = self._sample(logits[:, -1], slice(0, hi), rows)
            self.last[:hi] = torch.where(live, tokens, self.last[:hi])
            self.pos[:hi] += live
            for s in going:
                s.pos += 1
            events.append((tokens, [s if s in going else None for s in rows]))
        if full:
            events.append(self._prefill(full, [s.context()[-self.keep:] for s in full]))  # one length: one group
        return events

    def _compiled_step(self, going):
        hi = next(b for b in self.buckets if b > max(s.slot for s in going))
        end = max(s.pos for s in going) + 1
        if self.ring and self.model.config.pos_encoding == 'rope' and end > self.model.rope_cos.size(0):
            self.model._rope(slice(0, 1), end, torch.float32)  # grow the tables (doubling): a recompile each time
        state = self._bucket(hi)
        present = [s for s in self.seqs[:hi] if s is not None]
        greedy = self.greedy_graphs and all(s.params.temperature == 0 for s in present)
        noise = None
        if not greedy:
            noise = torch.empty(hi, self.n_vocab, device=self.device).exponential_(generator=self.generator)
            for s in present:
                if s.generator is not None:  # its own stream, so its tokens do not depend on its neighbours
                    noise[s.slot] = torch.empty(self.n_vocab, device=self.device).exponential_(generator=s.generator)
        # the slots filled so far (at least 2, a size dynamic shapes do not special-case), all once a row slides
        length = self.L if any(s.pos >= self.L for s in going) else min(self.L, max(2, end))
        tokens = self.compiled(self.model, *state, noise, self.n_vocab, greedy, length)
        if tokens is not None:
            for s in going:
                s.pos += 1
        return tokens

    def _bucket(self, hi):
        """The first hi rows of the cache and of the per-row state, as the same view objects every step
        (a CUDA graph replays on fixed addresses)."""
        if hi not in self.bucket_caches:
            caches = [c.first_rows(hi) for c in self.caches]
            state = [self.last[:hi], self.pos[:hi], self.live[:hi], self.temperature[:hi], self.top_k[:hi], self.top_p[:hi]]
            self.compiled.mark_static([t for c in caches for t in (c.k, c.v)] + state)
            self.bucket_caches[hi] = (caches, *state)
        return self.bucket_caches[hi]

    def compile_all(self):
        """Compile the decode step of every bucket now (a server's start), with every row sitting out."""
        for hi in self.buckets:
            noise = torch.ones(hi, self.n_vocab, device=self.device)
            if self.compiled(self.model, *self._bucket(hi), noise, self.n_vocab, False, self.L) is None:
                return

    def _prefill(self, seqs, windows):
        lens = [len(w) for w in windows]
        if min(lens) == 0:
            raise ValueError("cannot prefill an empty prompt")
        T = max(lens)
        idx = torch.tensor([w + [0] * (T - len(w)) for w in windows], dtype=torch.long, device=self.device)
        rows = torch.tensor([s.slot for s in seqs], dtype=torch.long, device=self.device)
        last = torch.tensor([n - 1 for n in lens], dtype=torch.long, device=self.device)
        logits, _ = self.forward(idx, caches=self.caches, pos=CacheSlots(rows=rows), last=last)
        tokens = self._sample(logits[:, -1], rows, seqs)
        self.pos[rows] = torch.tensor(lens, dtype=torch.long, device=self.device)
        self.last[rows] = tokens
        self.live[rows] = True
        for s, n in zip(seqs, lens):
            s.pos = n
        return tokens, list(seqs)

    def _sample(self, logits, index, seqs):
        present = [s for s in seqs if s is not None]
        settings = {s.params.sampling() for s in present}
        if len(settings) == 1:  # one setting for all (sample.py): the cheaper scalar path
            t, k, p = settings.pop()
            tokens = sample(logits, t, k, p, self.generator, self.n_vocab)
        else:
            tokens = sample(logits, self.temperature[index], self.top_k[index], self.top_p[index],
                            self.generator, self.n_vocab)
        for i, s in enumerate(seqs):
            if s is not None and s.generator is not None:
                t, k, p = s.params.sampling()
                tokens[i] = sample(logits[i:i + 1], t, k, p, s.generator, self.n_vocab)[0]
        return tokens


class Runner:
    """Admits waiting sequences into free rows, steps the batch and reads tokens back."""

    def __init__(self, batch, sync_every=1):
        self.batch, self.sync_every = batch, sync_every
        self.waiting, self.pending = [], []

    def submit(self, seq):
        self.waiting.append(seq)

    def busy(self):
        return bool(self.waiting or self.pending or self.batch.active())

    def tick(self):
        """One step; returns (sequence, new text, ended) for every token read back."""
        b = self.batch
        for s in b.active():
            if s.cancelled or s.finished:
                b.release(s)
        self.waiting = [s for s in self.waiting if not s.cancelled]
        out = []
        if self.waiting and b.free():
            admit, self.waiting = self.waiting[:b.free()], self.waiting[b.free():]
            for event in b.add(admit):
                self._dispatched(event)
        if b.needs_context():
            out += self.flush()
        if b.active():
            for event in b.step():
                self._dispatched(event)
        if len(self.pending) >= self.sync_every or not b.active():
            out += self.flush()
        return out

    def _dispatched(self, event):
        self.pending.append(event)
        for s in event[1]:
            if s is not None:
                s.dispatched += 1
                if s.dispatched >= s.params.max_tokens:
                    self.batch.release(s)  # its last token is sampled: no more steps for it

    def flush(self):
        if not self.pending:
            return []
        tokens = torch.cat([t for t, _ in self.pending]).tolist()  # one device-to-host copy
        seqs = [s for _, row in self.pending for s in row]
        self.pending = []
        out = []
        for s, tok in zip(seqs, tokens):
            if s is None or s.finished or s.cancelled:
                continue
            delta = s.feed(tok)
            out.append((s, delta, s.finished))
            if s.finished:
                self.batch.release(s)
        return out


def run(batch, seqs, sync_every=1):
    """Generate every sequence to its end (more than the batch's rows wait for free ones);
    yields (sequence, new text, ended) as tokens are read back."""
    runner = Runner(batch, sync_every)
    for s in seqs:
        if s.params.max_tokens <= 0:  # nothing to generate: it ends as it is
            s.finish_reason = 'length'
        else:
            runner.submit(s)
    while runner.busy():
        yield from runner.tick()


class Engine:
    """A Runner in a background thread, for a server: submit() from any thread; each sequence's
    callback(kind, value) gets ('delta', text) and finally ('done', finish_reason) or ('error', message)
    on the engine's thread. Requests arriving while others generate join the running batch."""

    def __init__(self, batch, context=None):
        self.runner = Runner(batch, sync_every=1)
        self.context = context or contextlib.nullcontext  # e.g. autocast, which is per thread
        self.inbox = queue.Queue()
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, name='engine', daemon=True)
        self.thread.start()

    def submit(self, seq, callback):
        seq.callback = callback
        self.inbox.put(seq)

    def stop(self):
        self.stopped = True
        self.inbox.put(None)
        self.thread.join(timeout=5)

    def _loop(self):
        while not self.stopped:
            try:
                # idle: sleep until a request comes; busy: take whatever has arrived and go on
                seq = self.inbox.get(timeout=None if not self.runner.busy() else 0)
                while seq is not None:
                    self.runner.submit(seq)
                    seq = self.inbox.get_nowait()
            except queue.Empty:
                pass
            if self.stopped:
                return
            try:
                with torch.no_grad(), self.context():
                    events = self.runner.tick()
            except Exception as e:  # our bug: fail the requests in flight, keep serving the next ones
                self._fail_all(f"generation failed: {type(e).__name__}: {e}")
                continue
            for s, delta, ended in events:
                if delta:
                    s.callback('delta', delta)
                if ended:
                    s.callback('done', s.finish_reason)

    def _fail_all(self, message):
        b = self.runner.batch
        seqs = b.active() + self.runner.waiting + [s for _, row in self.runner.pending for s in row if s is not None]
        self.runner.waiting, self.runner.pending = [], []
        for s in dict.fromkeys(seqs):
            b.release(s)
            if not s.finished and not s.cancelled:
                s.finish_reason = 'error'
                s.callback('error', message)


@torch.no_grad()
def generate_tensor(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_token=None,
                    use_cache=True, generator=None, exact_window=False, n_vocab=None):
    """The engine's generation as one tensor: idx (B, T) continued by up to max_new_tokens; a row that stops
    is padded with stop_token (which it ends with) up to the longest row."""
    if max_new_tokens <= 0:
        return idx
    if not use_cache:
        # nanoGPT's loop, a full forward of the last block_size tokens for every new token: model.generate's
        return model.generate(idx, max_new_tokens, temperature, top_k, top_p, stop_token, use_cache=False,
                              generator=generator, n_vocab=n_vocab)
    params = Params(max_tokens=max_new_tokens, temperature=temperature, top_k=top_k or 0,
                    top_p=1.0 if top_p is None else top_p, stop_ids=() if stop_token is None else (stop_token,))
    batch = Batch(model, idx.size(0), idx.device, exact_window=exact_window, n_vocab=n_vocab,
                  generator=generator)
    seqs = [Sequence(row, params) for row in idx.tolist()]
    for _ in run(batch, seqs, sync_every=16):
        pass
    rows = [s.out + ([stop_token] if s.finish_reason == 'stop' else []) for s in seqs]
    n = max(map(len, rows))
    new = torch.tensor([r + [stop_token] * (n - len(r)) for r in rows], dtype=torch.long, device=idx.device)
    return torch.cat([idx, new], dim=1)


def latest_run(root='.'):
    """The folder under root (two levels deep at most) whose checkpoint was written last."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = os.path.relpath(dirpath, root).count(os.sep) + (dirpath != root)
        if depth >= 2:
            dirnames[:] = []
        dirnames[:] = [d for d in dirnames if not d.startswith('.') and d not in ('data', '__pycache__', 'wandb')]
        for name in ('ckpt.pt', 'best.pt'):
            if name in filenames:
                try:
                    found.append((os.path.getmtime(os.path.join(dirpath, name)), dirpath))
                except OSError:  # a link to a file that is gone (a disk not mounted), or one deleted since the walk
                    pass
    if not found:
        raise UserError("no checkpoint found under the current folder; train one (python train.py ...) "
                        "or pass --out_dir=... or --init_from=gpt2")
    return max(found)[1]


def load(init_from='resume', out_dir='', ckpt='best', dataset='', say=print):
    """(model on the CPU in eval mode, its tokenizer, a name for it) for sample.py and serve.py.
    init_from: 'resume' (a checkpoint in out_dir; '' the newest run under the current folder),
    gpt2* or hf:<folder> (its tokenizer files; a char model's folder has none, so give --dataset).
    dataset, when given, must use the tokenizer the model was trained with."""

    def dataset_tokenizer(name):
        try:
            return tokenizer_lib.load(resolve_data_dir(name))
        except tokenizer_lib.TokenizerError as e:
            raise UserError(f"dataset '{name}': {e}") from None

    if init_from == 'resume':
        if not out_dir:
            out_dir = latest_run()
            say(f"using {out_dir} (the most recently written run; pass --out_dir to choose)")
        path = checkpoint.resolve(out_dir, ckpt)
        model, state = checkpoint.load_model(path)
        # ours carry their tokenizer; nanoGPT's name a dataset whose meta.pkl (or ours, or GPT-2's BPE) has it
        tok, tok_from = checkpoint.load_tokenizer(state, path, dataset)
        if state.get('nanogpt'):
            say(f"a nanoGPT checkpoint: tokenizer from {tok_from}")
        check_dataset = bool(dataset and state.get('tokenizer'))
        trained_on = state.get('dataset') or (state.get('config') or {}).get('dataset', '?')
        say(f"loaded {path} (iteration {state.get('iter_num')}, best val loss "
            f"{state.get('best_val_loss', float('nan')):.4f})")
        name = os.path.basename(os.path.normpath(out_dir)) or out_dir
    elif init_from.startswith('gpt2') or init_from.startswith('hf:'):
        from core.interop import hf
        model = hf.from_pretrained(init_from, dropout=0.0)
        tok = tokenizer_lib.gpt2()
        if init_from.startswith('hf:'):
            folder = os.path.expanduser(init_from[3:])
            tok = dataset_tokenizer(dataset) if dataset else hf.folder_tokenizer(folder)
            if tok is None:
                raise UserError(f"{folder} has no tokenizer files; pass --dataset=NAME of the dataset it was trained on")
        trained_on = name = init_from
        check_dataset = False
    else:
        raise UserError(f"init_from must be resume, gpt2[-medium|-large|-xl] or hf:<folder>, got '{init_from}'")
    if tok.vocab_size > model.config.vocab_size:
        raise UserError(f"the tokenizer has {tok.vocab_size} tokens but the model only {model.config.vocab_size}")
    if check_dataset:  # a tokenizer saved in the checkpoint must be the dataset's
        other = dataset_tokenizer(dataset)
        if other.state() != tok.state():
            raise UserError(f"the checkpoint was trained on '{trained_on}' ({tok.kind}, {tok.vocab_size} tokens); "
                            f"dataset '{dataset}' uses another tokenizer ({other.kind}, {other.vocab_size} tokens)")
    model.eval()
    return model, tok, name

