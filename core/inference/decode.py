"""The decode step compiled once and reused, as gpt-fast does it.

A decode step (every row's last token through the model at its own position, then the sampler) always
has the same shapes when the KV cache is static: rows x (block_size + 1) slots, every slot attended
under a mask. torch.compile turns it into one graph per rows bucket and sampling kind, reused for every
token, so a token no longer pays Python and op dispatch per layer. Prefill (a prompt, or a learned-
position refill) stays eager: its length changes with every prompt. A one-row step on a CPU is built
ahead of time instead (torch.export, then AOTInductor), so a token pays no Python between the engine
and the kernels.

core/inference/engine.py's Batch calls it; sample.py, its chat and serve.py get one from setup.py.
"""

import contextlib
import hashlib
import os
import shutil
import tempfile
import time

import torch

from core import fileio
from core.inference import hugepages
from core.units import format_bytes
from model import CacheSlots, KVCache, sample


def decode_step(model, caches, last, pos, live, temperature, top_k, top_p, noise, n_vocab, greedy, seen):
    """The next token of every row (rows = last.size(0)); last and pos advance in place for live rows.
    Rows sitting the step out read position 0 and write the spare slot no one attends to. greedy: every
    row has temperature 0 (argmax only); else the per-row settings, with noise the Exp(1) draws.
    seen: arange(slots attended), a dynamic size, so one graph serves every length of the filled cache."""
    L = model.config.block_size
    at = torch.where(live, pos, 0)
    slot = torch.where(live, at % L, L)
    length = seen.size(0)
    # a row sees the slots up to its position; once a sliding row is full it sees every slot
    mask = (seen <= at[:, None]) | (at[:, None] >= L)
    step = CacheSlots(pos=at, slot=slot, length=length, mask=mask[:, None, None, :])
    logits, _ = model(last[:, None], caches=caches, pos=step)
    if greedy:
        tokens = sample(logits[:, -1], 0, n_vocab=n_vocab)
    else:
        tokens = sample(logits[:, -1], temperature, top_k, top_p, n_vocab=n_vocab, noise=noise)
    last.copy_(torch.where(live, tokens, last))
    pos.add_(live.long())
    return tokens


# the inductor settings of a one-row graph on a CPU (see CompiledDecode.compiling)
ONE_ROW_CPU = dict(freezing=True, max_autotune=True, max_autotune_gemm_backends='CPP')
# an AOTInductor build writes the weights into its library on disk, and pays most where a token is mostly
# overhead: larger models (GPT-2 medium and up in fp32) keep torch.compile's graph
AHEAD_OF_TIME_MAX_BYTES = 1 << 30
# built steps kept for the next run, the most recently used first: each holds its model's weights
KEEP_BUILT_STEPS = 2


def built_steps_folder():
    """Where built one-row steps are kept between runs: a folder of inductor's cache (TORCHINDUCTOR_CACHE_DIR)."""
    from torch._inductor.runtime.runtime_utils import cache_dir
    return os.path.join(cache_dir(), 'nanogpt-decode')


def build_key(model, inputs, settings):
    """A hash of everything a built step depends on: torch, this CPU, the threads (its kernels are built for as many
    as torch uses now), the code that traces it (model.py and this file), the settings, the inputs' shapes and every
    weight and buffer, byte for byte."""
    import model as model_module
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((torch.__version__, torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(),
                   sorted(settings.items()))).encode())
    for path in (model_module.__file__, __file__):
        with open(path, 'rb') as f:
            h.update(f.read())
    tensors = [t for t in torch.utils._pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor)]
    h.update(repr([(tuple(t.shape), t.dtype) for t in tensors]).encode())
    # parameters and every buffer (state_dict leaves out the rope tables), each once
    for name, t in {**dict(model.named_parameters()), **dict(model.named_buffers())}.items():
        h.update(repr((name, tuple(t.shape), t.dtype)).encode())
        h.update(t.detach().contiguous().view(-1).view(torch.uint8).cpu().numpy())
    return h.hexdigest()


