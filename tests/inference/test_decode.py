"""The compiled decode step (core/inference/decode.py) against the eager engine: the same greedy tokens,
the same sampling rules. Compiling is slow on a shared CPU, so the models are tiny and the inductor
graphs few (one engine per module, shared); the sweep over every switch uses the aot_eager backend,
which runs the same traced step without generating C++."""

import copy
import os

import pytest
import torch

from conftest import SWITCHES, switch_id
from core.inference.decode import CompiledDecode
from core.inference.engine import Batch, Params, Runner, Sequence, run
from model import GPT, GPTConfig

V, L = 61, 16


def tiny(**kw):
    args = dict(block_size=L, vocab_size=V, n_layer=2, n_head=2, n_embd=32)
    args.update(kw)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**args)).eval()
    with torch.no_grad():  # sharper logits than the init gives, so a greedy choice is never a near tie
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return model


def prompts_of(lengths, seed=5, vocab=V):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


def generate(model, seqs, compiled=None, rows=3, **kw):
    batch = Batch(model, rows, 'cpu', compiled=compiled, **kw)
    with torch.no_grad():
        list(run(batch, seqs, sync_every=4))
    return seqs


def greedy(model, prompts, n, compiled=None, **kw):
    seqs = [Sequence(p, Params(max_tokens=n, temperature=0)) for p in prompts]
    return [s.out for s in generate(model, seqs, compiled, **kw)]


@pytest.fixture(scope='module')
def inductor():
    """One compiled engine for the module's inductor tests, with the lines it said."""
    said = []
    return CompiledDecode(say=said.append), said


@pytest.fixture(scope='module')
def modern():
    return tiny(**SWITCHES[-1])  # rope, so its cache slides past the window


@pytest.mark.parametrize('switch', SWITCHES, ids=switch_id)
def test_traced_step_greedy_equals_eager_for_every_switch(switch):
    model = tiny(**switch)
    prompts = prompts_of([3, 9, 14])  # different lengths in one batch, 30 tokens: past the window of 16
    compiled = CompiledDecode(say=lambda m: None, backend='aot_eager')
    assert greedy(model, prompts, 30, compiled) == greedy(model, prompts, 30)
    assert compiled.compile_seconds and not compiled.failed


def test_compiled_greedy_equals_eager_past_the_sliding_window(inductor, modern):
    compiled, said = inductor
    prompts = prompts_of([3, 9, 20])  # one prompt longer than the window
    assert greedy(modern, prompts, 40, compiled) == greedy(modern, prompts, 40)
    assert (3, True) in compiled.compile_seconds
    assert any(line.startswith('compiled the decode step for 3 rows') for line in said), said


def test_compiled_greedy_equals_eager_with_learned_positions_refilled(inductor):
    compiled, _ = inductor
    model = tiny()  # learned positions: past the window, its last 3/4 is prefilled again (eagerly)
    prompts = prompts_of([4, 15, 1])
    assert greedy(model, prompts, 40, compiled) == greedy(model, prompts, 40)


def test_two_models_of_one_shape_each_decode_with_their_own_weights(inductor, modern):
    # a one-row graph on a CPU holds the weights as constants (frozen): a second model of the same shape must
    # get a graph of its own, not the first one's weights; the prompt runs past the window of 16
    compiled, _ = inductor
    other = copy.deepcopy(modern)
    with torch.no_grad():
        for p in other.parameters():
            p.neg_()
    prompts = prompts_of([9])
    got = [greedy(m, prompts, 24, compiled, rows=1) for m in (modern, other)]
    assert got == [greedy(m, prompts, 24, rows=1) for m in (modern, other)]
    assert got[0] != got[1]  # the weights differ enough to tell the graphs apart


