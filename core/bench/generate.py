"""bench.py --sample=True: generation through core/inference/engine.py, timed.

The KV cache against nanoGPT's uncached loop (greedy; past the window also the exact-window mode, which
must equal it), the compiled decode step when it is on (its compile time apart), the time to the first
token, memory-bandwidth utilisation (the bytes of weights and KV cache one decode step reads, per second,
over the bandwidth this device reads a large tensor at, as nanochat's inference bench reports it), and
sample_batch samples in one batch against the same samples one after another.
"""

import time

import torch

from core import hardware
from core.inference import precision
from core.inference.decode import CompiledDecode
from core.inference.engine import Batch, Params, Runner, Sequence, check_rows_fit, generate_tensor
from core.inference.setup import decide_compile
from model import GPT


def read_bandwidth(device, mib=256, repeats=5):
    """Bytes per second this device reads a large tensor at (the best of a few sums), the ceiling a
    decode step that reads its weights once is measured against."""
    x = torch.ones(mib * 2 ** 18, dtype=torch.float32, device=device)
    best = float('inf')
    for _ in range(repeats):
        hardware.synchronize(device)
        t0 = time.perf_counter()
        x.sum()
        hardware.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best


def bytes_per_step(model, rows, attended):
    """Bytes one decode step reads: every weight once (a lookup table only its rows, unless it is also
    the head) and, per layer, the keys and values of `attended` slots in each of `rows` rows."""
    head = model.lm_head.weight
    tables = [m.weight for m in (model.transformer.wte, getattr(model.transformer, 'wpe', None),
                                 getattr(model.transformer, 'vte', None)) if m is not None and m.weight is not head]
    buffers = [b for name, b in model.named_buffers() if not name.startswith('rope')]  # int8 weights, not tables
    tensors = {id(t): t for t in list(model.parameters()) + buffers}
    weights = sum(t.numel() * t.element_size() for i, t in tensors.items() if all(i != id(x) for x in tables))
    weights += sum(rows * t.size(1) * t.element_size() for t in tables)
    cache = model.new_caches(1, 'meta', next(model.parameters()).dtype)[0].k
    cfg = model.config
    kv = cfg.n_layer * 2 * rows * attended * cfg.n_embd * cache.element_size()
    return weights + kv


def greedy_run(model, prompt, n, compiled=None):
    """(seconds, seconds to the first token, tokens) of one greedy sequence through the engine: the first
    token read back at once, the rest every 16 steps as sample.py does."""
    device = str(next(model.parameters()).device)
    seq = Sequence(prompt, Params(max_tokens=n, temperature=0))
    runner = Runner(Batch(model, 1, device, compiled=compiled), sync_every=1)
    runner.submit(seq)
    t0 = time.perf_counter()
    first = None
    with torch.no_grad():
        while runner.busy():
            if runner.tick() and first is None:
                first, runner.sync_every = time.perf_counter() - t0, 16
    hardware.synchronize(device)
    return time.perf_counter() - t0, first, seq.out