def keep_built_step(path, kept):
    """Copy a built step to kept (in built_steps_folder), and delete the least recently used there beyond
    KEEP_BUILT_STEPS. A folder that cannot be written keeps nothing: the step is built again next time."""
    folder = os.path.dirname(kept)
    try:
        fileio.write_with(kept, lambda tmp: shutil.copyfile(path, tmp))
        built = sorted((e for e in os.scandir(folder) if e.name.startswith('step-') and e.name.endswith('.pt2')),
                       key=lambda e: e.stat().st_mtime, reverse=True)
        for old in built[KEEP_BUILT_STEPS:]:
            os.remove(old.path)
    except OSError:  # another process pruned it first, or the folder is read-only
        pass


def runner_inputs(caches, state):
    """An AOTInductor runner's inputs, flat as torch.export saw them: every layer's keys, then its values, then
    the step's other tensors (noise only when sampling)."""
    return [c.k for c in caches] + [c.v for c in caches] + [t for t in state if t is not None]


@contextlib.contextmanager
def inductor_files_in(folder):
    """Inductor's cache folder moved to folder for a while: an AOTInductor build leaves its library there,
    the weights inside it, and would otherwise leave one of the model's size in the shared cache at every build."""
    before = os.environ.get('TORCHINDUCTOR_CACHE_DIR')
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = folder
    try:
        yield
    finally:
        if before is None:
            del os.environ['TORCHINDUCTOR_CACHE_DIR']
        else:
            os.environ['TORCHINDUCTOR_CACHE_DIR'] = before


class ExportedStep(torch.nn.Module):
    """decode_step over plain tensors, as torch.export takes it: each layer's cache as its keys and values."""

    def __init__(self, model, n_vocab, greedy):
        super().__init__()
        self.model, self.n_vocab, self.greedy = model, n_vocab, greedy

    def forward(self, keys, values, last, pos, live, temperature, top_k, top_p, noise, seen):
        caches = []
        for k, v in zip(keys, values):
            cache = KVCache.__new__(KVCache)  # the engine's own tensors: the step writes into them in place
            cache.k, cache.v = k, v
            caches.append(cache)
        return decode_step(self.model, caches, last, pos, live, temperature, top_k, top_p, noise, self.n_vocab,
                           self.greedy, seen)