def test_a_one_row_step_on_a_cpu_is_built_ahead_of_time_and_writes_the_engine_cache(inductor, modern):
    # batch 1 on a CPU runs an AOTInductor runner, which must write the engine's own cache (a copy would lose
    # every key after the prompt's) and return fresh tokens each step (the engine keeps 16 before reading back)
    compiled, said = inductor
    for model, prompt in ((modern, [3, 1, 4]), (tiny(), [2, 7])):  # rope sliding past the window; learned refilled
        seqs = [Sequence(prompt, Params(max_tokens=40, temperature=0))]
        with torch.no_grad():
            list(run(Batch(model, 1, 'cpu', compiled=compiled), seqs, sync_every=16))
        assert seqs[0].out == greedy(model, [prompt], 40, rows=1)[0]
    assert len(compiled.runners) >= 2 and not compiled.failed
    assert any(line.startswith('compiled the decode step for 1 row (greedy) ahead of time') for line in said), said


def test_a_one_row_sampled_step_built_ahead_of_time_keeps_seeds_and_top_k(inductor, modern):
    compiled, said = inductor
    prompt = prompts_of([4])[0]
    def sampled(**kw):
        seq = Sequence(prompt, Params(max_tokens=12, **kw))  # within the window, for the full forwards below
        return generate(modern, [seq], compiled, rows=1, generator=torch.Generator().manual_seed(0))[0].out
    assert sampled(temperature=2.0, top_k=1) == greedy(modern, [prompt], 12, rows=1)[0]
    seeded = sampled(temperature=5.0, top_k=3, seed=7)
    assert sampled(temperature=5.0, top_k=3, seed=7) == seeded
    ctx, outside_top1 = list(prompt), 0
    with torch.no_grad():
        for i, tok in enumerate(seeded):
            top = modern(torch.tensor([ctx]))[0][0, -1].topk(3).indices.tolist()
            assert tok in top
            outside_top1 += i > 0 and tok != top[0]  # the first token is the prefill's, sampled eagerly
            ctx.append(tok)
    assert outside_top1 > 0  # the runner sampled with the noise it was given
    assert any(line.startswith('compiled the decode step for 1 row ahead of time') for line in said), said


def test_a_step_built_ahead_of_time_is_kept_for_the_next_run_and_nothing_else(modern, monkeypatch, tmp_path):
    # the built library holds the weights: one is kept per model (the most recently used two), loaded by the next
    # run of the same model and code, built again when damaged, and no other library stays in inductor's cache
    import time
    from core.inference.decode import KEEP_BUILT_STEPS, built_steps_folder
    monkeypatch.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path))
    folder = built_steps_folder()
    os.makedirs(folder)
    for age, name in ((200, 'step-older.pt2'), (100, 'step-old.pt2')):  # two steps of other models, kept earlier
        with open(os.path.join(folder, name), 'wb') as f:
            f.write(b'x')
        os.utime(os.path.join(folder, name), (time.time() - age, time.time() - age))
    prompt, kw = prompts_of([6])[0], dict(rows=1, n_vocab=V - 1)
    expected = greedy(modern, [prompt], 8, **kw)

    def run_once():
        said = []
        compiled = CompiledDecode(say=said.append)
        assert greedy(modern, [prompt], 8, compiled, **kw) == expected
        assert compiled.runners and len(said) == 1, said
        return said[0]
    assert ' ahead of time (AOTInductor) in ' in run_once()
    kept = sorted(os.listdir(folder))
    assert len(kept) == KEEP_BUILT_STEPS == 2 and 'step-old.pt2' in kept and 'step-older.pt2' not in kept
    libraries = [p for p in tmp_path.rglob('*') if p.suffix in ('.so', '.pt2')]
    assert sorted(p.name for p in libraries) == kept and all(str(p.parent) == folder for p in libraries)
    assert os.environ['TORCHINDUCTOR_CACHE_DIR'] == str(tmp_path)  # put back after the build
    assert '(AOTInductor, built by an earlier run) in ' in run_once()
    ours = next(os.path.join(folder, n) for n in kept if n != 'step-old.pt2')
    with open(ours, 'wb') as f:
        f.write(b'not a library')
    assert ' ahead of time (AOTInductor) in ' in run_once()  # built again, over the damaged file
    assert os.path.getsize(ours) > 1000