def run_sample(cfg, dev, tokens, batch_size, seed, dtype='auto', compile='auto', say=print):
    """The figures (a dict) and whether the exact paths agreed token for token."""
    dtype = precision.pick(dtype, dev)
    check_rows_fit(cfg, batch_size, dev, torch.float32)  # the batch timed last, checked before the first timing
    use_compile, why = decide_compile(compile, dev, tokens)  # the compiled figure is one row's
    torch.manual_seed(seed)
    m = precision.convert(GPT(cfg).eval(), dtype).to(dev)
    prompt = torch.randint(0, cfg.vocab_size, (1, 1), device=dev)
    say(f"{m.get_num_params(False) / 1e6:.2f}M parameters, weights in {dtype}, on {dev}, "
        f"{torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)}")

    def timed(fn):
        hardware.synchronize(dev)
        t0 = time.perf_counter()
        out = fn()
        hardware.synchronize(dev)
        return time.perf_counter() - t0, out

    with torch.no_grad():
        generate_tensor(m, prompt, 8, temperature=0)  # warm-up
    N = tokens
    dt_cached, first, cached_ids = greedy_run(m, prompt[0].tolist(), N)
    cached = torch.cat([prompt, torch.tensor([cached_ids], device=dev)], dim=1)
    dt_uncached, uncached = timed(lambda: generate_tensor(m, prompt, N, temperature=0, use_cache=False))
    past = N + 1 > cfg.block_size
    bandwidth = read_bandwidth(dev)
    # an eager step attends to the slots filled so far: on average half the tokens, up to the window
    eager_bytes = bytes_per_step(m, 1, min(cfg.block_size, (N + 1) // 2 + 1))
    say(f"greedy, {N} new tokens from a 1-token prompt (block_size {cfg.block_size}, {cfg.pos_encoding} positions); "
        f"this device reads {bandwidth / 1e9:.1f} GB/s:")
    say(f"  KV cache   {N / dt_cached:10,.1f} tokens/s  first token {first * 1000:.1f} ms, "
        f"{eager_bytes * N / dt_cached / bandwidth:.0%} of the read bandwidth")
    say(f"  uncached   {N / dt_uncached:10,.1f} tokens/s  (nanoGPT: a full forward of the window for every token)")
    figures = dict(dtype=dtype, cached_tokens_per_sec=N / dt_cached, uncached_tokens_per_sec=N / dt_uncached,
                   speedup=dt_uncached / dt_cached, first_token_ms=first * 1000, read_bandwidth_gbs=bandwidth / 1e9,
                   bandwidth_utilisation=eager_bytes * N / dt_cached / bandwidth)
    if use_compile:
        compiled = CompiledDecode(say=lambda line: None)
        dt_compile, _ = timed(lambda: greedy_run(m, prompt[0].tolist(), 2, compiled))
        if compiled.failed:
            say(f"  compiled   failed ({compiled.failed})")
        else:
            dt_c, first_c, ids_c = greedy_run(m, prompt[0].tolist(), N, compiled)
            static_bytes = bytes_per_step(m, 1, cfg.block_size + 1)  # the static step attends over the whole cache
            say(f"  compiled   {N / dt_c:10,.1f} tokens/s  first token {first_c * 1000:.1f} ms, "
                f"{static_bytes * N / dt_c / bandwidth:.0%} of the read bandwidth; compiling took {dt_compile:.1f}s; "
                f"tokens as the KV cache's: {ids_c == cached_ids}")
            figures.update(compiled_tokens_per_sec=N / dt_c, compiled_first_token_ms=first_c * 1000,
                           compile_seconds=dt_compile, compiled_bandwidth_utilisation=static_bytes * N / dt_c / bandwidth,
                           compiled_identical=ids_c == cached_ids)
    else:
        say(f"  compiled   not run ({why})")
    if past:
        dt_exact, exact = timed(lambda: generate_tensor(m, prompt, N, temperature=0, exact_window=True))
        same = torch.equal(exact, uncached)
        figures.update(exact_window_tokens_per_sec=N / dt_exact, exact_window_speedup=dt_uncached / dt_exact)
        say(f"  exact      {N / dt_exact:10,.1f} tokens/s  (exact_window=True: the cache until the window is full, "
            f"then nanoGPT's recompute)")
        kind = 'slides' if cfg.pos_encoding != 'learned' else 'refills its last 3/4 in one chunk when full'
        say(f"  speedup {dt_uncached / dt_cached:.1f}x (the window {kind}; its tokens differ from nanoGPT's past "
            f"block_size by design), exact_window {dt_uncached / dt_exact:.1f}x and identical to uncached: {same}")
    else:
        same = torch.equal(cached, uncached)
        say(f"  speedup {dt_uncached / dt_cached:.1f}x, outputs identical token for token: {same}")
    figures['identical'] = same
    if batch_size > 1:
        B = batch_size
        prompts = torch.randint(0, cfg.vocab_size, (B, 1), device=dev)
        kw = dict(temperature=0.8, top_k=200)
        gen = lambda: torch.Generator(device=dev).manual_seed(seed)  # noqa: E731
        dt_batch, _ = timed(lambda: generate_tensor(m, prompts, N, generator=gen(), **kw))
        dt_one = sum(timed(lambda: generate_tensor(m, prompts[i:i + 1], N, generator=gen(), **kw))[0] for i in range(B))
        say(f"{B} samples of {N} tokens (temperature 0.8, top_k 200):")
        say(f"  one batch        {B * N / dt_batch:10,.1f} tokens/s")
        say(f"  one at a time    {B * N / dt_one:10,.1f} tokens/s")
        say(f"  batched throughput {dt_one / dt_batch:.1f}x")
        figures.update(batch=B, batched_tokens_per_sec=B * N / dt_batch, sequential_tokens_per_sec=B * N / dt_one,
                       batch_speedup=dt_one / dt_batch)
    return figures, same