class CompiledDecode:
    """decode_step under torch.compile, one graph per (rows, greedy). cuda_graphs: on a GPU, replay each
    graph as a CUDA graph (torch.compile's 'reduce-overhead'), so a token costs one launch. A one-row graph
    on a CPU is built ahead of time (see ahead_of_time). A graph that fails to compile is reported in one line
    and the caller generates eagerly from then on. A one-row graph on a CPU holds the weights as constants
    (see compiling): a model changed after its first compiled step needs a new CompiledDecode."""

    def __init__(self, say=print, cuda_graphs=False, backend='inductor'):
        self.say, self.cuda_graphs, self.inductor = say, cuda_graphs, backend == 'inductor'
        options = {'triton.cudagraphs': bool(cuda_graphs)} if self.inductor else None
        self.fn = torch.compile(decode_step, backend=backend, options=options)
        self.compile_seconds = {}  # (rows, greedy) -> seconds its first call took
        self.failed = None  # the reason, once a compile failed
        self.graphs = set()
        self.runners = {}  # graph -> the AOTInductor runner of a graph built ahead of time
        self.seen = {}  # (slots attended, the most when dynamic, device) -> their arange, made once, not every step
        # every model a graph was compiled for: its weights may be that graph's constants (see compiling), and
        # a model kept alive keeps its id, which tells the graphs apart, from going to another model
        self.models = {}
        # one graph per bucket and sampling kind, for every model in the process: more than torch's default 8
        import torch._dynamo.config as dynamo_config
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)

    def one_row_cpu(self, device, rows):
        return self.inductor and not self.cuda_graphs and device.type == 'cpu' and rows == 1

    def compiling(self, device, rows):
        """The inductor settings a graph compiles under, set around the calls that compile (torch.compile's
        options= leaves freezing off in torch 2.13: the linear layers stayed addmm on weights read as inputs).
        On a CPU, for one row (batch-1 generation, which reads every weight per token): freezing (the weights
        become constants of the graph, prepacked once), inductor's own C++ GEMM kernels on them (max_autotune
        with its CPP backend: at one row its autotuner timed them faster than MKL's fp32 and oneDNN's bf16
        kernels for every layer) and the graph's wrapper in C++ (cpp_wrapper). Graphs of more rows compile as
        before: serve.py's load test did not show these paying there (docs/results.md)."""
        if not self.one_row_cpu(device, rows):
            return contextlib.nullcontext()
        import torch._inductor.config as inductor_config
        return inductor_config.patch(**ONE_ROW_CPU, cpp_wrapper=True)

    def ahead_of_time(self, model, n_vocab, greedy, inputs, dynamic):
        """The one-row step on a CPU built by AOTInductor with compiling's settings: torch.export traces it,
        inductor writes it as a C++ library with its own runner, and a token then calls that runner with the
        step's tensors, skipping dynamo's frame and AOTAutograd's and inductor's Python wrappers, most of a
        small model's time per token. The library is kept (built_steps_folder) and loaded by the next run of the
        same model and code. Returns (the runner, how it came), or (None, why) when it was not built (the step
        is then compiled by torch.compile as other graphs are)."""
        weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        if weights > AHEAD_OF_TIME_MAX_BYTES:
            return None, (f"not built ahead of time: its weights are {format_bytes(weights)}, over "
                          f"{format_bytes(AHEAD_OF_TIME_MAX_BYTES)}")
        n = len(inputs[0])
        attended = {0: torch.export.Dim('attended', min=2, max=model.config.block_size)} if dynamic else None
        dims = ([None] * n, [None] * n, None, None, None, None, None, None, None, attended)
        # export clears the dynamic-shape marks of the tensors it is given: traced on copies, the slots' arange,
        # shared with the other buckets' graphs, stays dynamic there (else their first step compiles again)
        inputs = torch.utils._pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, inputs)
        key = build_key(model, inputs, dict(ONE_ROW_CPU, n_vocab=n_vocab, greedy=greedy, dynamic=dynamic))
        kept = os.path.join(built_steps_folder(), f"step-{key}.pt2")
        if os.path.exists(kept):
            try:
                runner = torch._inductor.aoti_load_package(kept).loader.boxed_run
                os.utime(kept)  # the most recently used: kept longest
                return runner, 'built by an earlier run'
            except Exception:  # noqa: BLE001  (a damaged file: build it again, over it)
                pass
        try:
            with torch.no_grad(), tempfile.TemporaryDirectory() as tmp, inductor_files_in(tmp):
                program = torch.export.export(ExportedStep(model, n_vocab, greedy), inputs, dynamic_shapes=dims)
                path = os.path.join(tmp, 'step.pt2')
                settings = dict(ONE_ROW_CPU)  # a copy: it adds keys of its own to the dict it is given
                torch._inductor.aoti_compile_and_package(program, package_path=path, inductor_configs=settings)
                keep_built_step(path, kept)
                # loaded from the build's own copy: another process may prune the kept one meanwhile
                return torch._inductor.aoti_load_package(path).loader.boxed_run, 'built'
        except Exception as e:  # noqa: BLE001  (torch.compile's path may still work)
            first_line = (str(e).strip().splitlines() or [''])[0][:200]
            return None, f"AOTInductor failed: {type(e).__name__}: {first_line}"

    def attended(self, length, device, most):
        """arange(length), the slots a step attends, made once per length; most (the window) when its size
        varies from step to step, so that one graph serves every length up to it."""
        seen = self.seen.get((length, most, device))
        if seen is None:
            seen = self.seen[(length, most, device)] = torch.arange(length, device=device)
            if most:
                torch._dynamo.mark_dynamic(seen, 0, min=2, max=most)
        return seen

    def mark_static(self, tensors):
        """With cuda_graphs: tensors keep their address from step to step (the cache, the per-row state), so
        a graph may write them in place instead of copying them in and out around every replay."""
        if self.cuda_graphs:
            for t in tensors:
                torch._dynamo.mark_static_address(t)

    def __call__(self, model, caches, last, pos, live, temperature, top_k, top_p, noise, n_vocab, greedy, length=None):
        """The step's tokens, or None when compiling failed (the caller then steps eagerly)."""
        if self.failed:
            return None
        key = (last.size(0), greedy)
        L = model.config.block_size
        # a CUDA graph replays fixed shapes: it attends over the whole cache
        dynamic = length is not None and not self.cuda_graphs and L > 2
        seen = self.attended(length if dynamic else L, last.device, L if dynamic else None)
        # what tells this call's graph from the others (guards are skipped once a graph exists): the model,
        # its rope table (grown past the window: a new constant), the shapes and whether the length varies
        rope = getattr(model, 'rope_cos', None)
        graph = (id(model), key, n_vocab, None if rope is None else tuple(rope.shape), dynamic)
        state = (last, pos, live, temperature, top_k, top_p, noise, seen)
        runner = self.runners.get(graph)
        if runner is not None:  # built ahead of time: it writes the cache and the row state in place
            return runner(runner_inputs(caches, state))[0]
        first = graph not in self.graphs
        mapped = hugepages.anonymous_mappings() if first and last.device.type == 'cpu' else None
        t0 = time.perf_counter()
        came = None  # how a one-row CPU step came to be (built, or built earlier), or why it was not built
        try:
            if first and self.one_row_cpu(last.device, key[0]):
                inputs = ([c.k for c in caches], [c.v for c in caches], *state)
                runner, came = self.ahead_of_time(model, n_vocab, greedy, inputs, dynamic)
            if runner is not None:
                self.runners[graph] = runner
                tokens = runner(runner_inputs(caches, state))[0]
            else:
                tokens = self.compiled_call(first, key, (model, caches, *state[:-1], n_vocab, greedy, seen))
        except Exception as e:  # noqa: BLE001  (a compiler that is missing or breaks: generate eagerly)
            if not first:
                raise
            while getattr(e, 'inner_exception', None) is not None:  # torch wraps the compiler's error: say that one
                e = e.inner_exception
            reason = (str(e).strip().splitlines() or [''])[0][:200]
            self.failed = f"{type(e).__name__}: {reason}"
            self.say(f"note: compiling the decode step failed ({self.failed}); generating without it")
            return None
        if first:
            self.graphs.add(graph)
            self.models[id(model)] = model
            if tokens.device.type == 'cuda':
                torch.cuda.synchronize(tokens.device)
            seconds = time.perf_counter() - t0
            self.compile_seconds[key] = self.compile_seconds.get(key, 0) + seconds
            if mapped is not None:  # the graph's own copy of the weights (frozen, or the runner's): on huge pages
                hugepages.advise(hugepages.new_since(mapped))
            how = (f" ahead of time (AOTInductor{', ' + came if came != 'built' else ''})" if runner is not None
                   else f' ({came})' if came else '')
            self.say(f"compiled the decode step for {key[0]} row{'s' * (key[0] > 1)}"
                     f"{' (greedy)' if greedy else ''}{how} in {seconds:.1f}s")
        return tokens

    def compiled_call(self, first, key, args):
        """The step through torch.compile's graph, compiling it first when needed."""
        last = args[2]
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        try:
            # once a graph exists, only the guards that tell the graphs apart are checked, not every weight's
            with torch.compiler.set_stance('default', skip_guard_eval_unsafe=not first), \
                    self.compiling(last.device, key[0]) if first else contextlib.nullcontext():
                tokens = self.fn(*args)
        except RuntimeError as e:
            if first or 'skip_guard_eval_unsafe' not in str(e):
                raise
            # a graph this call needs is not there yet: compile it, every guard checked
            with self.compiling(last.device, key[0]):
                tokens = self.fn(*args)
        if self.cuda_graphs:
            tokens = tokens.clone()  # the graph's output is overwritten by its next replay; the engine keeps 16
        return tokens