def test_a_kept_step_is_keyed_by_the_thread_count(modern):
    # a built step's kernels run on the threads torch had when it was built: one built at one thread and loaded by
    # a two-thread run ran at one thread's speed (studies/bench_generate.py --threads=2 after --threads=1)
    from core.inference.decode import ONE_ROW_CPU, build_key
    inputs, before = [torch.zeros(3, 4)], torch.get_num_threads()
    try:
        keys = []
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            keys.append(build_key(modern, inputs, ONE_ROW_CPU))
    finally:
        torch.set_num_threads(before)
    assert keys[0] == keys[2] != keys[1]


def test_a_failed_ahead_of_time_build_compiles_with_torch_compile_instead(modern, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no AOTInductor here\nsecond line")
    monkeypatch.setattr(torch._inductor, 'aoti_compile_and_package', broken)
    said = []
    compiled = CompiledDecode(say=said.append)
    prompt = prompts_of([5])[0]
    assert greedy(modern, [prompt], 12, compiled, rows=1) == greedy(modern, [prompt], 12, rows=1)
    assert not compiled.failed and not compiled.runners
    assert len(said) == 1 and 'AOTInductor failed' in said[0] and 'no AOTInductor here' in said[0], said


def test_a_model_over_the_size_limit_is_not_built_ahead_of_time(modern, monkeypatch):
    import core.inference.decode as decode
    built = []
    monkeypatch.setattr(torch._inductor, 'aoti_compile_and_package', lambda *a, **k: built.append(a))
    weights = sum(t.numel() * t.element_size() for t in modern.state_dict().values())
    monkeypatch.setattr(decode, 'AHEAD_OF_TIME_MAX_BYTES', weights - 1)
    said = []
    compiled = CompiledDecode(say=said.append)
    prompt = prompts_of([5])[0]
    assert greedy(modern, [prompt], 12, compiled, rows=1) == greedy(modern, [prompt], 12, rows=1)
    assert not built and not compiled.runners and not compiled.failed
    assert len(said) == 1 and 'not built ahead of time: its weights are' in said[0], said


def test_compiled_exact_window_equals_eager(modern):
    compiled = CompiledDecode(say=lambda m: None, backend='aot_eager')
    prompts = prompts_of([5, 2, 11])
    assert greedy(modern, prompts, 30, compiled, exact_window=True) == greedy(modern, prompts, 30, exact_window=True)


def test_rows_join_and_leave_a_running_batch_over_buckets(modern):
    # sequences arrive while others generate and finish at different lengths, as in a server; every one
    # gets the tokens it gets alone, whichever bucket (rows 1, 2 or 4) its steps ran in
    compiled = CompiledDecode(say=lambda m: None, backend='aot_eager')
    prompts, lengths = prompts_of([3, 7, 2, 12, 5]), [20, 6, 25, 9, 14]
    seqs = [Sequence(p, Params(max_tokens=n, temperature=0)) for p, n in zip(prompts, lengths)]
    runner = Runner(Batch(modern, 4, 'cpu', compiled=compiled, buckets=[1, 2]), sync_every=1)
    with torch.no_grad():
        for i in range(200):
            if i % 4 == 0 and i // 4 < len(seqs):
                runner.submit(seqs[i // 4])
            runner.tick()
            if not runner.busy() and i // 4 >= len(seqs):
                break
    assert [s.out for s in seqs] == [greedy(modern, [p], n, rows=1)[0] for p, n in zip(prompts, lengths)]
    assert {rows for rows, _ in compiled.compile_seconds} >= {1, 2, 4}


def test_stop_strings_end_the_compiled_text_where_the_eager_one_ends(inductor, modern):
    compiled, _ = inductor
    chars = [chr(ord('a') + i % 26) for i in range(V)]
    decode = lambda ids: ''.join(chars[i] for i in ids)  # noqa: E731
    prompts = prompts_of([3, 9, 4])
    free = [decode(out) for out in greedy(modern, prompts, 30)]
    stops = [t[10:12] for t in free]  # a stop string each row meets after at least ten characters
    def texts(c):
        seqs = [Sequence(p, Params(max_tokens=30, temperature=0, stop=(s,)), decode=decode) for p, s in zip(prompts, stops)]
        return [(x.text, x.finish_reason) for x in generate(modern, seqs, c)]
    got = texts(compiled)
    assert got == texts(None)
    for (text, reason), full, stop in zip(got, free, stops):
        assert reason == 'stop' and text == full[:full.find(stop)]


def test_seeded_requests_get_their_own_tokens_whatever_their_neighbours(inductor, modern):
    compiled, _ = inductor
    prompt = prompts_of([4])[0]
    def seeded(neighbours):
        seqs = [Sequence(prompt, Params(max_tokens=20, temperature=1.0, seed=7))]
        seqs += [Sequence(p, Params(max_tokens=n, temperature=0.5, top_k=5)) for p, n in neighbours]
        return generate(modern, seqs, compiled, generator=torch.Generator().manual_seed(0))[0].out
    alone = seeded([])
    assert seeded([(prompts_of([2])[0], 8), (prompts_of([9])[0], 20)]) == alone
    assert seeded([(prompts_of([6], seed=9)[0], 3)]) == alone
    other = generate(modern, [Sequence(prompt, Params(max_tokens=20, temperature=1.0, seed=8))], compiled)[0].out
    assert other != alone  # the seed matters


def test_top_k_and_top_p_keep_only_the_tokens_they_allow(inductor, modern):
    compiled, _ = inductor
    prompts = prompts_of([2, 3, 4])
    # top_k=1 and a top_p that keeps one token are greedy at any temperature
    for kw in (dict(top_k=1), dict(top_p=1e-9)):
        seqs = [Sequence(p, Params(max_tokens=12, temperature=2.0, **kw)) for p in prompts]
        assert [s.out for s in generate(modern, seqs, compiled)] == greedy(modern, prompts, 12), kw
    # top_k=3 at a high temperature: every token is among the 3 largest logits of a full forward
    seqs = [Sequence(p, Params(max_tokens=10, temperature=5.0, top_k=3)) for p in prompts]
    generate(modern, seqs, compiled, generator=torch.Generator().manual_seed(1))
    picked_outside_top1 = 0
    with torch.no_grad():
        for s in seqs:
            ctx = list(s.prompt)
            for tok in s.out:
                logits = modern(torch.tensor([ctx]))[0][0, -1]
                assert tok in logits.topk(3).indices.tolist()
                picked_outside_top1 += tok != int(logits.argmax())
                ctx.append(tok)
    assert picked_outside_top1 > 0  # it did sample


def test_padded_vocabulary_ids_are_never_picked():
    model = tiny(vocab_size=64)
    with torch.no_grad():
        model.lm_head.weight[50:] = model.lm_head.weight[50:].sign() * 3.0  # the head prefers the padding
    compiled = CompiledDecode(say=lambda m: None, backend='aot_eager')
    unmasked = greedy(model, [[1, 2, 3]], 10, compiled, rows=1)
    assert max(unmasked[0]) >= 50
    for kw in (dict(temperature=0), dict(temperature=5.0), dict(temperature=2.0, top_k=3), dict(temperature=1.5, top_p=0.99)):
        seqs = [Sequence([1, 2, 3], Params(max_tokens=30, **kw)) for _ in range(3)]
        generate(model, seqs, compiled, n_vocab=50, generator=torch.Generator().manual_seed(0))
        assert max(t for s in seqs for t in s.out) < 50, kw


def test_a_compile_that_fails_says_one_line_and_generation_goes_on_eagerly(modern):
    def broken(gm, example_inputs):
        raise RuntimeError("no compiler here\nsecond line")
    said = []
    compiled = CompiledDecode(say=said.append, backend=broken)
    prompts = prompts_of([3, 5])
    assert greedy(modern, prompts, 20, compiled) == greedy(modern, prompts, 20)
    assert len(said) == 1 and 'failed' in said[0] and 'no compiler here' in said[0] and '\n' not in said[0], said


def test_the_cuda_graph_path_marks_fixed_addresses_and_keeps_its_tokens(modern):
    # what a CPU can run of --cuda_graphs: the cache and row state marked static (same view objects every
    # step), a step begun before each replay, the tokens copied out of the graph's buffer before the next
    compiled = CompiledDecode(say=lambda m: None, backend='aot_eager', cuda_graphs=True)
    prompts = prompts_of([3, 9, 20])
    assert greedy(modern, prompts, 30, compiled) == greedy(modern, prompts, 30)
    batch = Batch(modern, 2, 'cpu', compiled=compiled)
    assert batch._bucket(2) is batch._bucket(2)
    assert all(getattr(t, '_dynamo_static_input_type', None) for t in batch._bucket(2)[1:])


def test_a_server_compiles_every_bucket_at_start_and_requests_compile_nothing(modern):
    compiled = CompiledDecode(say=lambda m: None, backend='aot_eager')
    batch = Batch(modern, 4, 'cpu', compiled=compiled, buckets=[1, 2], greedy_graphs=False)
    with torch.no_grad():
        batch.compile_all()
    assert set(compiled.compile_seconds) == {(1, False), (2, False), (4, False)}
    assert not batch.live.any() and not batch.pos.any()  # warming up left no row behind
    prompts = prompts_of([3, 9, 20])
    seqs = [Sequence(p, Params(max_tokens=25, temperature=0)) for p in prompts]
    with torch.no_grad():
        list(run(batch, seqs))
    assert [s.out for s in seqs] == greedy(modern, prompts, 25)
    assert set(compiled.compile_seconds) == {(1, False), (2, False), (4, False)}


def test_building_the_one_row_step_leaves_the_other_graphs_free_to_attend_any_length(modern, monkeypatch):
    # torch.export clears the dynamic marks of what it traces: taken off the slots' arange every bucket shares,
    # the other buckets' graphs would hold the whole window only and compile again at a server's first requests
    from torch._dynamo.utils import counters
    monkeypatch.setattr(torch._inductor, 'aoti_compile_and_package', lambda *a, **k: 1 / 0)  # traced, not built
    compiled = CompiledDecode(say=lambda m: None, backend='aot_eager')
    compiled.inductor = True  # a one-row step goes through torch.export as on a CPU with inductor
    batch = Batch(modern, 4, 'cpu', compiled=compiled, buckets=[1, 2], greedy_graphs=False)
    with torch.no_grad():
        batch.compile_all()
    graphs = counters['stats']['unique_graphs']
    prompts = prompts_of([3, 5, 2])
    seqs = [Sequence(p, Params(max_tokens=6, temperature=0)) for p in prompts]
    with torch.no_grad():
        list(run(batch, seqs))
    assert [s.out for s in seqs] == greedy(modern, prompts, 6)
    assert counters['stats']['unique_graphs'] == graphs  # nothing compiled after the start


def test_when_compiling_pays_is_decided_once_and_said(monkeypatch):
    from core import hardware
    from core.errors import UserError
    from core.inference.setup import CPU_COMPILE_PAYS_FROM, decide_compile
    # one row is built ahead of time for each checkpoint, so it pays later than a graph of rows inductor keeps
    one, rows = CPU_COMPILE_PAYS_FROM['one row'], CPU_COMPILE_PAYS_FROM['rows']
    assert rows < one
    assert decide_compile('auto', 'cpu', one)[0] is True and decide_compile('auto', 'cpu', one - 1)[0] is False
    assert decide_compile('auto', 'cpu', rows, rows=3)[0] is True
    on, why = decide_compile('auto', 'cpu', rows - 1, rows=3)
    assert on is False and why.startswith(f'{rows - 1} tokens') and '3 rows' in why and '--compile=True' in why
    assert decide_compile(False, 'cpu', 10 ** 6) == (False, 'compile=False')
    monkeypatch.setattr(hardware, 'cpp_compiler', lambda: None)
    assert decide_compile('auto', 'cpu', 10 ** 6) == (False, 'no C++ compiler for torch.compile')
    with pytest.raises(UserError, match='no C\\+\\+ compiler'):
        decide_compile(True, 'cpu', 10)


def test_a_sampled_row_beside_a_greedy_one_is_still_sampled(modern):
    # one graph per sampling kind: a greedy graph (argmax only) only where every row is greedy. A seeded sampled
    # row gets the tokens it gets alone whatever its neighbour, and those are not the greedy ones
    compiled = CompiledDecode(say=lambda m: None, backend='aot_eager')
    prompts = prompts_of([4, 5])
    def seeded(neighbour):
        seqs = [Sequence(prompts[0], Params(max_tokens=10, temperature=3.0, seed=11))]
        seqs += [Sequence(prompts[1], Params(max_tokens=10, temperature=0))] if neighbour else []
        return generate(modern, seqs, compiled, rows=2, generator=torch.Generator().manual_seed(0))[0].out
    alone = seeded(False)
    assert alone[1:] != greedy(modern, [prompts[0] + alone[:1]], 9, rows=2)[0]  # after the (eager) prefill's
    assert seeded(True) == alone
    assert set(compiled.compile_seconds) == {(2, False)}  # both rows stepped by the sampling graph


def test_the_ahead_of_time_size_limit_is_inclusive(modern, monkeypatch):
    # a model of exactly AHEAD_OF_TIME_MAX_BYTES is built ahead of time (here the build is stopped at the export,
    # which is all this needs to see); one byte over is not, and says so
    import core.inference.decode as decode
    exported = []
    def export(*args, **kwargs):
        exported.append(args)
        raise RuntimeError("stopped here")
    monkeypatch.setattr(torch.export, 'export', export)
    weights = sum(t.numel() * t.element_size() for t in modern.state_dict().values())
    compiled = CompiledDecode(say=lambda m: None)
    caches = modern.new_caches(1, 'cpu', torch.float32)
    inputs = ([c.k for c in caches], [c.v for c in caches], torch.zeros(1, dtype=torch.long),
              torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.bool), torch.ones(1),
              torch.zeros(1, dtype=torch.long), torch.ones(1), None, torch.arange(L))
    monkeypatch.setattr(decode, 'AHEAD_OF_TIME_MAX_BYTES', weights)
    runner, why = compiled.ahead_of_time(modern, V, True, inputs, False)
    assert runner is None and why == 'AOTInductor failed: RuntimeError: stopped here' and len(exported) == 1
    monkeypatch.setattr(decode, 'AHEAD_OF_TIME_MAX_BYTES', weights - 1)
    runner, why = compiled.ahead_of_time(modern, V, True, inputs, False)
    assert runner is None and why.startswith('not built ahead of time: its weights are') and len(exported) == 1


def test_one_compiled_decode_serves_two_vocabulary_sizes_each_with_its_own():
    # the graphs are told apart by n_vocab too (guards are skipped once a graph exists): a batch of 50 ids after
    # one of all 64 on the same rows must not reuse the graph that lets the padded ids through
    model = tiny(vocab_size=64)
    with torch.no_grad():
        model.lm_head.weight[50:] = model.lm_head.weight[50:].sign() * 3.0  # the head prefers the padding
    compiled = CompiledDecode(say=lambda m: None, backend='aot_eager')
    prompts = prompts_of([3, 5], vocab=50)
    assert max(max(out) for out in greedy(model, prompts, 10, compiled, rows=2)) >= 50
    masked = greedy(model, prompts, 10, compiled, rows=2, n_vocab=50)
    assert masked == greedy(model, prompts, 10, rows=2, n_vocab=50)
    assert max(max(out) for out in masked) < 50
